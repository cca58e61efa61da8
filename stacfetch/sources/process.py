"""The ``process`` pixel source: Sentinel Hub renders each tile (Process API), one request per tile.

The body follows the Sentinel Hub Process API (reference §3.2): bounds in the output CRS as
an OGC CRS URL — the tile's ``bbox`` and, for a polygon area, the polygon itself as
``geometry`` (pixels outside it come back with ``dataMask`` 0) — a ``timeRange`` around one
acquisition only, ``leastRecent`` mosaicking, ``processing.harmonizeValues`` said explicitly,
``width``/``height`` per tile and a single GeoTIFF response.

The evalscript asks each band in the units the service has for it (``Band.request_units``)
and returns the bands **plus ``dataMask`` as the last band**; the part file turns that band
into the output's per-dataset mask (no nodata value that could collide with a valid 0).
With ``harmonizeValues`` false, spectral DNs of processing baseline 04.00+ keep the archive's
+1000, and their band offset is -0.1 (:func:`band_scaling`).

The CRSs the service accepts (``SUPPORTED_CRS``, :func:`check_crs`) are those of its "CRS
support" page: EPSG:4326, EPSG:3857, the WGS 84 UTM zones and a list of national systems.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import requests
import shapely
from pyproj import Transformer
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from ..bands import BANDS
from ..config import Settings
from ..errors import InvalidOptionError, InvalidResponseError, ServiceError
from ..http import body_limit, read_body
from ..http.ratelimit import costing
from ..plan import Job, Tile, estimate_processing_units
from ..stac.items import scene_facts

log = logging.getLogger(__name__)

__all__ = ["SUPPORTED_CRS", "ProcessSource", "ProcessTiles", "band_scaling", "check_crs", "evalscript",
           "fetch_tile", "request_body", "response_limit"]

MAX_PIXELS_PER_SIDE = 2500
TIME_MARGIN = timedelta(minutes=1)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
TIFF_OVERHEAD = 1 << 20  # header, directory, tile offsets: far less, even for 2500 x 2500 x 13


def response_limit(width: int, height: int, bands: int, dtype: str) -> int:
    """The most a tile's GeoTIFF can hold: its samples uncompressed plus 2 % and 1 MiB for the
    TIFF's own structures (DEFLATE never grows data by more than a fraction of a percent)."""
    samples = int(width) * int(height) * int(bands) * np.dtype(dtype).itemsize
    return samples + samples // 50 + TIFF_OVERHEAD
_SAMPLE_TYPES = {"uint8": "UINT8", "uint16": "UINT16", "float32": "FLOAT32"}


def crs_url(crs: str) -> str:
    """``EPSG:32636`` -> ``http://www.opengis.net/def/crs/EPSG/0/32636`` (the form the service documents)."""
    authority, _, code = crs.partition(":")
    if authority.upper() != "EPSG" or not code.isdigit():
        raise ValueError(f"expected an EPSG:NNNN code, got {crs!r}")
    return f"http://www.opengis.net/def/crs/EPSG/0/{int(code)}"


# "CRS support" (docs.sentinel-hub.com/api/latest/api/process/crs; CDSE Process/Crs.qmd)
NATIONAL_CRS = (2154, 2180, 2193, 3003, 3004, 3005, 3006, 3031, 3035, 3161, 3346, 3413, 3416, 3578,
                3580, 3765, 3794, 3844, 3912, 3995, 4026, 5514, 28992, 32184)
SUPPORTED_CRS = ("EPSG:4326", "EPSG:3857", "EPSG:32601..32660", "EPSG:32701..32760",
                 *(f"EPSG:{c}" for c in NATIONAL_CRS))


def check_crs(crs: str) -> str:
    """``crs`` (``EPSG:NNNN``) if the Process API accepts it; InvalidOptionError listing the CRSs otherwise."""
    code = int(crs.partition(":")[2])
    if code in (4326, 3857) or 32601 <= code <= 32660 or 32701 <= code <= 32760 or code in NATIONAL_CRS:
        return crs
    raise InvalidOptionError(
        f"the Sentinel Hub Process API cannot produce {crs}",
        hint="use one of the CRSs it supports: " + ", ".join(SUPPORTED_CRS)
        + " (or leave --crs out for the area's UTM zone)",
    )


def band_scaling(band: str, dtype: str, *, offset_baseline: bool = False) -> tuple[float, float]:
    """``(scale, offset)`` so that ``value * scale + offset`` is the physical value.

    uint16 spectral DNs: 0.0001, and -0.1 when they keep the 04.00+ archive offset
    (``offset_baseline``: harmonizeValues false on a baseline 04.00+ scene); AOT DNs 0.001;
    float32 output (already reflectance / optical depth), SCL, CLD, masks: 1, 0.
    """
    kind = BANDS[band].kind
    if dtype == "float32":
        return 1.0, 0.0
    if kind == "reflectance":
        return 0.0001, (-0.1 if offset_baseline else 0.0)
    if kind == "aot":
        return 0.001, 0.0
    return 1.0, 0.0


def evalscript(bands: tuple[str, ...], dtype: str) -> str:
    """A V3 evalscript returning ``bands`` in order, then ``dataMask`` (1 data, 0 no data)."""
    inputs = list(dict.fromkeys([*bands, "dataMask"]))
    units = [BANDS[b].request_units(dtype) for b in inputs]
    unit_field = json.dumps(units[0]) if len(set(units)) == 1 else json.dumps(units)
    samples = ", ".join(f"sample.{b}" for b in [*bands, "dataMask"])
    return (
        "//VERSION=3\n"
        "function setup() {\n"
        "  return {\n"
        f"    input: [{{bands: {json.dumps(inputs)}, units: {unit_field}}}],\n"
        f'    output: {{id: "default", bands: {len(bands) + 1}, sampleType: "{_SAMPLE_TYPES[dtype]}"}}\n'
        "  };\n"
        "}\n"
        "function evaluatePixel(sample) {\n"
        f"  return [{samples}];\n"
        "}\n"
    )


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def request_body(
    *,
    collection: str,
    bounds: tuple[float, float, float, float],
    crs: str,
    width: int,
    height: int,
    start: datetime,
    end: datetime,
    bands: tuple[str, ...],
    dtype: str,
    mosaicking_order: str = "leastRecent",
    geometry: BaseGeometry | None = None,
    harmonize: bool = True,
) -> dict[str, Any]:
    """The Process API body for one tile of one acquisition.

    ``start``/``end`` are the acquisition's first and last item datetimes; the time range
    is widened by one minute each side, far less than the ~100 minutes between passes.
    ``geometry`` (in ``crs``) limits the rendered pixels to a polygon inside the tile's bbox.
    """
    if not (1 <= width <= MAX_PIXELS_PER_SIDE and 1 <= height <= MAX_PIXELS_PER_SIDE):
        raise ValueError(f"tile of {width}x{height} px exceeds the service limit")
    bounds_doc: dict[str, Any] = {"bbox": list(bounds), "properties": {"crs": crs_url(crs)}}
    if geometry is not None:
        bounds_doc["geometry"] = mapping(geometry)
    return {
        "input": {
            "bounds": bounds_doc,
            "data": [
                {
                    "type": collection,
                    "dataFilter": {
                        "timeRange": {"from": _iso(start - TIME_MARGIN), "to": _iso(end + TIME_MARGIN)},
                        "mosaickingOrder": mosaicking_order,
                    },
                    "processing": {"upsampling": "NEAREST", "downsampling": "NEAREST",
                                   "harmonizeValues": bool(harmonize)},
                }
            ],
        },
        "output": {
            "width": int(width),
            "height": int(height),
            "responses": [{"identifier": "default", "format": {"type": "image/tiff"}}],
        },
        "evalscript": evalscript(bands, dtype),
    }


def fetch_tile(
    session: Any,
    process_url: str,
    body: dict[str, Any],
    *,
    timeout: float | None = None,
    spool: Path | None = None,
    max_bytes: int | None = None,
) -> bytes | Path:
    """POST one request and return the GeoTIFF: its bytes, or ``spool`` holding them.

    With ``spool`` the body is streamed to that file in 1 MiB chunks (memory stays flat for
    large tiles); a connection lost mid-body then raises InvalidResponseError, so the caller
    asks again; a body still arriving when the request's deadline passes raises DeadlineError
    (not asked again: the deadline is for the request, its tries and its body). Retries of 429/5xx/dropped connections before the body happen inside the
    session; service errors keep the server's words. ``timeout``: the session's (``--timeout``)
    unless given. ``max_bytes`` (``response_limit``): a larger body, decoded, is refused while
    it arrives (a gzip bomb is never inflated beyond it).
    """
    with body_limit(max_bytes, "this tile"):
        response = session.post(
            process_url, json=body, headers={"Accept": "image/tiff"}, timeout=timeout,
            stream=spool is not None,
        )
    try:
        if response.status_code != 200:
            raise ServiceError.from_response(response)
        content_type = response.headers.get("Content-Type", "")
        if spool is None:
            data = response.content
            head = data[:4]
        else:
            try:  # within the request's deadline (the session attached it to the response)
                with spool.open("wb") as fh:
                    read_body(response, limit=max_bytes, what="this tile", into=fh)
            except BaseException as exc:
                spool.unlink(missing_ok=True)
                if not isinstance(exc, requests.RequestException):
                    raise
                raise InvalidResponseError(
                    f"the connection broke while receiving a tile ({type(exc).__name__})",
                    url=process_url,
                ) from None
            with spool.open("rb") as fh:
                head = fh.read(4)
        if "tiff" not in content_type and head not in _TIFF_MAGIC:
            raise InvalidResponseError(
                f"the Process API answered {content_type or 'no content type'} instead of a GeoTIFF",
                url=process_url,
            )
        return data if spool is None else spool
    finally:
        response.close()


class ProcessTiles:
    """The tiles of one job from the Process API (thread-safe: tiles may be fetched in parallel)."""

    def __init__(self, job: Job, session: Any, process_url: str) -> None:
        self.job = job
        self.session = session
        self.process_url = process_url
        self.reads = 0  # requests sent
        self._lock = threading.Lock()

    @cached_property
    def area(self) -> BaseGeometry | None:
        """The job's polygon in the output CRS (None for a bbox or a point)."""
        return area_in(self.job.geometry, self.job.grid.crs)

    def body(self, tile: Tile) -> dict[str, Any]:
        job, acq = self.job, self.job.acquisition
        area = self.area
        if area is not None:
            left, bottom, right, top = tile.bounds
            if shapely.box(left, bottom, right, top).within(area):
                area = None  # the whole tile is inside: the bbox says it all
        return request_body(
            collection=acq.collection, bounds=tile.bounds, crs=job.grid.crs,
            width=tile.width, height=tile.height, start=acq.start, end=acq.end,
            bands=job.bands, dtype=job.dtype, geometry=area, harmonize=job.harmonize,
        )

    def read_tile(self, tile: Tile, *, spool: Path | None = None) -> bytes | Path:
        """One request: the tile's GeoTIFF bytes, or ``spool`` holding them (see ``fetch_tile``)."""
        with self._lock:
            self.reads += 1
        # the bands and dataMask, all in the output type
        limit = response_limit(tile.width, tile.height, len(self.job.bands) + 1, self.job.dtype)
        pu = estimate_processing_units(tile.width, tile.height, self.job.bands, self.job.dtype)
        with costing(pu):  # the limiter paces processing units as well as requests
            return fetch_tile(self.session, self.process_url, self.body(tile), spool=spool,
                              max_bytes=limit)

    def tags(self) -> dict[str, str]:
        return {"HARMONIZED": "true" if self.job.harmonize else "false"}

    def scaling(self) -> list[tuple[float, float]]:
        """Per band ``(scale, offset)``: see :func:`band_scaling` (the offset of the archive's
        04.00+ DNs only matters without harmonisation)."""
        offset = False
        if not self.job.harmonize:
            offsets = {scene_facts(it).baseline >= 400 for it in self.job.acquisition.items}
            first = scene_facts(self.job.acquisition.items[0]).baseline >= 400
            if len(offsets) > 1:
                log.warning("%s: its items are of processing baselines before and after 04.00; "
                            "band offsets are those of %s", self.job.key, self.job.acquisition.items[0].id)
            offset = first
        return [band_scaling(b, self.job.dtype, offset_baseline=offset) for b in self.job.bands]


def area_in(geometry: BaseGeometry | None, crs: str) -> BaseGeometry | None:
    """``geometry`` (lon/lat) in ``crs``, densified so its edges stay true after reprojection."""
    if geometry is None:
        return None
    if crs == "EPSG:4326":
        return geometry
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    dense = shapely.segmentize(geometry, 0.001)
    return shapely.transform(dense, to_crs.transform, interleaved=False)


@dataclass(frozen=True)
class ProcessSource:
    """Sentinel Hub / CDSE / sandbox: tiles rendered by the Process API at ``settings.process_url``."""

    settings: Settings
    name: ClassVar[str] = "process"
    concurrent_tiles: ClassVar[bool] = True

    def open(self, job: Job, session: Any) -> ProcessTiles:
        return ProcessTiles(job, session, self.settings.process_url)
