"""Tests of stacfetch.raster and stacfetch.stac.manifest: windowed stitching, response validation, commit, resume, manifest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from stacfetch.errors import DownloadError, InvalidResponseError
from stacfetch.plan import Grid, Job, Tile, cut_tiles, group_acquisitions
from stacfetch.raster import (
    COMPLETE_TAG,
    PartFile,
    discard_partial,
    is_complete,
    part_path,
    profile_for,
    sha256_file,
    sidecar_path,
    tags_for,
)
from stacfetch.stac.manifest import record_for, write_manifest

BANDS = ("B04", "B03", "B02")
T0 = datetime(2022, 1, 21, 8, 32, 1, tzinfo=timezone.utc)


# --- helpers ----------------------------------------------------------------------------
def make_grid(width: int = 1100, height: int = 1030, res: float = 10.0, crs: str = "EPSG:32636") -> Grid:
    return Grid(crs, Affine(res, 0, 600000.0, 0, -res, 3500000.0), width, height, res)


def expected_pixels(grid: Grid, bands: int, dtype: str, window: Window | None = None) -> np.ndarray:
    """Deterministic values from the *global* pixel position and band: seams would show."""
    window = window or Window(0, 0, grid.width, grid.height)
    rows = np.arange(int(window.row_off), int(window.row_off + window.height))[:, None]
    cols = np.arange(int(window.col_off), int(window.col_off + window.width))[None, :]
    out = np.stack([(rows * 7 + cols * 13 + b * 101) % 251 + 1 for b in range(bands)])
    if np.dtype(dtype).kind == "f":
        return (out / 1000).astype(dtype)
    return out.astype(dtype)


def tile_bytes(
    grid: Grid,
    tile: Tile,
    *,
    bands: int = len(BANDS),
    dtype: str = "uint16",
    crs: str | None | bool = True,
    transform: Affine | None = None,
    size: tuple[int, int] | None = None,
    compress: str | None = "deflate",
) -> bytes:
    """A synthetic Process API response for ``tile``: a GeoTIFF made with MemoryFile.

    ``crs=True`` uses the grid CRS, ``None``/``False`` writes no georeferencing.
    """
    width, height = size or (tile.width, tile.height)
    data = expected_pixels(grid, bands, dtype, Window(tile.window.col_off, tile.window.row_off, width, height))
    profile = {"driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": dtype}
    if compress:
        profile["compress"] = compress
    if crs:
        profile["crs"] = grid.crs if crs is True else crs
        profile["transform"] = transform or grid.window_transform(tile.window)
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
        return bytes(mem.read())


def fake_item(item_id: str, href: str = "https://example.com/a.tif") -> pystac.Item:
    item = pystac.Item(
        id=item_id,
        geometry={"type": "Point", "coordinates": [34.67, 31.62]},
        bbox=[34.67, 31.62, 34.67, 31.62],
        datetime=T0,
        properties={"eo:cloud_cover": 12.5, "platform": "sentinel-2a", "sat:relative_orbit": 21,
                    "s2:mgrs_tile": "36RXV"},
    )
    item.add_asset("B04", pystac.Asset(href=href, media_type=pystac.MediaType.COG))
    return item


def make_job(tmp_path: Path, name: str = "2022-01-21T083201_S2A_R021.tif", grid: Grid | None = None,
             max_px: int = 400, dtype: str = "uint16") -> Job:
    grid = grid or make_grid()
    (acq,) = group_acquisitions([fake_item("S2A_MSIL2A_20220121T083201_N0400_R021_T36RXV_20220121T105105")])
    area = tmp_path / "out" / "sentinel-2-l2a" / "area-1234"
    return Job(acq, grid, tuple(cut_tiles(grid, max_px)), BANDS, dtype, area / name)


def write_job(job: Job, *, synthetic: bool = True) -> Path:
    with PartFile(job.destination, job.grid, job.bands, job.dtype) as part:
        for tile in job.tiles:
            part.write_tile(tile, tile_bytes(job.grid, tile, dtype=job.dtype))
        return part.commit(tags_for(job.acquisition, job.bands, provider="test", synthetic=synthetic),
                           items=job.acquisition.items)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- profile ----------------------------------------------------------------------------
@pytest.mark.parametrize(("dtype", "predictor"), [("uint16", 2), ("uint8", 2), ("float32", 3)])
def test_profile(dtype: str, predictor: int) -> None:
    grid = make_grid()
    p = profile_for(grid, BANDS, dtype)
    assert p["predictor"] == predictor
    assert (p["width"], p["height"], p["count"], p["dtype"]) == (1100, 1030, 3, dtype)
    assert p["compress"] == "deflate" and p["tiled"] and p["blockxsize"] == p["blockysize"] == 512
    assert p["BIGTIFF"] == "IF_SAFER" and p["nodata"] == 0
    assert p["transform"] == grid.transform


# --- stitching --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32"])
def test_three_by_three_tiles_stitch_without_seams(tmp_path: Path, dtype: str) -> None:
    job = make_job(tmp_path, dtype=dtype)
    assert len(job.tiles) == 9 and {t.width for t in job.tiles} == {367, 366}
    dest = write_job(job)
    assert dest == job.destination and not part_path(dest).exists()
    with rasterio.open(dest) as src:
        assert (src.width, src.height, src.count, src.dtypes[0]) == (1100, 1030, 3, dtype)
        assert src.transform == job.grid.transform and src.crs.to_epsg() == 32636
        assert src.block_shapes[0] == (512, 512)
        data = src.read()
    want = expected_pixels(job.grid, 3, dtype)
    # every tile boundary, one pixel either side, explicitly ...
    for t in job.tiles:
        r, c = int(t.window.row_off), int(t.window.col_off)
        for rr in {max(r - 1, 0), r, min(r + t.height, 1029), r + t.height - 1}:
            np.testing.assert_array_equal(data[:, rr, :], want[:, rr, :])
        for cc in {max(c - 1, 0), c, min(c + t.width, 1099), c + t.width - 1}:
            np.testing.assert_array_equal(data[:, :, cc], want[:, :, cc])
    # ... and everything
    np.testing.assert_array_equal(data, want)


def test_tiles_written_in_any_order_from_threads(tmp_path: Path) -> None:
    job = make_job(tmp_path, max_px=300)
    payloads = {t.name: tile_bytes(job.grid, t) for t in job.tiles}
    with PartFile(job.destination, job.grid, job.bands, job.dtype) as part, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda t: part.write_tile(t, payloads[t.name]), reversed(job.tiles)))
        part.commit()
    with rasterio.open(job.destination) as src:
        np.testing.assert_array_equal(src.read(), expected_pixels(job.grid, 3, "uint16"))


def test_numpy_arrays_are_accepted(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    with PartFile(job.destination, job.grid, job.bands, job.dtype) as part:
        for t in job.tiles:
            part.write_tile(t, expected_pixels(job.grid, 3, "uint16", t.window))
        with pytest.raises(ValueError, match="shape"):
            part.write_tile(job.tiles[0], np.zeros((2, 5, 5), "uint16"))
        part.commit()
    with rasterio.open(job.destination) as src:
        np.testing.assert_array_equal(src.read(), expected_pixels(job.grid, 3, "uint16"))


def test_response_without_georeferencing_is_placed_by_the_request(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    with PartFile(job.destination, job.grid, job.bands, job.dtype) as part:
        for t in job.tiles:
            part.write_tile(t, tile_bytes(job.grid, t, crs=None))
        part.commit()
    with rasterio.open(job.destination) as src:
        np.testing.assert_array_equal(src.read(), expected_pixels(job.grid, 3, "uint16"))
    strict = make_job(tmp_path, name="strict.tif")
    with (
        pytest.raises(InvalidResponseError, match="no georeferencing"),
        PartFile(strict.destination, strict.grid, BANDS, "uint16", allow_missing_georef=False) as part,
    ):
        part.write_tile(strict.tiles[0], tile_bytes(strict.grid, strict.tiles[0], crs=None))


# --- invalid responses ------------------------------------------------------------------
def _bad(kind: str, grid: Grid, tile: Tile) -> bytes:
    good = tile_bytes(grid, tile)
    shifted = grid.window_transform(tile.window) @ Affine.translation(1, 0)
    return {
        "band-count": lambda: tile_bytes(grid, tile, bands=2),
        "size": lambda: tile_bytes(grid, tile, size=(tile.width - 1, tile.height)),
        "crs": lambda: tile_bytes(grid, tile, crs="EPSG:32637"),
        "dtype": lambda: tile_bytes(grid, tile, dtype="float32"),
        "transform": lambda: tile_bytes(grid, tile, transform=shifted),
        "truncated": lambda: good[: len(good) // 2],
        "truncated-uncompressed": lambda: tile_bytes(grid, tile, compress=None)[:-5000],
        "garbage": lambda: b"<html>502 Bad Gateway</html>",
        "json-error": lambda: json.dumps({"error": {"status": 400, "message": "x"}}).encode(),
        "empty": lambda: b"",
    }[kind]()


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("band-count", "2 bands, expected 3"),
        ("size", "size 366x"),
        ("crs", "CRS EPSG:32637, expected EPSG:32636"),
        ("dtype", "data type float32, expected uint16"),
        ("transform", "transform"),
        ("truncated", "cannot be decoded"),
        ("truncated-uncompressed", "cannot be decoded"),
        ("garbage", "cannot be decoded"),
        ("json-error", "cannot be decoded"),
        ("empty", "empty"),
    ],
)
def test_invalid_response_raises_and_leaves_nothing(tmp_path: Path, kind: str, match: str) -> None:
    job = make_job(tmp_path)
    tile = job.tiles[4]  # the centre tile
    with (
        pytest.raises(InvalidResponseError, match=match),
        PartFile(job.destination, job.grid, job.bands, job.dtype) as part,
    ):
        part.write_tile(job.tiles[0], tile_bytes(job.grid, job.tiles[0]))
        part.write_tile(tile, _bad(kind, job.grid, tile))
    assert leftovers(job.destination.parent) == []


def test_exception_inside_with_leaves_no_part_and_no_destination(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    with pytest.raises(KeyboardInterrupt), PartFile(job.destination, job.grid, BANDS, "uint16") as part:
        part.write_tile(job.tiles[0], tile_bytes(job.grid, job.tiles[0]))
        assert part_path(job.destination).exists()
        raise KeyboardInterrupt
    assert leftovers(job.destination.parent) == []


def test_commit_with_missing_tiles_fails_cleanly(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    with pytest.raises(DownloadError, match="pixels were written"), PartFile(
        job.destination, job.grid, BANDS, "uint16"
    ) as part:
        for t in job.tiles[:-1]:
            part.write_tile(t, tile_bytes(job.grid, t))
        part.write_tile(job.tiles[0], tile_bytes(job.grid, job.tiles[0]))  # a retry counts once
        part.commit()
    assert leftovers(job.destination.parent) == []


def test_leaving_without_commit_discards(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    with PartFile(job.destination, job.grid, BANDS, "uint16") as part:
        part.write_tile(job.tiles[0], tile_bytes(job.grid, job.tiles[0]))
    assert leftovers(job.destination.parent) == []


# --- commit: tags and sidecar -----------------------------------------------------------
def test_commit_writes_tags_descriptions_and_sidecar(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    signed = "https://blob.example.net/x/B04.tif?st=2024&sig=SECRET"
    job.acquisition.items[0].assets["B04"].href = signed
    with PartFile(job.destination, job.grid, job.bands, job.dtype) as part:
        for t in job.tiles:
            part.write_tile(t, tile_bytes(job.grid, t))
        tags = tags_for(job.acquisition, job.bands, provider="cdse", synthetic=True)
        tags["source url"] = signed
        part.commit(tags, items=job.acquisition.items)
    with rasterio.open(job.destination) as src:
        t = src.tags()
        assert src.descriptions == BANDS
    assert t[COMPLETE_TAG] == "1"
    assert t["ITEM_IDS"] == "S2A_MSIL2A_20220121T083201_N0400_R021_T36RXV_20220121T105105"
    assert t["ACQUISITION_DATETIME"] == "2022-01-21T08:32:01Z"
    assert t["TIFFTAG_DATETIME"] == "2022:01:21 08:32:01"
    assert t["CLOUD_COVER"] == "12.50" and t["PLATFORM"] == "S2A" and t["RELATIVE_ORBIT"] == "21"
    assert t["BANDS"] == "B04,B03,B02" and t["PROVIDER"] == "cdse" and t["SYNTHETIC"] == "true"
    assert t["STACFETCH_VERSION"]
    assert t["SOURCE_URL"] == "https://blob.example.net/x/B04.tif"
    assert "SECRET" not in json.dumps(t)
    side = json.loads(sidecar_path(job.destination).read_text())
    assert side["type"] == "FeatureCollection"
    assert [f["id"] for f in side["features"]] == list(job.acquisition.item_ids)
    assert "SECRET" not in sidecar_path(job.destination).read_text()
    assert leftovers(job.destination.parent) == sorted([job.destination.name, job.destination.name + ".json"])


def test_commit_replaces_an_older_file(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job.destination.parent.mkdir(parents=True)
    job.destination.write_bytes(b"old")
    part_path(job.destination).write_bytes(b"stale part from a crash")
    write_job(job)
    assert is_complete(job.destination, job.grid, BANDS, "uint16")


# --- is_complete ------------------------------------------------------------------------
def test_is_complete_true_and_false_cases(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    dest = job.destination
    assert not is_complete(dest, job.grid, BANDS, "uint16")  # nothing yet
    write_job(job)
    assert is_complete(dest, job.grid, BANDS, "uint16")
    assert is_complete(dest, job.grid, BANDS, "uint16", deep=True)
    assert not is_complete(dest, make_grid(width=1101), BANDS, "uint16")
    assert not is_complete(dest, make_grid(res=20.0), BANDS, "uint16")
    assert not is_complete(dest, make_grid(crs="EPSG:32637"), BANDS, "uint16")
    assert not is_complete(dest, job.grid, ("B04", "B03"), "uint16")
    assert not is_complete(dest, job.grid, ("B02", "B03", "B04"), "uint16")
    assert not is_complete(dest, job.grid, BANDS, "float32")
    sidecar_path(dest).rename(tmp_path / "aside.json")
    assert not is_complete(dest, job.grid, BANDS, "uint16")
    (tmp_path / "aside.json").rename(sidecar_path(dest))
    # a .part alone is never complete
    dest.rename(part_path(dest))
    assert not is_complete(dest, job.grid, BANDS, "uint16")
    assert discard_partial(dest) and not part_path(dest).exists()
    assert not discard_partial(dest)


def test_is_complete_false_without_tag(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    dest = job.destination
    dest.parent.mkdir(parents=True)
    with rasterio.open(dest, "w", **profile_for(job.grid, BANDS, "uint16")) as dst:
        dst.write(expected_pixels(job.grid, 3, "uint16"))
        dst.descriptions = BANDS
    sidecar_path(dest).write_text('{"type": "FeatureCollection", "features": []}')
    assert not is_complete(dest, job.grid, BANDS, "uint16")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_is_complete_false_for_corrupt_files(tmp_path: Path, damage: str) -> None:
    job = make_job(tmp_path)
    dest = write_job(job)
    raw = dest.read_bytes()
    dest.write_bytes({"truncate": raw[: len(raw) // 3], "garbage": b"\x00" * 4096, "empty": b""}[damage])
    assert not is_complete(dest, job.grid, BANDS, "uint16", deep=True)


# --- manifest ---------------------------------------------------------------------------
def _check_catalog(path: Path) -> dict[str, pystac.Item]:
    catalog = pystac.Catalog.from_file(str(path))
    items = {it.id: it for it in catalog.get_items()}
    for item in items.values():
        asset = item.assets["data"]
        raw = json.loads(Path(item.get_self_href()).read_text())
        assert not raw["assets"]["data"]["href"].startswith("/")  # relative href on disk
        file = Path(asset.get_absolute_href())
        assert file.is_file()
        assert asset.extra_fields["file:checksum"] == "1220" + hashlib.sha256(file.read_bytes()).hexdigest()
        assert asset.extra_fields["file:size"] == file.stat().st_size
        assert Path(item.assets["source-items"].get_absolute_href()).is_file()
    return items


def test_manifest_round_trip_merge_and_prune(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, name=f"2022-01-2{i}T083201_S2A_R021.tif", max_px=600) for i in range(3)]
    for j in jobs:
        write_job(j)
    root = jobs[0].area_dir
    path = write_manifest(root, [record_for(jobs[0]), record_for(jobs[1], synthetic=True)])
    assert path == root / "catalog.json"
    items = _check_catalog(path)
    assert sorted(items) == ["2022-01-20T083201_S2A_R021", "2022-01-21T083201_S2A_R021"]
    first = items["2022-01-20T083201_S2A_R021"]
    assert first.properties["stacfetch:item_ids"] == list(jobs[0].acquisition.item_ids)
    assert first.properties["eo:cloud_cover"] == 12.5
    assert first.properties["proj:code"] == "EPSG:32636"
    assert first.properties["proj:shape"] == [1030, 1100]
    assert items["2022-01-21T083201_S2A_R021"].properties["stacfetch:synthetic"] is True
    assert first.datetime == T0
    raw_catalog = json.loads(path.read_text())
    assert all(not link["href"].startswith("/") for link in raw_catalog["links"])

    # resume: a later run adds one file; earlier entries stay
    write_manifest(root, [record_for(jobs[2])])
    assert len(_check_catalog(path)) == 3

    # a file that disappeared is dropped, together with its item JSON
    jobs[1].destination.unlink()
    write_manifest(root, [])
    items = _check_catalog(path)
    assert sorted(items) == ["2022-01-20T083201_S2A_R021", "2022-01-22T083201_S2A_R021"]
    assert sorted(p.name for p in (root / "items").iterdir()) == [
        "2022-01-20T083201_S2A_R021.json", "2022-01-22T083201_S2A_R021.json"]
    assert not [p for p in root.rglob("*.tmp")]


def test_manifest_refuses_records_outside_root_or_missing(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    write_job(job)
    record = record_for(job)
    with pytest.raises(ValueError, match="not inside"):
        write_manifest(tmp_path / "elsewhere", [record])
    job.destination.unlink()
    with pytest.raises(FileNotFoundError):
        write_manifest(job.area_dir, [record])


def test_damaged_manifest_is_rebuilt(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    write_job(job)
    job.area_dir.joinpath("catalog.json").write_text("{not json")
    path = write_manifest(job.area_dir, [record_for(job)])
    assert len(_check_catalog(path)) == 1


def test_sha256_file(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"abc" * 1000)
    assert sha256_file(f, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_partfile_from_profile_and_manifest_from_mappings_at_out_dir(tmp_path: Path) -> None:
    """The shapes run.py uses: PartFile's one constructor and dict records, manifest at out/."""
    job = make_job(tmp_path)
    with PartFile(job.destination, job.grid, job.bands, job.dtype) as part:
        assert part.grid == job.grid and part.dtype == "uint16"
        for t in job.tiles:
            part.write_tile(t, tile_bytes(job.grid, t))
        part.commit(tags={"ITEM_IDS": "x", "ACQUISITION_DATETIME": "2022-01-21T08:32:01Z"},
                    band_descriptions=job.bands,
                    items=[it.to_dict(transform_hrefs=False) for it in job.acquisition.items])
    assert is_complete(job.destination, job.grid, BANDS, "uint16")
    with rasterio.open(job.destination) as src:
        assert src.tags()["TIFFTAG_DATETIME"] == "2022:01:21 08:32:01"
    out = tmp_path / "out"
    path = write_manifest(out, [{"job": job, "path": job.destination,
                                 "sha256": sha256_file(job.destination),
                                 "size": job.destination.stat().st_size}])
    assert path == out / "catalog.json"
    (item_id,) = _check_catalog(path)
    # the file's path relative to the root, "/" -> "__" (issue 13: STAC tools want ids without "/")
    assert item_id == "sentinel-2-l2a__area-1234__2022-01-21T083201_S2A_R021"
    with pytest.raises(TypeError):
        PartFile(job.destination, job.grid)


def test_block_aligned_tiles_leave_no_dead_space(tmp_path: Path) -> None:
    grid = make_grid()
    job = make_job(tmp_path)
    job = Job(job.acquisition, grid, tuple(cut_tiles(grid, 1024, align=512)), BANDS, "uint16",
              job.destination)
    assert [t.width for t in job.tiles if t.row == 0] == [1024, 76]
    write_job(job)
    clean = tmp_path / "clean.tif"
    profile = profile_for(grid, BANDS, "uint16")
    with rasterio.open(job.destination) as src, rasterio.open(clean, "w", **profile) as dst:
        dst.write(src.read())
        np.testing.assert_array_equal(src.read(), expected_pixels(grid, 3, "uint16"))
    assert job.destination.stat().st_size <= clean.stat().st_size * 1.01 + 4096


# --- one tile for the whole grid: the response is tagged in place, not re-encoded ---------
@pytest.mark.parametrize("fmt", ["cog", "gtiff", "raw"])
def test_a_whole_grid_response_cut_in_its_last_strip_is_refused(tmp_path: Path, fmt: str) -> None:
    job = make_job(tmp_path, grid=make_grid(300, 200), max_px=2500)
    (tile,) = job.tiles
    good = tile_bytes(job.grid, tile, compress=None)
    # GDAL writes the IFD first, so the cut body still opens; only its pixels are missing
    with rasterio.MemoryFile(good[:-10]) as mem, mem.open() as src:
        assert (src.width, src.height) == (300, 200)
    with PartFile(job.destination, job.grid, job.bands, job.dtype, fmt=fmt) as part:
        with pytest.raises(InvalidResponseError, match="cannot be decoded"):
            part.write_tile(tile, good[:-10])
        part.write_tile(tile, good)  # asked again: the good body is taken
        part.commit()
    with rasterio.open(job.destination) as src:
        np.testing.assert_array_equal(src.read(), expected_pixels(job.grid, 3, "uint16"))
    assert sorted(p.name for p in job.destination.parent.iterdir()) == [
        job.destination.name, job.destination.name + ".json"]


@pytest.mark.parametrize("fmt", ["cog", "raw"])
def test_a_whole_grid_response_keeps_its_bytes_and_gains_georeferencing_and_tags(
    tmp_path: Path, fmt: str
) -> None:
    job = make_job(tmp_path, grid=make_grid(300, 200), max_px=2500)
    (tile,) = job.tiles
    body = tile_bytes(job.grid, tile, crs=None, compress=None)
    with PartFile(job.destination, job.grid, job.bands, job.dtype, fmt=fmt) as part:
        part.write_tile(tile, body)
        part.commit(tags_for(job.acquisition, job.bands, provider="test"))
    with rasterio.open(job.destination) as src:
        assert src.crs == rasterio.crs.CRS.from_user_input(job.grid.crs)
        assert src.transform == job.grid.transform and src.nodata == 0
        assert src.descriptions == BANDS and src.tags()["STACFETCH_COMPLETE"] == "1"
        np.testing.assert_array_equal(src.read(), expected_pixels(job.grid, 3, "uint16"))
    if fmt == "raw":  # the pixel bytes are the response's, at the same place
        pixels = expected_pixels(job.grid, 3, "uint16").transpose(1, 2, 0).tobytes()
        assert body.find(pixels) == job.destination.read_bytes().find(pixels) > 0
    assert is_complete(job.destination, job.grid, job.bands, job.dtype, fmt=fmt)


@pytest.mark.parametrize("fmt", ["cog", "gtiff", "raw"])
def test_a_copy_cut_short_is_caught_without_decoding(tmp_path: Path, fmt: str) -> None:
    from stacfetch.raster.formats import check_copy as _check_copy
    from stacfetch.raster.formats import copy_as as _copy_as

    job = make_job(tmp_path, grid=make_grid(1100, 700), max_px=2500)
    source = tmp_path / "source.tif"
    source.write_bytes(tile_bytes(job.grid, job.tiles[0], compress=None))
    with rasterio.open(source, "r+") as src:
        src.update_tags(STACFETCH_COMPLETE="1")
    target = tmp_path / "copy.tif"
    _copy_as(source, target, fmt, BANDS, "uint16")
    samples = 1100 * 700 * 3
    _check_copy(target, samples)  # whole: accepted
    data = target.read_bytes()
    target.write_bytes(data[:-1000])  # what a full disk leaves: the directory, not the last tiles
    with pytest.raises(OSError, match="cut short|incomplete"):
        _check_copy(target, samples)


def test_importing_the_writing_modules_changes_no_environment() -> None:
    """GDAL settings are data a run enters (raster.profiles.GDAL_OPTIONS), not os.environ at import."""
    code = (
        "import os, rasterio\n"  # rasterio itself sets its CA bundle variables at import
        "before = dict(os.environ)\n"
        "import stacfetch.raster, stacfetch.stac.manifest, stacfetch.run\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "assert not changed, changed\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
