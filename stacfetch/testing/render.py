"""The Process API of the emulator: validate a request like the service, then render it.

Pixels come from :mod:`stacfetch.testing.pixels`: for each output pixel the item chosen by the
mosaicking order gives the day, cloud cover and processing baseline, and the pixel centre (in
the request CRS, from ``from_bounds(bbox, width, height)``) gives the position. Pixels that no
chosen item covers, or that lie outside ``bounds.geometry`` (a polygon masks the bbox it sits
in, as the service does), have every sample 0 and ``dataMask`` 0; with a ``nodataValue`` they
are set to it. ``processing.harmonizeValues`` (default true) decides whether optical bands come
harmonised or as the archive stores them (baseline 04.00+: +1000), see :mod:`.pixels`.

Checked like the service: the CRS list (:mod:`.crs`), units per band (:mod:`.s2bands`, the
service's message), ``dataFilter``/``processing`` enums and booleans (:mod:`.options`).
Processing units (``x-processingunits-spent``): :func:`stacfetch.testing.units.processing_units`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import numpy as np
import rasterio
import rasterio.features
from pyproj import CRS, Transformer
from rasterio.io import MemoryFile
from rasterio.transform import Affine, from_bounds
from shapely import transform as shp_transform_coords
from shapely.geometry import Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry

from . import grid, pixels
from . import units as pu
from .crs import DOC_URL, parse_crs_url
from .evalscript import Evalscript, EvalscriptError, Output
from .evalscript import parse as parse_evalscript
from .options import Processing, parse_data_filter, parse_processing
from .responses import ApiError, bad_payload, renderer_error, sh_error
from .s2bands import UnitsError

MAX_SIZE = 2500
MAX_CANDIDATES = 200_000  # tile-passes one request may mosaic
DEFAULT_SIZE = 256
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
COLLECTION_TYPES = ("sentinel-2-l2a", "S2L2A")
FORMATS = {"image/tiff", "image/png", "image/jpeg"}
UNSUPPORTED_FORMATS = {"application/json", "application/tar", "application/x-tar", "multipart/mixed",
                       "application/octet-stream"}


@dataclass(frozen=True)
class ProcessRequest:
    """A validated Process API request."""

    bbox: tuple[float, float, float, float]  # in the request CRS, x/y (lon/lat) order
    crs: CRS
    epsg: int  # 4326 for CRS84
    geometry: BaseGeometry | None  # in the request CRS
    time_from: datetime
    time_to: datetime
    mosaicking: str
    max_cloud: float
    width: int
    height: int
    identifier: str
    media_type: str
    script: Evalscript
    processing: Processing = Processing()

    @property
    def transform(self) -> Affine:
        return from_bounds(*self.bbox, self.width, self.height)

    @property
    def output(self) -> Output:
        return self.script.output(self.identifier)


@dataclass
class Rendered:
    """What ``render`` produced: the response body plus everything a test may want to check."""

    content: bytes
    media_type: str
    array: np.ndarray  # (bands, height, width) in the output dtype
    crs: CRS
    transform: Affine
    nodata: float | None
    processing_units: float
    items: list[dict[str, Any]] = field(default_factory=list)  # id, datetime, cloud_cover used
    request: ProcessRequest | None = None


# ------------------------------------------------------------------------------ validation
def _parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or "T" not in value.upper():
        raise bad_payload(
            f"timeRange.{name} = {value!r}: a date and a time are required, e.g. "
            "2022-10-01T00:00:00Z (a bare date will not work)")
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise bad_payload(f"timeRange.{name} = {value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _parse_crs(props: Any) -> tuple[CRS, int]:
    url = (props or {}).get("crs", CRS84) if isinstance(props, dict) else CRS84
    code = parse_crs_url(str(url))
    if code is None:
        raise bad_payload(f"bounds.properties.crs: CRS {url!r} is not supported; see {DOC_URL} "
                          "for the supported coordinate reference systems")
    return CRS.from_epsg(code), code


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_payload(f"{name} must be a number, got {value!r}")
    return float(value)


def _size(output: dict[str, Any], bbox: tuple[float, ...]) -> tuple[int, int]:
    has_size = "width" in output or "height" in output
    has_res = "resx" in output or "resy" in output
    if has_size and has_res:
        raise bad_payload("output: give either width/height or resx/resy, not both")
    dx, dy = bbox[2] - bbox[0], bbox[3] - bbox[1]
    if has_res:
        if "resx" not in output or "resy" not in output:
            raise bad_payload("output: resx and resy must be given together")
        resx, resy = _number(output["resx"], "output.resx"), _number(output["resy"], "output.resy")
        if resx <= 0 or resy <= 0:
            raise bad_payload("output.resx and output.resy must be positive")
        width, height = max(1, round(dx / resx)), max(1, round(dy / resy))
        for name, value, res in (("width", width, "resx"), ("height", height, "resy")):
            if value > MAX_SIZE:
                raise bad_payload(f"{name} = {value}, calculated from {res}, is larger than allowed {MAX_SIZE}.")
        return width, height
    width, height = output.get("width"), output.get("height")
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) and not (
            isinstance(value, float) and value.is_integer()
        ):
            raise bad_payload(f"output.{name} must be an integer, got {value!r}")
        if value > MAX_SIZE:
            raise bad_payload(f"{name} = {int(value)} is larger than allowed {MAX_SIZE}.")
        if value < 1:
            raise bad_payload(f"{name} = {int(value)} is smaller than allowed 1.")
    if width is None and height is None:
        return DEFAULT_SIZE, DEFAULT_SIZE
    if width is None:  # keep the bbox's aspect ratio
        width = max(1, round(int(height) * dx / dy))
        if width > MAX_SIZE:
            raise bad_payload(f"width = {width}, calculated from height, is larger than allowed {MAX_SIZE}.")
    if height is None:
        height = max(1, round(int(width) * dy / dx))
        if height > MAX_SIZE:
            raise bad_payload(f"height = {height}, calculated from width, is larger than allowed {MAX_SIZE}.")
    return int(width), int(height)


def _media_type(responses: Any, accept: str | None) -> tuple[str, str]:
    if responses is None:
        responses = [{"identifier": "default", "format": {"type": "image/png"}}]
    if not isinstance(responses, list) or not responses:
        raise bad_payload("output.responses must be a non-empty list")
    if len(responses) > 1:
        raise bad_payload(
            "several responses need a tar/multipart answer, which the emulator does not produce; "
            "request one response with format image/tiff")
    resp = responses[0] if isinstance(responses[0], dict) else {}
    identifier = str(resp.get("identifier", "default"))
    fmt = resp.get("format") or {}
    media = str(fmt.get("type", "image/png")) if isinstance(fmt, dict) else "image/png"
    wanted = (accept or "").split(";")[0].strip().lower()
    if wanted and wanted != "*/*":
        media = wanted
    if media in UNSUPPORTED_FORMATS:
        raise bad_payload(f"format {media} is not produced by the emulator; use image/tiff")
    if media not in FORMATS:
        raise sh_error(400, f"Unsupported output format {media!r}; use image/tiff, image/png or image/jpeg",
                       "COMMON_UNSUPPORTED_MEDIA_TYPE")
    return identifier, media


def parse_request(body: Any, accept: str | None = None) -> ProcessRequest:
    """Validate a Process API body as the service does; raises ApiError (400)."""
    if not isinstance(body, dict):
        raise bad_payload("the request body must be a JSON object")
    inp = body.get("input")
    if not isinstance(inp, dict):
        raise bad_payload("input is required")
    if "evalscript" not in body:
        raise bad_payload("evalscript is required")
    bounds = inp.get("bounds")
    if not isinstance(bounds, dict):
        raise bad_payload("input.bounds is required")
    crs, epsg = _parse_crs(bounds.get("properties"))
    geometry = None
    if bounds.get("geometry") is not None:
        try:
            geometry = shape(bounds["geometry"])
        except Exception as exc:
            raise bad_payload(f"input.bounds.geometry is not valid GeoJSON: {exc}") from None
        if geometry.is_empty or geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise bad_payload("input.bounds.geometry must be a Polygon or MultiPolygon")
        if not geometry.is_valid:
            raise bad_payload("input.bounds.geometry is not a valid polygon (self-intersecting?)")
    if bounds.get("bbox") is not None:
        bb = bounds["bbox"]
        if not isinstance(bb, list) or len(bb) != 4:
            raise bad_payload("input.bounds.bbox must have 4 numbers: minx, miny, maxx, maxy")
        bbox = tuple(_number(v, "input.bounds.bbox") for v in bb)
        if bbox[0] >= bbox[2] or bbox[1] >= bbox[3]:
            raise bad_payload(f"input.bounds.bbox {list(bb)} is empty: min must be smaller than max")
    elif geometry is not None:
        bbox = tuple(float(v) for v in geometry.bounds)
    else:
        raise bad_payload("input.bounds needs a bbox or a geometry")
    data = inp.get("data")
    if not isinstance(data, list) or not data:
        raise bad_payload("input.data must list one data collection")
    if len(data) > 1:
        raise bad_payload("data fusion (several input.data entries) is not supported by the emulator")
    source = data[0] if isinstance(data[0], dict) else {}
    if source.get("type") not in COLLECTION_TYPES:
        raise bad_payload(f"unknown data collection type {source.get('type')!r}; use sentinel-2-l2a")
    filt = parse_data_filter(source.get("dataFilter"))
    processing = parse_processing(source.get("processing"))
    tr = filt.get("timeRange")
    if not isinstance(tr, dict) or "from" not in tr or "to" not in tr:
        raise bad_payload("input.data[0].dataFilter.timeRange with 'from' and 'to' is required")
    t_from, t_to = _parse_time(tr["from"], "from"), _parse_time(tr["to"], "to")
    if t_to < t_from:
        raise bad_payload("timeRange.to is before timeRange.from")
    order = filt.get("mosaickingOrder", "mostRecent")
    max_cc = filt.get("maxCloudCoverage", 100)
    max_cc = _number(max_cc, "maxCloudCoverage")
    if not 0 <= max_cc <= 100:
        raise bad_payload("maxCloudCoverage must be between 0 and 100")
    output = body.get("output") or {}
    if not isinstance(output, dict):
        raise bad_payload("output must be an object")
    width, height = _size(output, bbox)
    identifier, media = _media_type(output.get("responses"), accept)
    try:
        script = parse_evalscript(body["evalscript"])
        script.output(identifier)
    except UnitsError as exc:
        raise renderer_error(str(exc)) from None
    except EvalscriptError as exc:
        raise renderer_error(f"Failed to evaluate script! {exc}") from None
    return ProcessRequest(bbox, crs, epsg, geometry, t_from, t_to, order, max_cc, width, height,
                          identifier, media, script, processing)


# -------------------------------------------------------------------------------- rendering
@lru_cache(maxsize=128)
def _transformer(src: int, dst: int) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def _reproject(geom: BaseGeometry, src: int, dst: int) -> BaseGeometry:
    if src == dst:
        return geom
    fn = _transformer(src, dst).transform
    return shp_transform_coords(geom, lambda xy: np.column_stack(fn(xy[:, 0], xy[:, 1])))


def _area_lonlat(req: ProcessRequest) -> BaseGeometry:
    """The request area in lon/lat, for finding items."""
    area: BaseGeometry = box(*req.bbox)
    if req.geometry is not None:
        area = area.intersection(req.geometry)
    if req.epsg != 4326:
        step = max(area.bounds[2] - area.bounds[0], area.bounds[3] - area.bounds[1]) / 16
        area = _reproject(area.segmentize(step), req.epsg, 4326)
    return area


def order_items(found: list[grid.Acquisition], mosaicking: str) -> list[grid.Acquisition]:
    """Items in priority order: the first covering a pixel wins."""
    if mosaicking == "leastRecent":
        return sorted(found, key=lambda a: (a.datetime, a.id))
    if mosaicking == "leastCC":
        return sorted(found, key=lambda a: (a.cloud_cover, -a.datetime.timestamp(), a.id))
    return sorted(found, key=lambda a: (-a.datetime.timestamp(), a.id))


def _mask(geom: BaseGeometry, req: ProcessRequest) -> np.ndarray:
    """True where the pixel centre lies inside ``geom`` (request CRS)."""
    return rasterio.features.geometry_mask(
        [mapping(geom)], out_shape=(req.height, req.width), transform=req.transform, invert=True
    )


def _cover(tile: grid.Tile, req: ProcessRequest, frame: Polygon) -> np.ndarray | bool:
    """Where ``tile`` covers the output: True (all), False (nothing) or a pixel mask."""
    fp: BaseGeometry = tile.footprint
    if req.epsg != 4326:
        fp = _reproject(fp.segmentize(0.02), 4326, req.epsg)
    if fp.contains(frame):
        return True
    if not fp.intersects(frame):
        return False
    return _mask(fp, req)


def _choose(req: ProcessRequest, items: list[grid.Acquisition]) -> np.ndarray:
    """Index into ``items`` of the item rendered at each pixel, -1 for none."""
    choice = np.full((req.height, req.width), -1, dtype=np.int32)
    frame = box(*req.bbox)
    seen: set[grid.Tile] = set()
    for k, acq in enumerate(items):
        if acq.tile in seen:
            # the tile's first item in priority order already took every free pixel it covers
            continue
        seen.add(acq.tile)
        cover = _cover(acq.tile, req, frame)
        if cover is False:
            continue
        free = choice == -1
        if cover is not True:
            free &= cover
        choice[free] = k
        if not (choice == -1).any():
            break
    if req.geometry is not None and not req.geometry.contains(frame):
        choice[~_mask(req.geometry, req)] = -1
    return choice


class _Samples:
    """Lazy, cached per-band sample arrays for the chosen items."""

    def __init__(self, req: ProcessRequest, items: list[grid.Acquisition], choice: np.ndarray):
        self.req, self.items, self.choice = req, items, choice
        xs, ys = pixels.pixel_centers(req.transform, req.width, req.height)
        # one row of x and one column of y: band_values broadcasts them to (h, w)
        self.xs, self.ys = xs[0:1, :], ys[:, 0:1]
        self.unit = pixels.coordinate_unit(req.crs.is_geographic)
        self.used = [int(k) for k in np.unique(choice) if k >= 0]
        self.full = len(self.used) == 1 and bool((choice == self.used[0]).all())
        self.where = {} if self.full else {k: choice == k for k in self.used}
        self.cache: dict[str, np.ndarray] = {}

    def values(self, band: str, units: str) -> np.ndarray:
        """``sample.<band>`` in ``units``: each pixel from its chosen item, 0 where none."""
        shape_ = (self.req.height, self.req.width)
        if band == "dataMask":
            return (self.choice >= 0).astype(np.uint8)
        harmonize = self.req.processing.harmonize
        out: np.ndarray | None = None
        for k in self.used:
            acq = self.items[k]
            day = pixels.day_number(acq.datetime.date())
            v = pixels.sample_values(band, units, harmonize, acq.baseline, day, self.xs, self.ys,
                                     self.unit, acq.cloud_cover)
            v = np.broadcast_to(v, shape_)
            if self.full:
                return v
            if out is None:
                out = np.zeros(shape_, dtype=v.dtype)
            np.copyto(out, v, where=self.where[k])
        if out is None:  # nothing covers the request: all zeros, of the band's type
            probe = pixels.sample_values(band, units, harmonize, "0400", 1, np.zeros(1), np.zeros(1),
                                         self.unit)
            out = np.zeros(shape_, dtype=probe.dtype)
        return out

    def __call__(self, band: str) -> np.ndarray:
        if band not in self.cache:
            self.cache[band] = self.values(band, self.req.script.units[band])
        return self.cache[band]


def cast(value: Any, out: Output, shape_: tuple[int, int]) -> np.ndarray:
    """Convert one returned value to the output sample type: round and clamp integers."""
    arr = np.broadcast_to(np.asarray(value), shape_)
    dtype = np.dtype(out.dtype)
    if arr.dtype == dtype:
        return arr
    if out.sample_type == "AUTO":
        arr = np.asarray(arr, dtype=np.float64) * 255.0
    if dtype.kind == "f":
        return arr.astype(dtype)
    info = np.iinfo(dtype)
    if arr.dtype.kind in "iub":
        return np.clip(arr, info.min, info.max).astype(dtype)
    with np.errstate(invalid="ignore"):
        rounded = np.rint(np.nan_to_num(np.asarray(arr, dtype=np.float64), nan=0.0))
        return np.clip(rounded, info.min, info.max).astype(dtype)


def processing_units(req: ProcessRequest) -> float:
    """What the service charges for ``req`` (:func:`stacfetch.testing.units.processing_units`)."""
    return pu.processing_units(req.width, req.height, pu.input_band_count(req.script.units),
                               req.output.sample_type)


def _encode(array: np.ndarray, req: ProcessRequest, nodata: float | None) -> bytes:
    count, height, width = array.shape
    if req.media_type == "image/tiff":
        profile = {"driver": "GTiff", "width": width, "height": height, "count": count,
                   "dtype": array.dtype.name, "crs": req.crs, "transform": req.transform}
        if nodata is not None:
            profile["nodata"] = nodata
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(array)
            return mem.read()
    if req.media_type == "image/png":
        if array.dtype.name not in ("uint8", "uint16") or count not in (1, 2, 3, 4):
            raise bad_payload("PNG output needs UINT8/UINT16/AUTO samples and 1-4 bands")
        driver = "PNG"
    else:
        if array.dtype.name != "uint8" or count not in (1, 3):
            raise bad_payload("JPEG output needs UINT8/AUTO samples and 1 or 3 bands")
        driver = "JPEG"
    with warnings.catch_warnings(), MemoryFile() as mem:
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with mem.open(driver=driver, width=width, height=height, count=count,
                      dtype=array.dtype.name) as dst:
            dst.write(array)
        return mem.read()


def render(body: Any, *, accept: str | None = None, deployment: str = "sentinelhub") -> Rendered:
    """Validate and render one Process API request body; raises ApiError on bad input."""
    req = parse_request(body, accept)
    area = _area_lonlat(req)
    if area.is_empty or not all(math.isfinite(v) for v in area.bounds):
        found = []  # the bbox lies outside the valid area of its CRS: nothing to render
    else:
        days = max(1.0, (req.time_to - req.time_from).total_seconds() / 86400)
        if len(grid.tiles_intersecting(area)) * days / 2.5 > MAX_CANDIDATES:
            raise bad_payload("the request spans too many scenes for the emulator; "
                              "shorten timeRange or make the bbox smaller")
        found = grid.search(area, req.time_from, req.time_to, deployment)
    found = [a for a in found if a.cloud_cover <= req.max_cloud]
    items = order_items(found, req.mosaicking)
    choice = _choose(req, items)
    samples = _Samples(req, items, choice)
    try:
        result = req.script.evaluate(samples)
    except EvalscriptError as exc:
        raise renderer_error(f"Failed to evaluate script! {exc}") from None
    out = req.output
    shape_ = (req.height, req.width)
    array = np.empty((out.bands, req.height, req.width), dtype=out.dtype)
    nodata_mask = (choice < 0) if out.nodata is not None else None
    for i, value in enumerate(result[out.id]):
        array[i] = cast(value, out, shape_)
        if nodata_mask is not None and nodata_mask.any():
            array[i][nodata_mask] = out.nodata
    content = _encode(array, req, out.nodata)
    used = [items[k] for k in samples.used]
    return Rendered(
        content=content,
        media_type=req.media_type,
        array=array,
        crs=req.crs,
        transform=req.transform,
        nodata=out.nodata,
        processing_units=processing_units(req),
        items=[{"id": a.id, "datetime": a.datetime_str, "cloud_cover": a.cloud_cover} for a in used],
        request=req,
    )


__all__ = ["ApiError", "ProcessRequest", "Rendered", "cast", "order_items", "parse_request",
           "processing_units", "render"]
