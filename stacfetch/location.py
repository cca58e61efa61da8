"""Coordinates in many shapes -> one valid polygon in EPSG:4326, lon/lat order.

Axis order is **always lon, lat** (x, y), as in GeoJSON: a point is ``(lon, lat)``, a bbox
is ``[W, S, E, N]`` = ``[min lon, min lat, max lon, max lat]``, a ring is a list of
``[lon, lat]`` pairs.

``to_geometry(value)`` is the one normaliser; it accepts every :data:`LocationLike` and
returns a valid, non-empty, counter-clockwise ``Polygon`` or ``MultiPolygon`` whose area
is between :data:`MIN_AREA_M2` and :data:`MAX_AREA_KM2`. Bad input either gets a safe
correction with a ``logging`` warning or an :class:`~stacfetch.errors.InvalidLocationError`.

Documented limits and decisions:

* ``size`` (side of the square around a point) is in metres, from :data:`MIN_SIZE_M`
  (10 m, one Sentinel-2 pixel) to :data:`MAX_SIZE_M` (200 km). The square is built in the
  point's UTM zone, so its sides are exactly ``size`` UTM metres (true ground length
  differs by the UTM scale factor, under 0.15 %).
* :data:`MAX_AREA_KM2` = 250,000 km²: a 500 km x 500 km square, about the United Kingdom
  or roughly 20 Sentinel-2 tiles. Larger areas are rejected; split them.
* Areas under :data:`MIN_AREA_M2` (50 m², half a 10 m pixel) count as zero-area.
* Areas crossing the antimeridian (180°) or containing a pole are rejected with a hint to
  split them; they are not handled.
* A bbox with S > N is swapped (a warning): latitudes do not wrap, so there is no other
  reading. A bbox with W > E is swapped (a warning) only when the antimeridian reading
  would be wider than 180° of longitude; otherwise it is rejected, because it may be an
  area crossing 180°.
* Unclosed rings are closed (a warning). Invalid polygons are repaired with shapely's
  ``make_valid`` only when the repair keeps the area within :data:`REPAIR_TOLERANCE`
  (1 %); a self-intersecting "bow-tie" changes area and is rejected.
* Likely lat/lon swaps are never corrected silently: the error suggests the swapped
  command fragment. Both readings valid (|lon| <= 90) cannot be detected; the echo of
  :func:`describe_area` (latitude first, labelled N/S) makes them visible.
* UTM zones follow the Norway (32V) and Svalbard (31X/33X/35X/37X) exceptions, as the
  Sentinel-2 MGRS grid does. Beyond 84°N / 80°S the plain UTM zone is still used (no UPS).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import numbers
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import pyproj
import shapely
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient
from shapely.validation import make_valid

from .errors import AreaTooLargeError, InvalidLocationError

log = logging.getLogger(__name__)

DEFAULT_SIZE_M = 5000.0
MIN_SIZE_M = 10.0
MAX_SIZE_M = 200_000.0
MAX_AREA_KM2 = 250_000.0
MIN_AREA_M2 = 50.0
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_POSITIONS = 2_000_000
REPAIR_TOLERANCE = 0.01
DENSIFY_ABOVE_M = 10_000.0

_GEOD = pyproj.Geod(ellps="WGS84")


class SupportsGeoInterface(Protocol):
    """Anything with a ``__geo_interface__`` (shapely, geopandas, pygeoif, ...)."""

    @property
    def __geo_interface__(self) -> Mapping[str, Any]: ...


LonLat: TypeAlias = tuple[float, float]
BBox: TypeAlias = tuple[float, float, float, float]
LocationLike: TypeAlias = (
    LonLat
    | BBox
    | Sequence[float]
    | Sequence[Sequence[float]]
    | str
    | os.PathLike
    | Mapping[str, Any]
    | BaseGeometry
    | SupportsGeoInterface
)
"""What :func:`to_geometry` accepts; every coordinate pair is (lon, lat)."""

ACCEPTED_FORMS = (
    "a point (lon, lat) or 'lon,lat'; a bbox [W, S, E, N] or 'W,S,E,N'; a ring of [lon, lat] "
    "pairs; GeoJSON (geometry, Feature, FeatureCollection) as a dict, JSON text or a "
    ".geojson file path; WKT; a shapely geometry or anything with __geo_interface__"
)


# --- public API -------------------------------------------------------------------------
def to_geometry(value: LocationLike, *, size: float = DEFAULT_SIZE_M) -> Polygon | MultiPolygon:
    """Turn any :data:`LocationLike` into a valid EPSG:4326 (lon, lat) polygon.

    Points become squares of side ``size`` metres built in their UTM zone.
    Raises :class:`InvalidLocationError` with what was wrong and a hint.
    """
    size = _check_size(size)
    try:
        geometry = _from_any(value, size)
    except shapely.errors.GEOSException as exc:  # last resort: never a raw GEOS traceback
        raise InvalidLocationError(
            f"the location could not be read as a geometry: {exc}", hint=f"give {ACCEPTED_FORMS}"
        ) from None
    return geometry


def point_geometry(lon: float, lat: float, size: float = DEFAULT_SIZE_M) -> Polygon:
    """A square of side ``size`` metres centred on (lon, lat), built in the point's UTM zone."""
    lon = _number(lon, "longitude")
    lat = _number(lat, "latitude")
    size = _check_size(size)
    _check_point(lon, lat)
    epsg = _utm_epsg(lon, lat)
    to_utm, to_lonlat = _transformers(epsg)
    x, y = to_utm.transform(lon, lat)
    half = size / 2.0
    square = box(x - half, y - half, x + half, y + half)
    for pole_lat, name in ((90.0, "North"), (-90.0, "South")):
        px, py = to_utm.transform(0.0, pole_lat)
        if square.intersects(shapely.Point(px, py)):
            raise InvalidLocationError(
                f"the {_fmt_len(size)} square around lon {_fmt(lon)}, lat {_fmt(lat)} contains "
                f"the {name} Pole; areas containing a pole are not supported",
                hint="move the point away from the pole or use a smaller --size",
            )
    if size > DENSIFY_ABOVE_M or abs(lat) > 60.0:
        # Keep the lon/lat outline close to the UTM square's straight edges.
        square = shapely.segmentize(square, max_segment_length=size / 8.0)
    lonlat = shapely.transform(square, to_lonlat.transform, interleaved=False)
    _check_antimeridian(lonlat, f"the square around lon {_fmt(lon)}, lat {_fmt(lat)}")
    return _finish(lonlat, "the square around the point")  # type: ignore[return-value]


def bbox_geometry(w: float, s: float, e: float, n: float) -> Polygon:
    """The box [W, S, E, N] (min lon, min lat, max lon, max lat) as a polygon."""
    w, s, e, n = (_number(v, f"bbox {k}") for v, k in zip((w, s, e, n), _BBOX_NAMES, strict=True))
    _check_bbox_ranges(w, s, e, n)
    if s > n:
        log.warning(
            "bbox south %s is north of north %s; swapped them (a bbox is W, S, E, N): "
            "using W,S,E,N = %s,%s,%s,%s",
            _fmt(s), _fmt(n), _fmt(w), _fmt(n), _fmt(e), _fmt(s),
        )
        s, n = n, s
    if w > e:
        across = e - w + 360.0  # width if the box crossed the antimeridian
        if across > 180.0:
            log.warning(
                "bbox west %s is east of east %s; swapped them (a bbox is W, S, E, N): "
                "using W,S,E,N = %s,%s,%s,%s",
                _fmt(w), _fmt(e), _fmt(e), _fmt(s), _fmt(w), _fmt(n),
            )
            w, e = e, w
        else:
            raise InvalidLocationError(
                f"bbox west {_fmt(w)} is east of east {_fmt(e)}: either the two are swapped or "
                f"the box crosses the antimeridian (180°), which is not supported",
                hint=f"if you meant longitudes {_fmt(e)}..{_fmt(w)}, write --bbox "
                f"{_fmt(e)},{_fmt(s)},{_fmt(w)},{_fmt(n)}; if the area crosses 180°, split it "
                f"into --bbox {_fmt(w)},{_fmt(s)},180,{_fmt(n)} and --bbox "
                f"-180,{_fmt(s)},{_fmt(e)},{_fmt(n)} and run once for each",
            )
    if w == e or s == n:
        raise InvalidLocationError(
            f"bbox {_fmt(w)},{_fmt(s)},{_fmt(e)},{_fmt(n)} has zero area "
            f"({'west equals east' if w == e else 'south equals north'})",
            hint="a bbox is W,S,E,N with W < E and S < N; for a point use --lon/--lat with --size",
        )
    return _finish(box(w, s, e, n), "the bbox")  # type: ignore[return-value]


def parse_bbox(text: str) -> BBox:
    """Parse ``"W,S,E,N"`` (lon, lat order; commas, optional spaces) into four checked floats."""
    if not isinstance(text, str):
        raise InvalidLocationError(f"a bbox string was expected, got {type(text).__name__}")
    values = _split_numbers(text, "bbox")
    if len(values) != 4:
        raise InvalidLocationError(
            f"a bbox needs 4 numbers W,S,E,N (lon, lat order), got {len(values)} in {_show(text)}",
            hint="write it like --bbox 34.60,31.58,34.73,31.67",
        )
    with _decimal_comma_hint(text):
        geometry = bbox_geometry(*values)
    w, s, e, n = geometry.bounds
    return (w, s, e, n)


def from_geojson_file(path: str | os.PathLike, *, size: float = DEFAULT_SIZE_M) -> Polygon | MultiPolygon:
    """Read a GeoJSON file (geometry, Feature or FeatureCollection, lon/lat) as a polygon."""
    size = _check_size(size)
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InvalidLocationError(
            f"GeoJSON file {str(p)!r} does not exist", hint="check the path"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidLocationError(f"cannot open {str(p)!r}: {exc}") from None
    if not p.is_file():
        raise InvalidLocationError(
            f"{str(p)!r} is not a file", hint="give the path of a .geojson file"
        )
    suffix = p.suffix.lower()
    if suffix in (".shp", ".kml", ".kmz", ".gpkg", ".zip", ".gml", ".dbf", ".shx"):
        raise InvalidLocationError(
            f"{str(p)!r} is a {suffix} file; only GeoJSON files are read",
            hint=f"convert it: ogr2ogr -f GeoJSON -t_srs EPSG:4326 area.geojson {p.name}",
        )
    if st.st_size > MAX_FILE_BYTES:
        raise InvalidLocationError(
            f"GeoJSON file {str(p)!r} is {st.st_size / 1e6:.1f} MB; the maximum is "
            f"{MAX_FILE_BYTES / 1e6:.0f} MB",
            hint="simplify the outline first (e.g. ogr2ogr -simplify 0.0001) or use its bbox",
        )
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidLocationError(
            f"{str(p)!r} is not UTF-8 text, so it is not GeoJSON",
            hint="GeoJSON files are UTF-8 JSON; convert the file with ogr2ogr -f GeoJSON",
        ) from None
    except OSError as exc:
        raise InvalidLocationError(f"cannot read {str(p)!r}: {exc}") from None
    obj = _loads(text, f"GeoJSON file {str(p)!r}")
    return _from_any(obj, size)


def utm_epsg(geometry: BaseGeometry) -> int:
    """EPSG code of the UTM zone of the geometry's centroid: 326xx north, 327xx south.

    Follows the Norway (32V) and Svalbard (31X/33X/35X/37X) exceptions.
    """
    if geometry.is_empty:
        raise InvalidLocationError("an empty geometry has no UTM zone")
    c = geometry.centroid
    return _utm_epsg(round(c.x, 9), round(c.y, 9))


def area_km2(geometry: BaseGeometry) -> float:
    """Geodesic area on the WGS84 ellipsoid in km² (geometry in lon, lat).

    Edges are straight lines in lon/lat (as GeoJSON means them): they are densified to
    0.1° before the geodesic computation, so a box along a parallel has its true area.
    """
    w, _, e, _ = geometry.bounds
    parts = [geometry]
    if e - w > 90.0:  # measure wide areas in 90° strips: a geodesic ring may not go round a pole
        parts = [geometry.intersection(box(x, -90.0, x + 90.0, 90.0)) for x in (-180, -90, 0, 90)]
    total = 0.0
    for part in parts:
        if not part.is_empty:
            area, _ = _GEOD.geometry_area_perimeter(shapely.segmentize(part, 0.1))
            total += abs(area)
    return total / 1e6


def describe_area(geometry: BaseGeometry) -> str:
    """The resolved area in words, latitude first and labelled N/S, longitude E/W.

    ``centre 31.6250°N 34.6650°E, 5.0 km × 5.0 km (25.0 km²), UTM zone 36N (EPSG:32636)``
    """
    epsg = utm_epsg(geometry)
    to_utm, to_lonlat = _transformers(epsg)
    projected = shapely.transform(geometry, to_utm.transform, interleaved=False)
    minx, miny, maxx, maxy = projected.bounds
    c = projected.centroid
    lon, lat = to_lonlat.transform(c.x, c.y)
    zone = epsg % 100
    hemi = "N" if epsg < 32700 else "S"
    parts = ""
    if isinstance(geometry, MultiPolygon) and len(geometry.geoms) > 1:
        parts = f", {len(geometry.geoms)} parts"
    return (
        f"centre {abs(lat):.4f}°{'N' if lat >= 0 else 'S'} {abs(lon):.4f}°{'E' if lon >= 0 else 'W'}, "
        f"{_fmt_len(maxx - minx)} × {_fmt_len(maxy - miny)} ({_fmt_area(area_km2(geometry))}"
        f"{parts}), UTM zone {zone}{hemi} (EPSG:{epsg})"
    )


# --- dispatch ---------------------------------------------------------------------------
def _from_any(value: Any, size: float) -> Polygon | MultiPolygon:
    if value is None or isinstance(value, bool):
        raise InvalidLocationError(f"no usable location: got {value!r}", hint=f"give {ACCEPTED_FORMS}")
    if isinstance(value, str):
        return _from_string(value, size)
    if isinstance(value, os.PathLike):
        return from_geojson_file(value, size=size)
    if isinstance(value, Mapping):
        return _from_mapping(value, size)
    if hasattr(type(value), "__geo_interface__") or "__geo_interface__" in getattr(value, "__dict__", {}):
        try:
            gi = value.__geo_interface__
        except Exception as exc:  # a third-party property that fails is still bad input
            raise InvalidLocationError(
                f"reading __geo_interface__ of {type(value).__name__} failed: {exc}"
            ) from None
        if not isinstance(gi, Mapping):
            raise InvalidLocationError(
                f"{type(value).__name__}.__geo_interface__ is not a GeoJSON mapping"
            )
        return _from_mapping(gi, size)
    if isinstance(value, (bytes, bytearray)):
        raise InvalidLocationError(
            "the location is bytes, not text", hint="decode it first, e.g. value.decode('utf-8')"
        )
    if isinstance(value, (numbers.Number, Decimal)):
        raise InvalidLocationError(
            f"a single number ({_show(value)}) is not a location",
            hint="give a point as (lon, lat) or a bbox as [W, S, E, N]",
        )
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        value = value.tolist()
    if isinstance(value, Iterable):
        seq = _as_list(value)
        _check_depth(seq)
        return _from_sequence(seq, size)
    raise InvalidLocationError(
        f"cannot use a {type(value).__name__} as a location", hint=f"give {ACCEPTED_FORMS}"
    )


def _as_list(value: Any) -> list[Any]:
    items = list(itertools.islice(iter(value), MAX_POSITIONS + 1))
    if len(items) > MAX_POSITIONS:
        raise InvalidLocationError(f"the location has more than {MAX_POSITIONS} elements")
    return items


_WKT_RE = re.compile(
    r"^(SRID=\d+;\s*)?(MULTI)?(POINT|POLYGON|LINESTRING)\b|^GEOMETRYCOLLECTION\b", re.IGNORECASE
)


def _from_string(text: str, size: float) -> Polygon | MultiPolygon:
    s = text.strip()
    if not s:
        raise InvalidLocationError("the location is an empty string", hint=f"give {ACCEPTED_FORMS}")
    if len(s) > MAX_FILE_BYTES:
        raise InvalidLocationError(
            f"the location text is {len(s) / 1e6:.1f} MB; the maximum is {MAX_FILE_BYTES / 1e6:.0f} MB"
        )
    if s[0] in "[{":
        return _from_any(_loads(s, "the location JSON"), size)
    if _WKT_RE.match(s):
        if s.upper().startswith("SRID="):
            srid, _, s = s.partition(";")
            if srid.strip().upper() not in ("SRID=4326",):
                raise InvalidLocationError(
                    f"WKT with {srid.strip()} is not lon/lat; only EPSG:4326 is accepted",
                    hint="reproject it to EPSG:4326 (lon, lat) first",
                )
        try:
            geometry = shapely.from_wkt(s.strip())
        except shapely.errors.GEOSException as exc:
            raise InvalidLocationError(
                f"the WKT text could not be read: {exc}",
                hint="WKT looks like POLYGON((lon lat, lon lat, ...)) with lon first",
            ) from None
        return _from_mapping(geometry.__geo_interface__, size)
    if _NUMERIC_TEXT.fullmatch(s) and re.search(r"\d|nan|inf", s, re.IGNORECASE):
        values = _split_numbers(s, "location")
        if len(values) in (2, 4):
            with _decimal_comma_hint(s):
                if len(values) == 2:
                    return point_geometry(values[0], values[1], size)
                return bbox_geometry(*values)
        raise InvalidLocationError(
            f"{_show(s)} has {len(values)} numbers; a point is 2 (lon,lat) and a bbox is 4 (W,S,E,N)",
            hint="for a polygon give a JSON ring [[lon, lat], ...] or a GeoJSON file",
        )
    if _looks_like_path(s):
        return from_geojson_file(s, size=size)
    raise InvalidLocationError(
        f"cannot read {_show(s)} as a location (place names are not looked up)",
        hint=f"give {ACCEPTED_FORMS}",
    )


_NUMERIC_TEXT = re.compile(r"(?:[-+0-9.,eE_\s]|nan|inf(?:inity)?)+", re.IGNORECASE)


def _looks_like_path(s: str) -> bool:
    if s.lower().endswith((".json", ".geojson", ".shp", ".kml", ".gpkg", ".zip")):
        return True
    try:
        return Path(s).exists()
    except (OSError, ValueError):
        return False


@contextmanager
def _decimal_comma_hint(text: str) -> Iterator[None]:
    """If numbers written with commas only fail, point at decimal commas as the likely cause."""
    try:
        yield
    except AreaTooLargeError:
        raise  # a large area is not a typo: keep its own hint (split it)
    except InvalidLocationError as exc:
        if "," in text and "." not in text:
            raise InvalidLocationError(
                exc.message,
                hint="if those commas are decimal commas (34,665 meaning 34.665), write decimals "
                "with dots and separate numbers with commas, e.g. 34.665,31.625",
            ) from None
        raise


def _split_numbers(text: str, what: str) -> list[float]:
    s = text.strip()
    parts = s.split(",") if "," in s else s.split()
    if not parts or any(not p.strip() for p in parts):
        raise InvalidLocationError(
            f"{_show(text)} has an empty value between commas",
            hint="write numbers separated by commas, lon first: W,S,E,N or lon,lat",
        )
    names = {2: ("longitude", "latitude"), 4: tuple(f"bbox {n}" for n in _BBOX_NAMES)}.get(
        len(parts), tuple(f"{what} value {i}" for i in range(1, len(parts) + 1))
    )
    values = []
    for part, name in zip(parts, names, strict=True):
        try:
            values.append(_number(part, name))
        except InvalidLocationError as exc:
            raise InvalidLocationError(
                f"{_show(text)}: {exc.message}",
                hint=exc.hint
                or "write numbers with a dot as the decimal separator and commas between them, "
                "lon first: 34.665,31.625 or W,S,E,N",
            ) from None
    return values


def _from_sequence(seq: list[Any], size: float) -> Polygon | MultiPolygon:
    if not seq:
        raise InvalidLocationError("the location is an empty list", hint=f"give {ACCEPTED_FORMS}")
    if not _is_seq(seq[0]):
        if any(_is_seq(v) for v in seq):
            raise InvalidLocationError(
                f"the location mixes numbers and lists: {_show(seq)}",
                hint="a point is [lon, lat], a bbox [W, S, E, N], a ring [[lon, lat], ...]",
            )
        if len(seq) == 2:
            return point_geometry(seq[0], seq[1], size)
        if len(seq) == 4:
            return bbox_geometry(*seq)
        raise InvalidLocationError(
            f"{len(seq)} numbers given ({_show(seq)}); a point is 2 numbers (lon, lat) and a bbox "
            f"is 4 (W, S, E, N)",
            hint="for a polygon give a list of [lon, lat] pairs",
        )
    depth = _nesting(seq)
    if depth == 2:  # one ring of positions
        if len(seq) == 1:
            lon, lat = _position(seq[0])
            return point_geometry(lon, lat, size)
        return _finish(_polygon([seq]), "the polygon")
    if depth == 3:  # polygon coordinates: shell + holes
        return _finish(_polygon(seq), "the polygon")
    if depth == 4:  # multipolygon coordinates
        return _finish(_multipolygon(seq), "the multipolygon")
    raise InvalidLocationError(
        f"the location list is nested {depth} levels deep; a ring of [lon, lat] pairs is 2",
        hint="give [[lon, lat], [lon, lat], ...]",
    )


def _nesting(value: Any) -> int:
    depth = 0
    while _is_seq(value):
        depth += 1
        if not value:
            break
        value = value[0]
    return depth


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


_LON_KEYS = ("lon", "lng", "long", "longitude", "x")
_LAT_KEYS = ("lat", "latitude", "y")


def _from_mapping(obj: Mapping[str, Any], size: float) -> Polygon | MultiPolygon:
    _check_depth(obj)
    keys = {str(k).lower(): k for k in obj}
    lon_key = next((keys[k] for k in _LON_KEYS if k in keys), None)
    lat_key = next((keys[k] for k in _LAT_KEYS if k in keys), None)
    if "type" not in obj and lon_key is not None and lat_key is not None:
        return point_geometry(obj[lon_key], obj[lat_key], size)
    if "type" not in obj and {"west", "south", "east", "north"} <= keys.keys():
        return bbox_geometry(obj[keys["west"]], obj[keys["south"]], obj[keys["east"]], obj[keys["north"]])
    geometry = _geojson(obj, size, 0)
    return _finish(geometry, "the GeoJSON area")


def _geojson(obj: Any, size: float, level: int) -> BaseGeometry:
    if not isinstance(obj, Mapping):
        raise InvalidLocationError(f"a GeoJSON object was expected, got {_show(obj)}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise InvalidLocationError(
            f"the mapping has no GeoJSON 'type' ({_show(obj)})",
            hint="give a GeoJSON geometry, Feature or FeatureCollection, or {'lon': .., 'lat': ..}",
        )
    _check_crs(obj)
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list) or not features:
            raise InvalidLocationError("the FeatureCollection has no features")
        return _union([_geojson(f, size, level + 1) for f in features], "the FeatureCollection")
    if kind == "Feature":
        geometry = obj.get("geometry")
        if geometry is None:
            raise InvalidLocationError("the GeoJSON Feature has no geometry (null)")
        return _geojson(geometry, size, level + 1)
    if kind == "GeometryCollection":
        members = obj.get("geometries")
        if not isinstance(members, list) or not members:
            raise InvalidLocationError("the GeometryCollection has no geometries")
        return _union([_geojson(g, size, level + 1) for g in members], "the GeometryCollection")
    coords = obj.get("coordinates")
    if kind == "Point":
        lon, lat = _position(coords)
        return point_geometry(lon, lat, size)
    if kind == "MultiPoint":
        if not _is_seq(coords) or not coords:
            raise InvalidLocationError("the MultiPoint has no coordinates")
        return _union([point_geometry(*_position(p), size) for p in coords], "the MultiPoint")
    if kind in ("Polygon", "LinearRing"):
        if kind == "LinearRing":
            coords = [coords]
        if not _is_seq(coords) or not coords:
            raise InvalidLocationError(f"the GeoJSON {kind} has no coordinates")
        return _polygon(coords)
    if kind == "MultiPolygon":
        if not _is_seq(coords) or not coords:
            raise InvalidLocationError("the GeoJSON MultiPolygon has no coordinates")
        return _multipolygon(coords)
    if kind in ("LineString", "MultiLineString"):
        raise InvalidLocationError(
            f"a {kind} has no area", hint="give a Polygon, a Point (with --size) or a bbox"
        )
    raise InvalidLocationError(
        f"unknown GeoJSON type {_show(kind)}",
        hint="use Point, MultiPoint, Polygon, MultiPolygon, Feature, FeatureCollection",
    )


def _check_crs(obj: Mapping[str, Any]) -> None:
    crs = obj.get("crs")
    if crs is None:
        return
    name = ""
    if isinstance(crs, Mapping):
        props = crs.get("properties")
        if isinstance(props, Mapping):
            name = str(props.get("name", ""))
    if not re.search(r"CRS84$|EPSG::?4326$|^EPSG:4326$", name, re.IGNORECASE):
        raise InvalidLocationError(
            f"the GeoJSON declares crs {_show(name or crs)}; only lon/lat WGS84 (EPSG:4326) is read",
            hint="reproject it: ogr2ogr -f GeoJSON -t_srs EPSG:4326 out.geojson in.geojson",
        )


def _union(parts: list[BaseGeometry], what: str) -> BaseGeometry:
    merged = shapely.union_all(parts)
    if merged.is_empty:
        raise InvalidLocationError(f"{what} is empty")
    return merged


def _position(value: Any) -> LonLat:
    if not _is_seq(value) or len(value) not in (2, 3):
        raise InvalidLocationError(
            f"a position must be [lon, lat] (or [lon, lat, z]), got {_show(value)}"
        )
    lon = _number(value[0], "longitude")
    lat = _number(value[1], "latitude")
    if len(value) == 3:
        _number(value[2], "elevation")
    return lon, lat


def _ring(raw: Any, what: str) -> list[LonLat]:
    if not _is_seq(raw) or not raw:
        raise InvalidLocationError(f"{what} must be a list of [lon, lat] pairs, got {_show(raw)}")
    ring = [_position(p) for p in raw]
    _check_positions(ring, what)
    if ring[0] != ring[-1]:
        log.warning(
            "%s was not closed; closed it by repeating its first point (lon %s, lat %s)",
            what, _fmt(ring[0][0]), _fmt(ring[0][1]),
        )
        ring.append(ring[0])
    distinct = len(set(ring[:-1]))
    if distinct < 3:
        raise InvalidLocationError(
            f"{what} has {distinct} distinct point{'s' if distinct != 1 else ''}; a polygon needs at least 3",
            hint="for a box give [W, S, E, N]; for a point give (lon, lat) with --size",
        )
    _check_antimeridian_ring(ring, what)
    return ring


def _polygon(rings: Any) -> BaseGeometry:
    if not _is_seq(rings) or not rings:
        raise InvalidLocationError("the polygon has no rings")
    shell = _ring(rings[0], "the polygon ring" if len(rings) == 1 else "the outer ring")
    holes = [_ring(r, f"hole {i}") for i, r in enumerate(rings[1:], start=1)]
    polygon = Polygon(shell, holes)
    return _repair(polygon)


def _multipolygon(polygons: Any) -> BaseGeometry:
    parts = [_polygon(p) for p in polygons]
    return _union(parts, "the MultiPolygon")  # overlapping parts: the union is what was meant


def _repair(polygon: Polygon) -> BaseGeometry:
    flat = polygon.area <= 1e-9 * polygon.envelope.area  # collinear up to rounding
    if polygon.is_valid and not flat:
        return polygon
    reason = shapely.is_valid_reason(polygon)
    fixed = shapely.union_all(_polygonal_parts(make_valid(polygon)))
    if fixed.is_empty or fixed.area <= 1e-9 * polygon.envelope.area:
        raise InvalidLocationError(
            "the polygon has zero area (its points are on one line)",
            hint="check the coordinates; each pair is [lon, lat]",
        )
    change = abs(fixed.area - polygon.area) / polygon.area if polygon.area > 0.0 else 1.0
    if change > REPAIR_TOLERANCE:
        raise InvalidLocationError(
            f"the polygon is invalid ({reason}): its outline crosses itself, so its inside is "
            f"unclear (a repair would change its area by {change:.0%})",
            hint="order the points so the outline goes once around the area without crossing "
            "itself (a 'bow-tie' has two corners swapped), or give separate polygons",
        )
    log.warning(
        "the polygon was invalid (%s); repaired it with make_valid (area changed by %.2f %%)",
        reason, change * 100,
    )
    return fixed


def _polygonal_parts(geometry: BaseGeometry) -> list[BaseGeometry]:
    if isinstance(geometry, (Polygon, MultiPolygon)):
        return [geometry]
    return [g for g in getattr(geometry, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]


def _finish(geometry: BaseGeometry, what: str) -> Polygon | MultiPolygon:
    """Last checks on every result: polygonal, valid, in range, not too small or large."""
    if geometry.is_empty:
        raise InvalidLocationError(f"{what} is empty")
    if not isinstance(geometry, (Polygon, MultiPolygon)):
        parts = _polygonal_parts(geometry)
        if not parts:
            raise InvalidLocationError(f"{what} has no area ({geometry.geom_type})")
        geometry = shapely.union_all(parts)
    if not geometry.is_valid:
        geometry = _repair(geometry) if isinstance(geometry, Polygon) else make_valid(geometry)
        geometry = shapely.union_all(_polygonal_parts(geometry))
    w, s, e, n = geometry.bounds
    if w < -180.0 or e > 180.0 or s < -90.0 or n > 90.0:
        raise InvalidLocationError(
            f"{what} reaches outside lon -180..180 / lat -90..90 (bounds {w:.4f},{s:.4f},{e:.4f},{n:.4f})"
        )
    area = area_km2(geometry)
    if area * 1e6 < MIN_AREA_M2:
        raise InvalidLocationError(
            f"{what} has (almost) zero area: {area * 1e6:.3g} m², less than {MIN_AREA_M2:g} m²",
            hint="for a small place give a point (lon, lat) with --size (at least 10 m)",
        )
    if area > MAX_AREA_KM2:
        raise AreaTooLargeError(
            f"{what} covers {area:,.0f} km²; the maximum is {MAX_AREA_KM2:,.0f} km² "
            f"(about 500 km × 500 km)",
            hint="split the area into smaller parts and run once for each",
        )
    if isinstance(geometry, Polygon):
        return orient(geometry, sign=1.0)
    if isinstance(geometry, MultiPolygon):
        return MultiPolygon([orient(p, sign=1.0) for p in geometry.geoms])
    raise InvalidLocationError(f"{what} is a {geometry.geom_type}, not a polygon")


# --- checks -----------------------------------------------------------------------------
_BBOX_NAMES = ("west", "south", "east", "north")


def _number(value: Any, what: str) -> float:
    """A finite float from a real number or numeric string; bools, NaN, inf rejected."""
    if isinstance(value, bool) or value is None:
        raise InvalidLocationError(f"{what} must be a number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidLocationError(f"{what} is empty; a number was expected")
        try:
            x = float(text)
        except ValueError:
            hint = None
            if "," in text:
                dotted = text.replace(",", ".")
                hint = (f"use a dot as the decimal separator: {dotted}" if _is_float(dotted)
                        else "use a dot as the decimal separator")
            raise InvalidLocationError(f"{what} {_show(value)} is not a number", hint=hint) from None
    elif isinstance(value, (numbers.Real, Decimal)):
        try:
            x = float(value)
        except (OverflowError, ValueError):
            raise InvalidLocationError(f"{what} {_show(value)} is not a usable number") from None
    else:
        raise InvalidLocationError(
            f"{what} must be a number, got {type(value).__name__} {_show(value)}"
        )
    if not math.isfinite(x):
        raise InvalidLocationError(f"{what} is {x}; a finite number was expected")
    return x


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _check_size(size: Any) -> float:
    value = _number(size, "size")
    if not MIN_SIZE_M <= value <= MAX_SIZE_M:
        raise InvalidLocationError(
            f"size {_fmt(value)} m is outside {_fmt(MIN_SIZE_M)} m .. {_fmt(MAX_SIZE_M)} m "
            f"(the side of the square around a point, in metres)",
            hint=f"give --size in metres, e.g. --size 5000 for 5 km; for areas larger than "
            f"{_fmt(MAX_SIZE_M / 1000)} km give a bbox or polygon",
        )
    return value


def _check_point(lon: float, lat: float) -> None:
    lon_ok = -180.0 <= lon <= 180.0
    lat_ok = -90.0 <= lat <= 90.0
    if lon_ok and lat_ok:
        return
    problems = []
    if not lat_ok:
        problems.append(f"latitude {_fmt(lat)} is outside -90..90")
    if not lon_ok:
        problems.append(f"longitude {_fmt(lon)} is outside -180..180")
    message = (
        f"point (lon {_fmt(lon)}, lat {_fmt(lat)}): {' and '.join(problems)}; "
        f"coordinates are lon, lat (x, y) order"
    )
    if -180.0 <= lat <= 180.0 and -90.0 <= lon <= 90.0:
        hint = (
            f"longitude and latitude look swapped: did you mean --lon {_fmt(lat)} --lat "
            f"{_fmt(lon)}, i.e. ({_fmt(lat)}, {_fmt(lon)}) in lon, lat order?"
        )
    elif lat_ok and 180.0 < lon <= 360.0:
        hint = f"with 0..360 longitudes, {_fmt(lon)} is {_fmt(lon - 360.0)}: write --lon {_fmt(lon - 360.0)}"
    elif abs(lon) > 1000 or abs(lat) > 1000:
        hint = "these look like projected coordinates (metres); give lon/lat degrees (EPSG:4326)"
    else:
        hint = "longitude (x) must be within -180..180 and latitude (y) within -90..90"
    raise InvalidLocationError(message, hint=hint)


def _check_bbox_ranges(w: float, s: float, e: float, n: float) -> None:
    bad = [
        f"{name} {_fmt(v)} is outside {lim}"
        for name, v, lim in (
            ("west", w, "-180..180"), ("south", s, "-90..90"),
            ("east", e, "-180..180"), ("north", n, "-90..90"),
        )
        if not (-180.0 <= v <= 180.0 if name in ("west", "east") else -90.0 <= v <= 90.0)
    ]
    if not bad:
        return
    message = f"bbox {_fmt(w)},{_fmt(s)},{_fmt(e)},{_fmt(n)}: {'; '.join(bad)} (a bbox is W,S,E,N in lon, lat order)"
    if all(-90.0 <= v <= 90.0 for v in (w, e)) and all(-180.0 <= v <= 180.0 for v in (s, n)):
        hint = (
            f"it looks like lat, lon order (S,W,N,E): did you mean --bbox "
            f"{_fmt(s)},{_fmt(w)},{_fmt(n)},{_fmt(e)}?"
        )
    elif any(abs(v) > 1000 for v in (w, s, e, n)):
        hint = "these look like projected coordinates (metres); give lon/lat degrees (EPSG:4326)"
    else:
        hint = "write --bbox W,S,E,N with longitudes in -180..180 and latitudes in -90..90"
    raise InvalidLocationError(message, hint=hint)


def _check_positions(ring: list[LonLat], what: str) -> None:
    bad = next(
        ((lon, lat) for lon, lat in ring if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0)),
        None,
    )
    if bad is None:
        return
    lon, lat = bad
    message = (
        f"{what}: the pair [{_fmt(lon)}, {_fmt(lat)}] is out of range (longitude -180..180, "
        f"latitude -90..90; each pair is [lon, lat])"
    )
    if all(-180.0 <= b <= 180.0 and -90.0 <= a <= 90.0 for a, b in ring):
        hint = (
            f"the pairs look like [lat, lon]; swap every pair, e.g. [{_fmt(lat)}, {_fmt(lon)}] "
            f"instead of [{_fmt(lon)}, {_fmt(lat)}]"
        )
    elif any(abs(v) > 1000 for pair in ring for v in pair):
        hint = "these look like projected coordinates (metres); reproject to EPSG:4326 (lon, lat)"
    else:
        hint = "check the coordinates; each pair is [lon, lat]"
    raise InvalidLocationError(message, hint=hint)


_ANTIMERIDIAN_HINT = (
    "areas crossing the antimeridian (180°) are not supported: split the area at 180° into "
    "a part with longitudes up to 180 and a part from -180, and run once for each"
)


def _check_antimeridian_ring(ring: list[LonLat], what: str) -> None:
    for (lon1, _), (lon2, _) in itertools.pairwise(ring):
        if abs(lon2 - lon1) > 180.0:
            raise InvalidLocationError(
                f"{what} jumps from longitude {_fmt(lon1)} to {_fmt(lon2)}, across the antimeridian "
                f"(or more than half-way round the Earth)",
                hint=_ANTIMERIDIAN_HINT,
            )


def _check_antimeridian(geometry: BaseGeometry, what: str) -> None:
    polygons = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    for polygon in polygons:
        lons = [x for x, _ in polygon.exterior.coords]
        if any(abs(b - a) > 180.0 for a, b in itertools.pairwise(lons)):
            raise InvalidLocationError(f"{what} crosses the antimeridian (180°)", hint=_ANTIMERIDIAN_HINT)


def _loads(text: str, source: str) -> Any:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidLocationError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            hint="check brackets, commas and quotes (JSON needs double quotes)",
        ) from None
    except RecursionError:
        raise InvalidLocationError(
            f"{source} is nested too deeply to be GeoJSON", hint="give a GeoJSON geometry or feature"
        ) from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise InvalidLocationError(f"{source} could not be read: {exc}") from None
    _check_depth(obj)
    return obj


def _check_depth(obj: Any) -> None:
    """Reject structures nested deeper than any GeoJSON needs (iteratively, no recursion)."""
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidLocationError(
                f"the location is nested more than {MAX_JSON_DEPTH} levels deep; GeoJSON needs fewer",
                hint="give a GeoJSON geometry, Feature or FeatureCollection",
            )
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (Mapping, list, tuple)))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (Mapping, list, tuple)))


# --- UTM --------------------------------------------------------------------------------
def _utm_epsg(lon: float, lat: float) -> int:
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    zone = max(zone, 1)
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32  # Norway, 32V
    elif 72.0 <= lat < 84.0 and 0.0 <= lon < 42.0:  # Svalbard, 31X 33X 35X 37X
        zone = 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return (32600 if lat >= 0.0 else 32700) + zone


@lru_cache(maxsize=64)
def _transformers(epsg: int) -> tuple[pyproj.Transformer, pyproj.Transformer]:
    to_utm = pyproj.Transformer.from_crs(4326, epsg, always_xy=True)
    to_lonlat = pyproj.Transformer.from_crs(epsg, 4326, always_xy=True)
    return to_utm, to_lonlat


# --- formatting -------------------------------------------------------------------------
def _fmt(x: float) -> str:
    """Shortest exact form of a number for messages and suggested commands."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


def _fmt_len(metres: float) -> str:
    return f"{metres:.0f} m" if metres < 1000 else f"{metres / 1000:,.1f} km"


def _fmt_area(km2: float) -> str:
    return f"{km2:,.1f} km²" if km2 >= 1 else f"{km2:.3g} km²"


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_rectangle(geometry: BaseGeometry) -> bool:
    """True for a bbox or a point's square, which need no polygon mask: an axis-aligned
    rectangle in lon/lat (a bbox) or in the area's UTM zone (``point_geometry``'s square)."""
    if geometry.geom_type != "Polygon" or list(geometry.interiors):  # type: ignore[attr-defined]
        return False
    if len(geometry.exterior.coords) == 5 and geometry.equals(box(*geometry.bounds)):  # type: ignore[attr-defined]
        return True
    to_utm, _ = _transformers(utm_epsg(geometry))
    projected = shapely.transform(geometry, to_utm.transform, interleaved=False)
    envelope = box(*projected.bounds)
    return bool(envelope.area > 0 and projected.area / envelope.area > 0.99999)
