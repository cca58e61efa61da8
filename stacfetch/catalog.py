"""STAC search of the Sentinel Hub Catalog with pystac-client, over our authenticated session.

``search(session, settings_or_url, query)`` returns every matching ``pystac.Item`` exactly
once, sorted by datetime then id. Paging follows the service's POST ``next`` links (the body
is merged by pystac-client); the page size is at most 100 (the service's maximum).

Every item keeps the feature exactly as the service sent it (:func:`service_dict`), which
``search --json`` prints: pystac would rewrite it to STAC 1.1 (``proj:epsg`` -> ``proj:code``,
``eo:gsd`` -> ``gsd``, an added ``root`` link). Real answers come in several shapes
(``reference/real-responses``): items without ``geometry``/``stac_version``/``type`` (a
``fields``-filtered page, the commercial OpenAPI example), STAC 0.9.0 items, items with and
without ``collection``; those are completed to parse. What cannot be items — a ``distinct``
answer (date strings), items of another collection, an item without a datetime — is refused
with a ServiceError that says what the service sent. pystac-client's warnings are logged,
never printed.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pystac
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.item_search import ItemSearch
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import PystacClientWarning
from shapely.geometry import mapping

from .config import Settings
from .errors import InvalidResponseError, ServiceError, StacfetchError, decode_error_body
from .http import body_limit
from .http.urls import strip_query
from .location import is_rectangle
from .query import Query
from .stac.items import scene_facts

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100  # CatalogItemSearchLimit: 1..100 (larger values are clamped by the service)
# bounds on what one search may cost: a Catalog that pages forever or sends huge pages is
# stopped with a message, not followed until memory or patience runs out
MAX_PAGES = 1000  # 100,000 items at 100 a page: years of a large area
MAX_ITEMS = 50_000
MAX_PAGE_BYTES = 16 * 1000 * 1000  # decoded; a full page of real Sentinel Hub items is ~1-2 MB

__all__ = [
    "MAX_ITEMS",
    "MAX_PAGES",
    "MAX_PAGE_BYTES",
    "MAX_PAGE_SIZE",
    "UnknownCollectionError",
    "cloud_filter",
    "describe_item",
    "iter_pages",
    "iter_search",
    "list_collections",
    "open_catalog",
    "search",
    "search_parameters",
    "sort_key",
]


class UnknownCollectionError(ServiceError):
    """The catalog has no collection with the requested id."""


# -----------------------------------------------------------------------------------------
# Opening the catalog
# -----------------------------------------------------------------------------------------
def _catalog_url(settings_or_url: Settings | str) -> str:
    if isinstance(settings_or_url, Settings):
        return settings_or_url.catalog_url
    return settings_or_url.rstrip("/") + "/"


def open_catalog(session: Any, settings_or_url: Settings | str) -> Client:
    """``pystac_client.Client`` on our session (token, retries, limiter all apply).

    The commercial landing page lacks the item-search and filter conformance classes
    although both work; they are added when missing.
    """
    url = _catalog_url(settings_or_url)
    with _mapped_errors(url), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # e.g. a STAC 0.9.0 landing page: logged, not printed
        client = Client.open(url, stac_io=_catalog_io(session))
    _log_warnings(caught)
    for name in ("ITEM_SEARCH", "FILTER"):
        if not client.conforms_to(ConformanceClasses[name]):
            client.add_conforms_to(name)
    return client


def _catalog_io(session: Any) -> _CatalogIO:
    """pystac-client's IO on our session: retries belong to the session, not urllib3."""
    stac_io = _CatalogIO(max_retries=None)
    stac_io.session = session
    return stac_io


class _CatalogIO(StacApiIO):
    """pystac-client's IO, refusing a 200 that is an HTML page (a login, proxy or maintenance
    page) with words that say so, instead of a JSON decoding error."""

    def request(self, href: str, method: str | None = None, headers: dict[str, str] | None = None,
                parameters: dict[str, Any] | None = None) -> str:
        text = super().request(href, method=method, headers=headers, parameters=parameters)
        if text.lstrip()[:1] == "<":
            title = re.search(r"(?is)<title[^>]*>(.*?)</title>", text[:4000])
            shown = f" (titled {' '.join(title.group(1).split())[:80]!r})" if title else ""
            raise InvalidResponseError(
                f"the catalog at {strip_query(href)} answered HTML, not JSON{shown}",
                hint="a login page, a proxy or a maintenance page answered instead of the STAC API: "
                "check SH_BASE_URL (or STACFETCH_STAC_URL) and any HTTPS_PROXY, or try again later",
                status=200, url=strip_query(href),
            )
        return text


# -----------------------------------------------------------------------------------------
# The search body
# -----------------------------------------------------------------------------------------
def cloud_filter(max_cloud: float) -> dict[str, Any]:
    """CQL2-JSON filter ``eo:cloud_cover <= max_cloud`` (percent), for a POST search body.

    CQL2 JSON is the POST form of the STAC filter extension: the commercial Sentinel Hub
    spec's own example is CQL2 JSON (``{"op": ">", ...}``), CDSE advertises ``cql2-json`` in
    its conformance classes, and generic STAC APIs (stac-fastapi-pgstac) reject cql2-text in a
    POST body. (sentinelhub-py sends cql2-text, which Sentinel Hub also accepts.)
    """
    value = float(max_cloud)
    number: float | int = int(value) if value == int(value) else value
    return {"op": "<=", "args": [{"property": "eo:cloud_cover"}, number]}


def search_parameters(query: Query, *, limit: int = MAX_PAGE_SIZE) -> dict[str, Any]:
    """Keyword arguments for ``Client.search`` from a Query (useful to log or test)."""
    params: dict[str, Any] = {
        "method": "POST",
        "collections": [query.collection],
        "datetime": query.interval.to_stac(),
        "limit": max(1, min(int(limit), MAX_PAGE_SIZE)),
    }
    if is_rectangle(query.geometry):
        params["bbox"] = [float(v) for v in query.geometry.bounds]
    else:
        params["intersects"] = mapping(query.geometry)
    if query.max_cloud is not None:
        params["filter"] = cloud_filter(query.max_cloud)
        params["filter_lang"] = "cql2-json"
    return params


# -----------------------------------------------------------------------------------------
# Searching
# -----------------------------------------------------------------------------------------
class ServiceItem(pystac.Item):
    """A ``pystac.Item`` that remembers the feature as the service sent it."""

    service_dict: dict[str, Any]


def service_dict(item: pystac.Item) -> dict[str, Any]:
    """The item's JSON as the Catalog sent it (``item.to_dict()`` for items made elsewhere)."""
    raw = getattr(item, "service_dict", None)
    return copy.deepcopy(raw) if isinstance(raw, dict) else item.to_dict(transform_hrefs=False)


def _sample(value: Any) -> str:
    return strip_query(json.dumps(value)[:80])


def _as_item(feature: Any, query: Query, url: str, client: Client | None) -> ServiceItem:
    """Complete a real feature so pystac parses it, or refuse it saying what it is."""
    if not isinstance(feature, dict):
        raise ServiceError(
            f"the catalog at {url} answered with values such as {_sample(feature)} instead of "
            "items (the shape of a 'distinct' answer: dates, not scenes)",
            hint="stacfetch asks for items; check that the URL is the Sentinel Hub Catalog and "
            "that nothing between rewrites the search", url=url)
    item_id = feature.get("id")
    props = feature.get("properties") if isinstance(feature.get("properties"), dict) else {}
    platform = str(props.get("platform") or "")
    collection = feature.get("collection")
    if query.collection.startswith("sentinel-2") and not (
            platform.lower().startswith("sentinel-2") or str(item_id).startswith("S2")):
        raise ServiceError(
            f"the catalog at {url} answered a search for {query.collection} with item {item_id!r} "
            f"(platform {platform or 'not given'!r}, collection {collection or 'not given'!r}), "
            "which is not Sentinel-2: stacfetch does not use it",
            hint="the Catalog sent another collection's items; check --collection and the URL", url=url)
    if collection is not None and collection != query.collection:
        raise ServiceError(
            f"the catalog at {url} answered a search for {query.collection} with item {item_id!r} "
            f"of collection {collection!r}", url=url)
    if not (props.get("datetime") or props.get("start_datetime")):
        raise ServiceError(
            f"item {item_id!r} from {url} has no properties.datetime, so it cannot be placed in time "
            f"(it has: {', '.join(sorted(feature)) or 'nothing'})", url=url)
    doc = copy.deepcopy(feature)
    doc.setdefault("type", "Feature")
    doc.setdefault("stac_version", "1.0.0")
    doc.setdefault("geometry", None)
    doc.setdefault("links", [])
    doc.setdefault("assets", {})
    doc["properties"] = dict(props)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            item = ServiceItem.from_dict(doc, root=client, preserve_dict=False)
    except (pystac.STACError, ValueError, TypeError, KeyError) as exc:
        raise ServiceError(f"item {item_id!r} from {url} is not a STAC item pystac can read: {exc}",
                           url=url) from None
    item.service_dict = copy.deepcopy(feature)
    return item


Page = tuple[list[pystac.Item], bool]  # a page's new items (the service's order), and whether more follow

# the sortby asked of a catalog that conforms to the STAC sort extension
NEWEST_FIRST = [{"field": "properties.datetime", "direction": "desc"}]


def iter_pages(
    session: Any,
    settings_or_url: Settings | str,
    query: Query,
    *,
    limit: int = MAX_PAGE_SIZE,
    max_items: int | None = None,
    client: Client | None = None,
    newest_first: bool = False,
) -> Iterator[Page]:
    """Yield each page's new items (each id once, in the service's order) as the page arrives,
    and whether it links to a next page.

    ``newest_first``: ask ``sortby`` datetime descending where the catalog conforms to the STAC
    sort extension (a generic STAC API). The Sentinel Hub Catalog does not advertise it and is
    not asked; it pages newest first on its own (every recorded answer does).

    Without ``client`` the landing page is read (:func:`open_catalog`, in a thread) while the
    first search page is on its way to ``<catalog>/search``: one round trip before the first
    item, not two. Its verdict comes first, as if it had been read before: an odd landing page
    is refused even when the search answered; a landing page that names another search URL
    has the search sent again there. With ``newest_first`` the landing page is read first
    (whether to send ``sortby`` depends on it).
    """
    url = _catalog_url(settings_or_url)
    params = search_parameters(query, limit=limit)
    landing: Future[Client] | None = None
    if client is None and newest_first:
        client = open_catalog(session, url)
    if client is None:
        _token_first(session, url)
        pool = ThreadPoolExecutor(1, thread_name_prefix="stacfetch-landing")
        landing = pool.submit(open_catalog, session, url)
        pool.shutdown(wait=False)  # the thread ends with the landing page
        item_search = ItemSearch(url + "search", max_items=max_items, stac_io=_catalog_io(session),
                                 **params)
    else:
        if newest_first and _sorts(client):
            params["sortby"] = NEWEST_FIRST
        item_search = _search(client, params, max_items)
    seen: set[str] = set()
    links: set[str] = set()
    pages = 0
    with _mapped_errors(url, session=session, collection=query.collection), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page_iter = item_search.pages_as_dicts()
        while True:
            try:
                with body_limit(MAX_PAGE_BYTES, "a Catalog page"):
                    page = next(page_iter, None)
            except Exception:  # (Ctrl-C does not wait for the landing page)
                if landing is not None:  # the landing page's own failure, as when it came first
                    landing.result()
                raise
            if landing is not None:  # the first page is in: the landing page's verdict
                client, landing = landing.result(), None
                link = client.get_search_link()
                if link is not None and link.get_absolute_href() != url + "search":
                    log.debug("the catalog's search is at %s: searching there", link.get_absolute_href())
                    page_iter = _search(client, params, max_items).pages_as_dicts()
                    continue
            if page is None:
                break
            pages += 1
            features = page.get("features", []) if isinstance(page, dict) else None
            if not isinstance(features, list):
                raise ServiceError(f"the catalog at {url} answered a search with {_sample(page)}, "
                                   "not a FeatureCollection of items", url=url)
            more = _check_page(url, page, features, pages=pages, items=len(seen),
                               asked=params["limit"], links=links)
            fresh = []
            for feature in features:
                item = _as_item(feature, query, url, client)
                if item.id in seen:
                    continue
                seen.add(item.id)
                fresh.append(item)
            yield fresh, more and bool(features)  # pystac-client stops at an empty page too
    _log_warnings(caught)
    log.debug("search of %s: %d items in %d pages", query.collection, len(seen), pages)


def _sorts(client: Client) -> bool:
    """Whether the catalog advertises the STAC sort extension, of any version (pgstac lists
    v1.1.0, which pystac-client's own check does not match: it is then told)."""
    if client.conforms_to(ConformanceClasses.SORT):
        return True
    if any(str(uri).endswith("item-search#sort") for uri in client.get_conforms_to()):
        client.add_conforms_to("SORT")
        return True
    return False


def iter_search(
    session: Any,
    settings_or_url: Settings | str,
    query: Query,
    *,
    limit: int = MAX_PAGE_SIZE,
    max_items: int | None = None,
    client: Client | None = None,
) -> Iterator[pystac.Item]:
    """Yield matching items in the service's order, each id once, following every page."""
    for page, _ in iter_pages(session, settings_or_url, query, limit=limit, max_items=max_items,
                              client=client):
        yield from page


def _token_first(session: Any, url: str) -> None:
    """Fetch the session's token for ``url`` now, if it needs one: the landing page and the
    search then share it, and a token failure is one request and one error, as before."""
    auth = getattr(session, "auth", None)
    source, allows = getattr(auth, "source", None), getattr(auth, "allows", None)
    if source is not None and callable(allows) and allows(url):
        source.get()


def _search(client: Client, params: dict[str, Any], max_items: int | None) -> ItemSearch:
    """pystac-client's search through the landing page's search link."""
    with warnings.catch_warnings(record=True) as caught:
        # the commercial landing page advertises its search link without a method
        warnings.simplefilter("always", PystacClientWarning)
        item_search = client.search(max_items=max_items, **params)
    _log_warnings(caught)
    return item_search


def _check_page(url: str, page: dict[str, Any], features: list[Any], *, pages: int, items: int,
                asked: int, links: set[str]) -> bool:
    """Stop a search that cannot end well: more features than asked on a page, a ``next``
    link seen before (it would page forever), more than MAX_PAGES pages or MAX_ITEMS items.
    Returns whether the page links to a next one."""
    hint = "narrow the area or the time window (or --max-cloud); if it persists the catalog is misbehaving"
    if len(features) > asked:
        raise InvalidResponseError(
            f"the catalog at {url} sent {len(features):,} features on one page where at most "
            f"{asked} were asked; stopped", hint=hint, url=url)
    page_links = page.get("links")
    following = [link for link in page_links if isinstance(link, dict) and link.get("rel") == "next"] \
        if isinstance(page_links, list) else []  # "links": null or junk: no next page
    if not following:
        return False
    key = json.dumps([following[0].get(k) for k in ("href", "method", "body")], sort_keys=True, default=str)
    if key in links:
        raise InvalidResponseError(
            f"the catalog at {url} sent the same page again (a next-page link it had sent "
            f"before) after {pages:,} pages ({items:,} items): it would page forever; stopped",
            hint=hint, url=url)
    links.add(key)
    if pages >= MAX_PAGES or items + len(features) > MAX_ITEMS:
        raise InvalidResponseError(
            f"the search at {url} went on past {pages:,} pages ({items + len(features):,} items; "
            f"stacfetch stops at {MAX_PAGES:,} pages or {MAX_ITEMS:,} items); stopped",
            hint=hint, url=url)
    return True


def _log_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        log.debug("pystac-client: %s", w.message)


def search(
    session: Any,
    settings_or_url: Settings | str,
    query: Query,
    *,
    limit: int = MAX_PAGE_SIZE,
    max_items: int | None = None,
) -> list[pystac.Item]:
    """Every item matching ``query``, once each, sorted by datetime then id.

    ``limit`` is the page size (1..100); ``max_items`` caps the total. Service errors become
    :class:`~stacfetch.errors.ServiceError` with the server's own message; an unknown
    collection becomes :class:`UnknownCollectionError` listing the available ones.
    """
    items = list(iter_search(session, settings_or_url, query, limit=limit, max_items=max_items))
    return sorted(items, key=sort_key)


def sort_key(item: pystac.Item) -> tuple[datetime, str]:
    when = scene_facts(item).datetime
    return (when or datetime.min.replace(tzinfo=timezone.utc), item.id)


def list_collections(session: Any, settings_or_url: Settings | str) -> list[str]:
    """Ids of the collections the catalog serves (``GET /collections``)."""
    url = _catalog_url(settings_or_url) + "collections"
    response = session.get(url, headers={"Accept": "application/json"})
    if response.status_code != 200:
        raise ServiceError.from_response(response)
    try:
        body = response.json()
    except ValueError:
        body = None
    listed = body.get("collections") if isinstance(body, dict) else None
    if not isinstance(listed, list) or not all(isinstance(c, dict) for c in listed):
        raise ServiceError(
            f"the catalog at {url} answered GET /collections with {_sample(body)}, not an object "
            "whose 'collections' is a list of collections",
            hint="check that the URL is the STAC API (SH_BASE_URL or STACFETCH_STAC_URL)", url=url)
    return sorted(str(c["id"]) for c in listed if c.get("id"))


# -----------------------------------------------------------------------------------------
# Errors
# -----------------------------------------------------------------------------------------
class _TextResponse:
    """Just enough of a response for :func:`decode_error_body`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def json(self) -> Any:
        return json.loads(self.text)


def _stacfetch_cause(exc: BaseException) -> StacfetchError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, StacfetchError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def _mapped_errors(
    url: str, *, session: Any = None, collection: str | None = None
) -> Iterator[None]:
    """pystac-client wraps every failure in APIError; give back ours, with the server's words."""
    try:
        yield
    except StacfetchError:
        raise
    except APIError as exc:
        ours = _stacfetch_cause(exc)
        if ours is not None:
            raise ours from None
        status = getattr(exc, "status_code", None)
        code, text = decode_error_body(_TextResponse(str(exc)))
        words = text or "no error message in the response"
        if status is None:
            raise ServiceError(f"the catalog at {url} failed: {words}", url=url) from None
        if collection and status in (400, 404):
            _raise_if_unknown_collection(session, url, collection, status, words)
        raise ServiceError(
            f"HTTP {status} from {url}: {words}" + (f" [{code}]" if code else ""),
            status=status,
            code=code,
            url=url,
        ) from None
    except (pystac.STACError, ValueError, AttributeError, TypeError, KeyError) as exc:
        # a document of an unexpected shape (a list for an object, "links": null, ...) trips
        # pystac/pystac-client with these: it is what the service sent, not a stacfetch bug
        ours = _stacfetch_cause(exc)
        if ours is not None:
            raise ours from None
        raise ServiceError(
            f"the catalog at {url} sent something unreadable ({type(exc).__name__}: {exc})", url=url,
            hint="a landing page or search page of an unexpected shape: check that the URL is "
            "the STAC API (SH_BASE_URL or STACFETCH_STAC_URL)",
        ) from None


def _raise_if_unknown_collection(
    session: Any, url: str, collection: str, status: int, words: str
) -> None:
    if session is None:
        return
    try:
        available = list_collections(session, url)
    except (StacfetchError, ValueError):
        return
    if available and collection not in available:
        raise UnknownCollectionError(
            f"the catalog at {url} has no collection {collection!r} (HTTP {status}: {words}); "
            f"it offers: {', '.join(available)}",
            hint="Sentinel-2 L2A is 'sentinel-2-l2a' on both Sentinel Hub and CDSE",
            status=status,
            url=url,
        ) from None


# -----------------------------------------------------------------------------------------
# Presentation
# -----------------------------------------------------------------------------------------
def describe_item(item: pystac.Item) -> dict[str, Any]:
    """One row for the CLI table: date, time, id, tile, cloud %, platform."""
    facts = scene_facts(item)
    when = facts.datetime
    return {
        "date": when.strftime("%Y-%m-%d") if when else None,
        "time": when.strftime("%H:%M:%S") if when else None,
        "id": item.id,
        "tile": facts.tile,
        "cloud": round(facts.cloud_cover, 2) if facts.cloud_cover is not None else None,
        "platform": facts.platform_name,
    }
