"""The emulator over real HTTP, with plain ``requests`` (not stacfetch's client)."""

from __future__ import annotations

import time
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pytest
import rasterio
import requests
from rasterio.io import MemoryFile

from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from stacfetch.testing import pixels
from stacfetch.testing.emulator import Emulator
from stacfetch.testing.faults import Faults
from stacfetch.testing.responses import UNAUTHORIZED_MESSAGE

UTC = timezone.utc
UTM39 = "http://www.opengis.net/def/crs/EPSG/0/32639"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
# Inside tile T39TRQ (51-52°E, 44-45°N) only, far from its edges.
UTM_BBOX = [530000.0, 4920000.0, 555000.0, 4945000.0]
LONLAT_BBOX = [51.2, 44.2, 51.8, 44.8]
SPECTRAL = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
SEARCH = {
    "collections": ["sentinel-2-l2a"],
    "bbox": [51.2, 44.5, 52.8, 45.5],  # 4 tiles
    "datetime": "2021-01-01T00:00:00Z/2021-01-31T23:59:59Z",
}


def token(emu: Emulator, client_id: str = SANDBOX_CLIENT_ID,
          secret: str = SANDBOX_CLIENT_SECRET) -> requests.Response:
    return requests.post(emu.token_url, data={"grant_type": "client_credentials",
                                              "client_id": client_id, "client_secret": secret},
                         timeout=10)


def session(emu: Emulator) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = "Bearer " + token(emu).json()["access_token"]
    return s


def evalscript(bands: list[str], units: str = "DN", sample_type: str = "UINT16",
               nodata: float | None = None) -> str:
    nd = "" if nodata is None else f", nodataValue: {nodata}"
    values = ", ".join(f"sample.{b}" for b in bands)
    zeros = ", ".join("0" for _ in bands)
    return f"""//VERSION=3
function setup() {{
  return {{
    input: [{{bands: {bands + ["dataMask"]!r}, units: {[units] * len(bands) + ["DN"]!r}}}],
    output: {{id: "default", bands: {len(bands)}, sampleType: SampleType.{sample_type}{nd}}}
  }};
}}
function evaluatePixel(sample) {{
  return sample.dataMask ? [{values}] : [{zeros}];
}}
"""


def process_body(bands: list[str], *, bbox: list[float] = UTM_BBOX, crs: str = UTM39,
                 width: int = 200, height: int = 150, units: str = "DN",
                 sample_type: str = "UINT16", time_range: tuple[str, str] = (
                     "2021-01-20T00:00:00Z", "2021-01-25T23:59:59Z"),
                 order: str = "mostRecent", nodata: float | None = None) -> dict[str, Any]:
    return {
        "input": {
            "bounds": {"bbox": bbox, "properties": {"crs": crs}},
            "data": [{"type": "sentinel-2-l2a", "dataFilter": {
                "timeRange": {"from": time_range[0], "to": time_range[1]},
                "mosaickingOrder": order}}],
        },
        "output": {"width": width, "height": height,
                   "responses": [{"identifier": "default", "format": {"type": "image/tiff"}}]},
        "evalscript": evalscript(bands, units, sample_type, nodata),
    }


def expected(band: str, item: dict[str, Any], transform: Any, row: int, col: int,
             unit: float) -> Any:
    """The pixel value recomputed from pixels.py, the item and the grid alone."""
    x, y = transform @ (col + 0.5, row + 0.5)
    day = pixels.day_number(date.fromisoformat(item["properties"]["datetime"][:10]))
    v = pixels.band_values(band, day, np.array([x]), np.array([y]), unit,
                           item["properties"]["eo:cloud_cover"])
    return v[0]


@pytest.fixture(scope="module")
def emu() -> Any:
    with Emulator() as server:
        yield server


@pytest.fixture(scope="module")
def http(emu: Emulator) -> requests.Session:
    return session(emu)


@pytest.fixture
def fresh() -> Any:
    """An emulator of its own, for tests that switch faults or read exact log counts."""
    with Emulator(seed=7) as server:
        yield server


# ------------------------------------------------------------------------------ token
def test_token_ok_is_a_jwt_with_the_claims(emu: Emulator) -> None:
    r = token(emu)
    assert r.status_code == 200
    doc = r.json()
    assert doc["token_type"] == "Bearer" and doc["expires_in"] == 3600
    assert doc["refresh_expires_in"] == 0 and doc["not-before-policy"] == 0
    import base64
    import json
    payload = doc["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["azp"] == SANDBOX_CLIENT_ID
    assert claims["iss"] == emu.url + "/auth/realms/main"
    assert 3590 < claims["exp"] - claims["iat"] <= 3601


def test_token_basic_auth_is_accepted(emu: Emulator) -> None:
    r = requests.post(emu.token_url, data={"grant_type": "client_credentials"},
                      auth=(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET), timeout=10)
    assert r.status_code == 200 and r.json()["access_token"]


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        pytest.param({"client_id": "sandbox", "client_secret": "wrong"}, 401, "invalid_client", id="bad-secret"),
        pytest.param({"client_id": "nobody", "client_secret": "x"}, 401, "invalid_client", id="unknown-client"),
        pytest.param({"grant_type": "password", "client_id": "sandbox", "client_secret": "sandbox-secret"},
                     400, "unsupported_grant_type", id="wrong-grant"),
    ],
)
def test_token_refused(emu: Emulator, data: dict[str, str], status: int, error: str) -> None:
    r = requests.post(emu.token_url, data={"grant_type": "client_credentials", **data}, timeout=10)
    assert r.status_code == status
    assert r.json()["error"] == error
    if error == "invalid_client":
        assert r.json()["error_description"] == "Invalid client or Invalid client credentials"


def test_tokens_are_deployment_specific_and_paths_differ(emu: Emulator) -> None:
    with Emulator(deployment="cdse") as cdse:
        assert cdse.token_url.endswith("/auth/realms/CDSE/protocol/openid-connect/token")
        cdse_token = token(cdse).json()["access_token"]
        sh_token = token(emu).json()["access_token"]
        for server, foreign in ((emu, cdse_token), (cdse, sh_token)):
            r = requests.post(server.catalog_url + "search", json=SEARCH, timeout=10,
                              headers={"Authorization": f"Bearer {foreign}"})
            assert r.status_code == 401
            assert r.json() == {"error": {"status": 401, "reason": "Unauthorized",
                                          "message": UNAUTHORIZED_MESSAGE, "code": "COMMON_UNAUTHORIZED"}}
        ok = requests.post(cdse.catalog_url + "search", json=SEARCH, timeout=10,
                           headers={"Authorization": f"Bearer {cdse_token}"})
        assert ok.status_code == 200


def test_missing_and_expired_tokens_are_refused() -> None:
    with Emulator(token_lifetime=0.4) as emu:
        assert requests.post(emu.process_url, json={}, timeout=10).status_code == 401
        s = session(emu)
        assert s.post(emu.catalog_url + "search", json=SEARCH, timeout=10).status_code == 200
        time.sleep(0.5)
        r = s.post(emu.catalog_url + "search", json=SEARCH, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "COMMON_UNAUTHORIZED"
        emu.faults.token_lifetime = 2
        assert token(emu).json()["expires_in"] == 2


# ---------------------------------------------------------------------------- catalog
def test_landing_pages_follow_each_deployment(emu: Emulator) -> None:
    sh = requests.get(emu.catalog_url, timeout=10).json()
    assert "https://api.stacspec.org/v1.0.0-rc.1/core" in sh["conformsTo"]
    assert not any("item-search" in c for c in sh["conformsTo"])  # the real commercial quirk
    assert all(link["href"].startswith(emu.url) for link in sh["links"])
    with Emulator(deployment="cdse") as cdse:
        doc = requests.get(cdse.catalog_url, timeout=10).json()
        assert "https://api.stacspec.org/v1.0.0/item-search" in doc["conformsTo"]
        methods = {link.get("method") for link in doc["links"] if link["rel"] == "search"}
        assert methods == {"GET", "POST"}
        conf = requests.get(cdse.catalog_url + "conformance", timeout=10).json()
        assert conf["conformsTo"] == doc["conformsTo"]


def test_collections_need_auth_and_describe_bands(emu: Emulator, http: requests.Session) -> None:
    assert requests.get(emu.catalog_url + "collections", timeout=10).status_code == 401
    colls = http.get(emu.catalog_url + "collections", timeout=10).json()["collections"]
    assert "sentinel-2-l2a" in [c["id"] for c in colls]
    s2 = http.get(emu.catalog_url + "collections/sentinel-2-l2a", timeout=10).json()
    assert [b["name"] for b in s2["summaries"]["eo:bands"]] == SPECTRAL
    r = http.get(emu.catalog_url + "collections/nope", timeout=10)
    assert r.status_code == 404 and r.json() == {"code": 404, "description": "Collection not found."}


def test_search_pages_cover_every_item_exactly_once(emu: Emulator, http: requests.Session) -> None:
    start = datetime(2021, 1, 1, tzinfo=UTC)
    end = datetime(2021, 1, 31, 23, 59, 59, tzinfo=UTC)
    want = [i["id"] for i in emu.items_for(SEARCH["bbox"], start, end)]
    assert len(want) > 25
    got: list[str] = []
    body: dict[str, Any] = {**SEARCH, "limit": 10}
    pages = 0
    while True:
        r = http.post(emu.catalog_url + "search", json=body, timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/geo+json"
        page = r.json()
        pages += 1
        got += [f["id"] for f in page["features"]]
        assert page["context"]["returned"] == len(page["features"]) and page["context"]["limit"] == 10
        nxt = [link for link in page["links"] if link["rel"] == "next"]
        if "next" not in page["context"]:
            assert not nxt
            break
        assert nxt[0]["method"] == "POST" and nxt[0]["merge"] is True
        assert nxt[0]["body"] == {"next": page["context"]["next"]}
        body = {**body, **nxt[0]["body"]}
    assert pages >= 3
    assert got == want and len(set(got)) == len(got)
    times = [datetime.fromisoformat(i["properties"]["datetime"].replace("Z", "+00:00"))
             for i in emu.items_for(SEARCH["bbox"], start, end)]
    assert times == sorted(times, reverse=True)


def test_search_items_look_like_the_real_ones(emu: Emulator, http: requests.Session) -> None:
    page = http.post(emu.catalog_url + "search", json={**SEARCH, "limit": 100}, timeout=10).json()
    items = page["features"]
    same_time = {}
    for item in items:
        p = item["properties"]
        assert item["geometry"]["type"] == "MultiPolygon"
        assert p["platform"] in ("sentinel-2a", "sentinel-2b") and p["constellation"] == "sentinel-2"
        assert 32601 <= p["proj:epsg"] <= 32660 and p["gsd"] == 10
        assert list(item["assets"]) == ["data"] and item["assets"]["data"]["href"].startswith("s3://")
        assert item["id"].startswith("S2A_MSIL2A_" if p["platform"] == "sentinel-2a" else "S2B_MSIL2A_")
        assert item["id"].split("_")[5][0] == "T" and len(item["id"].split("_")[5]) == 6
        # shaped as the real commercial items: no collection key, no s2:/sat: properties
        assert "collection" not in item and not [k for k in p if k.startswith(("s2:", "sat:"))]
        assert item["geometry"]["crs"]["properties"]["name"] == "urn:ogc:def:crs:OGC::CRS84"
        same_time.setdefault(p["datetime"], []).append(item["id"])
    # every 4th pass of a tile has a second processing baseline with the identical datetime
    dupes = [ids for ids in same_time.values() if len(ids) == 2]
    assert dupes and all(a.split("_")[3] != b.split("_")[3] for a, b in dupes)
    # tiles of one pass are seconds apart
    one_day = sorted(i["properties"]["datetime"] for i in items if i["properties"]["datetime"].startswith("2021-01-24"))
    assert len(one_day) >= 4
    self_link = next(link["href"] for link in items[0]["links"] if link["rel"] == "self")
    one = http.get(self_link, timeout=10).json()
    assert one == items[0]
    assert http.get(emu.catalog_url + "collections/sentinel-2-l2a/items/S2A_MSIL2A_20210101T000000_N0214_R001_T39TRQ_20210101T000000",
                    timeout=10).status_code == 404


def test_cdse_items_use_safe_ids_and_milliseconds() -> None:
    with Emulator(deployment="cdse") as cdse:
        items = session(cdse).post(cdse.catalog_url + "search", json=SEARCH, timeout=10).json()["features"]
        assert items and all(i["id"].endswith(".SAFE") for i in items)
        assert all(len(i["properties"]["datetime"]) == len("2021-01-25T07:37:20.296Z") for i in items)
        assert all(i["collection"] == "sentinel-2-l2a" for i in items)
        assert {link["rel"] for link in items[0]["links"]} >= {"self", "parent", "root", "collection"}


@pytest.mark.parametrize(
    "flt",
    [
        pytest.param({"filter": "eo:cloud_cover < 30"}, id="cql2-text"),
        pytest.param({"filter": "eo:cloud_cover lt 30", "filter-lang": "cql2-text"}, id="cql2-text-word"),
        pytest.param({"filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 30]},
                      "filter-lang": "cql2-json"}, id="cql2-json"),
        pytest.param({"filter": "eo:cloud_cover >= 0 AND eo:cloud_cover < 30"}, id="and"),
    ],
)
def test_filter_on_cloud_cover(http: requests.Session, emu: Emulator, flt: dict[str, Any]) -> None:
    everything = http.post(emu.catalog_url + "search", json={**SEARCH, "limit": 100}, timeout=10).json()
    page = http.post(emu.catalog_url + "search", json={**SEARCH, "limit": 100, **flt}, timeout=10).json()
    want = [f["id"] for f in everything["features"] if f["properties"]["eo:cloud_cover"] < 30]
    assert 0 < len(want) < len(everything["features"])
    assert [f["id"] for f in page["features"]] == want


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        pytest.param({"filter": "eo:cloud_cover < 5 OR eo:cloud_cover > 90"}, 400, "AND", id="or"),
        pytest.param({"filter": "platform = 'sentinel-2a'"}, 400, "eo:cloud_cover", id="property"),
        pytest.param({"collections": ["sentinel-2-l2a", "sentinel-2-l1c"]}, 400, "exactly one", id="two-collections"),
        pytest.param({"collections": ["landsat-ot-l2"]}, 404, "Collection not found.", id="unknown-collection"),
        pytest.param({"datetime": None}, 400, "datetime is required", id="no-datetime"),
        pytest.param({"datetime": "2021-01-01"}, 400, "RFC 3339", id="date-only"),
        pytest.param({"limit": 0}, 400, "limit", id="limit-0"),
        pytest.param({"next": "abc"}, 400, "next", id="bad-next"),
    ],
)
def test_bad_searches(http: requests.Session, emu: Emulator, body: dict[str, Any], status: int,
                      words: str) -> None:
    r = http.post(emu.catalog_url + "search", json={**SEARCH, **body}, timeout=10)
    assert r.status_code == status
    doc = r.json()
    assert doc["code"] == status and words in doc["description"]


def test_limit_is_clamped_to_100(http: requests.Session, emu: Emulator) -> None:
    body = {**SEARCH, "datetime": "2021-01-01T00:00:00Z/2021-04-30T00:00:00Z", "limit": 500}
    page = http.post(emu.catalog_url + "search", json=body, timeout=10).json()
    assert page["context"]["limit"] == 100 and page["context"]["returned"] == 100
    assert page["context"]["next"] == 100


def test_intersects_uses_the_geometry_not_its_bbox(http: requests.Session, emu: Emulator) -> None:
    # an L-shaped polygon: its bbox touches tile (52, 45), the polygon does not
    poly = {"type": "Polygon", "coordinates": [[[51.3, 44.3], [52.5, 44.3], [52.5, 44.6], [51.6, 44.6],
                                                [51.6, 45.7], [51.3, 45.7], [51.3, 44.3]]]}
    body = {**SEARCH, "limit": 100, "intersects": poly}
    del body["bbox"]
    tiles = {f["id"].split("_")[5] for f in
             http.post(emu.catalog_url + "search", json=body, timeout=10).json()["features"]}
    box_tiles = {f["id"].split("_")[5] for f in http.post(
        emu.catalog_url + "search", json={**SEARCH, "bbox": [51.3, 44.3, 52.5, 45.7], "limit": 100},
        timeout=10).json()["features"]}
    assert len(tiles) == 3 and len(box_tiles) == 4 and tiles < box_tiles


def test_fields_include_and_exclude(http: requests.Session, emu: Emulator) -> None:
    # include only: merged with the default set; exclude removes from it
    fields = {"include": ["properties.eo:cloud_cover"]}
    f = http.post(emu.catalog_url + "search", json={**SEARCH, "fields": fields}, timeout=10).json()["features"][0]
    assert set(f["properties"]) == {"datetime", "eo:cloud_cover"}
    assert {"id", "bbox", "links", "assets", "type", "geometry"} <= set(f)
    f = http.post(emu.catalog_url + "search", json={**SEARCH, "fields": {"exclude": ["geometry"]}},
                  timeout=10).json()["features"][0]
    assert "geometry" not in f and {"id", "bbox", "links", "assets", "type"} <= set(f)
    # both: exactly what is included (sentinelhub-py's data_search notebook: id + properties only)
    fields = {"include": ["id", "properties.datetime", "properties.eo:cloud_cover"], "exclude": []}
    f = http.post(emu.catalog_url + "search", json={**SEARCH, "fields": fields}, timeout=10).json()["features"][0]
    assert set(f) == {"id", "properties"} and set(f["properties"]) == {"datetime", "eo:cloud_cover"}
    empty = http.post(emu.catalog_url + "search", json={**SEARCH, "fields": {}}, timeout=10).json()["features"][0]
    assert set(empty["properties"]) == {"datetime"} and "geometry" in empty
    full = http.post(emu.catalog_url + "search", json=SEARCH, timeout=10).json()["features"][0]
    assert "proj:epsg" in full["properties"]


def test_get_search_pages_through_next_links(http: requests.Session, emu: Emulator) -> None:
    url: str | None = emu.catalog_url + "search"
    params: dict[str, Any] | None = {"collections": "sentinel-2-l2a", "bbox": "51.2,44.5,52.8,45.5",
                                     "datetime": SEARCH["datetime"], "limit": 12,
                                     "filter": "eo:cloud_cover<50", "fields": "id,-geometry"}
    got: list[str] = []
    while url:
        page = http.get(url, params=params, timeout=10).json()
        got += [f["id"] for f in page["features"]]
        assert all("geometry" not in f for f in page["features"])
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
        params = None
        assert url is None or "next=" in url
    post = http.post(emu.catalog_url + "search", json={**SEARCH, "limit": 100,
                                                        "filter": "eo:cloud_cover<50"}, timeout=10).json()
    assert got == [f["id"] for f in post["features"]] and len(got) > 12


# ---------------------------------------------------------------------------- process
def _open(content: bytes) -> Any:
    mem = MemoryFile(content)
    return mem, mem.open()


def test_process_geotiff_matches_pixels_py(emu: Emulator, http: requests.Session) -> None:
    body = process_body(SPECTRAL + ["SCL"], width=250, height=200)
    r = http.post(emu.process_url, json=body, headers={"Accept": "image/tiff"}, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/tiff"
    assert float(r.headers["x-processingunits-spent"]) == pytest.approx(250 * 200 / 512**2 * 13 / 3)
    start, end = datetime(2021, 1, 20, tzinfo=UTC), datetime(2021, 1, 25, 23, 59, 59, tzinfo=UTC)
    items = emu.items_for([51.4, 44.4, 51.7, 44.7], start, end)
    newest = max(items, key=lambda i: i["properties"]["datetime"])
    assert len({i["properties"]["datetime"][:10] for i in items}) >= 2  # a real choice was made
    mem, ds = _open(r.content)
    with mem, ds:
        assert ds.crs.to_epsg() == 32639 and (ds.width, ds.height, ds.count) == (250, 200, 13)
        assert ds.dtypes == tuple(["uint16"] * 13)
        assert ds.transform == rasterio.transform.from_bounds(*UTM_BBOX, 250, 200)
        data = ds.read()
        for row, col in [(0, 0), (57, 190), (199, 249), (123, 4)]:
            for b, band in enumerate(SPECTRAL + ["SCL"]):
                assert data[b, row, col] == expected(band, newest, ds.transform, row, col, 1.0), band
    assert len(np.unique(data[0])) > 100  # a pattern, not a constant


def test_process_orders_and_units(emu: Emulator, http: requests.Session) -> None:
    start, end = datetime(2021, 1, 20, tzinfo=UTC), datetime(2021, 1, 25, 23, 59, 59, tzinfo=UTC)
    items = emu.items_for([51.4, 44.4, 51.7, 44.7], start, end)
    oldest = min(items, key=lambda i: i["properties"]["datetime"])
    least_cc = min(items, key=lambda i: i["properties"]["eo:cloud_cover"])
    for order, item in (("leastRecent", oldest), ("leastCC", least_cc)):
        body = process_body(["B04", "B08"], order=order, units="REFLECTANCE", sample_type="FLOAT32",
                            bbox=LONLAT_BBOX, crs=CRS84, width=60, height=60)
        r = http.post(emu.process_url, json=body, timeout=30)
        assert r.status_code == 200
        mem, ds = _open(r.content)
        with mem, ds:
            assert ds.crs.to_epsg() == 4326 and ds.dtypes == ("float32", "float32")
            data = ds.read()
            for row, col in [(0, 0), (31, 17), (59, 59)]:
                dn = expected("B08", item, ds.transform, row, col, 1e-5)
                assert data[1, row, col] == pixels.reflectance(np.array([dn]))[0]


def test_process_outside_coverage_is_nodata(emu: Emulator, http: requests.Session) -> None:
    # a one-hour window without any pass: dataMask 0 everywhere, values = nodataValue
    body = process_body(["B02"], time_range=("2021-01-22T00:00:00Z", "2021-01-22T01:00:00Z"),
                        nodata=65535, width=20, height=20)
    r = http.post(emu.process_url, json=body, timeout=30)
    mem, ds = _open(r.content)
    with mem, ds:
        assert ds.nodata == 65535 and (ds.read(1) == 65535).all()


def test_process_mosaic_across_tracks(emu: Emulator, http: requests.Session) -> None:
    # 54°E separates two orbit tracks (and UTM zones): each side has its own passes
    bbox = [53.9, 44.42, 54.2, 44.45]
    start, end = datetime(2021, 1, 10, tzinfo=UTC), datetime(2021, 1, 14, 23, 59, 59, tzinfo=UTC)
    items = emu.items_for(bbox, start, end)
    assert len({i["properties"]["datetime"][:10] for i in items}) >= 2
    body = process_body(["B02", "dataMask"], bbox=bbox, crs=CRS84, width=300, height=3,
                        time_range=("2021-01-10T00:00:00Z", "2021-01-14T23:59:59Z"))
    r = http.post(emu.process_url, json=body, timeout=30)
    assert r.status_code == 200
    assert emu.render(body).content == r.content  # the endpoint's code path, in-process
    mem, ds = _open(r.content)
    with mem, ds:
        data = ds.read()
        days_seen = set()
        for col in range(0, 300, 7):
            x, y = ds.transform @ (col + 0.5, 1.5)
            covering = [i for i in items if i["bbox"][0] <= x <= i["bbox"][2] and i["bbox"][1] <= y <= i["bbox"][3]]
            if not covering:
                assert data[1, 1, col] == 0 and data[0, 1, col] == 0
                continue
            newest = max(covering, key=lambda i: (i["properties"]["datetime"]))
            days_seen.add(newest["properties"]["datetime"][:10])
            assert data[1, 1, col] == 1
            assert data[0, 1, col] == expected("B02", newest, ds.transform, 1, col, 1e-5), col
        assert len(days_seen) >= 2  # the two sides come from different passes


@pytest.mark.parametrize(
    ("change", "words", "code"),
    [
        pytest.param({"output": {"width": 2501, "height": 100}}, "width = 2501 is larger than allowed 2500",
                     "COMMON_BAD_PAYLOAD", id="width-2501"),
        pytest.param({"output": {"resx": 1, "resy": 1}}, "calculated from resx, is larger than allowed 2500",
                     "COMMON_BAD_PAYLOAD", id="resx-too-fine"),
        pytest.param({"output": {"width": 10, "height": 10, "resx": 10, "resy": 10}}, "either",
                     "COMMON_BAD_PAYLOAD", id="size-and-res"),
        pytest.param({"evalscript": "return [1]"}, "VERSION=3", "RENDERER_EXCEPTION", id="not-v3"),
        pytest.param({"evalscript": evalscript(["B10"])}, "unknown band 'B10'", "RENDERER_EXCEPTION", id="B10"),
    ],
)
def test_process_bad_requests(http: requests.Session, emu: Emulator, change: dict[str, Any],
                              words: str, code: str) -> None:
    r = http.post(emu.process_url, json={**process_body(["B02"]), **change}, timeout=10)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["status"] == 400 and err["code"] == code and words in err["message"]


def test_process_time_range_needs_a_time(http: requests.Session, emu: Emulator) -> None:
    body = process_body(["B02"], time_range=("2021-01-20", "2021-01-25"))
    r = http.post(emu.process_url, json=body, timeout=10)
    assert r.status_code == 400 and "time" in r.json()["error"]["message"]


def test_process_full_size_12_bands(emu: Emulator, http: requests.Session) -> None:
    body = process_body(SPECTRAL, width=2500, height=2500)
    t0 = time.perf_counter()
    r = http.post(emu.process_url, json=body, timeout=120)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200 and len(r.content) > 2500 * 2500 * 12 * 2
    assert elapsed < 20, f"2500x2500x12 took {elapsed:.1f} s"


# ----------------------------------------------------------------------------- faults
def test_fail_next_is_exact_and_429_has_retry_after_ms(fresh: Emulator) -> None:
    s = session(fresh)
    fresh.faults.fail_next = [429, 503, 500]
    fresh.faults.retry_after_ms = 3398
    statuses = []
    for _ in range(4):
        r = s.post(fresh.catalog_url + "search", json=SEARCH, timeout=10)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.headers["Retry-After"] == "3398"
            assert r.json() == {"error": {"status": 429, "reason": "Too Many Requests",
                                          "message": "You have exceeded your rate limit",
                                          "code": "RATE_LIMIT_EXCEEDED"}}
        elif r.status_code >= 500:
            assert r.json()["error"]["status"] == r.status_code
    assert statuses == [429, 503, 500, 200]
    assert fresh.log.count(kind="catalog") == 4 and fresh.log.count(kind="token") == 1
    assert [e.fault for e in fresh.log.records(kind="catalog")] == [
        "fail_next:429", "fail_next:503", "fail_next:500", None]


def test_token_endpoint_is_spared_unless_listed(fresh: Emulator) -> None:
    fresh.faults.fail_next = [503]
    assert token(fresh).status_code == 200 and fresh.faults.fail_next == [503]
    fresh.faults.only_kinds = {"token"}
    assert token(fresh).status_code == 503


def test_rate_limit_per_minute_is_a_sliding_window(fresh: Emulator) -> None:
    s = session(fresh)
    fresh.faults.rate_limit_per_minute = 3
    codes = [s.post(fresh.catalog_url + "search", json=SEARCH, timeout=10) for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert 55_000 < int(codes[3].headers["Retry-After"]) <= 60_001


def test_probabilistic_faults_are_seeded(fresh: Emulator) -> None:
    s = session(fresh)
    fresh.faults.rate_429 = 0.3
    fresh.faults.rate_5xx = 0.3
    codes = [s.get(fresh.catalog_url + "collections", timeout=10).status_code for _ in range(30)]
    assert {429, 200} <= set(codes) and any(c >= 500 for c in codes)
    with Emulator(seed=7, faults=Faults(rate_429=0.3, rate_5xx=0.3)) as twin:
        s2 = session(twin)
        again = [s2.get(twin.catalog_url + "collections", timeout=10).status_code for _ in range(30)]
    assert again == codes


def test_dropped_connection_raises_and_server_recovers(fresh: Emulator) -> None:
    s = session(fresh)
    fresh.faults.fail_next = [Faults.DROP, Faults.RESET]
    for _ in range(2):
        with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            s.post(fresh.catalog_url + "search", json=SEARCH, timeout=10)
    assert s.post(fresh.catalog_url + "search", json=SEARCH, timeout=10).status_code == 200
    fresh.faults.rate_drop = 1.0
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        s.post(fresh.process_url, json=process_body(["B02"]), timeout=10)
    fresh.faults.rate_drop = 0.0
    assert s.post(fresh.process_url, json=process_body(["B02"]), timeout=10).status_code == 200
    drops = fresh.log.records(kind="catalog")[0]
    assert drops.fault == "fail_next:-1" and drops.bytes_sent > 0


def test_truncated_tiff_is_short_but_consistent(fresh: Emulator) -> None:
    s = session(fresh)
    full = s.post(fresh.process_url, json=process_body(["B02", "B03"]), timeout=10)
    fresh.faults.rate_truncate = 1.0
    cut = s.post(fresh.process_url, json=process_body(["B02", "B03"]), timeout=10)
    assert cut.status_code == 200
    # Process answers are chunked (no Content-Length), the cut one ends with a proper last chunk
    assert cut.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in cut.headers
    assert len(cut.content) < len(full.content)
    assert cut.content == full.content[: len(cut.content)]
    # truncation never touches the catalog
    assert s.post(fresh.catalog_url + "search", json=SEARCH, timeout=10).status_code == 200


def test_latency_and_request_log(fresh: Emulator) -> None:
    s = session(fresh)
    fresh.faults.latency_ms = 150
    s.post(fresh.catalog_url + "search", json=SEARCH, timeout=10)
    rec = fresh.log.last("catalog")
    assert rec is not None and rec.duration >= 0.15
    assert rec.method == "POST" and rec.path == "/api/v1/catalog/1.0.0/search" and rec.status == 200
    assert rec.headers["Authorization"] == "Bearer ***" and rec.body["collections"] == ["sentinel-2-l2a"]
    assert rec.bytes_sent > 1000
    tok = fresh.log.last("token")
    assert tok is not None and tok.body["client_secret"] == "***"
    assert fresh.log.count(status=200) == 2
    fresh.log.clear()
    assert len(fresh.log) == 0
