"""Output formats: COG structure (validated byte by byte), tags, scale/offset, plain GTiff, conversion on resume."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio

from stacfetch.api import build_query, get_query
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_settings
from stacfetch.raster import COG_BLOCK, cog_part_path, discard_partial, file_format, is_complete
from stacfetch.raster.overviews import level_count
from stacfetch.testing.emulator import Emulator

POINT = [34.665, 31.625]


def run(emu: Emulator, out: Path, **options):
    query = build_query(POINT, options.pop("start", "2022-01-20"), options.pop("end", "2022-01-25"),
                        size=options.pop("size", 6000), bands=options.pop("bands", "B04,B03,B02,SCL"),
                        dtype=options.pop("dtype", "uint16"))
    settings = load_settings(environ={}, provider="sentinelhub", client_id=SANDBOX_CLIENT_ID,
                             client_secret=SANDBOX_CLIENT_SECRET, base_url=emu.url,
                             token_url=emu.token_url, output_dir=out)
    return get_query(query, settings=settings, **options)


# --- a minimal COG validator (the rules of GDAL's validate_cloud_optimized_geotiff.py) ----------
_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}


def _ifds(data: bytes) -> list[dict[int, tuple[int, ...]]]:
    order = "<" if data[:2] == b"II" else ">"
    magic = struct.unpack(order + "H", data[2:4])[0]
    big = magic == 43
    offset = struct.unpack(order + ("Q" if big else "I"), data[8:16] if big else data[4:8])[0]
    ifds = []
    while offset:
        count_fmt, entry, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
        n = struct.unpack_from(order + count_fmt, data, offset)[0]
        pos = offset + struct.calcsize(count_fmt)
        tags: dict[int, tuple[int, ...]] = {}
        for i in range(n):
            base = pos + i * entry
            tag, typ = struct.unpack_from(order + "HH", data, base)
            count = struct.unpack_from(order + ("Q" if big else "I"), data, base + 4)[0]
            value_at = base + (12 if big else 8)
            if typ in _TYPES:
                fmt, size = _TYPES[typ]
                if count * size > (8 if big else 4):
                    value_at = struct.unpack_from(order + ("Q" if big else "I"), data, value_at)[0]
                tags[tag] = struct.unpack_from(order + fmt * count, data, value_at)
        tags[-1] = (offset,)
        ifds.append(tags)
        offset = struct.unpack_from(order + next_fmt, data, pos + n * entry)[0]
    return ifds


def cog_errors(path: Path) -> list[str]:
    """Why ``path`` is not a valid COG (empty list when it is)."""
    data = path.read_bytes()
    errors = []
    if b"LAYOUT=IFDS_BEFORE_DATA" not in data[:400] or b"BLOCK_ORDER=ROW_MAJOR" not in data[:400]:
        errors.append("no COG ghost header after the TIFF header")
    every = _ifds(data)
    # mask IFDs (NewSubfileType bit 4: the no-data mask band) are interleaved with their image's
    # tiles (MASK_INTERLEAVED_WITH_IMAGERY); the order rules apply to the image IFDs
    ifds = [t for t in every if not t.get(254, (0,))[0] & 4]
    masks = [t for t in every if t.get(254, (0,))[0] & 4]
    if masks and (b"MASK_INTERLEAVED_WITH_IMAGERY=YES" not in data[:400] or len(masks) != len(ifds)):
        errors.append("mask IFDs are not one per level, interleaved with the imagery")
    width, height = ifds[0][256][0], ifds[0][257][0]
    if len(ifds) - 1 != level_count(width, height, COG_BLOCK):  # none under one COG block
        errors.append(f"{len(ifds) - 1} overview levels for {width} x {height} px, expected "
                      f"{level_count(width, height, COG_BLOCK)}")
    for i, tags in enumerate(ifds):
        if 322 not in tags or 324 not in tags:
            errors.append(f"IFD {i} is not tiled")
    if errors:
        return errors
    first_data = min(min(o for o in t[324] if o) for t in every)
    if any(t[-1][0] > first_data for t in every):
        errors.append("an IFD comes after image data")
    starts = [min(o for o in t[324] if o) for t in ifds]
    if starts != sorted(starts, reverse=True):
        errors.append("overview data is not stored smallest first, before the full resolution")
    for i, t in enumerate(ifds):
        offsets = [o for o in t[324] if o]
        if offsets != sorted(offsets):
            errors.append(f"tiles of IFD {i} are not in row-major order")
    sizes = [(t[256][0], t[257][0]) for t in ifds]
    if sizes != sorted(sizes, reverse=True):
        errors.append(f"overview sizes do not shrink: {sizes}")
    return errors


# --- tests ------------------------------------------------------------------------------------
def test_default_output_is_a_valid_cog_with_tags_and_no_overview_under_one_block(
        emulator: Emulator, tmp_path: Path) -> None:
    result = run(emulator, tmp_path / "out")
    assert result.written
    for path in result.written:
        assert cog_errors(path) == []
        assert file_format(path) == "cog"
        with rasterio.open(path) as src:
            structure = src.tags(ns="IMAGE_STRUCTURE")
            assert structure["LAYOUT"] == "COG" and structure["COMPRESSION"] == "DEFLATE"
            assert structure["PREDICTOR"] == "2"
            assert src.profile["tiled"] and src.block_shapes[0] == (COG_BLOCK, COG_BLOCK)
            # 601 px: a level would be 301 px, under one COG block (overviews.level_count): none
            assert src.width == src.height == 601 and src.overviews(1) == []
            assert src.descriptions == ("B04", "B03", "B02", "SCL")
            assert src.nodata is None and (src.read_masks() == 255).all()  # a mask, no nodata
            assert src.scales == (0.0001, 0.0001, 0.0001, 1.0) and src.offsets == (0.0, 0.0, 0.0, 0.0)
            tags = src.tags()
            acquired = tags["ACQUISITION_DATETIME"]
            assert tags["TIFFTAG_DATETIME"] == acquired[:19].replace("-", ":").replace("T", " ")
            assert tags["TIFFTAG_SOFTWARE"].startswith("stacfetch ")
            assert "B04,B03,B02,SCL acquired " + acquired in tags["TIFFTAG_IMAGEDESCRIPTION"]
            assert tags["STACFETCH_COMPLETE"] == "1"
            # reflectance in physical units through scale/offset
            red = src.read(1, masked=True) * src.scales[0] + src.offsets[0]
            assert float(red.min()) >= 0.1 and float(red.max()) < 0.9
            # a coarse read still works (decimated from the full resolution)
            small = src.read(1, out_shape=(151, 151))
            assert small.shape == (151, 151) and small.any()


def test_a_large_cog_has_every_overview_level_down_to_one_block(emulator: Emulator, tmp_path: Path) -> None:
    result = run(emulator, tmp_path / "out", end="2022-01-22", size=20480, bands="B04")
    assert result.written
    for path in result.written:
        assert cog_errors(path) == []
        with rasterio.open(path) as src:
            # 2049 px -> 1025 -> 512 (GDAL's rounding), both at least one 512-px block; the
            # next (256) would be under it
            assert src.width == src.height == 2049 and src.overviews(1) == [2, 4]
            with rasterio.open(path, OVERVIEW_LEVEL=1) as level:
                assert min(level.width, level.height) >= COG_BLOCK and level.read(1).any()
                assert (level.read_masks(1) == 255).all()  # the mask has its levels too


def test_cog_validates_with_rio_cogeo_when_installed(emulator: Emulator, tmp_path: Path) -> None:
    cogeo = pytest.importorskip("rio_cogeo.cogeo")
    result = run(emulator, tmp_path / "out", end="2022-01-22")
    for path in result.written:
        valid, errors, warnings = cogeo.cog_validate(str(path))
        assert valid and not errors, (errors, warnings)


def test_gtiff_and_cog_hold_the_same_pixels(emulator: Emulator, tmp_path: Path) -> None:
    cog = run(emulator, tmp_path / "cog", end="2022-01-22")
    plain = run(emulator, tmp_path / "plain", end="2022-01-22", fmt="gtiff")
    assert [p.name for p in cog.written] == [p.name for p in plain.written]
    for a, b in zip(cog.written, plain.written, strict=True):
        assert file_format(b) == "gtiff" and cog_errors(b)  # tiled, but not a COG
        with rasterio.open(a) as ca, rasterio.open(b) as pb:
            np.testing.assert_array_equal(ca.read(), pb.read())
            assert pb.block_shapes[0] == (512, 512) and pb.overviews(1) == []
            assert pb.scales == ca.scales and pb.descriptions == ca.descriptions
            assert pb.tags()["ACQUISITION_DATETIME"] == ca.tags()["ACQUISITION_DATETIME"]


@pytest.mark.parametrize("fmt", ["cog", "gtiff"])
def test_zstd_holds_the_same_pixels_and_mask_as_deflate(emulator: Emulator, tmp_path: Path, fmt: str) -> None:
    deflate = run(emulator, tmp_path / "deflate", end="2022-01-22", fmt=fmt)
    zstd = run(emulator, tmp_path / "zstd", end="2022-01-22", fmt=fmt, compress="zstd")
    assert zstd.written and [p.name for p in zstd.written] == [p.name for p in deflate.written]
    for a, b in zip(deflate.written, zstd.written, strict=True):
        assert file_format(b) == fmt and (cog_errors(b) == []) == (fmt == "cog")
        with rasterio.open(a) as da, rasterio.open(b) as zb:
            assert da.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
            assert zb.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
            assert zb.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
            np.testing.assert_array_equal(zb.read(), da.read())
            np.testing.assert_array_equal(zb.read_masks(), da.read_masks())
            assert zb.tags()["STACFETCH_COMPLETE"] == "1" and zb.descriptions == da.descriptions


def test_float32_reflectance_has_no_scale_and_a_floating_point_predictor(emulator: Emulator, tmp_path: Path) -> None:
    result = run(emulator, tmp_path / "out", end="2022-01-22", bands="B04,B08", dtype="float32")
    for path in result.written:
        assert cog_errors(path) == []
        with rasterio.open(path) as src:
            assert src.scales == (1.0, 1.0)
            assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"


def test_resume_accepts_a_cog_and_converts_between_formats_without_requests(
    emulator: Emulator, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run(emulator, out, end="2022-01-22")
    job = first.jobs[0]
    assert is_complete(job.destination, job.grid, job.bands, job.dtype)
    assert is_complete(job.destination, job.grid, job.bands, job.dtype, fmt="cog")
    assert not is_complete(job.destination, job.grid, job.bands, job.dtype, fmt="gtiff")
    with rasterio.open(job.destination) as src:
        pixels = src.read()
    emulator.log.clear()
    again = run(emulator, out, end="2022-01-22")
    assert again.skipped == first.written and emulator.log.count(kind="process") == 0
    plain = run(emulator, out, end="2022-01-22", fmt="gtiff")
    assert emulator.log.count(kind="process") == 0 and plain.written == first.written
    assert file_format(job.destination) == "gtiff"
    assert is_complete(job.destination, job.grid, job.bands, job.dtype, fmt="gtiff")
    with rasterio.open(job.destination) as src:
        np.testing.assert_array_equal(src.read(), pixels)
    back = run(emulator, out, end="2022-01-22", fmt="cog")
    assert back.written == first.written and emulator.log.count(kind="process") == 0
    assert cog_errors(job.destination) == []
    assert not list(out.rglob("*.part")) and not list(out.rglob("*.tmp"))


def test_leftover_cog_temporaries_are_discarded(tmp_path: Path) -> None:
    dest = tmp_path / "a.tif"
    tmp = cog_part_path(dest)
    for leftover in (tmp, tmp.with_name(tmp.name + ".ovr.tmp"), dest.with_name("a.tif.part")):
        leftover.write_bytes(b"x")
    assert discard_partial(dest)
    assert list(tmp_path.iterdir()) == []


def test_raw_is_uncompressed_with_the_same_tags_pixels_and_mask(
    emulator: Emulator, tmp_path: Path
) -> None:
    cog = run(emulator, tmp_path / "cog", end="2022-01-22")
    emulator.log.clear()
    raw = run(emulator, tmp_path / "raw", end="2022-01-22", fmt="raw")
    assert emulator.log.count(kind="process") == len(raw.written) > 0
    for a, b in zip(cog.written, raw.written, strict=True):
        assert file_format(b) == "raw" and cog_errors(b)
        with rasterio.open(a) as ca, rasterio.open(b) as rb:
            np.testing.assert_array_equal(ca.read(), rb.read())
            np.testing.assert_array_equal(ca.read_masks(), rb.read_masks())
            # the service's values, not recompressed (rewritten: its bytes cannot carry a mask)
            assert "COMPRESSION" not in rb.tags(ns="IMAGE_STRUCTURE")
            assert b.stat().st_size >= rb.width * rb.height * rb.count * 2
            assert rb.descriptions == ca.descriptions and rb.scales == ca.scales
            assert rb.nodata is None and rb.crs == ca.crs and rb.transform == ca.transform
            tags = rb.tags()
            assert tags["STACFETCH_COMPLETE"] == "1"
            assert tags["ACQUISITION_DATETIME"] == ca.tags()["ACQUISITION_DATETIME"]
            assert tags["TIFFTAG_IMAGEDESCRIPTION"] == ca.tags()["TIFFTAG_IMAGEDESCRIPTION"]
    job = raw.jobs[0]
    assert is_complete(job.destination, job.grid, job.bands, job.dtype, fmt="raw")
    assert not is_complete(job.destination, job.grid, job.bands, job.dtype, fmt="gtiff")
    emulator.log.clear()
    again = run(emulator, tmp_path / "raw", end="2022-01-22", fmt="raw")
    assert again.skipped == raw.written and emulator.log.count(kind="process") == 0
    converted = run(emulator, tmp_path / "raw", end="2022-01-22")
    assert converted.written == raw.written and emulator.log.count(kind="process") == 0
    assert all(cog_errors(p) == [] for p in converted.written)


def test_raw_stitches_a_multi_tile_area_into_one_uncompressed_file(emulator: Emulator, tmp_path: Path) -> None:
    result = run(emulator, tmp_path / "out", end="2022-01-22", size=26_000, bands="B04", fmt="raw")
    job = result.jobs[0]
    assert len(job.tiles) > 1 and result.written
    with rasterio.open(job.destination) as src:
        assert (src.width, src.height) == (job.grid.width, job.grid.height)
        assert "COMPRESSION" not in src.tags(ns="IMAGE_STRUCTURE")
        assert src.tags()["STACFETCH_COMPLETE"] == "1" and src.descriptions == ("B04",)
        band = src.read(1)
    # every tile is filled: no row or column of the mosaic is left at nodata
    assert band.any(axis=0).all() and band.any(axis=1).all()
