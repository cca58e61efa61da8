"""Jobs while the search is still paging: download from the first Catalog page on.

The Catalog pages items newest first. Acquisitions group a pass's items in time order, a
new one starting where an item lies more than the tolerance after the group's first
(:func:`~stacfetch.plan.group_acquisitions`); a gap of more than the tolerance between two
items of a pass is therefore a boundary whatever older items come later. Once an item older
than a pass's earliest pending item by more than the tolerance has arrived, that pass's
pending items are final: they are grouped exactly as the whole search would group them, and
their jobs can start. If a page breaks the newest-first order, nothing more is released
until the search ends (the jobs already released keep their grouping).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pystac

from .bands import PRESETS, output_dtype
from .plan import (
    DEFAULT_ALIGN,
    DEFAULT_MAX_PX,
    DEFAULT_TOLERANCE,
    Job,
    area_id,
    cut_tiles,
    grid_for,
    group_acquisitions,
    safe_join,
    unique_destination,
)
from .query import Query
from .stac.items import scene_facts

__all__ = ["PagePlanner"]


class PagePlanner:
    """Feed it pages (:meth:`add`), get the jobs that became final; :meth:`finish` the rest."""

    def __init__(self, query: Query, out_dir: Path, *, tolerance: timedelta = DEFAULT_TOLERANCE,
                 max_px: int = DEFAULT_MAX_PX, align: int | None = DEFAULT_ALIGN) -> None:
        self.bands = tuple(query.bands) or PRESETS["all"]
        self.dtype = output_dtype(self.bands, query.dtype)
        self.grid = grid_for(query.geometry, query.crs, query.resolution)
        self.tiles = tuple(cut_tiles(self.grid, max_px, align=align))
        self.folder = safe_join(Path(out_dir), query.collection,
                                area_id(query.geometry, self.grid, self.bands, self.dtype))
        self.tolerance = tolerance
        self.items: list[pystac.Item] = []  # every item, in arrival order
        self.jobs: list[Job] = []  # every job released, in release order
        self._pending: dict[tuple[str | None, int | None], list[tuple[datetime, pystac.Item]]] = {}
        self._ids: set[str] = set()
        self._oldest: datetime | None = None
        self._ordered = True
        self._taken: set[str] = set()

    def add(self, page: Iterable[pystac.Item]) -> list[Job]:
        """Take one page; return the jobs of the acquisitions it made final."""
        for item in page:
            if item.id in self._ids:
                continue
            self._ids.add(item.id)
            self.items.append(item)
            facts = scene_facts(item)
            t = facts.sensing_time()
            if self._oldest is not None and t > self._oldest:
                self._ordered = False  # not newest first: wait for the whole search
            self._oldest = t if self._oldest is None else min(self._oldest, t)
            self._pending.setdefault((facts.platform, facts.relative_orbit), []).append((t, item))
        if not self._ordered or self._oldest is None:
            return []
        final = []
        for key, members in list(self._pending.items()):
            if min(t for t, _ in members) - self._oldest > self.tolerance:
                final.extend(item for _, item in members)
                del self._pending[key]
        return self._release(final)

    def finish(self) -> list[Job]:
        """The search has ended: the jobs of every acquisition not released yet."""
        rest = [item for members in self._pending.values() for _, item in members]
        self._pending.clear()
        return self._release(rest)

    def _release(self, items: list[pystac.Item]) -> list[Job]:
        jobs = [Job(acq, self.grid, self.tiles, self.bands, self.dtype,
                    unique_destination(self.folder, acq, self._taken))
                for acq in group_acquisitions(items, self.tolerance)]
        self.jobs.extend(jobs)
        return jobs

    def jobs_of(self, pages: Iterable[list[pystac.Item]]) -> Iterator[Job]:
        """Every job of ``pages``, each as soon as it is final."""
        for page in pages:
            yield from self.add(page)
        yield from self.finish()

    def plan(self) -> list[Job]:
        """Every job released so far in time order, as the whole search would plan them."""
        return sorted(self.jobs, key=lambda j: (j.acquisition.datetime, j.acquisition.key))
