"""The manifest is a STAC catalog other tools load: odc-stac and stackstac read our files right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio

import stacfetch

odc_stac = pytest.importorskip("odc.stac")
stackstac = pytest.importorskip("stackstac")

EDGE = [36.05, 31.5]  # half of some files is no data (see tests/test_dataset.py)
BANDS = ("B04", "B08", "SCL")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("manifest")
    result = stacfetch.get(EDGE, "2022-01-01", "2022-01-07", size=3000, bands=",".join(BANDS),
                           resolution=20, provider="sandbox", out=out)
    assert len(result.paths) >= 4 and result.manifest == out / "catalog.json"
    return result


def file_bands(path: Path) -> dict[str, np.ndarray]:
    with rasterio.open(path) as src:
        return {name: src.read(i) for i, name in enumerate(src.descriptions, start=1)}


def test_items_carry_band_projection_and_raster_metadata(run) -> None:
    items = list(pystac.Catalog.from_file(str(run.manifest)).get_items())
    assert len(items) == len(run.paths)
    raw = json.loads(Path(items[0].get_self_href()).read_text())
    assert "/" not in raw["id"] and raw["properties"]["proj:epsg"] == 32637
    assert raw["properties"]["proj:code"] == "EPSG:32637"
    data = raw["assets"]["data"]
    assert [b["name"] for b in data["eo:bands"]] == list(BANDS)
    assert data["eo:bands"][0]["common_name"] == "red" and data["eo:bands"][0]["center_wavelength"] == 0.6646
    assert data["raster:bands"][0]["data_type"] == "uint16" and data["raster:bands"][0]["scale"] == 0.0001
    assert data["raster:bands"][0]["spatial_resolution"] == 20
    with rasterio.open(run.paths[0]) as src:
        assert raw["properties"]["proj:shape"] == [src.height, src.width]
        assert raw["properties"]["proj:transform"] == list(src.transform)[:6]
    assert "file:checksum" in data and "file:size" in data
    assert set(raw["assets"]) == {"data", "source-items"}  # no extra files: bands live in the data asset
    (first, *_) = stacfetch.manifest_items(run)
    assert first["id"] == raw["id"] and Path(first["assets"]["data"]["href"]) == Path(run.paths[0]).resolve()
    for index, name in enumerate(BANDS, start=1):
        one = first["assets"][name]  # one band of the file, for one-band-per-asset readers
        assert one["href"] == f"vrt://{Path(run.paths[0]).resolve()}?bands={index}"
        assert one["eo:bands"][0]["name"] == name and len(one["raster:bands"]) == 1
        with rasterio.open(one["href"]) as view:
            assert view.count == 1 and view.descriptions == (name,)


def test_odc_stac_loads_the_bands_by_name(run) -> None:
    items = list(pystac.Catalog.from_file(str(run.manifest)).get_items())
    ds = odc_stac.load(items, bands=["B04", "B08"], chunks={})
    assert list(ds.data_vars) == ["B04", "B08"] and ds.sizes["time"] == len(run.paths)
    assert ds.odc.geobox.crs.epsg == 32637
    for t, path in enumerate(run.paths):
        want = file_bands(path)
        np.testing.assert_array_equal(ds.B04.isel(time=t).values, want["B04"])
        np.testing.assert_array_equal(ds.B08.isel(time=t).values, want["B08"])
    via_data = odc_stac.load(items, bands=["data.2"], chunks={})  # the multi-band asset, band 2
    np.testing.assert_array_equal(via_data["data.2"].isel(time=0).values, file_bands(run.paths[0])["B08"])


def test_stackstac_stacks_the_band_assets(run) -> None:
    items = stacfetch.manifest_items(run)
    cube = stackstac.stack(items, assets=["B04", "B08", "SCL"])
    assert list(cube.band.values) == ["B04", "B08", "SCL"] and cube.sizes["time"] == len(run.paths)
    with rasterio.open(run.paths[0]) as src:
        transform, shape = src.transform, src.shape
    assert cube.attrs["crs"].lower() == "epsg:32637" and cube.attrs["transform"] == transform
    assert cube.shape[2:] == shape  # the files' own grid: no resampling
    values = cube.compute()
    masked = 0
    for t, path in enumerate(run.paths):
        want = file_bands(path)
        with rasterio.open(path) as src:
            nodata = src.read_masks(1) == 0
            scale, offset = src.scales[0], src.offsets[0]
        masked += int(nodata.sum())
        red = np.where(nodata, np.nan, want["B04"] * scale + offset)  # rescaled, masked -> NaN
        np.testing.assert_allclose(values.sel(band="B04").isel(time=t).values, red, equal_nan=True)
        scl = values.sel(band="SCL").isel(time=t).values
        np.testing.assert_array_equal(np.nan_to_num(scl, nan=0), want["SCL"])
    assert masked > 0  # the half-covered passes have masked pixels to compare


def test_rewriting_upgrades_an_older_manifest_one_item_per_file(run, tmp_path: Path) -> None:
    """An older manifest (ids with "/", no band metadata) is upgraded in place."""
    import shutil

    from stacfetch.stac.manifest import write_manifest

    out = tmp_path / "out"
    shutil.copytree(Path(run.manifest).parent, out)
    for path in (out / "items").glob("*.json"):  # as written before issue 13
        raw = json.loads(path.read_text())
        raw["id"] = raw["id"].replace("__", "/")
        for key in ("eo:bands", "raster:bands"):
            raw["assets"]["data"].pop(key)
        del raw["properties"]["proj:epsg"]
        path.write_text(json.dumps(raw))
    victim = sorted(out.rglob("*.tif"))[0]
    victim.unlink()
    write_manifest(out, [])
    items = stacfetch.manifest_items(out)
    assert len(items) == len(run.paths) - 1 and all("/" not in it["id"] for it in items)
    assert len(list((out / "items").glob("*.json"))) == len(items)
    for it in items:
        assert [b["name"] for b in it["assets"]["data"]["eo:bands"]] == list(BANDS)
        assert it["properties"]["proj:epsg"] == 32637 and set(BANDS) <= set(it["assets"])


def test_manifest_items_needs_one_area(run, tmp_path: Path) -> None:
    import shutil

    from stacfetch.errors import InvalidOptionError

    out = tmp_path / "out"
    shutil.copytree(Path(run.manifest).parent, out)
    stacfetch.get(EDGE, "2022-01-01", "2022-01-02", size=2000, bands="B04", resolution=20,
                  provider="sandbox", out=out)
    with pytest.raises(InvalidOptionError, match="lists 2 area folders"):
        stacfetch.manifest_items(out)
    area = Path(run.paths[0]).parent.name
    items = stacfetch.manifest_items(next(out.rglob(area)))
    assert len(items) == len(run.paths) and all(Path(it["assets"]["data"]["href"]).is_file() for it in items)


def test_band_views_keep_an_internal_mask_band(tmp_path: Path) -> None:
    """Files masked by a per-dataset mask band (nodata None): each band's view has the same mask."""
    from rasterio.transform import from_origin

    from stacfetch.stac.manifest import _band_assets, band_metadata

    tif = tmp_path / "area" / "x.tif"
    tif.parent.mkdir()
    data = np.arange(2 * 64 * 48, dtype="uint16").reshape(2, 64, 48)
    mask = np.zeros((64, 48), dtype="uint8")
    mask[:, :30] = 255
    profile = dict(driver="GTiff", width=48, height=64, count=2, dtype="uint16", crs="EPSG:32636",
                   transform=from_origin(600000, 3500000, 20, 20), nodata=None, tiled=True,
                   blockxsize=16, blockysize=16)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(tif, "w", **profile) as dst:
        dst.write(data)
        dst.write_mask(mask)
        dst.descriptions = ("B04", "B08")
        dst.scales = (0.0001, 0.0001)
    eo, raster = band_metadata(tif)
    assert [b["name"] for b in eo] == ["B04", "B08"] and "nodata" not in raster[0]
    item = {"assets": {"data": {"href": str(tif), "eo:bands": eo, "raster:bands": raster}}}
    _band_assets(item)
    with rasterio.open(item["assets"]["B08"]["href"]) as view:
        assert view.count == 1 and view.nodata is None and view.descriptions == ("B08",)
        assert view.scales == (0.0001,) and view.crs.to_epsg() == 32636
        np.testing.assert_array_equal(view.read(1), data[1])
        np.testing.assert_array_equal(view.read_masks(1), mask)


# --- the manifest records what is on disk, and one bad record costs only itself --------------
@pytest.fixture
def small(tmp_path: Path):
    out = tmp_path / "small"
    result = stacfetch.get(EDGE, "2022-01-01", "2022-01-07", size=1000, bands="B04",
                           provider="sandbox", out=out)
    assert len(result.written) >= 2
    return out, result


def _checksums(out: Path) -> dict[Path, str]:
    found = {}
    for item in pystac.Catalog.from_file(str(out / "catalog.json")).get_items():
        asset = item.assets["data"]
        found[Path(asset.get_absolute_href() or "").resolve()] = asset.extra_fields["file:checksum"]
    return found


def test_a_file_replaced_after_its_job_is_recorded_as_it_is_now(small) -> None:
    """Another run (--overwrite) replaced a file between this run's write and its manifest
    update: the manifest records the file on disk (checksum and size of one version)."""
    import hashlib
    import os
    import shutil

    from stacfetch.run import _write_manifest

    out, result = small
    victim, other = result.written[0], result.written[1]
    fresh = victim.with_name("replacement.tmp")
    shutil.copyfile(other, fresh)
    os.replace(fresh, victim)  # atomically, as a commit does: a new file at the same path
    _write_manifest(result, out)
    now = "1220" + hashlib.sha256(victim.read_bytes()).hexdigest()
    assert _checksums(out)[victim.resolve()] == now


def test_one_record_outside_the_folder_costs_only_itself(small, tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from stacfetch.result import Outcome
    from stacfetch.run import _write_manifest

    out, result = small
    (out / "catalog.json").unlink()
    elsewhere = tmp_path / "elsewhere" / result.written[0].name
    elsewhere.parent.mkdir()
    shutil.copyfile(result.written[0], elsewhere)
    stray = dataclasses.replace(result.outcomes[0].job, destination=elsewhere)
    result.outcomes.append(Outcome(stray, "written", bytes=elsewhere.stat().st_size))
    assert _write_manifest(result, out) == out / "catalog.json"
    assert set(_checksums(out)) == {p.resolve() for p in result.written if p != elsewhere}


def _break_item(out: Path, how: str) -> str:
    """Damage the manifest one way; returns the name the error must give."""
    catalog = json.loads((out / "catalog.json").read_text())
    link = next(entry for entry in catalog["links"] if entry.get("rel") == "item")
    item_file = (out / link["href"]).resolve()
    if how == "missing item file":
        item_file.unlink()
    elif how == "item not json":
        item_file.write_text('{"type": "Feature", "id": ')
    elif how == "item without data asset":
        raw = json.loads(item_file.read_text())
        raw["assets"].pop("data")
        item_file.write_text(json.dumps(raw))
    elif how == "asset without href":
        raw = json.loads(item_file.read_text())
        raw["assets"]["data"].pop("href")
        item_file.write_text(json.dumps(raw))
    elif how == "link without href":
        link.pop("href")
        (out / "catalog.json").write_text(json.dumps(catalog))
        return "catalog.json"
    elif how == "item a list":
        item_file.write_text("[]")
    return item_file.name


@pytest.mark.parametrize("how", ["missing item file", "item not json", "item without data asset",
                                 "asset without href", "link without href", "item a list"])
def test_a_damaged_manifest_item_is_an_error_naming_the_file(small, how: str) -> None:
    from stacfetch.errors import InvalidOptionError

    out, _ = small
    name = _break_item(out, how)
    with pytest.raises(InvalidOptionError) as info:
        stacfetch.manifest_items(out)
    assert name in info.value.message, info.value.message
