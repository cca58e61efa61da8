"""``--min-clear``: skip acquisitions that are cloudy over the area, even when the tile is not.

An item's ``eo:cloud_cover`` describes its whole 110 km MGRS tile; a small area can be under
a cloud on a 5 % day or clear on a 60 % day. For each acquisition the Scene Classification
band over the area tells the share of clear pixels: SCL classes 4 vegetation, 5 not
vegetated, 6 water and 11 snow are clear; every other class (cloud, shadow, cirrus,
saturated, dark, unclassified) is not; class 0 and pixels outside the area are not counted.

Process API providers: one small request (SCL, at most ``MAX_SIDE`` pixels a side, nearest
neighbour) per acquisition. "Outside the area" is the service's own mask: a polygon area is
sent as ``bounds.geometry`` exactly as for the download, and the answer's ``dataMask`` band
says which pixels count. Its cost is :func:`screening_units` (THE PU estimate of ``plan``).

COG providers (a STAC API's assets): the SCL asset's windows over the job's own tiles, read
exactly as the bands are (:class:`~stacfetch.sources.assets.CogReader`, nearest), counted
tile by tile inside the area's polygon; no Process API, no processing units.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import geometry_mask
from rasterio.transform import from_bounds

from .bands import SCL_CLEAR
from .config import Settings
from .errors import QuotaExhaustedError, StacfetchError
from .plan import Grid, Job, estimate_processing_units
from .sources.assets import CogReader
from .sources.process import area_in, fetch_tile, request_body

log = logging.getLogger(__name__)

MAX_SIDE = 128  # pixels of the screening image's longer side

__all__ = ["MAX_SIDE", "ClearShare", "clear_percent", "measure_assets", "screen", "screen_assets",
           "screening_size", "screening_units"]


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


def screening_units(jobs: Sequence[Job]) -> float:
    """Processing units the screening requests of ``jobs`` cost (one SCL request each)."""
    return sum(estimate_processing_units(*screening_size(j.grid), ["SCL"], "uint8") for j in jobs)


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
    area = area_in(job.geometry, grid.crs)  # the download's own polygon: the same mask
    body = request_body(
        collection=acq.collection, bounds=grid.bounds,
        crs=grid.crs, width=width, height=height, start=acq.start, end=acq.end,
        bands=("SCL",), dtype="uint8", geometry=area, harmonize=job.harmonize,
    )
    try:
        data = fetch_tile(session, process_url, body)
        with rasterio.MemoryFile(data) as mem, mem.open() as src:
            scl = src.read(1)
            inside = src.read(src.count) != 0 if src.count > 1 else None  # dataMask, the last band
    except QuotaExhaustedError:
        raise  # every further request would be refused too: the run stops
    except StacfetchError as exc:
        log.warning("screening %s failed: %s", acq.key, exc.message)
        return ClearShare(job, None, error=exc.message)
    except Exception as exc:  # an undecodable answer: do not lose the acquisition over it
        log.warning("screening %s: unreadable SCL answer (%s)", acq.key, exc)
        return ClearShare(job, None, error=f"unreadable SCL answer: {exc}")
    if inside is None:
        inside = _inside_mask(geometry, grid, width, height)
    clear, count = clear_percent(scl, inside)
    return ClearShare(job, clear, count)


def measure_assets(job: Job, settings: Settings, session: Any = None) -> ClearShare:
    """The SCL asset's windows over ``job``'s tiles, read as the bands are (with the data mask:
    no data and outside a polygon area do not count); never raises for read errors."""
    acq = job.acquisition
    clear_pixels = data_pixels = 0.0
    try:
        reader = CogReader(replace(job, bands=("SCL",), dtype="uint8"), settings, session)
        for tile in job.tiles:
            scl, data_mask = reader.read_tile(tile)  # SCL, then the data mask (1 = data)
            clear, count = clear_percent(scl, data_mask != 0)
            data_pixels += count
            clear_pixels += (clear or 0.0) * count / 100.0
    except StacfetchError as exc:
        log.warning("screening %s failed: %s", acq.key, exc.message)
        return ClearShare(job, None, error=exc.message)
    if data_pixels == 0:
        return ClearShare(job, None, 0)
    return ClearShare(job, clear_pixels * 100.0 / data_pixels, int(data_pixels))


def _screen_with(measure_one: Callable[[Job], ClearShare], jobs: Sequence[Job], min_clear: float,
                 workers: int) -> tuple[list[Job], list[ClearShare]]:
    if not jobs:
        return [], []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))),
                            thread_name_prefix="stacfetch-scl") as pool:
        shares = list(pool.map(measure_one, jobs))
    kept = [s.job for s in shares if s.keep(min_clear)]
    return kept, shares


def screen(
    jobs: Sequence[Job],
    session: Any,
    process_url: str,
    min_clear: float,
    *,
    geometry: Any = None,
    workers: int = 4,
) -> tuple[list[Job], list[ClearShare]]:
    """Measure every job with the Process API; return the jobs to download (in order) and every measurement."""
    return _screen_with(lambda job: measure(job, session, process_url, geometry), jobs, min_clear, workers)


def screen_assets(
    jobs: Sequence[Job],
    settings: Settings,
    min_clear: float,
    *,
    session: Any = None,
    workers: int = 4,
) -> tuple[list[Job], list[ClearShare]]:
    """Measure every job from its items' SCL assets (COG providers); as :func:`screen`."""
    return _screen_with(lambda job: measure_assets(job, settings, session), jobs, min_clear, workers)
