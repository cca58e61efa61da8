"""Everything the CLI prints: tables, JSON, the query echo, the dry-run plan, screening, checks.

Data goes to stdout (tables, JSON, paths), everything else to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from pystac import Item

from ..budget import size_text
from ..catalog import describe_item
from ..clouds import ClearShare, screening_units
from ..location import describe_area
from ..plan import Job, Plan
from ..query import Query


def print_json(doc: Any, *, indent: int | None = None) -> None:
    """``doc`` as JSON on stdout, and nothing else there."""
    json.dump(doc, sys.stdout, indent=indent)
    sys.stdout.write("\n")


def echo_query(query: Query) -> None:
    """The area and time window as understood (stderr)."""
    print(f"area: {describe_area(query.geometry)}", file=sys.stderr)
    print(f"time: {query.interval}", file=sys.stderr)


def print_items(items: Sequence[Item]) -> None:
    """One line per scene on stdout; the count on stderr."""
    rows = [describe_item(item) for item in items]
    headers = ["date", "time", "id", "tile", "cloud %", "platform"]
    keys = ["date", "time", "id", "tile", "cloud", "platform"]
    table = [[str(row.get(k, "")) for k in keys] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in table]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    days = len({row.get("date") for row in rows})
    print(f"{len(rows)} scene(s) on {days} day(s)", file=sys.stderr)


def summarize(
    jobs: Sequence[Job],
    *,
    query: Query | None = None,
    item_count: int | None = None,
    source: str = "process",
) -> str:
    """Human-readable dry-run text: counts, grid, estimated cost, and one line per file.

    ``source`` is the provider's pixel source: ``"process"`` (Sentinel Hub Process API requests
    and processing units) or ``"assets"`` (``"cog"`` before settings.source: windowed reads of
    each item's band files; no PU cost).
    """
    plan = Plan(tuple(jobs))
    head = f"{item_count} items -> " if item_count is not None else ""
    if not jobs:
        when = f" in {query.interval}" if query is not None else ""
        return f"{head}0 acquisitions{when}: nothing to download"
    grid, first = jobs[0].grid, jobs[0]
    unit = "deg" if grid.is_geographic else "m"
    extent = (
        f"{grid.width * grid.resolution:g} x {grid.height * grid.resolution:g} deg"
        if grid.is_geographic
        else f"{grid.width * grid.resolution / 1000:.1f} x {grid.height * grid.resolution / 1000:.1f} km"
    )
    if source in ("assets", "cog"):
        reads = sum(len(j.acquisition.items) for j in jobs) * len(first.bands)
        work = (f"{head}{plan.acquisitions} acquisitions, {plan.tiles_per_acquisition} tile(s) each, "
                f"windowed reads of {reads} band file(s) (no Process API)")
        cost = f"estimate: at most {size_text(plan.estimated_bytes)} uncompressed output"
    else:
        work = (f"{head}{plan.acquisitions} acquisitions, {plan.tiles_per_acquisition} tile(s) each, "
                f"{plan.requests} Process API requests")
        cost = (f"estimate: {plan.processing_units:.2f} processing units, "
                f"at most {size_text(plan.estimated_bytes)} uncompressed")
    lines = [
        work,
        f"grid: {grid.crs}, {grid.resolution:g} {unit}, {grid.width} x {grid.height} px ({extent})",
        f"bands: {','.join(first.bands)} ({first.dtype})",
        cost,
        f"folder: {first.area_dir}",
    ]
    for j in jobs:
        cc = j.acquisition.cloud_cover
        cloud = f"cloud {cc:.1f}%" if cc is not None else "cloud ?"
        lines.append(f"  {j.destination.name}  {len(j.acquisition.items)} item(s)  {cloud}")
    return "\n".join(lines)


def stream_note(needs_whole_plan: str | None) -> str:
    """What a search of several Catalog pages does: download from its first page, or why not."""
    if needs_whole_plan is None:
        return ("search: several Catalog pages; downloads start with the first, "
                "the totals follow when the search ends")
    return (f"search: several Catalog pages; {needs_whole_plan} needs the whole plan, so downloads "
            "start when the search has ended")


def screening_text(shares: Sequence[ClearShare], min_clear: float) -> str:
    """What --min-clear measured and decided, one line per acquisition."""
    lines = [f"clear share over the area (SCL 4/5/6/11; --min-clear {min_clear:g}):"]
    lines += [f"  {'keep' if s.keep(min_clear) else 'skip'}  {s.describe()}" for s in shares]
    return "\n".join(lines)


def dry_run_screening_note(min_clear: float, jobs: Sequence[Any] = (), source: str = "process") -> str:
    if source == "assets":
        return (f"--min-clear {min_clear:g}: a real run screens each acquisition first "
                "(reads its SCL asset over the area; no processing units)")
    cost = f", about {screening_units(jobs):.3f} processing units" if jobs else ""
    return (f"--min-clear {min_clear:g}: a real run screens each acquisition first "
            f"(one small SCL request each{cost})")


def print_checks(checks: Sequence[Any], *, quiet: bool) -> None:
    """``stacfetch check``: one line per check (details indented, hints under failures)."""
    width = max(len(c.name) for c in checks)
    for c in checks:
        if quiet and c.ok is not False:
            continue
        mark = {True: "\u2713", False: "\u2717", None: "-"}[c.ok]
        first, *rest = c.detail.splitlines() or [""]
        pad = " " * (width + 5)
        print(f"{mark}  {c.name.ljust(width)}  {first}")
        for line in rest:
            print(f"{pad}{line}")
        if c.hint and c.ok is False:
            print(f"{pad}hint: {c.hint}")
    failed = sum(c.ok is False for c in checks)
    if not quiet:
        print("all checks passed" if not failed else f"{failed} check(s) failed", file=sys.stderr)


def checks_json(checks: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"name": c.name, "ok": c.ok, "detail": c.detail, "hint": c.hint} for c in checks]
