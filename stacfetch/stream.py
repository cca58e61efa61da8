"""Jobs while the Catalog search is still paging: downloads start from the first page.

The plan must be the whole search's (``plan.plan_jobs`` of every item): the same
acquisitions, duplicates, names, result and manifest. So a page's acquisitions are released
only once no later item can change them, which needs the items' order: the Catalog pages
newest first (the Sentinel Hub Catalog does so on its own, in every recorded answer, without
advertising the STAC sort extension; a catalog that advertises it is asked ``sortby``
datetime descending, see ``catalog.iter_pages``). The order is checked on every item.

With items newest first, every later item is at most as new as the oldest seen so far (the
*frontier*). Acquisitions group a pass's items (same platform and relative orbit) in time
order, a new one starting where an item is more than the tolerance after the group's first
(``plan.group_acquisitions``): so a gap of more than the tolerance between two items of a pass
is a boundary whatever older items follow. A pass's pending items are final once the oldest of
them is more than the tolerance newer than the frontier; the open group at the end of a page
(items within the tolerance of the page's last one) waits for the next page or the search's
end. Names must be final too: a pass is held back while an item still pending (another
pass's, or any later one) could share its file name's second (the ``-2`` suffixes follow time
order).

When the search ends, the rest comes from the whole search's plan, and every job released
early is checked against it. An item that breaks the order stops the early releases; if it
changed an acquisition already released, the run stops with a ServiceError naming the files
(a rerun with ``--no-stream`` plans the whole search first).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import pystac

from .errors import ServiceError
from .plan import DEFAULT_MAX_PX, DEFAULT_TOLERANCE, Job, plan_jobs
from .query import Query
from .stac.items import scene_facts

__all__ = ["PageStream"]

Pass = tuple[str | None, int | None]  # (platform, relative orbit): what group_acquisitions keeps apart


def _second(t: datetime) -> datetime:
    """The second a file name shows (``%H%M%S``)."""
    return t.replace(microsecond=0)


class PageStream:
    """Feed it the pages as they arrive (:meth:`add`), then :meth:`finish` at the search's end."""

    def __init__(self, query: Query, out_dir: Path, *, tolerance: timedelta = DEFAULT_TOLERANCE,
                 max_px: int = DEFAULT_MAX_PX) -> None:
        self.query, self.out_dir = query, Path(out_dir)
        self.tolerance, self.max_px = tolerance, max_px
        self.items: list[pystac.Item] = []  # every item, in arrival order
        self.released: list[Job] = []  # jobs given out before the search ended
        self.plan: list[Job] = []  # the whole search's plan (set by finish)
        self.ordered = True  # False once an item came newer than one before it
        self._ids: set[str] = set()
        self._pending: dict[Pass, list[tuple[datetime, pystac.Item]]] = {}
        self._frontier: datetime | None = None  # the oldest datetime seen

    def add(self, page: Iterable[pystac.Item]) -> list[Job]:
        """Take one page; return the jobs of the acquisitions it made final (time order)."""
        for item in page:
            if item.id in self._ids:
                continue
            self._ids.add(item.id)
            self.items.append(item)
            facts = scene_facts(item)
            t = facts.sensing_time()
            if self._frontier is not None and t > self._frontier:
                self.ordered = False  # not newest first: nothing more is released early
            self._frontier = t if self._frontier is None else min(self._frontier, t)
            self._pending.setdefault((facts.platform, facts.relative_orbit), []).append((t, item))
        if not self.ordered or self._frontier is None:
            return []
        frontier = self._frontier
        final = {k for k, members in self._pending.items()
                 if min(t for t, _ in members) - frontier > self.tolerance}
        while True:  # names: no second shared with an item that is not released with them
            held = {_second(t) for k, members in self._pending.items() if k not in final
                    for t, _ in members}
            blocked = {k for k in final if any(_second(t) in held or _second(t) <= _second(frontier)
                                               for t, _ in self._pending[k])}
            if not blocked:
                break
            final -= blocked
        items = [item for k in sorted(final, key=str) for _, item in self._pending.pop(k)]
        jobs = self._plan(items) if items else []
        self.released.extend(jobs)
        return jobs

    def finish(self) -> list[Job]:
        """The search has ended: the whole search's plan (``plan``); return its jobs not
        released yet. ServiceError if an item out of order changed a job already released."""
        self.plan = self._plan(self.items)
        planned = {(j.destination, j.acquisition.item_ids) for j in self.plan}
        wrong = [j for j in self.released if (j.destination, j.acquisition.item_ids) not in planned]
        if wrong:
            names = ", ".join(j.destination.name for j in wrong[:5]) + (" ..." if len(wrong) > 5 else "")
            why = ("the catalog sent items out of time order (newest first until then), and a later "
                   "one belongs to an acquisition already being downloaded" if not self.ordered
                   else "a bug in stacfetch (please report it)")
            raise ServiceError(
                f"{why}: {len(wrong)} file(s) started during the search do not match the whole "
                f"search's plan ({names}); stopped",
                hint="delete those files and run again with --no-stream (stream=False), which plans "
                "the whole search before the first download")
        done = {j.destination for j in self.released}
        self._pending.clear()
        return [j for j in self.plan if j.destination not in done]

    def _plan(self, items: list[pystac.Item]) -> list[Job]:
        return plan_jobs(self.query, items, self.out_dir, tolerance=self.tolerance, max_px=self.max_px)
