"""The ``process`` pixel source: Sentinel Hub renders each tile (Process API), one request per tile.

The body follows the Sentinel Hub Process API (reference §3.2): bounds in the output CRS as
an OGC CRS URL, a ``timeRange`` around one acquisition only, ``leastRecent`` mosaicking,
``width``/``height`` per tile and a single GeoTIFF response.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import requests

from ..bands import BANDS
from ..config import Settings
from ..errors import InvalidResponseError, ServiceError
from ..plan import Job, Tile

__all__ = ["ProcessSource", "ProcessTiles", "evalscript", "fetch_tile", "request_body"]

MAX_PIXELS_PER_SIDE = 2500
TIME_MARGIN = timedelta(minutes=1)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_SAMPLE_TYPES = {"uint8": "UINT8", "uint16": "UINT16", "float32": "FLOAT32"}


def crs_url(crs: str) -> str:
    """``EPSG:32636`` -> ``http://www.opengis.net/def/crs/EPSG/0/32636`` (the form the service documents)."""
    authority, _, code = crs.partition(":")
    if authority.upper() != "EPSG" or not code.isdigit():
        raise ValueError(f"expected an EPSG:NNNN code, got {crs!r}")
    return f"http://www.opengis.net/def/crs/EPSG/0/{int(code)}"


def band_units(band: str, dtype: str) -> str:
    """Units to request: DN for integer output; REFLECTANCE for float spectral bands."""
    if dtype == "float32" and BANDS[band].kind == "reflectance":
        return "REFLECTANCE"
    return "DN"


def evalscript(bands: tuple[str, ...], dtype: str) -> str:
    """A V3 evalscript returning ``bands`` in order, with 0 where the service has no data."""
    units = [band_units(b, dtype) for b in bands]
    inputs = list(bands) + ([] if "dataMask" in bands else ["dataMask"])
    units_all = units + ([] if "dataMask" in bands else ["DN"])
    unit_field = json.dumps(units_all[0]) if len(set(units_all)) == 1 else json.dumps(units_all)
    samples = ", ".join(f"sample.{b}" for b in bands)
    zeros = ", ".join("0" for _ in bands)
    return (
        "//VERSION=3\n"
        "function setup() {\n"
        "  return {\n"
        f"    input: [{{bands: {json.dumps(inputs)}, units: {unit_field}}}],\n"
        f'    output: {{id: "default", bands: {len(bands)}, sampleType: "{_SAMPLE_TYPES[dtype]}", '
        "nodataValue: 0}\n"
        "  };\n"
        "}\n"
        "function evaluatePixel(sample) {\n"
        f"  return sample.dataMask ? [{samples}] : [{zeros}];\n"
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
) -> dict[str, Any]:
    """The Process API body for one tile of one acquisition.

    ``start``/``end`` are the acquisition's first and last item datetimes; the time range
    is widened by one minute each side, far less than the ~100 minutes between passes.
    """
    if not (1 <= width <= MAX_PIXELS_PER_SIDE and 1 <= height <= MAX_PIXELS_PER_SIDE):
        raise ValueError(f"tile of {width}x{height} px exceeds the service limit")
    return {
        "input": {
            "bounds": {"bbox": list(bounds), "properties": {"crs": crs_url(crs)}},
            "data": [
                {
                    "type": collection,
                    "dataFilter": {
                        "timeRange": {"from": _iso(start - TIME_MARGIN), "to": _iso(end + TIME_MARGIN)},
                        "mosaickingOrder": mosaicking_order,
                    },
                    "processing": {"upsampling": "NEAREST", "downsampling": "NEAREST"},
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
    timeout: float = 300.0,
    spool: Path | None = None,
) -> bytes | Path:
    """POST one request and return the GeoTIFF: its bytes, or ``spool`` holding them.

    With ``spool`` the body is streamed to that file in 1 MiB chunks (memory stays flat for
    large tiles); a connection lost mid-body then raises InvalidResponseError, so the caller
    asks again. Retries of 429/5xx/dropped connections before the body happen inside the
    session; service errors keep the server's words.
    """
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
            try:
                with spool.open("wb") as fh:
                    for chunk in response.iter_content(1 << 20):
                        fh.write(chunk)
            except requests.RequestException as exc:
                spool.unlink(missing_ok=True)
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

    def body(self, tile: Tile) -> dict[str, Any]:
        job, acq = self.job, self.job.acquisition
        return request_body(
            collection=acq.collection, bounds=tile.bounds, crs=job.grid.crs,
            width=tile.width, height=tile.height, start=acq.start, end=acq.end,
            bands=job.bands, dtype=job.dtype,
        )

    def read_tile(self, tile: Tile, *, spool: Path | None = None) -> bytes | Path:
        """One request: the tile's GeoTIFF bytes, or ``spool`` holding them (see ``fetch_tile``)."""
        with self._lock:
            self.reads += 1
        return fetch_tile(self.session, self.process_url, self.body(tile), spool=spool)

    def tags(self) -> dict[str, str]:
        return {}

    def scaling(self) -> None:
        """The service returns the values as written (no STAC scale/offset to record)."""
        return None


@dataclass(frozen=True)
class ProcessSource:
    """Sentinel Hub / CDSE / sandbox: tiles rendered by the Process API at ``settings.process_url``."""

    settings: Settings
    name: ClassVar[str] = "process"
    concurrent_tiles: ClassVar[bool] = True

    def open(self, job: Job, session: Any) -> ProcessTiles:
        return ProcessTiles(job, session, self.settings.process_url)
