"""STAC search of the Sentinel Hub Catalog with pystac-client, over our authenticated session.

``search(session, settings_or_url, query)`` returns every matching ``pystac.Item`` exactly
once, sorted by datetime then id. Paging follows the service's POST ``next`` links (the body
is merged by pystac-client); the page size is at most 100 (the service's maximum).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pystac
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import PystacClientWarning
from shapely.geometry import box, mapping

from .config import Settings
from .errors import ServiceError, StacfetchError, decode_error_body
from .query import Query
from .stac.items import scene_facts

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100  # CatalogItemSearchLimit: 1..100 (larger values are clamped by the service)

__all__ = [
    "MAX_PAGE_SIZE",
    "UnknownCollectionError",
    "cloud_filter",
    "describe_item",
    "iter_search",
    "list_collections",
    "open_catalog",
    "search",
    "search_parameters",
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
    stac_io = StacApiIO(max_retries=None)  # retries belong to our session, not urllib3
    stac_io.session = session
    with _mapped_errors(url):
        client = Client.open(url, stac_io=stac_io)
    for name in ("ITEM_SEARCH", "FILTER"):
        if not client.conforms_to(ConformanceClasses[name]):
            client.add_conforms_to(name)
    return client


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


def _is_rectangle(geometry: Any) -> bool:
    if geometry.geom_type != "Polygon" or list(geometry.interiors):
        return False
    if len(geometry.exterior.coords) != 5:
        return False
    return bool(geometry.equals(box(*geometry.bounds)))


def search_parameters(query: Query, *, limit: int = MAX_PAGE_SIZE) -> dict[str, Any]:
    """Keyword arguments for ``Client.search`` from a Query (useful to log or test)."""
    params: dict[str, Any] = {
        "method": "POST",
        "collections": [query.collection],
        "datetime": query.interval.to_stac(),
        "limit": max(1, min(int(limit), MAX_PAGE_SIZE)),
    }
    if _is_rectangle(query.geometry):
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
    url = _catalog_url(settings_or_url)
    client = client or open_catalog(session, url)
    params = search_parameters(query, limit=limit)
    with warnings.catch_warnings():
        # the commercial landing page advertises its search link without a method
        warnings.simplefilter("ignore", PystacClientWarning)
        item_search = client.search(max_items=max_items, **params)
    seen: set[str] = set()
    pages = 0
    with _mapped_errors(url, session=session, collection=query.collection):
        for page in item_search.pages_as_dicts():
            pages += 1
            for feature in page.get("features", []):
                item_id = feature.get("id")
                if item_id in seen:
                    continue
                seen.add(item_id)
                yield pystac.Item.from_dict(feature, root=client, preserve_dict=False)
    log.debug("search of %s: %d items in %d pages", query.collection, len(seen), pages)


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
    return sorted(items, key=_sort_key)


def _sort_key(item: pystac.Item) -> tuple[datetime, str]:
    when = scene_facts(item).datetime
    return (when or datetime.min.replace(tzinfo=timezone.utc), item.id)


def list_collections(session: Any, settings_or_url: Settings | str) -> list[str]:
    """Ids of the collections the catalog serves (``GET /collections``)."""
    url = _catalog_url(settings_or_url) + "collections"
    response = session.get(url, headers={"Accept": "application/json"})
    if response.status_code != 200:
        raise ServiceError.from_response(response)
    body = response.json()
    return sorted(c.get("id", "") for c in body.get("collections", []) if c.get("id"))


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
    except (pystac.STACError, ValueError) as exc:
        ours = _stacfetch_cause(exc)
        if ours is not None:
            raise ours from None
        raise ServiceError(
            f"the catalog at {url} sent something unreadable: {exc}", url=url
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
