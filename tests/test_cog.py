"""stacfetch.sources.assets: band -> asset mapping from the real STAC documents, resampling choice, SAS
signing (stub session), COG provider settings and session, and the first-valid mosaic over a
local COG server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import requests
from rasterio.enums import Resampling
from realstac.pgstac import RASTER_SCENE, default_shared_dir

from stacfetch.config import PROVIDERS, Settings, load_settings
from stacfetch.errors import ConfigError, DownloadError, ServiceError
from stacfetch.http.urls import strip_query
from stacfetch.sources.assets import (
    CogReader,
    PlanetaryComputerSigner,
    band_asset_keys,
    resampling_for,
)

SHARED = default_shared_dir(Path(__file__).resolve().parents[1])
ITEMS = SHARED / "data" / "items"
RASTERS = SHARED / "data" / "rasters" / RASTER_SCENE
needs_data = pytest.mark.skipif(not ITEMS.is_dir(), reason=f"shared test data not found in {SHARED}")

ALL = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
       "AOT", "SCL", "WVP")
EARTH_SEARCH_V1 = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B11": "swir16", "B12": "swir22", "AOT": "aot", "SCL": "scl", "WVP": "wvp",
}


def _json(name: str) -> Any:
    return json.loads((ITEMS / name).read_text())


# -- band -> asset ---------------------------------------------------------------------------
@needs_data
def test_earth_search_collection_item_assets() -> None:
    item_assets = _json("collection_earth-search-v1_sentinel-2-l2a.json")["item_assets"]
    assert band_asset_keys(item_assets, ALL) == EARTH_SEARCH_V1  # never the *-jp2 twins


@needs_data
@pytest.mark.parametrize("name", ["earth-search-v1_sentinel-2-l2a.json", "earth-search-v1_sentinel-2-c1-l2a.json"])
def test_earth_search_items(name: str) -> None:
    features = _json(name)["features"]
    assert features
    for feature in features:
        bands = tuple(b for b in ALL if EARTH_SEARCH_V1[b] in feature["assets"])
        assert band_asset_keys(feature["assets"], bands) == {b: EARTH_SEARCH_V1[b] for b in bands}


@needs_data
def test_rasters_item_with_common_names_maps_by_wavelength() -> None:
    item = pystac.Item.from_dict(json.loads((RASTERS / "item.json").read_text()))
    assert item.assets["nir08"].to_dict()["eo:bands"][0]["name"] == "nir08"  # old-style names
    assert band_asset_keys(item.assets, ALL) == EARTH_SEARCH_V1


@needs_data
def test_planetary_computer_items_and_collection() -> None:
    for feature in _json("planetary-computer_sentinel-2-l2a.json")["features"]:
        assert band_asset_keys(feature["assets"], ALL) == {b: b for b in ALL}
    pc_collection = _json("collection_planetary-computer_sentinel-2-l2a.json")["item_assets"]
    assert band_asset_keys(pc_collection, ALL) == {b: b for b in ALL}
    odc = _json("odc-stac_planetary-computer_S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json")
    assert band_asset_keys(odc["assets"], ("B04", "B8A", "SCL")) == {"B04": "B04", "B8A": "B8A", "SCL": "SCL"}


@needs_data
def test_earth_search_v0_item() -> None:
    item = _json("odc-stac_earth-search-v0_S2A_28QCH_20200714_0_L2A.json")
    assert band_asset_keys(item["assets"], ("B02", "B8A", "SCL")) == {"B02": "B02", "B8A": "B8A", "SCL": "SCL"}


def test_cdse_style_keys_and_missing_bands() -> None:
    tif = "image/tiff; application=geotiff; profile=cloud-optimized"
    assets = {"B04_10m": {"href": "https://x/B04.tif", "type": tif},
              "SCL_20m": {"href": "https://x/SCL.tif", "type": tif},
              "B02": {"href": "s3://x/B02.jp2", "type": "image/jp2"}}
    assert band_asset_keys(assets, ("B04", "SCL")) == {"B04": "B04_10m", "SCL": "SCL_20m"}
    with pytest.raises(DownloadError) as err:
        band_asset_keys(assets, ("B02",))  # only a JPEG 2000 asset: not read
    assert "B02" in err.value.message and "B04_10m, SCL_20m" in err.value.message


def test_resampling_rules() -> None:
    assert resampling_for("SCL", 20, 10) is Resampling.nearest
    assert resampling_for("SCL", 10, 60) is Resampling.nearest
    assert resampling_for("B04", 10, 10) is Resampling.nearest
    assert resampling_for("B11", 20, 10) is Resampling.bilinear
    assert resampling_for("B02", 10, 60) is Resampling.average


def test_strip_query() -> None:
    text = "at https://acct.blob.core.windows.net/c/B04.tif?st=1&sig=SECRET failed"
    assert strip_query(text) == "at https://acct.blob.core.windows.net/c/B04.tif failed"


# -- Planetary Computer signing (stub session: the real endpoint is not reachable here) ------
class _Response:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self._body = body
        self.url = "https://planetarycomputer.microsoft.com/api/sas/v1/token/sentinel-2-l2a"
        self.reason = "x"
        self.text = json.dumps(body)

    def json(self) -> Any:
        return self._body


class _StubSession:
    def __init__(self, *responses: _Response) -> None:
        self.responses = list(responses)
        self.urls: list[str] = []

    def get(self, url: str, **kwargs: Any) -> _Response:
        self.urls.append(url)
        return self.responses.pop(0)


def test_planetary_computer_signing() -> None:
    expiry = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    session = _StubSession(_Response(200, {"msft:expiry": expiry, "token": "st=1&se=2&sig=abcdefgh"}))
    signer = PlanetaryComputerSigner(session)
    blob = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/60/V/UK/B04_10m.tif"
    assert signer.sign(blob, "sentinel-2-l2a") == blob + "?st=1&se=2&sig=abcdefgh"
    assert signer.sign(blob, "sentinel-2-l2a").endswith("sig=abcdefgh")  # cached: one request
    assert session.urls == ["https://planetarycomputer.microsoft.com/api/sas/v1/token/sentinel-2-l2a"]
    other = "https://example.com/B04.tif"
    assert signer.sign(other, "sentinel-2-l2a") == other
    signed = blob + "?sig=x"
    assert signer.sign(signed, "sentinel-2-l2a") == signed


def test_planetary_computer_signing_errors_and_expiry() -> None:
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    session = _StubSession(_Response(200, {"msft:expiry": past, "token": "sig=old-token"}),
                           _Response(200, {"msft:expiry": past, "token": "sig=new-token"}),
                           _Response(503, {"error": {"message": "busy"}}))
    signer = PlanetaryComputerSigner(session)
    assert signer.token("c") == "sig=old-token"
    assert signer.token("c") == "sig=new-token"  # expired: fetched again
    with pytest.raises(ServiceError, match="busy"):
        signer.token("c")


# -- settings and session --------------------------------------------------------------------
def test_provider_table() -> None:
    kinds = {name: p.source for name, p in PROVIDERS.items()}
    assert kinds == {"sentinelhub": "process", "cdse": "process", "sandbox": "process",
                     "earth-search": "assets", "planetary-computer": "assets", "stac": "assets"}
    assert PROVIDERS["earth-search"].stac_url == "https://earth-search.aws.element84.com/v1"
    assert PROVIDERS["planetary-computer"].signing == "planetary-computer"


def test_cog_settings_need_no_sentinel_hub_credentials(tmp_path: Path) -> None:
    es = load_settings(provider="earth-search", environ={}, env_file=None)
    assert es.source == "assets" and es.catalog_url == "https://earth-search.aws.element84.com/v1/"
    assert es.client_id is None and es.stac_headers == {}
    with pytest.raises(ConfigError, match="STACFETCH_STAC_URL"):
        load_settings(provider="stac", environ={})
    with pytest.raises(ConfigError):
        load_settings(provider="stac", environ={"STACFETCH_STAC_URL": "http://stac.example.com"})
    s = load_settings(provider="stac", environ={
        "STACFETCH_STAC_URL": "https://stac.example.com/api/", "STACFETCH_STAC_TOKEN": "tok-123456789",
        "STACFETCH_STAC_HEADERS": '{"X-Api-Key": "key-123456789"}'})
    assert s.stac_url == "https://stac.example.com/api"
    assert s.stac_headers == {"X-Api-Key": "key-123456789", "Authorization": "Bearer tok-123456789"}
    assert "tok-123456789" in s.secrets and "key-123456789" in s.secrets
    assert "tok-123456789" not in repr(s) and "tok-123456789" not in str(s.describe())


def test_public_session_sends_headers_only_to_the_stac_origin() -> None:
    from stacfetch.http import open_session

    settings = Settings(provider="stac", base_url=None, token_url=None,
                        stac_url="https://stac.example.com/api", stac_headers={"X-Api-Key": "k-123456789"})
    session = open_session(settings)
    try:
        own = requests.Request("GET", "https://stac.example.com/api/search").prepare()
        other = requests.Request("GET", "https://data.example.org/B04.tif").prepare()
        session._authorize(own)
        session._authorize(other)
        assert own.headers["X-Api-Key"] == "k-123456789"
        assert "X-Api-Key" not in other.headers
    finally:
        session.close()


# -- the mosaic: first valid pixel wins, in (datetime, id) order -----------------------------
@pytest.mark.skipif(not RASTERS.is_dir(), reason="shared rasters not found")
def test_mosaic_of_two_items_of_one_pass(tmp_path: Path) -> None:
    from stacfetch.plan import Grid, Job, cut_tiles, group_acquisitions
    from stacfetch.testing.cogserver import CogServer

    with rasterio.open(RASTERS / "B04.tif") as src:
        full, profile = src.read(1), src.profile
    # the same pixels on a grid whose origin is a multiple of 100 m (a stacfetch output grid)
    transform = rasterio.Affine(100, 0, 200_000, 0, -100, 2_800_000)
    profile.update(transform=transform)
    # west: valid left of column 600; east: valid right of column 500, and +1 where it overlaps
    west = np.where(np.arange(full.shape[1]) < 600, full, 0).astype("uint16")
    east = np.where(np.arange(full.shape[1]) >= 500, full + 1, 0).astype("uint16")
    for name, data in (("west.tif", west), ("east.tif", east)):
        with rasterio.open(tmp_path / name, "w", **profile) as dst:
            dst.write(data, 1)
    base = json.loads((RASTERS / "item.json").read_text())
    items = []
    for name, tile, stamp in (("west", "29RKH", "2020-02-19T11:34:25Z"), ("east", "29RKJ", "2020-02-19T11:34:29Z")):
        d = json.loads(json.dumps(base))
        d["id"] = f"S2A_{tile}_20200219_0_L2A"
        d["properties"].update({"s2:mgrs_tile": tile, "datetime": stamp})
        d["assets"] = {"red": dict(base["assets"]["red"], href=f"http://127.0.0.1:1/{name}.tif")}
        items.append(d)
    grid = Grid(crs="EPSG:32629", transform=transform, width=full.shape[1], height=full.shape[0],
                resolution=100.0)
    with CogServer(tmp_path) as cogs:
        for d in items:
            d["assets"]["red"]["href"] = d["assets"]["red"]["href"].replace("http://127.0.0.1:1", cogs.url)
        acq = group_acquisitions([pystac.Item.from_dict(d) for d in items])
        assert len(acq) == 1 and len(acq[0].primary_items) == 2
        job = Job(acq[0], grid, tuple(cut_tiles(grid, 512)), ("B04",), "uint16", tmp_path / "out.tif")
        settings = Settings(provider="stac", base_url=None, token_url=None, stac_url=cogs.url)
        reader = CogReader(job, settings)
        out = np.zeros_like(full)
        for tile in job.tiles:
            win = tile.window
            out[int(win.row_off):int(win.row_off + win.height),
                int(win.col_off):int(win.col_off + win.width)] = reader.read_tile(tile)[0]
        served_east = cogs.bytes_served("east.tif")
    expected = np.where(np.arange(full.shape[1]) < 600, full, full + 1)
    assert np.array_equal(out, expected)  # the earlier item wins where both are valid
    assert reader.tags()["MOSAIC_ORDER"] == "S2A_29RKH_20200219_0_L2A,S2A_29RKJ_20200219_0_L2A"
    assert served_east > 0


def test_gdal_headers_only_for_assets_on_the_stac_origin() -> None:
    from types import SimpleNamespace

    settings = Settings(provider="stac", base_url=None, token_url=None, stac_url="https://stac.example.com/v1",
                        stac_headers={"Authorization": "Bearer t-123456789"})
    fake = SimpleNamespace(settings=settings)
    same = CogReader._env(fake, "https://stac.example.com/data/B04.tif")  # type: ignore[arg-type]
    other = CogReader._env(fake, "https://sentinel-cogs.s3.us-west-2.amazonaws.com/B04.tif")  # type: ignore[arg-type]
    assert same["GDAL_HTTP_HEADERS"] == "Authorization: Bearer t-123456789"
    assert "GDAL_HTTP_HEADERS" not in other
    assert other["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
