"""open_dataset and stats over a real sandbox run: pixels, masks, laziness, coordinates, sources."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio

import stacfetch
from stacfetch.errors import InvalidOptionError

xr = pytest.importorskip("xarray")
pytest.importorskip("rioxarray")
pytest.importorskip("dask")

# Half of this area lies east of the 36.05 E edge of one orbit track's tiles: the files of
# that track's passes are half no-data (masked), the others are whole.
EDGE = [36.05, 31.5]
BANDS = ("B03", "B04", "B08", "SCL")
CLEAR = (4, 5, 6, 11)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cube")
    result = stacfetch.get(EDGE, "2022-01-01", "2022-01-09", size=3000, bands=",".join(BANDS),
                           resolution=20, provider="sandbox", out=out)
    assert len(result.paths) >= 6 and not result.failed
    return result


def expected_arrays(path: Path) -> dict[str, np.ndarray]:
    """Each band of ``path`` as the cube should hold it, computed straight from rasterio."""
    with rasterio.open(path) as src:
        data = src.read(masked=True)
        out = {}
        for i, name in enumerate(src.descriptions):
            if name == "SCL":
                out[name] = np.where(data.mask[i], 0, data.data[i]).astype("uint8")
            else:
                values = data.data[i] * src.scales[i] + src.offsets[i]
                out[name] = np.where(data.mask[i], np.nan, values)
    return out


def test_cube_equals_the_files_pixel_for_pixel(run) -> None:
    ds = stacfetch.open_dataset(run)
    assert list(ds.data_vars) == list(BANDS)
    assert ds.sizes["time"] == len(run.paths)
    masked = 0
    for t, path in enumerate(run.paths):
        want = expected_arrays(path)
        for name in BANDS:
            got = ds[name].isel(time=t).values
            if name == "SCL":
                assert got.dtype == np.uint8
                np.testing.assert_array_equal(got, want[name])
            else:
                assert got.dtype == np.float32
                np.testing.assert_array_equal(np.isnan(got), np.isnan(want[name]))
                np.testing.assert_allclose(got, want[name], rtol=1e-6, equal_nan=True)
                masked += int(np.isnan(got).sum())
    assert masked > 0  # the test area has masked pixels to compare
    assert 0.0 < float(ds.B04.mean()) < 1.0  # reflectance, not digital numbers


def test_nothing_is_read_before_compute(run, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for method in ("read", "read_masks"):
        original = getattr(rasterio.io.DatasetReader, method)

        def counting(self, *args, _original=original, _name=method, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(rasterio.io.DatasetReader, method, counting)
    ds = stacfetch.open_dataset(run.paths[0].parent)
    ndvi = (ds.B08 - ds.B04) / (ds.B08 + ds.B04)
    series = ndvi.where(ds.SCL.isin(CLEAR)).mean(("x", "y"))
    assert calls == [] and series.chunks is not None
    values = series.compute()
    assert calls and values.sizes["time"] == len(run.paths)


def test_time_band_and_crs_coordinates(run) -> None:
    ds = stacfetch.open_dataset(run)
    with rasterio.open(run.paths[0]) as src:
        crs, transform, tags = src.crs, src.transform, src.tags()
        width, height = src.width, src.height
    assert ds.rio.crs == crs and ds.rio.crs.to_epsg() == 32637
    assert ds.rio.transform() == transform
    assert ds.sizes["x"] == width and ds.sizes["y"] == height
    assert float(ds.x[0]) == transform.c + transform.a / 2 and float(ds.y[0]) == transform.f + transform.e / 2
    stamps = []
    for path in run.paths:
        with rasterio.open(path) as src:
            stamps.append(src.tags()["ACQUISITION_DATETIME"])
    want = [datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ") for s in sorted(stamps)]
    assert [t.astype("datetime64[s]").item() for t in ds.time.values] == want
    assert ds.item_ids.values[0] == tags["ITEM_IDS"] and ds.platform.values[0] == tags["PLATFORM"]
    assert float(ds.cloud_cover.values[0]) == float(tags["CLOUD_COVER"])
    assert ds.B04.attrs["description"].startswith("red") and ds.B04.attrs["common_name"] == "red"
    assert ds.attrs["synthetic"] == "true" and "B08: NIR" in ds.attrs["band_descriptions"]


def test_every_kind_of_source_gives_the_same_cube(run) -> None:
    area = run.paths[0].parent
    out = area.parent.parent
    reference = stacfetch.open_dataset(run, bands="B04,SCL")
    for source in (area, out, str(out / "catalog.json"), str(area), [str(p) for p in run.paths]):
        ds = stacfetch.open_dataset(source, bands=["B04", "SCL"], chunks=64)
        assert list(ds.data_vars) == ["B04", "SCL"]
        assert ds.B04.data.chunksize[1:] == (64, 64)
        xr.testing.assert_identical(ds.compute(), reference.compute())
    with pytest.raises(InvalidOptionError, match="B12 is not in these files") as exc:
        stacfetch.open_dataset(run, bands="B12")
    assert "B03,B04,B08,SCL" in str(exc.value)


def test_several_areas_ask_which_one(run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(run.paths[0].parent.parent.parent, out)
    other = stacfetch.get(EDGE, "2022-01-01", "2022-01-02", size=2000, bands="B04", resolution=20,
                          provider="sandbox", out=out)
    with pytest.raises(InvalidOptionError, match="holds 2 area folders") as exc:
        stacfetch.open_dataset(out)
    areas = sorted({p.parent.name for p in [*run.paths, *other.paths]})
    assert all(name in str(exc.value) for name in areas)
    with pytest.raises(InvalidOptionError, match="holds 2 area folders"):
        stacfetch.open_dataset(out / "catalog.json")
    one = stacfetch.open_dataset(Path(other.paths[0]).parent)
    assert list(one.data_vars) == ["B04"]


def test_internal_mask_band_without_nodata_value(run, tmp_path: Path) -> None:
    """Files masked by a per-dataset mask band (nodata None): NaN follows the mask, not zeros."""
    source = next(p for p in run.paths if (rasterio.open(p).read_masks(1) == 0).any())
    area = tmp_path / "masked"
    area.mkdir()
    target = area / source.name
    with rasterio.open(source) as src:
        data, mask = src.read(), src.read_masks(1)
        profile = {**src.profile, "nodata": None}
        tags, scales, offsets, names = src.tags(), src.scales, src.offsets, src.descriptions
    data[:, mask == 0] = 7  # values under the mask must not show
    zeros = np.zeros(mask.shape, dtype=bool)
    zeros[:, :5] = mask[:, :5] != 0
    assert zeros.any()
    data[:2, zeros] = 0  # a real 0 where the mask says data must stay 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(target, "w", **profile) as dst:
        dst.write(data)
        dst.write_mask(mask)
        dst.update_tags(**tags)
        dst.scales, dst.offsets = scales, offsets
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    with rasterio.open(target) as check:
        assert check.nodata is None and check.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]
    ds = stacfetch.open_dataset(area).isel(time=0).compute()
    for name in ("B03", "B04", "B08"):
        np.testing.assert_array_equal(np.isnan(ds[name].values), mask == 0)
    assert (ds.B03.values[zeros] == 0).all() and (ds.B04.values[zeros] == 0).all()
    assert (ds.SCL.values[mask == 0] == 0).all()
    unmasked = stacfetch.open_dataset(area, mask=False).isel(time=0)
    assert not np.isnan(unmasked.B04.values).any() and (unmasked.SCL.values[mask == 0] == 7).all()


def test_stats_agree_with_numpy_on_the_files(run) -> None:
    frame = stacfetch.stats(run, index="ndvi")
    assert len(frame) == len(run.paths)
    assert list(frame.columns[:7]) == ["date", "platform", "clear_percent", "pixels", "ndvi_mean",
                                       "ndvi_median", "ndvi_std"]
    for row, path in zip(frame.itertuples(), run.paths, strict=True):
        with rasterio.open(path) as src:
            names = list(src.descriptions)
            data = src.read(masked=True)
            red = data[names.index("B04")].astype("float64") * src.scales[names.index("B04")]
            nir = data[names.index("B08")].astype("float64") * src.scales[names.index("B08")]
            scl = data[names.index("SCL")].filled(0)
            when = datetime.strptime(src.tags()["ACQUISITION_DATETIME"], "%Y-%m-%dT%H:%M:%SZ")
        ok = ~np.ma.getmaskarray(red) & ~np.ma.getmaskarray(nir) & np.isin(scl, CLEAR)
        ok &= (red + nir).filled(0) != 0
        ndvi = ((nir - red) / (nir + red)).filled(np.nan)[ok]
        assert row.date == when.replace(tzinfo=timezone.utc)
        assert row.pixels == ok.sum() > 0
        assert row.clear_percent == pytest.approx(np.isin(scl, CLEAR).sum() * 100 / (scl != 0).sum())
        assert row.ndvi_mean == pytest.approx(ndvi.mean(), rel=1e-6)
        assert row.ndvi_median == pytest.approx(np.median(ndvi), rel=1e-6)
        assert row.ndvi_std == pytest.approx(ndvi.std(), rel=1e-6)
    ndwi = stacfetch.stats(run.paths[0].parent, index="NDWI")
    assert "ndwi_mean" in ndwi.columns and ndwi.ndwi_mean.notna().all()
    with pytest.raises(InvalidOptionError, match="unknown index 'evi2'") as exc:
        stacfetch.stats(run, index="evi2")
    assert "ndvi" in str(exc.value)
    with pytest.raises(InvalidOptionError, match="nbr needs B08 and B12"):
        stacfetch.stats(run, index="nbr")


def test_import_stays_light_and_missing_extra_names_the_install(tmp_path: Path) -> None:
    code = (
        "import sys, stacfetch\n"
        "assert 'xarray' not in sys.modules and 'rasterio' not in sys.modules\n"
        "import stacfetch.indices\n"
        "assert callable(stacfetch.stats) and callable(stacfetch.open_dataset)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    missing = (
        "import sys\n"
        "sys.modules['xarray'] = None\n"
        "import stacfetch\n"
        f"stacfetch.open_dataset({str(tmp_path)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", missing], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "MissingExtraError" in proc.stderr and "pip install 'stacfetch[xarray]'" in proc.stderr
