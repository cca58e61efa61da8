"""Downloads start while the search is still paging; the plan is the whole search's."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pystac

from stacfetch.api import get_query
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Settings
from stacfetch.plan import plan_jobs
from stacfetch.query import build_query
from stacfetch.stream import PagePlanner
from stacfetch.testing.emulator import Emulator
from stacfetch.testing.faults import Faults

ARGS = ([10.0, 45.0], "2021-01-01", "2021-06-30")  # ~70 acquisitions of 4 items: 3 pages


def settings_for(emu: Emulator, out: Path) -> Settings:
    return Settings(provider="sentinelhub", base_url=emu.url, token_url=emu.token_url,
                    client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET, output_dir=out)


def test_paged_plan_is_the_whole_search_plan(tmp_path: Path) -> None:
    query = build_query(*ARGS, size=1000, bands="B04")
    with Emulator() as emu:
        start = datetime(2021, 1, 1, tzinfo=timezone.utc)
        items = [pystac.Item.from_dict(d) for d in emu.items_for(
            list(query.geometry.bounds), start, start + timedelta(days=181))]
    assert len(items) > 150
    whole = plan_jobs(query, items, tmp_path)
    planner = PagePlanner(query, tmp_path)
    early = []
    for k in range(0, len(items), 37):  # newest first, as the Catalog pages
        early.extend(planner.add(items[k:k + 37]))
    assert early  # acquisitions were final before the search ended
    planner.finish()
    paged = planner.plan()
    assert [(j.destination, j.acquisition.item_ids) for j in paged] == [
        (j.destination, j.acquisition.item_ids) for j in whole]
    # a page newer than what came before: nothing more is released until the search ends
    shuffled = PagePlanner(query, tmp_path)
    shuffled.add(items[40:60])
    assert shuffled.add(items[:40]) == []
    shuffled.finish()
    assert {i for j in shuffled.jobs for i in j.acquisition.item_ids} == {it.id for it in items[:60]}


def test_downloads_start_before_the_last_page(tmp_path: Path) -> None:
    query = build_query(*ARGS, size=1000, bands="B04")
    plans = []
    with Emulator(faults=Faults(latency_ms=30)) as emu:
        result = get_query(query, settings=settings_for(emu, tmp_path),
                           on_plan=lambda jobs, n: plans.append((list(jobs), n)))
        log = emu.log.settle()
    catalog = [r for r in log.records(kind="catalog") if "search" in r.path]
    process = log.records(kind="process")
    assert len(catalog) >= 3
    assert min(r.started for r in process) < max(r.started for r in catalog)
    assert not result.failed and len(result.written) == len(result.jobs) == len(process)
    # the plan was told once, with the totals, and it is the one of the whole search
    assert len(plans) == 1 and plans[0][1] == sum(len(j.acquisition.item_ids) for j in plans[0][0])
    assert [j.destination for j in result.jobs] == [j.destination for j in plans[0][0]]
    assert result.jobs == sorted(result.jobs, key=lambda j: j.acquisition.datetime)
    assert result.manifest is not None
