"""Guard rails before spending: processing units and disk space, checked on the plan.

Run after the plan and before the first Process API request (screening included): files
already complete cost nothing and are not counted.

* ``max_pu``: a plan estimated above it is refused, naming the estimate (Process API
  providers only; COG providers spend no processing units).
* the CDSE free tier (``CDSE_FREE_TIER_PU`` a month): a plan above it warns, naming the figure.
* disk: the plan's uncompressed size (the upper bound the dry run shows) plus the temporaries
  that exist next to the files while they are made (:func:`temporary_bytes`) must fit in the
  free space of the output folder, or the run is refused with the figures.

The estimates are ``Plan.processing_units`` and ``clouds.screening_units`` (both
``plan.estimate_processing_units``, the one rule) and ``Plan.estimated_bytes``.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .clouds import screening_units
from .errors import BudgetError
from .plan import DEFAULT_MAX_PX, Job, Plan, estimate_processing_units
from .run import SPOOL_BYTES, THREADS_PER_SLOT

__all__ = ["CDSE_FREE_TIER_PU", "Budget", "check_budget", "estimate", "free_space", "max_px_for_budget", "size_text",
           "temporary_bytes"]

log = logging.getLogger(__name__)

CDSE_FREE_TIER_PU = 10_000  # processing units a month on the Copernicus Data Space free tier


@dataclass(frozen=True)
class Budget:
    """What a plan is estimated to cost."""

    processing_units: float  # 0 for COG providers
    bytes: int  # uncompressed upper bound of the files to write
    free_bytes: int | None  # free space where they go (None: unknown)
    temporary_bytes: int = 0  # temporaries next to them while files are made (at the peak)


def size_text(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def estimate(todo: Sequence[Job], *, source: str, screening: bool, out_dir: Path,
             fmt: str = "gtiff", workers: int = 1, free_bytes: int | None = None) -> Budget:
    """The cost of downloading ``todo`` (jobs not yet complete), screening included.

    ``free_bytes``: the output folder's free space measured before (default: measured now)."""
    plan = Plan(tuple(todo))
    pu = 0.0
    if source == "process":
        pu = plan.processing_units
        if screening:
            pu += screening_units(todo)
    free = free_space(out_dir) if free_bytes is None else free_bytes
    return Budget(pu, plan.estimated_bytes, free,
                  temporary_bytes(todo, source=source, fmt=fmt, workers=workers))


def temporary_bytes(todo: Sequence[Job], *, source: str, fmt: str, workers: int) -> int:
    """Upper bound of the temporaries that exist next to the files while they are made.

    A job's ``.part`` becomes its file, so it is counted with the files; on top of it, at
    different moments, a job may hold:

    * a spooled tile (``.tile.part``): a Process API tile larger than ``run.SPOOL_BYTES`` is
      streamed to disk before it is copied into the ``.part`` (a single tile covering the whole
      grid becomes the ``.part`` itself: nothing more);
    * the output copy: ``.cog.part`` is made from the whole ``.part`` (``fmt="cog"``, and a
      spooled single-tile GeoTIFF), and the ``.part`` is removed only after it.

    Up to ``workers × run.THREADS_PER_SLOT`` jobs run at once: the largest of them count.
    """
    extras = []
    for job in todo:
        itemsize = len(job.bands) * np.dtype(job.dtype).itemsize
        size = job.grid.width * job.grid.height * itemsize
        spooled = [t.width * t.height * itemsize for t in job.tiles] if source == "process" else []
        spooled = [b for b in spooled if b > SPOOL_BYTES]
        whole_copied = fmt == "cog" or (fmt == "gtiff" and len(job.tiles) == 1 and bool(spooled))
        copy = size if whole_copied else 0
        spool = max(spooled) if spooled and len(job.tiles) > 1 else 0
        extras.append(max(copy, spool))
    at_once = max(1, workers) * THREADS_PER_SLOT
    return sum(sorted(extras, reverse=True)[:at_once])


def free_space(folder: Path) -> int | None:
    """Free space where ``folder`` is or will be (its nearest existing parent); None if unknown."""
    for candidate in (Path(folder), *Path(folder).resolve().parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def check_budget(todo: Sequence[Job], *, source: str, provider: str, out_dir: Path,
                 max_pu: float | None = None, screening: bool = False, fmt: str = "gtiff",
                 workers: int = 1, free_bytes: int | None = None, started: bool = False) -> Budget:
    """Refuse (BudgetError) a plan above ``max_pu`` or the free disk space; warn above the free tier.

    ``fmt`` and ``workers`` (the run's) size the temporaries (:func:`temporary_bytes`).
    A streamed run (``stream.PageStream``) checks the jobs found so far, page by page, against
    the ``free_bytes`` measured before its first download; ``started``: downloads have begun.
    """
    budget = estimate(todo, source=source, screening=screening, out_dir=out_dir, fmt=fmt,
                      workers=workers, free_bytes=free_bytes)
    if not todo:
        return budget
    what = f"{len(todo)} acquisition(s) to download"
    if max_pu is not None and budget.processing_units > max_pu:
        raise BudgetError(
            f"{what} need about {budget.processing_units:,.1f} processing units (estimate), "
            f"more than --max-pu {max_pu:g}; nothing was requested",
            hint="shorten the time window, shrink the area, ask fewer bands or a coarser --resolution, "
            "skip cloudy days with --max-cloud, or raise --max-pu",
        )
    if provider == "cdse" and budget.processing_units > CDSE_FREE_TIER_PU:
        log.warning("%s need about %s processing units (estimate): more than the CDSE free tier's "
                    "%s a month", what, f"{budget.processing_units:,.0f}", f"{CDSE_FREE_TIER_PU:,}")
    needed = budget.bytes + budget.temporary_bytes
    if budget.free_bytes is not None and needed > budget.free_bytes:
        temporaries = (f" ({size_text(budget.temporary_bytes)} of it temporary files while files "
                       "are converted or large tiles spooled)" if budget.temporary_bytes else "")
        raise BudgetError(
            f"{what} need up to {size_text(needed)} (uncompressed estimate) in {out_dir}"
            f"{temporaries}, which has {size_text(budget.free_bytes)} free; "
            + ("stopped before more was requested (complete files are kept)" if started
               else "nothing was requested"),
            hint="free some space or choose another --out; or download less (fewer bands, a shorter "
            "time window, a smaller area, a coarser --resolution)",
        )
    return budget


def max_px_for_budget(pu_budget: float | None, bands: int, dtype: str,
                      max_px: int = DEFAULT_MAX_PX) -> int:
    """The tile side at which one request costs at most 90 % of ``pu_budget`` PU (what the
    service's per-minute bucket holds): a request larger than the whole budget is never sent."""
    if not pu_budget or pu_budget <= 0:
        return max_px
    per_full_tile = estimate_processing_units(512, 512, bands, dtype)
    return max(64, min(max_px, int(512 * math.sqrt(0.9 * pu_budget / per_full_tile))))
