"""``get`` over a REAL STAC API (stac-fastapi-pgstac) whose item points at real COGs (COG server).

Expected pixels are computed here, independently of stacfetch: for nearest resampling every
output pixel centre is looked up in the local copy of the asset (``src.index``); for bilinear,
``rasterio.warp.reproject`` of the local file onto the same grid.

The fixture COGs are Earth Search's S2A_29RKH_20200219_0_L2A decimated 10x: the 10 m bands are
100 m here (1098 px), the 20 m bands 200 m (549 px). Output grids are EPSG:32629 at 100 m.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.warp import Resampling, reproject

from stacfetch.api import build_query, get_query, search_query
from stacfetch.config import Settings
from stacfetch.plan import grid_for
from stacfetch.testing.cogserver import CogServer

from .conftest import RealStac

pytestmark = pytest.mark.realserver

RASTER_ID = "S2A_29RKH_20200219_0_L2A"
DAY = "2020-02-19"
CRS = "EPSG:32629"
FILES = {"B04": "B04.tif", "B02": "B02.tif", "SCL": "SCL.tif", "B11": "B11.tif"}
TO_LONLAT = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)


def _settings(real_stac: RealStac, out: Path) -> Settings:
    return Settings(provider="stac", base_url=None, token_url=None, stac_url=real_stac.url,
                    output_dir=out)


def _centre(x: float, y: float) -> list[float]:
    lon, lat = TO_LONLAT.transform(x, y)
    return [lon, lat]


def _get(real_stac: RealStac, out: Path, bands: str, *, x: float = 255_000, y: float = 2_745_000,
         size: float = 2000, **kwargs: Any) -> tuple[Any, Any]:
    query = build_query(_centre(x, y), DAY, DAY, size=size, bands=bands, resolution=100, crs=CRS)
    result = get_query(query, settings=_settings(real_stac, out), **kwargs)
    return query, result


def _nearest_reference(path: Path, dst: Any) -> np.ndarray:
    """Nearest by hand: the source pixel under each output pixel centre."""
    with rasterio.open(path) as src:
        data = src.read(1)
        cols, rows = np.meshgrid(np.arange(dst.width) + 0.5, np.arange(dst.height) + 0.5)
        xs, ys = dst.transform @ (cols, rows)
        r, c = rasterio.transform.rowcol(src.transform, xs.ravel(), ys.ravel())
        r, c = np.asarray(r), np.asarray(c)
        inside = (r >= 0) & (r < src.height) & (c >= 0) & (c < src.width)
        out = np.zeros(r.shape, dtype=data.dtype)
        out[inside] = data[r[inside], c[inside]]
        return out.reshape(dst.height, dst.width)


# -- search ----------------------------------------------------------------------------------
def test_search_through_the_stac_provider_equals_pystac_client(real_stac: RealStac) -> None:
    from pystac_client import Client

    settings = _settings(real_stac, Path("unused"))
    query = build_query([-42.0, -6.0, -38.0, -3.0], "2025-07-01", "2025-08-31")
    got = [i.id for i in search_query(query, settings=settings)]
    direct = Client.open(real_stac.url).search(
        method="POST", collections=["sentinel-2-l2a"], intersects=query.geometry.__geo_interface__,
        datetime=query.interval.to_stac(), limit=2)
    expected = {i.id for i in direct.items()}
    assert len(got) == len(set(got)) and set(got) == expected and expected


# -- get: pixels, grid, tags -----------------------------------------------------------------
@pytest.mark.parametrize("size", [2000, 10_000], ids=["2km", "10km"])
def test_get_writes_the_archived_pixels_on_the_planned_grid(
    real_stac: RealStac, tmp_path: Path, size: float
) -> None:
    query, result = _get(real_stac, tmp_path, "B04,B02,SCL", size=size)
    assert not result.failed, result.summary()
    assert len(result.written) == 1
    path = result.written[0]
    grid = grid_for(query.geometry, CRS, 100)
    root = real_stac.cogs.root
    with rasterio.open(path) as dst:
        assert dst.crs.to_epsg() == 32629
        assert (dst.width, dst.height) == (grid.width, grid.height)
        assert dst.transform.almost_equals(grid.transform)
        assert dst.transform.a == 100 and dst.transform.e == -100
        assert dst.transform.c % 100 == 0 and dst.transform.f % 100 == 0  # snapped grid
        assert size / 100 <= dst.width <= size / 100 + 2
        assert dst.descriptions == ("B04", "B02", "SCL") and dst.dtypes[0] == "uint16"
        # no data is the per-dataset mask (issue 11): real data everywhere in this tile
        assert dst.nodata is None and (dst.read_masks() == 255).all()
        tags = dst.tags()
        for i, band in enumerate(("B04", "B02", "SCL"), start=1):
            expected = _nearest_reference(root / FILES[band], dst)
            got = dst.read(i)
            assert np.array_equal(got, expected), band
            assert got.min() > 0  # real data everywhere in this tile
    assert tags["FETCH"] == "cog" and tags["ITEM_IDS"] == RASTER_ID
    assert tags["ASSET_KEYS"] == "red,blue,scl"
    assert tags["STAC_SCALES"] == "0.0001,0.0001,1" and tags["STAC_OFFSETS"] == "0,0,0"
    assert tags["RESAMPLING"] == "B04:nearest,B02:nearest,SCL:nearest"
    assert tags["PROVIDER"] == "stac" and tags["STACFETCH_COMPLETE"] == "1"
    assert "SYNTHETIC" not in tags
    with rasterio.open(path) as dst:
        assert dst.scales[:2] == (0.0001, 0.0001)
    assert result.manifest is not None and result.manifest.is_file()
    assert not list(tmp_path.rglob("*.part"))


def test_20m_band_is_resampled_bilinear_to_the_output_grid(real_stac: RealStac, tmp_path: Path) -> None:
    _, result = _get(real_stac, tmp_path, "B11,SCL", size=10_000)
    assert not result.failed, result.summary()
    with rasterio.open(result.written[0]) as dst:
        got_b11, got_scl = dst.read(1), dst.read(2)
        tags = dst.tags()
        expected = np.zeros_like(got_b11)
        with rasterio.open(real_stac.cogs.root / "B11.tif") as src:
            assert src.res == (200.0, 200.0)
            reproject(rasterio.band(src, 1), expected, dst_transform=dst.transform, dst_crs=dst.crs,
                      resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
        scl = _nearest_reference(real_stac.cogs.root / "SCL.tif", dst)
    assert tags["RESAMPLING"] == "B11:bilinear,SCL:nearest"
    diff = np.abs(got_b11.astype(int) - expected.astype(int))
    assert diff.max() <= 1, diff.max()
    assert (diff == 0).mean() > 0.99
    # really interpolated: not just the 200 m pixels repeated
    assert not np.array_equal(got_b11, _nearest_reference(real_stac.cogs.root / "B11.tif", dst))
    assert np.array_equal(got_scl, scl)  # classes: nearest, exact


def test_float32_is_reflectance(real_stac: RealStac, tmp_path: Path) -> None:
    query = build_query(_centre(255_000, 2_745_000), DAY, DAY, size=2000, bands="B04", resolution=100,
                        crs=CRS, dtype="float32")
    result = get_query(query, settings=_settings(real_stac, tmp_path))
    assert not result.failed, result.summary()
    with rasterio.open(result.written[0]) as dst:
        got = dst.read(1)
        expected = _nearest_reference(real_stac.cogs.root / "B04.tif", dst) * np.float32(0.0001)
        assert dst.dtypes[0] == "float32"
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# -- resume ------------------------------------------------------------------------------------
def test_resume_makes_no_range_request_for_complete_files(real_stac: RealStac, tmp_path: Path) -> None:
    cogs = real_stac.cogs
    cogs.reset_log()
    _, first = _get(real_stac, tmp_path, "B04,B02,SCL")
    assert len(first.written) == 1
    reads = [r for r in cogs.log if r.method == "GET"]
    assert reads and all(r.status == 206 and r.range for r in reads)
    cogs.reset_log()
    _, second = _get(real_stac, tmp_path, "B04,B02,SCL")
    assert second.skipped == first.written and not second.written and not second.failed
    assert cogs.log == []
    assert cogs.bytes_served() == 0


# -- faults: 404 and truncation ---------------------------------------------------------------
def _faulty(real_stac: RealStac, tmp_path: Path, setup: Any) -> Any:
    cogs: CogServer = real_stac.cogs
    try:
        setup(cogs)
        _, result = _get(real_stac, tmp_path, "B04,B02,SCL", size=10_000)
    finally:
        cogs.clear_faults()
    assert not result.written and len(result.failed) == 1
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".tif", ".part")
                 or p.name.endswith((".part", ".tif.json"))]
    assert leftovers == []
    assert result.exit_code == 6  # the one acquisition failed: none written (exit 6, not 5)
    return result.failed[0].error


def test_missing_asset_fails_the_acquisition_naming_it(real_stac: RealStac, tmp_path: Path) -> None:
    error = _faulty(real_stac, tmp_path, lambda c: c.fail("B02.tif", 404))
    assert "'blue' (B02)" in error and RASTER_ID in error and "404" in error, error
    assert real_stac.cogs.url_for("B02.tif") in error
    # the fault is gone: the same run now succeeds (nothing of the 404 was cached)
    _, again = _get(real_stac, tmp_path, "B04,B02,SCL", size=10_000)
    assert len(again.written) == 1 and not again.failed


@pytest.mark.parametrize("after", [100, 20_000], ids=["header", "block"])
def test_truncated_asset_fails_the_acquisition(real_stac: RealStac, tmp_path: Path, after: int) -> None:
    error = _faulty(real_stac, tmp_path, lambda c: c.truncate("B04.tif", after=after))
    assert "'red' (B04)" in error and RASTER_ID in error, error
    assert "truncated response" in error, error


def test_server_error_asset_fails_after_gdal_retries(real_stac: RealStac, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from stacfetch.sources import assets as cog

    monkeypatch.setitem(cog.GDAL_OPTIONS, "GDAL_HTTP_RETRY_DELAY", "0.01")
    error = _faulty(real_stac, tmp_path, lambda c: c.fail("SCL.tif", 503))
    assert "'scl' (SCL)" in error and "503" in error, error
    assert len(real_stac.cogs.requests_for("SCL.tif")) >= 2  # GDAL_HTTP_MAX_RETRY retried it


def test_cli_get_with_the_stac_provider_needs_no_sentinel_hub_account(
    real_stac: RealStac, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from stacfetch.cli import main

    for name in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_ACCESS_TOKEN", "STACFETCH_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STACFETCH_STAC_URL", real_stac.url)
    monkeypatch.chdir(tmp_path)  # no ./.env
    lon, lat = _centre(255_000, 2_745_000)
    code = main(["get", "--provider", "stac", "--lon", str(lon), "--lat", str(lat), "--size", "2000",
                 "--start", DAY, "--bands", "B04,SCL", "--resolution", "100", "--out", str(tmp_path),
                 "--json", "-q"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert len(out["written"]) == 1 and not out["failed"]
    with rasterio.open(out["written"][0]) as dst:
        assert dst.crs.to_epsg() == 32629 and dst.descriptions == ("B04", "SCL")
        assert np.array_equal(dst.read(1), _nearest_reference(real_stac.cogs.root / "B04.tif", dst))


def test_stac_token_never_reaches_logs_or_files(real_stac: RealStac, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses
    import logging

    secret = "tok-SECRET-0123456789"
    settings = dataclasses.replace(_settings(real_stac, tmp_path),
                                   stac_headers={"Authorization": f"Bearer {secret}"})
    query = build_query(_centre(255_000, 2_745_000), DAY, DAY, size=2000, bands="B04", resolution=100,
                        crs=CRS)
    with caplog.at_level(logging.DEBUG):
        result = get_query(query, settings=settings)
    assert len(result.written) == 1
    assert secret not in caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path

