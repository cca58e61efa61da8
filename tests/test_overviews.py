"""Overview pyramids made in bounded memory (stacfetch.raster.overviews) and the COGs built from them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_outputs import cog_errors  # tests/ is on sys.path (no package)

from stacfetch.raster import formats as write
from stacfetch.raster.formats import copy_as as _copy_as
from stacfetch.raster.formats import discard_partial
from stacfetch.raster.overviews import (
    discard,
    halve,
    halve_masked,
    level_count,
    level_paths,
    pyramid,
    vrt_path,
)


def reference_mean(block: np.ndarray, nodata: int) -> np.ndarray:
    """2 x 2 means skipping nodata, cell by cell in plain Python (the slow obvious way)."""
    bands, rows, cols = block.shape
    out = np.zeros((bands, math.ceil(rows / 2), math.ceil(cols / 2)), block.dtype)
    for b in range(bands):
        for r in range(out.shape[1]):
            for c in range(out.shape[2]):
                cell = block[b, 2 * r: 2 * r + 2, 2 * c: 2 * c + 2]
                rr, cc = np.meshgrid([2 * r, min(2 * r + 1, rows - 1)], [2 * c, min(2 * c + 1, cols - 1)],
                                     indexing="ij")
                cell = block[b, rr, cc].ravel()  # odd edges repeat their last row/column
                valid = [int(v) for v in cell if v != nodata]
                out[b, r, c] = int(math.floor(sum(valid) / len(valid) + 0.5)) if valid else nodata
    return out


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
              elements=st.sampled_from([0, 0, 1, 2, 999, 10000, 65535])))
def test_halve_is_the_rounded_mean_of_valid_samples(block: np.ndarray) -> None:
    np.testing.assert_array_equal(halve(block, 0, True), reference_mean(block, 0))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.just(1), st.integers(1, 8), st.integers(1, 8)),
              elements=st.sampled_from([0.0, np.nan, 0.25, 0.5, 1.0])))
def test_halve_floats_skip_nodata_and_nan(block: np.ndarray) -> None:
    out = halve(block, 0.0, True)
    clean = np.where(np.isnan(block), 0.0, block).astype(np.float32)
    np.testing.assert_allclose(out, stacked_mean(clean), rtol=1e-6)


def stacked_mean(block: np.ndarray) -> np.ndarray:
    """The 2 x 2 mean of valid (non-zero) samples written another way (float64): rounded for
    integers, exact for floats."""
    rows, cols = block.shape[1:]
    padded = np.pad(block, ((0, 0), (0, rows % 2), (0, cols % 2)), mode="edge").astype(np.float64)
    cells = np.stack([padded[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)])
    count = (cells != 0).sum(axis=0)
    mean = cells.sum(axis=0) / np.maximum(count, 1)
    if block.dtype.kind != "f":
        mean = np.floor(mean + 0.5)
    return np.where(count > 0, mean, 0).astype(block.dtype)


def test_halve_nearest_keeps_class_values() -> None:
    scl = np.array([[[4, 8, 9], [5, 6, 3], [11, 0, 4]]], np.uint8)
    np.testing.assert_array_equal(halve(scl, 0, False), [[[4, 9], [11, 4]]])


@pytest.mark.parametrize(("size", "levels"), [((512, 512), 0), ((601, 601), 0), ((1022, 4000), 0),
                                              ((1023, 1023), 1), ((2001, 2001), 1), ((2045, 2045), 2),
                                              ((5001, 5001), 3), ((513, 100), 0), ((2500, 300), 0)])
def test_levels_stop_before_a_smaller_side_under_one_block(size: tuple[int, int], levels: int) -> None:
    assert level_count(*size, 512) == levels


def reference_masked(block: np.ndarray, mask: np.ndarray, average: bool) -> tuple[np.ndarray, np.ndarray]:
    """``halve_masked`` cell by cell: the mean (or first) of the valid samples, 255 if any is valid."""
    bands, rows, cols = block.shape
    out = np.zeros((bands, math.ceil(rows / 2), math.ceil(cols / 2)), block.dtype)
    out_mask = np.zeros(out.shape[1:], np.uint8)
    for r in range(out.shape[1]):
        for c in range(out.shape[2]):
            cells = [(min(2 * r + dy, rows - 1), min(2 * c + dx, cols - 1)) for dy in (0, 1) for dx in (0, 1)]
            valid = [(y, x) for y, x in cells if mask[y, x]]
            out_mask[r, c] = 255 if valid else 0
            for b in range(bands):
                values = [int(block[b, y, x]) for y, x in valid]
                if values:
                    out[b, r, c] = int(math.floor(sum(values) / len(values) + 0.5)) if average else values[0]
    return out, out_mask


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 2), st.integers(1, 7), st.integers(1, 7)),
              elements=st.sampled_from([0, 1, 2, 999, 65535])), st.booleans(), st.data())
def test_halve_masked_averages_or_picks_valid_samples_only(block: np.ndarray, average: bool,
                                                           data: st.DataObject) -> None:
    mask = data.draw(arrays(np.uint8, block.shape[1:], elements=st.sampled_from([0, 255])))
    got, got_mask = halve_masked(block, mask, average)
    want, want_mask = reference_masked(block, mask, average)
    np.testing.assert_array_equal(got_mask, want_mask)
    np.testing.assert_array_equal(got, want)


def write_mosaic(path: Path, data: np.ndarray, *, scale: float = 1e-4, mask: np.ndarray | None = None) -> None:
    """A tiled mosaic with nodata 0, or, given ``mask``, with an internal mask band and no nodata."""
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": "EPSG:32636", "nodata": 0 if mask is None else None, "tiled": True,
               "blockxsize": 512, "blockysize": 512,
               "transform": Affine(10, 0, 600000, 0, -10, 3500000)}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if mask is not None:
            dst.write_mask(mask)
        dst.descriptions = tuple(f"B{i:02d}" for i in range(1, data.shape[0] + 1))
        dst.scales = (scale,) * data.shape[0]
        dst.update_tags(STACFETCH_COMPLETE="1", ACQUISITION_DATETIME="2022-01-21T08:32:01Z")


def test_a_large_cog_gets_our_pyramid_with_every_level_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write, "SMALL_COPY_PIXELS", 1000)  # this small mosaic counts as large
    rng = np.random.default_rng(7)
    data = rng.integers(1, 10000, size=(2, 2200, 2100), dtype=np.uint16)
    data[:, :40, :] = 0  # a nodata margin, as outside a swath
    source, target = tmp_path / "a.tif.part", tmp_path / "a.tif.cog.part"
    write_mosaic(source, data)
    _copy_as(source, target, "cog", ["B04", "B08"], "uint16")
    assert not list(tmp_path.glob("*.tmp"))  # levels and VRT removed
    expected = data
    with rasterio.open(target) as cog:
        assert cog.overviews(1) == [2, 4]  # 2100 -> 1050 -> 525 (the next, 263, < 512)
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert cog.descriptions == ("B01", "B02") and cog.scales == (1e-4, 1e-4) and cog.nodata == 0
        assert cog.tags()["ACQUISITION_DATETIME"] == "2022-01-21T08:32:01Z"
        np.testing.assert_array_equal(cog.read(), data)
    for level in range(2):
        expected = stacked_mean(expected)
        with rasterio.open(target, OVERVIEW_LEVEL=level) as ov:
            np.testing.assert_array_equal(ov.read(), expected)
            assert ov.transform == Affine(10 * 2 ** (level + 1), 0, 600000, 0, -10 * 2 ** (level + 1), 3500000)


@pytest.mark.parametrize("bands", [["B04", "B08"], ["B04", "SCL"]])  # AVERAGE, NEAREST
def test_a_large_masked_cog_gets_our_pyramid_with_its_mask_in_every_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bands: list[str]
) -> None:
    monkeypatch.setattr(write, "SMALL_COPY_PIXELS", 1000)  # this small mosaic counts as large
    rng = np.random.default_rng(11)
    data = rng.integers(0, 10000, size=(2, 2100, 2200), dtype=np.uint16)  # valid zeros included
    mask = np.full(data.shape[1:], 255, np.uint8)
    mask[:, :333] = 0  # outside a swath
    mask[rng.random(mask.shape) < 0.2] = 0  # scattered no data (clouds cut out, say)
    data[:, mask == 0] = 0
    source, target = tmp_path / "m.tif.part", tmp_path / "m.tif.cog.part"
    write_mosaic(source, data, mask=mask)
    _copy_as(source, target, "cog", bands, "uint16")
    assert not list(tmp_path.glob("*.tmp"))
    assert cog_errors(target) == []
    average = bands == ["B04", "B08"]
    with rasterio.open(target) as cog:
        assert cog.overviews(1) == [2, 4] and cog.nodata is None
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(cog.read(), data)
        np.testing.assert_array_equal(cog.read_masks(1), mask)
    expected, expected_mask = data, mask
    for level in range(2):
        expected, expected_mask = halve_masked(expected, expected_mask, average)
        with rasterio.open(target, OVERVIEW_LEVEL=level) as ov:
            got = ov.read(masked=True)
            np.testing.assert_array_equal(ov.read_masks(1), expected_mask)
            np.testing.assert_array_equal(got.mask[0], expected_mask == 0)
            np.testing.assert_array_equal(got.filled(0), np.where(expected_mask, expected, 0))
    with rasterio.open(target) as cog:  # what a reader asking for a coarse window gets: the overview's mask
        coarse = cog.read_masks(1, out_shape=expected_mask.shape)
        np.testing.assert_array_equal(coarse, expected_mask)


def test_pyramid_temporaries_are_removed_on_error_and_by_discard(tmp_path: Path) -> None:
    data = np.ones((1, 2100, 2100), np.uint16)  # two levels (1050, 525 px)
    source, target = tmp_path / "b.tif.part", tmp_path / "b.tif.cog.part"
    write_mosaic(source, data)
    with pytest.raises(RuntimeError), pyramid(str(source), target, 512, average=True) as vrt:
        assert Path(vrt) == vrt_path(target) and all(p.exists() for p in level_paths(target, 2))
        raise RuntimeError("interrupted")
    assert not list(tmp_path.glob("*.tmp"))
    for leftover in [*level_paths(target, 2), vrt_path(target)]:  # as a killed run leaves them
        leftover.write_bytes(b"x")
    assert discard(target) and not list(tmp_path.glob("*.tmp"))
    level_paths(target, 1)[0].write_bytes(b"x")
    assert discard_partial(tmp_path / "b.tif") and not list(tmp_path.glob("*.tmp"))
