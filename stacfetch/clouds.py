"""``--min-clear``: skip acquisitions that are cloudy over the area, even when the tile is not.

An item's ``eo:cloud_cover`` describes its whole 110 km MGRS tile; a small area can be under
a cloud on a 5 % day or clear on a 60 % day. For each acquisition, one small Process API
request (the Scene Classification band, at most ``MAX_SIDE`` pixels a side, nearest
neighbour) tells the share of clear pixels over the area: SCL classes 4 vegetation, 5 not
vegetated, 6 water and 11 snow are clear; every other class (cloud, shadow, cirrus,
saturated, dark, unclassified) is not; class 0 and pixels outside the area are not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import geometry_mask
from rasterio.transform import from_bounds

from .bands import SCL_CLEAR
from .errors import StacfetchError
from .plan import Grid, Job
from .sources.process import fetch_tile, request_body

log = logging.getLogger(__name__)

MAX_SIDE = 128  # pixels of the screening image's longer side

__all__ = ["MAX_SIDE", "ClearShare", "clear_percent", "screen", "screening_size"]


@dataclass(frozen=True)
class ClearShare:
    """What the screening found for one acquisition."""

    job: Job
    clear: float | None  # percent of the area's data pixels that are clear; None: not measured
    data_pixels: int = 0
    error: str | None = None

    @property
    def key(self) -> str:
        return self.job.acquisition.key

    def keep(self, min_clear: float) -> bool:
        """Keep unless measured below ``min_clear``; an area without data is 0 % clear."""
        if self.error is not None:
            return True  # could not measure: download rather than lose an acquisition
        return (self.clear or 0.0) >= min_clear

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.key}: not screened ({self.error})"
        if self.clear is None:
            return f"{self.key}: no data over the area"
        return f"{self.key}: {self.clear:.0f} % clear"


def screening_size(grid: Grid, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """``(width, height)`` of the screening image: the grid scaled so its longer side is at most ``max_side``."""
    factor = max(grid.width, grid.height) / max_side
    if factor <= 1:
        return grid.width, grid.height
    return max(1, round(grid.width / factor)), max(1, round(grid.height / factor))


def clear_percent(scl: np.ndarray, inside: np.ndarray | None = None) -> tuple[float | None, int]:
    """``(clear %, data pixels)`` of an SCL array; pixels with class 0 or outside ``inside`` do not count."""
    data = scl != 0
    if inside is not None:
        data &= inside
    count = int(data.sum())
    if count == 0:
        return None, 0
    clear = np.isin(scl, SCL_CLEAR) & data
    return float(clear.sum()) * 100.0 / count, count


def _inside_mask(geometry: Any, grid: Grid, width: int, height: int) -> np.ndarray | None:
    """True for screening pixels whose centre is inside ``geometry`` (EPSG:4326); None for a box."""
    if geometry is None:
        return None
    to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    shape = shapely.transform(geometry, to_grid.transform, interleaved=False)
    transform = from_bounds(*grid.bounds, width, height)
    mask = geometry_mask([shape], out_shape=(height, width), transform=transform, invert=True)
    return mask if mask.any() else None


def measure(job: Job, session: Any, process_url: str, geometry: Any = None) -> ClearShare:
    """One small SCL request for ``job``'s acquisition over its grid; never raises for service errors."""
    grid = job.grid
    width, height = screening_size(grid)
    acq = job.acquisition
    body = request_body(
        collection=acq.collection, bounds=grid.bounds,
        crs=grid.crs, width=width, height=height, start=acq.start, end=acq.end,
        bands=("SCL",), dtype="uint8",
    )
    try:
        data = fetch_tile(session, process_url, body)
        with rasterio.MemoryFile(data) as mem, mem.open() as src:
            scl = src.read(1)
    except StacfetchError as exc:
        log.warning("screening %s failed: %s", acq.key, exc.message)
        return ClearShare(job, None, error=exc.message)
    except Exception as exc:  # an undecodable answer: do not lose the acquisition over it
        log.warning("screening %s: unreadable SCL answer (%s)", acq.key, exc)
        return ClearShare(job, None, error=f"unreadable SCL answer: {exc}")
    clear, count = clear_percent(scl, _inside_mask(geometry, grid, width, height))
    return ClearShare(job, clear, count)


def screen(
    jobs: Sequence[Job],
    session: Any,
    process_url: str,
    min_clear: float,
    *,
    geometry: Any = None,
    workers: int = 4,
) -> tuple[list[Job], list[ClearShare]]:
    """Measure every job; return the jobs to download (in order) and every measurement."""
    if not jobs:
        return [], []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))),
                            thread_name_prefix="stacfetch-scl") as pool:
        shares = list(pool.map(lambda job: measure(job, session, process_url, geometry), jobs))
    kept = [s.job for s in shares if s.keep(min_clear)]
    return kept, shares
