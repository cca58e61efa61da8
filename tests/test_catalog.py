"""Catalog search with the real pystac-client over our session, against the emulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import pystac
import pytest
from shapely.geometry import Polygon, box

from stacfetch.catalog import (
    UnknownCollectionError,
    describe_item,
    iter_search,
    list_collections,
    search,
    search_parameters,
)
from stacfetch.config import Settings
from stacfetch.errors import AuthError, ServiceError
from stacfetch.http import RetryPolicy, open_session
from stacfetch.query import Interval, Query
from stacfetch.testing.emulator import Emulator, Faults
from stacfetch.testing.loopback import LoopbackServer, QuietHandler

CLIENT_ID = "catalog-test-client"
SECRET = "catalog-s3cr3t-value"
FAST = RetryPolicy(backoff_initial=0.05, backoff_max=0.2)

AREA = box(13.30, 52.45, 13.45, 52.55)  # Berlin
START = datetime(2022, 5, 1, tzinfo=timezone.utc)
END = datetime(2022, 8, 31, 23, 59, 59, tzinfo=timezone.utc)


def make_query(geometry: Any = AREA, *, max_cloud: float | None = None, **kw: Any) -> Query:
    return Query(geometry=geometry, interval=Interval(START, END), max_cloud=max_cloud, **kw)


def settings_for(emu: Any) -> Settings:
    return Settings(
        provider=emu.deployment if hasattr(emu, "deployment") else "sentinelhub",
        base_url=emu.url,
        token_url=emu.token_url,
        client_id=CLIENT_ID,
        client_secret=SECRET,
    )


def expected_ids(emu: Any, geometry: Any = AREA, max_cloud: float | None = None) -> list[str]:
    items = emu.items_for(geometry.bounds, START, END)
    out = []
    for item in items:
        data = item if isinstance(item, dict) else item.to_dict()
        cloud = data["properties"].get("eo:cloud_cover")
        if max_cloud is None or (cloud is not None and cloud <= max_cloud):
            out.append(data["id"])
    return out


def settle(emu: Any) -> Any:
    """The emulator's log once requests still in flight have reached it."""
    return emu.log.settle()


@pytest.fixture(params=["sentinelhub", "cdse"])
def emu(request: pytest.FixtureRequest) -> Iterator[Any]:
    with Emulator(deployment=request.param, clients={CLIENT_ID: SECRET}) as server:
        yield server


@pytest.fixture
def session(emu: Any) -> Iterator[Any]:
    with open_session(settings_for(emu), retry=FAST) as s:
        yield s


def search_posts(emu: Any) -> list[Any]:
    return [e for e in settle(emu) if e.kind == "catalog" and e.method == "POST"]


def test_paged_search_returns_every_item_once_sorted(emu: Any, session: Any) -> None:
    expected = expected_ids(emu)
    assert len(expected) >= 7, "the emulator should have enough scenes for paging"
    items = search(session, settings_for(emu), make_query(), limit=3)
    ids = [item.id for item in items]
    assert sorted(ids) == sorted(expected)
    assert len(ids) == len(set(ids))
    assert ids == [i.id for i in sorted(items, key=lambda i: (i.datetime, i.id))]
    posts = search_posts(emu)
    assert len(posts) >= 3  # really paged
    assert all(p.body["limit"] == 3 for p in posts)
    assert [p.body.get("next") is None for p in posts].count(True) == 1
    assert all(isinstance(item, pystac.Item) for item in items)


def test_search_body(emu: Any, session: Any) -> None:
    search(session, emu.url + "/api/v1/catalog/1.0.0/", make_query(max_cloud=20), limit=500)
    body = search_posts(emu)[0].body
    assert body["collections"] == ["sentinel-2-l2a"]
    assert body["datetime"] == "2022-05-01T00:00:00Z/2022-08-31T23:59:59Z"
    assert body["limit"] == 100  # clamped to the service's maximum page size
    assert body["bbox"] == pytest.approx(list(AREA.bounds))
    assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20]}
    assert body["filter-lang"] == "cql2-json"


def test_cloud_filter(emu: Any, session: Any) -> None:
    everything = search(session, settings_for(emu), make_query())
    clouds = sorted(i.properties["eo:cloud_cover"] for i in everything)
    threshold = clouds[len(clouds) // 2]  # about half pass
    filtered = search(session, settings_for(emu), make_query(max_cloud=threshold))
    assert 0 < len(filtered) < len(everything)
    assert all(i.properties["eo:cloud_cover"] <= threshold for i in filtered)
    assert sorted(i.id for i in filtered) == sorted(expected_ids(emu, max_cloud=threshold))


def test_polygon_is_sent_as_intersects_and_rectangle_as_bbox(emu: Any, session: Any) -> None:
    triangle = Polygon([(13.30, 52.45), (13.45, 52.45), (13.30, 52.55)])
    assert "bbox" in search_parameters(make_query(AREA))
    params = search_parameters(make_query(triangle))
    assert "intersects" in params and "bbox" not in params
    search(session, settings_for(emu), make_query(triangle))
    body = search_posts(emu)[-1].body
    assert body["intersects"]["type"] == "Polygon"
    assert "bbox" not in body


def test_max_items(emu: Any, session: Any) -> None:
    items = search(session, settings_for(emu), make_query(), limit=2, max_items=3)
    assert len(items) == 3


def test_faults_during_paging_lose_nothing(emu: Any, session: Any) -> None:
    expected = sorted(expected_ids(emu))
    emu.faults.retry_after_ms = 200
    emu.faults.fail_next = [429, 503, Faults.DROP, 502]
    items = search(session, settings_for(emu), make_query(), limit=2)
    assert sorted(i.id for i in items) == expected
    assert session.stats()["retries"] == {"429": 1, "5xx": 2, "connection": 1}


def test_token_expiry_during_a_paged_search(emu: Any) -> None:
    expected = sorted(expected_ids(emu))
    emu.faults.token_lifetime = 2
    emu.faults.latency_ms = 300
    with open_session(settings_for(emu)) as s:  # ~10 pages x 0.3 s span the 2 s token
        items = search(s, settings_for(emu), make_query(), limit=max(1, len(expected) // 10))
    assert sorted(i.id for i in items) == expected
    assert settle(emu).count(kind="token") >= 2
    assert settle(emu).count(kind="catalog", status=401) == 0


def test_unknown_collection_lists_the_available_ones(emu: Any, session: Any) -> None:
    available = list_collections(session, settings_for(emu))
    assert "sentinel-2-l2a" in available
    with pytest.raises(UnknownCollectionError) as info:
        search(session, settings_for(emu), make_query(collection="sentinel-2-l3x"))
    message = info.value.message
    assert "sentinel-2-l3x" in message and "sentinel-2-l2a" in message


def test_service_errors_keep_the_servers_words(emu: Any, session: Any) -> None:
    # both the landing page and the first search page (sent together) are refused throughout:
    # 6 attempts each
    emu.faults.fail_next = [503] * 12
    with pytest.raises(ServiceError) as info:
        search(session, settings_for(emu), make_query())
    assert info.value.status == 503
    assert "Service temporarily unavailable" in info.value.message


def test_auth_errors_come_through_pystac_client_unwrapped(emu: Any) -> None:
    wrong = Settings(
        provider="sentinelhub",
        base_url=emu.url,
        token_url=emu.token_url,
        client_id=CLIENT_ID,
        client_secret="wrong-secret-value",
    )
    with open_session(wrong) as s, pytest.raises(AuthError) as info:
        search(s, wrong, make_query())
    assert "refused client id" in info.value.message


def test_the_landing_page_is_read_while_the_first_page_comes(emu: Any, session: Any) -> None:
    session.get(emu.catalog_url + "collections")  # the token first
    emu.log.clear()
    emu.faults.latency_ms = 300
    items = search(session, settings_for(emu), make_query())
    assert items
    records = settle(emu)
    landing = [r for r in records if r.method == "GET" and r.path.rstrip("/").endswith("/catalog/1.0.0")]
    posts = [r for r in records if r.kind == "catalog" and r.method == "POST"]
    assert len(landing) == 1 and posts  # still read: its verdict counts (see the odd landing pages)
    # one round trip before the first page, not two: the search was sent before the landing
    # page's answer (300 ms late) had come
    assert posts[0].started < landing[0].started + landing[0].duration - 0.1


def test_iter_search_streams(emu: Any, session: Any) -> None:
    stream = iter_search(session, settings_for(emu), make_query(), limit=2)
    first = next(stream)
    assert isinstance(first, pystac.Item)
    assert len(search_posts(emu)) == 1  # only the first page so far


def test_describe_item(emu: Any, session: Any) -> None:
    item = search(session, settings_for(emu), make_query())[0]
    row = describe_item(item)
    assert set(row) == {"date", "time", "id", "tile", "cloud", "platform"}
    assert row["id"] == item.id
    assert row["date"] == item.datetime.strftime("%Y-%m-%d")
    assert row["platform"] in ("sentinel-2a", "sentinel-2b", "sentinel-2c")
    assert row["tile"] and len(row["tile"]) == 5
    assert isinstance(row["cloud"], float)


def test_debug_logs_of_a_search_hold_no_token_or_secret(
    emu: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with open_session(settings_for(emu)) as s:
        search(s, settings_for(emu), make_query(), limit=5)
        token = s.token_source.get()
    assert "Authorization" in caplog.text  # pystac-client logged the request headers
    assert token not in caplog.text
    assert SECRET not in caplog.text


# --- odd Catalog shapes: refused with what the service sent, never "internal error" ---------
class _ShapesHandler(QuietHandler):
    def _handle(self) -> None:
        srv = self.server.owner
        self.read_body()
        path = urlsplit(self.path).path
        if path.endswith("/token"):
            self.send_json(200, {"access_token": "shapes-token", "expires_in": 3600, "token_type": "Bearer"})
        elif path.endswith("/search"):
            self.send_json(200, srv.docs["search"], "application/geo+json")
        elif path.endswith("/collections"):
            self.send_json(200, srv.docs["collections"])
        elif path.endswith("/conformance"):
            self.send_json(200, {"conformsTo": []})
        elif path.endswith("/"):
            self.send_json(200, srv.docs["landing"])
        else:
            self.send_json(404, {"code": 404, "description": "Not found."})

    do_GET = do_POST = _handle  # noqa: N815


class ShapesServer(LoopbackServer):
    """A Catalog that answers each endpoint with the document given (any JSON shape)."""

    what = "the shapes server"

    def __init__(self, **docs: Any) -> None:
        super().__init__(_ShapesHandler)
        self.docs = docs

    def landing(self) -> dict[str, Any]:
        base = f"{self.url}/api/v1/catalog/1.0.0"
        return {"type": "Catalog", "id": "shapes", "description": "shapes", "stac_version": "1.0.0",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                               "https://api.stacspec.org/v1.0.0/item-search"],
                "links": [{"rel": "self", "href": base + "/"}, {"rel": "root", "href": base + "/"},
                          {"rel": "search", "href": base + "/search", "method": "POST"}]}


ODD_FEATURE = {"type": "Feature", "stac_version": "1.0.0", "id": "S2A_MSIL2A_20220501T101031_N0400_R022_T33UUU_20220501T120000",
               "geometry": None, "links": [], "assets": {},
               "properties": {"datetime": "2022-05-01T10:10:31Z", "platform": "sentinel-2a"}}
ODD_PAGES = {"a JSON list": [{"id": "x"}], "a string": "maintenance",
             "links null": {"type": "FeatureCollection", "features": [ODD_FEATURE], "links": None},
             "links a string": {"type": "FeatureCollection", "features": [ODD_FEATURE], "links": "next"}}


@pytest.mark.parametrize("shape", sorted(ODD_PAGES))
def test_an_odd_search_page_is_refused_saying_what_came(shape: str) -> None:
    with ShapesServer(search=ODD_PAGES[shape], collections={"collections": []}) as srv:
        srv.docs["landing"] = srv.landing()
        settings = Settings(provider="sentinelhub", base_url=srv.url, token_url=srv.url + "/token",
                            client_id=CLIENT_ID, client_secret=SECRET)
        with open_session(settings, retry=FAST) as s:
            try:  # used (the page's items) or refused saying what came; nothing else
                items = search(s, settings, make_query())
            except ServiceError as exc:
                assert "catalog" in exc.message, exc.message
                return
    assert [i.id for i in items] == [ODD_FEATURE["id"]]


@pytest.mark.parametrize("landing", [["not", "a", "catalog"], "links-null", 42])
def test_an_odd_landing_page_is_refused_saying_what_came(landing: Any) -> None:
    with ShapesServer(search={"type": "FeatureCollection", "features": []}, collections=[]) as srv:
        srv.docs["landing"] = ({**srv.landing(), "links": None} if landing == "links-null" else landing)
        settings = Settings(provider="sentinelhub", base_url=srv.url, token_url=srv.url + "/token",
                            client_id=CLIENT_ID, client_secret=SECRET)
        with open_session(settings, retry=FAST) as s, pytest.raises(ServiceError) as info:
            search(s, settings, make_query())
    assert "catalog" in info.value.message, info.value.message


@pytest.mark.parametrize("collections", [["sentinel-2-l2a"], {"collections": None},
                                         {"collections": ["sentinel-2-l2a", 3]}, "x"])
def test_odd_collections_are_refused_or_ignored(collections: Any) -> None:
    with ShapesServer(search={"type": "FeatureCollection", "features": []},
                      collections=collections) as srv:
        settings = Settings(provider="sentinelhub", base_url=srv.url, token_url=srv.url + "/token",
                            client_id=CLIENT_ID, client_secret=SECRET)
        with open_session(settings, retry=FAST) as s, pytest.raises(ServiceError) as info:
            list_collections(s, settings)
    assert "collections" in info.value.message, info.value.message
