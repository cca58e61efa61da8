"""The emulator's Catalog (STAC API) documents and its item search.

Landing pages follow the real ones of each deployment (the commercial one conforms to STAC
1.0.0-rc.1 core only, without item-search, as the real service does; the CDSE one lists the full
set). Search follows reference §2.3-2.5: one collection, required ``datetime``, ``bbox`` or
``intersects``, ``ids``, ``limit`` 1..100 (default 10, larger values clamped), integer ``next``,
CQL2 ``filter`` on ``eo:cloud_cover`` (text or JSON; comparisons and ``between`` joined by AND
only), ``fields`` (the documented rules, so a filtered page can hold features of ``id`` and
``properties`` only, as the real one does) and ``distinct`` (``date`` for sentinel-2-l2a: the
features are date strings, as in ``real-responses/page_sh_distinct_dates_js.json``). Results are
newest first, then by id, as the real Catalog pages.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from . import grid
from .responses import catalog_error

COLLECTIONS = {
    "sentinelhub": {
        "sentinel-2-l1c": "Sentinel 2 L1C",
        "planet-scorpius": "Planet Scorpius",
        "sentinel-1-grd": "Sentinel 1 GRD",
        "sentinel-2-l2a": "Sentinel 2 L2A",
    },
    "cdse": {
        "sentinel-2-l1c": "Sentinel 2 L1C",
        "sentinel-3-olci": "Sentinel 3 OLCI",
        "sentinel-3-slstr": "Sentinel 3 SLSTR",
        "sentinel-1-grd": "Sentinel 1 GRD",
        "sentinel-2-l2a": "Sentinel 2 L2A",
        "sentinel-5p-l2": "Sentinel 5 Precursor",
    },
}
QUERYABLES = ("eo:cloud_cover",)
DEFAULT_FIELDS = ("id", "type", "geometry", "bbox", "links", "assets", "properties.datetime")
DISTINCT = {"sentinel-2-l2a": ("date",)}
MAX_LIMIT, DEFAULT_LIMIT = 100, 10
MAX_CANDIDATES = 2_000_000  # tile-passes a single search may scan
_UTC = timezone.utc

_SH_CONFORMS = [
    "https://api.stacspec.org/v1.0.0-rc.1/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]
_CDSE_CONFORMS = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/ogcapi-features#fields",
    "https://api.stacspec.org/v1.0.0/ogcapi-features#context",
    "https://api.stacspec.org/v1.0.0/ogcapi-features#filter",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#fields",
    "https://api.stacspec.org/v1.0.0/item-search#context",
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
]

# name, common_name, centre and FWHM in micrometres
_EO_BANDS = [
    ("B01", "coastal", 0.4427, 0.021), ("B02", "blue", 0.4924, 0.066),
    ("B03", "green", 0.5598, 0.036), ("B04", "red", 0.6646, 0.031),
    ("B05", "rededge", 0.7041, 0.015), ("B06", "rededge", 0.7405, 0.015),
    ("B07", "rededge", 0.7828, 0.02), ("B08", "nir", 0.8328, 0.106),
    ("B8A", "nir08", 0.8647, 0.021), ("B09", "nir09", 0.9451, 0.02),
    ("B11", "swir16", 1.6137, 0.091), ("B12", "swir22", 2.2024, 0.175),
]


def conformance(deployment: str) -> list[str]:
    return list(_CDSE_CONFORMS if deployment == "cdse" else _SH_CONFORMS)


def landing_page(deployment: str, root: str) -> dict[str, Any]:
    """The landing page of ``deployment`` with links pointing at ``root`` (ends with '/')."""
    cdse = deployment == "cdse"
    links: list[dict[str, Any]]
    if cdse:
        links = [
            {"href": root, "rel": "root", "type": "application/json"},
            {"href": root, "rel": "self", "type": "application/json"},
            {"href": root + "collections", "rel": "data", "type": "application/json"},
            {"href": root + "conformance", "rel": "conformance", "type": "application/json",
             "title": "STAC conformance classes implemented by this server"},
            {"href": root + "search", "rel": "search", "type": "application/geo+json",
             "title": "STAC search", "method": "GET"},
            {"href": root + "search", "rel": "search", "type": "application/geo+json",
             "title": "STAC search", "method": "POST"},
            {"href": root + "queryables", "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
             "type": "application/schema+json"},
        ]
        links += [{"href": f"{root}collections/{cid}", "rel": "child", "type": "application/json",
                   "title": title} for cid, title in COLLECTIONS["cdse"].items()]
    else:
        links = [
            {"href": root, "rel": "self"},
            {"href": root + "conformance", "rel": "conformance"},
            {"href": root + "collections", "rel": "data"},
            {"href": root + "search", "rel": "search"},
        ]
        links += [{"href": f"{root}collections/{cid}", "rel": "child"}
                  for cid in COLLECTIONS["sentinelhub"]]
    return {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "sentinel-hub",
        "title": "Sentinel Hub STAC catalog",
        "description": "STAC v1.0.0 implementation by Sentinel Hub",
        "conformsTo": conformance(deployment),
        "links": links,
    }


def collection(deployment: str, root: str, cid: str) -> dict[str, Any]:
    """A collection document; 404 CatalogException for unknown ids."""
    titles = COLLECTIONS[deployment]
    if cid not in titles:
        raise catalog_error(404, "Collection not found.")
    doc: dict[str, Any] = {
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.0.0/schema.json"],
        "type": "Collection",
        "id": cid,
        "title": titles[cid],
        "description": f"{titles[cid]} (emulated: only sentinel-2-l2a has items)",
        "license": "proprietary",
        "providers": [{"name": "Sentinel Hub", "roles": ["processor", "host"]}],
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [["2015-06-23T00:00:00Z", None]]}},
        "links": [
            {"href": root, "rel": "root", "type": "application/json"},
            {"href": root, "rel": "parent", "type": "application/json"},
            {"href": f"{root}collections/{cid}", "rel": "self", "type": "application/json"},
            {"href": f"{root}collections/{cid}/items", "rel": "items", "type": "application/geo+json"},
        ],
    }
    if cid == grid.COLLECTION:
        doc["extent"]["spatial"]["bbox"] = [[-180, grid.LAT_MIN, 180, grid.LAT_MAX]]
        doc["summaries"] = {
            "platform": ["sentinel-2a", "sentinel-2b"],
            "instruments": ["msi"],
            "constellation": ["sentinel-2"],
            "gsd": [10],
            "eo:cloud_cover": {"minimum": 0, "maximum": 100},
            "eo:bands": [{"name": n, "common_name": c, "center_wavelength": w, "full_width_half_max": f}
                         for n, c, w, f in _EO_BANDS],
        }
    return doc


def collections(deployment: str, root: str) -> dict[str, Any]:
    return {
        "collections": [collection(deployment, root, cid) for cid in COLLECTIONS[deployment]],
        "links": [{"href": root, "rel": "root", "type": "application/json"},
                  {"href": root + "collections", "rel": "self", "type": "application/json"}],
    }


def queryables(root: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": root + "queryables",
        "type": "object",
        "title": "Queryables for sentinel-2-l2a",
        "properties": {"eo:cloud_cover": {"title": "Cloud cover (%)", "type": "number",
                                          "minimum": 0, "maximum": 100}},
    }


# ------------------------------------------------------------------------------- parameters
def _bad(description: str) -> Exception:
    return catalog_error(400, description)


def parse_instant(text: str) -> datetime:
    """RFC 3339 date-time (``Z`` or an offset, optional fraction) -> aware UTC datetime."""
    t = text.strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$", t):
        raise _bad(f"Invalid datetime {text!r}: use RFC 3339 such as 2020-12-10T00:00:00Z, or "
                   "an interval start/end with '..' for an open end")
    t = re.sub(r"[Zz]$", "+00:00", t)
    frac = re.search(r"\.(\d+)", t)
    if frac and len(frac.group(1)) > 6:
        t = t.replace(frac.group(0), "." + frac.group(1)[:6])
    return datetime.fromisoformat(t).astimezone(_UTC)


def parse_datetime(value: Any) -> tuple[datetime, datetime]:
    if value is None or value == "":
        raise _bad("datetime is required, e.g. \"2020-12-10T00:00:00Z/2021-02-01T23:59:59Z\"")
    if not isinstance(value, str):
        raise _bad(f"datetime must be a string, got {value!r}")
    if "/" in value:
        a, _, b = value.partition("/")
        start = datetime.combine(grid.LAUNCH["S2A"], datetime.min.time(), _UTC) if a in ("", "..") \
            else parse_instant(a)
        end = datetime.now(_UTC) if b in ("", "..") else parse_instant(b)
        if end < start:
            raise _bad(f"Invalid datetime interval {value!r}: end is before start")
        return start, end
    instant = parse_instant(value)
    return instant, instant


def _bbox_geometry(values: Any) -> BaseGeometry:
    if isinstance(values, str):
        try:
            values = [float(v) for v in values.split(",")]
        except ValueError:
            raise _bad(f"Invalid bbox {values!r}") from None
    if not isinstance(values, list) or len(values) not in (4, 6) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise _bad(f"Invalid bbox {values!r}: 4 numbers [minLon, minLat, maxLon, maxLat]")
    w, s, e, n = (values[0], values[1], values[3], values[4]) if len(values) == 6 else values
    if s > n or not (-90 <= s <= 90 and -90 <= n <= 90) or not (-180 <= w <= 180 and -180 <= e <= 180):
        raise _bad(f"Invalid bbox {values!r}: [minLon, minLat, maxLon, maxLat] in degrees")
    if w > e:  # crosses the antimeridian
        return unary_union([box(w, s, 180, n), box(-180, s, e, n)])
    return box(w, s, e, n)


def _intersects_geometry(value: Any) -> BaseGeometry:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _bad("intersects must be a GeoJSON geometry") from None
    try:
        geom = shape(value)
    except Exception:
        raise _bad("intersects must be a GeoJSON geometry") from None
    if geom.is_empty:
        raise _bad("intersects geometry is empty")
    if not geom.is_valid:
        geom = geom.buffer(0)
    return geom


# ---------------------------------------------------------------------------------- filter
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "=": lambda a, b: a == b, "<>": lambda a, b: a != b,
}
_OP_ALIASES = {"lt": "<", "lte": "<=", "le": "<=", "gt": ">", "gte": ">=", "ge": ">=",
               "eq": "=", "==": "=", "neq": "<>", "ne": "<>", "!=": "<>"}

Predicate = Callable[[dict[str, Any]], bool]


def _comparison(prop: str, op: str, args: list[Any]) -> Predicate:
    if prop not in QUERYABLES:
        raise _bad(f"Unsupported filter property {prop!r}; sentinel-2-l2a can be filtered by "
                   + ", ".join(QUERYABLES))
    for a in args:
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            raise _bad(f"eo:cloud_cover must be compared with a number, got {a!r}")
    if op == "between":
        lo, hi = args
        return lambda p: lo <= p[prop] <= hi
    fn = _OPS[op]
    value = args[0]
    return lambda p: fn(p[prop], value)


_TEXT_CMP = re.compile(
    r"^\(?\s*([A-Za-z_][\w:.\-]*)\s*(<=|>=|<>|!=|==|<|>|=|\b(?:lte|lt|gte|gt|eq|neq|le|ge|ne)\b)\s*"
    r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|'[^']*')\s*\)?$", re.I)
_TEXT_BETWEEN = re.compile(
    r"^\(?\s*([A-Za-z_][\w:.\-]*)\s+between\s+([-+]?[\d.]+)\s+and\s+([-+]?[\d.]+)\s*\)?$", re.I)


def _text_filter(text: str) -> list[Predicate]:
    protected = re.sub(r"(?i)\bbetween\s+([-+]?[\d.]+)\s+and\s+", r"between \1 &&& ", text)
    if re.search(r"(?i)\bor\b|\bnot\b", protected):
        raise _bad("Only AND is supported as a logical operator in filter")
    preds = []
    for part in re.split(r"(?i)\s+and\s+", protected.strip()):
        part = part.replace("&&&", "and").strip()
        if m := _TEXT_BETWEEN.match(part):
            preds.append(_comparison(m.group(1), "between", [float(m.group(2)), float(m.group(3))]))
            continue
        m = _TEXT_CMP.match(part)
        if not m:
            raise _bad(f"Cannot parse filter {text!r}: use e.g. \"eo:cloud_cover < 20\"")
        op = m.group(2).lower()
        op = _OP_ALIASES.get(op, op)
        raw = m.group(3)
        value: Any = raw[1:-1] if raw.startswith("'") else float(raw)
        preds.append(_comparison(m.group(1), op, [value]))
    return preds


def _json_filter(node: Any) -> list[Predicate]:
    if not isinstance(node, dict) or "op" not in node or not isinstance(node.get("args"), list):
        raise _bad("A cql2-json filter is {\"op\": ..., \"args\": [...]}")
    op = str(node["op"]).lower()
    args = node["args"]
    if op == "and":
        return [p for a in args for p in _json_filter(a)]
    if op in ("or", "not"):
        raise _bad("Only AND is supported as a logical operator in filter")
    op = _OP_ALIASES.get(op, op)
    if op not in _OPS and op != "between":
        raise _bad(f"Unsupported filter operator {node['op']!r}; use eq, neq, lt, lte, gt, gte, between")
    if not args or not isinstance(args[0], dict) or "property" not in args[0]:
        raise _bad("The first argument of a comparison must be {\"property\": ...}")
    rest = args[1:]
    if op == "between" and len(rest) == 1 and isinstance(rest[0], list):
        rest = rest[0]
    if len(rest) != (2 if op == "between" else 1):
        raise _bad(f"Wrong number of arguments for {node['op']!r}")
    return [_comparison(str(args[0]["property"]), op, rest)]


def parse_filter(value: Any, lang: Any = None) -> list[Predicate]:
    if value is None:
        return []
    if lang not in (None, "cql2-text", "cql2-json"):
        raise _bad(f"Unsupported filter-lang {lang!r}; use cql2-text or cql2-json")
    if isinstance(value, str):
        if lang == "cql2-json":
            try:
                return _json_filter(json.loads(value))
            except ValueError:
                raise _bad("filter-lang is cql2-json but filter is not JSON") from None
        return _text_filter(value)
    if lang == "cql2-text":
        raise _bad("filter-lang is cql2-text but filter is a JSON object")
    return _json_filter(value)


# ---------------------------------------------------------------------------------- fields
Fields = tuple[list[str] | None, list[str] | None]


def parse_fields(value: Any) -> Fields | None:
    """``{"include": [...], "exclude": [...]}`` or GET's ``"id,-geometry"`` -> (include, exclude).

    None for a list means the key was not given (the rules below tell "absent" from "empty").
    """
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        inc = [p.lstrip("+") for p in parts if not p.startswith("-")]
        exc = [p[1:] for p in parts if p.startswith("-")]
        return (inc or None), (exc or None)
    if not isinstance(value, dict):
        raise _bad("fields must be {\"include\": [...], \"exclude\": [...]}")
    inc, exc = value.get("include"), value.get("exclude")
    if inc is not None and not isinstance(inc, list) or exc is not None and not isinstance(exc, list):
        raise _bad("fields.include and fields.exclude must be lists")
    return ([str(x) for x in inc] if inc is not None else None,
            [str(x) for x in exc] if exc is not None else None)


def _get(doc: dict[str, Any], path: list[str]) -> tuple[bool, Any]:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return False, None
        cur = cur[key]
    return True, cur


def apply_fields(item: dict[str, Any], fields: Fields | None) -> dict[str, Any]:
    """The CDSE Catalog "Fields" rules (reference §2.3).

    No ``fields``: everything. Empty object: the default set. Only ``include``: default set plus
    those. Only ``exclude``: default set minus those. Both (even empty lists): exactly what is
    included and not excluded — ``{"include": ["id", "properties.datetime"], "exclude": []}``
    gives features with ``id`` and ``properties`` only.
    """
    if fields is None:
        return item
    include, exclude = fields
    if include is not None and exclude is not None:
        keep = list(dict.fromkeys(include))
    else:
        keep = list(DEFAULT_FIELDS) + [p for p in include or () if p not in DEFAULT_FIELDS]
    out: dict[str, Any] = {}
    for path in keep:
        keys = path.split(".")
        found, value = _get(item, keys)
        if not found:
            continue
        cur = out
        for key in keys[:-1]:
            cur = cur.setdefault(key, {})
        cur[keys[-1]] = json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value
    for path in exclude or ():
        keys = path.split(".")
        found, _ = _get(out, keys)
        if found:
            parent = _get(out, keys[:-1])[1] if len(keys) > 1 else out
            del parent[keys[-1]]
    return out


# ---------------------------------------------------------------------------------- search
@dataclass(frozen=True)
class SearchParams:
    collection: str
    start: datetime
    end: datetime
    geometry: BaseGeometry | None
    ids: tuple[str, ...] | None
    limit: int
    next: int
    predicates: tuple[Predicate, ...]
    fields: Fields | None
    cache_key: str
    distinct: str | None = None


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise _bad(f"{name} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _bad(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, float) and not value.is_integer():
        raise _bad(f"{name} must be an integer, got {value!r}")
    return number


def parse_search(params: dict[str, Any], deployment: str, *, from_query: bool = False) -> SearchParams:
    """Normalise a POST body (or GET query, ``from_query``) into SearchParams; 400/404 on errors."""
    if not isinstance(params, dict):
        raise _bad("The search body must be a JSON object")
    if "query" in params:
        raise _bad("The 'query' extension is not supported; use 'filter' (CQL2)")
    colls = params.get("collections")
    if from_query and isinstance(colls, str):
        colls = [c for c in colls.split(",") if c]
    if not isinstance(colls, list) or len(colls) != 1 or not isinstance(colls[0], str):
        raise _bad("collections must list exactly one collection, e.g. [\"sentinel-2-l2a\"]")
    cid = colls[0]
    if cid not in COLLECTIONS[deployment]:
        raise catalog_error(404, "Collection not found.")
    distinct = params.get("distinct")
    if distinct is not None and distinct not in DISTINCT.get(cid, ()):
        allowed = ", ".join(DISTINCT.get(cid, ())) or "none"
        raise _bad(f"Distinct value {distinct!r} is not supported for collection {cid}; allowed: {allowed}")
    start, end = parse_datetime(params.get("datetime"))
    geometry: BaseGeometry | None = None
    if params.get("bbox") is not None and params.get("intersects") is not None:
        raise _bad("Use either bbox or intersects, not both")
    if params.get("bbox") is not None:
        geometry = _bbox_geometry(params["bbox"])
    elif params.get("intersects") is not None:
        geometry = _intersects_geometry(params["intersects"])
    ids = params.get("ids")
    if from_query and isinstance(ids, str):
        ids = ids.split(",")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise _bad("ids must be a list of item ids")
    limit = DEFAULT_LIMIT if params.get("limit") is None else _int(params["limit"], "limit")
    if limit < 1:
        raise _bad(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    limit = min(limit, MAX_LIMIT)
    nxt = 0 if params.get("next") is None else _int(params["next"], "next")
    if nxt < 0:
        raise _bad(f"Invalid next token {params['next']!r}")
    predicates = parse_filter(params.get("filter"), params.get("filter-lang"))
    fields = parse_fields(params.get("fields"))
    key = json.dumps({k: params.get(k) for k in ("collections", "datetime", "bbox", "intersects",
                                                 "ids", "filter", "filter-lang")},
                     sort_keys=True, default=str)
    return SearchParams(cid, start, end, geometry, tuple(ids) if ids is not None else None, limit,
                        nxt, tuple(predicates), fields, f"{deployment}|{key}", distinct)


class Searcher:
    """Runs searches, keeping a few recent full result lists so paging is cheap."""

    def __init__(self, deployment: str, size: int = 32) -> None:
        self.deployment = deployment
        self._cache: OrderedDict[str, list[grid.Acquisition]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def matches(self, p: SearchParams) -> list[grid.Acquisition]:
        with self._lock:
            if p.cache_key in self._cache:
                self._cache.move_to_end(p.cache_key)
                return self._cache[p.cache_key]
        result = self._compute(p)
        with self._lock:
            self._cache[p.cache_key] = result
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return result

    def _compute(self, p: SearchParams) -> list[grid.Acquisition]:
        if p.collection != grid.COLLECTION:
            return []
        if p.ids is not None:
            found = [a for i in dict.fromkeys(p.ids) if (a := grid.find(i, self.deployment))]
            found = [a for a in found if p.start <= a.datetime <= p.end and (
                p.geometry is None or p.geometry.intersects(a.tile.footprint))]
            found.sort(key=lambda a: a.sort_key)
        else:
            area = p.geometry if p.geometry is not None else box(-180, -90, 180, 90)
            days = max(1.0, (p.end - p.start).total_seconds() / 86400)
            n_tiles = len(grid.tiles_intersecting(area)) if p.geometry is not None else 50400
            if n_tiles * days / 2.5 > MAX_CANDIDATES:
                raise _bad("The search is too broad for the emulator: narrow the area (bbox or "
                           "intersects) or the datetime interval")
            found = grid.search(area, p.start, p.end, self.deployment)
        if p.predicates:
            found = [a for a in found if all(pr({"eo:cloud_cover": a.cloud_cover}) for pr in p.predicates)]
        return found


def search_page(
    searcher: Searcher, p: SearchParams, root: str, *, method: str, query: str = ""
) -> dict[str, Any]:
    """One page of results as a FeatureCollection with SH-style ``context`` and links."""
    matches: list[Any] = searcher.matches(p)
    if p.distinct == "date":  # distinct dates, newest first: the features are strings
        matches = sorted({a.datetime.date().isoformat() for a in matches}, reverse=True)
        features: list[Any] = matches[p.next:p.next + p.limit]
    else:
        page = matches[p.next:p.next + p.limit]
        features = [apply_fields(grid.item_json(a, root), p.fields) for a in page]
    url = root + "search"
    context: dict[str, Any] = {"limit": p.limit, "returned": len(features)}
    links: list[dict[str, Any]] = []
    if method == "GET":
        links.append({"href": url + ("?" + query if query else ""), "rel": "self",
                      "type": "application/geo+json"})
    else:
        links.append({"href": url, "rel": "self", "type": "application/geo+json"})
    if p.next + p.limit < len(matches):
        nxt = p.next + p.limit
        context = {"next": nxt, **context}
        if method == "GET":
            pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "next"]
            href = url + "?" + urlencode(pairs + [("next", str(nxt))], safe=",:/")
            links.append({"href": href, "rel": "next", "type": "application/geo+json",
                          "title": "Next set of results"})
        else:
            links.append({"href": url, "rel": "next", "type": "application/geo+json",
                          "title": "Next set of results", "method": "POST", "body": {"next": nxt},
                          "merge": True})
    return {"type": "FeatureCollection", "features": features, "links": links, "context": context}
