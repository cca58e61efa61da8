"""Downloads start while the Catalog search is still paging; the plan, files, manifest and
result are the whole search's (a run with stream=False); guard rails that need the whole plan
still spend nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pystac
import pytest

from stacfetch.api import get_query
from stacfetch.catalog import MAX_PAGE_SIZE
from stacfetch.cli import main
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_settings
from stacfetch.errors import BudgetError, ServiceError
from stacfetch.plan import plan_jobs
from stacfetch.query import build_query
from stacfetch.stream import PageStream
from stacfetch.testing.emulator import Emulator
from stacfetch.testing.faults import Faults

# 240 items (48 acquisitions of 4 or 8) on 3 Catalog pages; an acquisition spans pages 1 and 2
LOCATION, START, END = [10.0, 45.0], "2021-01-01", "2021-04-30"
Usage = namedtuple("Usage", "total used free")


def settings_for(emu: Emulator, out: Path):
    return load_settings(environ={}, provider="sentinelhub", client_id=SANDBOX_CLIENT_ID,
                         client_secret=SANDBOX_CLIENT_SECRET, base_url=emu.url,
                         token_url=emu.token_url, output_dir=out)


def query():
    return build_query(LOCATION, START, END, size=1000, bands="B04")


def catalog_items(emu: Emulator) -> list[pystac.Item]:
    """The items in the order the Catalog pages them."""
    start = datetime(2021, 1, 1, tzinfo=timezone.utc)
    return [pystac.Item.from_dict(d) for d in emu.items_for(
        list(query().geometry.bounds), start, datetime(2021, 5, 1, tzinfo=timezone.utc))]


def files_of(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> SHA-256), the manifest's text with ``root`` cut."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".json":
            data = data.replace(str(root).encode(), b"<root>")
        out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def comparable(doc: dict[str, Any], root: Path) -> dict[str, Any]:
    """A result's JSON without what differs between two runs (time, counters, the folder)."""
    doc = {k: v for k, v in doc.items() if k not in ("seconds", "stats")}
    return json.loads(json.dumps(doc).replace(str(root), "<root>"))


def search_pages(emu: Emulator) -> list[Any]:
    return [r for r in emu.log.records(kind="catalog") if r.path.endswith("/search")]


def test_downloads_start_before_the_last_page_and_match_a_whole_search_run(tmp_path: Path) -> None:
    told: list[tuple[list, int]] = []
    streamed: list[str | None] = []
    with Emulator(faults=Faults(latency_ms=60)) as emu:
        items = catalog_items(emu)
        assert len(items) > 2 * MAX_PAGE_SIZE
        result = get_query(query(), settings=settings_for(emu, tmp_path / "s" / "out"), fmt="raw",
                           on_plan=lambda jobs, n: told.append((list(jobs), n)),
                           on_stream=streamed.append)
        log = emu.log.settle()
        pages = search_pages(emu)
        first_process = min(r.started for r in log.records(kind="process"))
        assert len(pages) == 3
        assert first_process < max(r.started + r.duration for r in pages)  # before the last answer
        assert streamed == [None]
        emu.log.clear()
        whole = get_query(query(), settings=settings_for(emu, tmp_path / "w" / "out"), fmt="raw", stream=False)
        assert min(r.started for r in emu.log.settle().records(kind="process")) > max(
            r.started + r.duration for r in search_pages(emu))
    assert not result.failed and len(result.written) == len(result.jobs) == 48
    # told once, when the search ended: the whole search's plan and item count
    plan = plan_jobs(query(), items, tmp_path / "s" / "out")
    assert len(told) == 1 and told[0][1] == len(items)
    assert [(j.destination, j.acquisition.item_ids) for j in told[0][0]] == [
        (j.destination, j.acquisition.item_ids) for j in plan]
    assert [j.destination for j in result.jobs] == [j.destination for j in plan]
    # the same files (bytes), manifest and result as the run that planned the whole search first
    assert files_of(tmp_path / "s" / "out") == files_of(tmp_path / "w" / "out")
    assert comparable(result.to_dict(), tmp_path / "s" / "out") == comparable(whole.to_dict(), tmp_path / "w" / "out")
    assert result.exit_code == whole.exit_code == 0
    # the acquisition whose items straddle the first page boundary is one file, with both
    edge = {items[MAX_PAGE_SIZE - 1].id, items[MAX_PAGE_SIZE].id}
    holders = [j for j in result.jobs if edge & set(j.acquisition.item_ids)]
    assert len(holders) == 1 and edge <= set(holders[0].acquisition.item_ids)
    assert holders[0].destination in result.written


def test_max_pu_too_low_spends_nothing_on_a_paged_search(tmp_path: Path) -> None:
    streamed: list[str | None] = []
    with Emulator(faults=Faults(latency_ms=20)) as emu:
        with pytest.raises(BudgetError, match="more than --max-pu 0.5; nothing was requested"):
            get_query(query(), settings=settings_for(emu, tmp_path), max_pu=0.5,
                      on_stream=streamed.append)
        assert len(search_pages(emu)) == 3 and emu.log.count(kind="process") == 0
    assert streamed == ["--max-pu"]  # said: downloads wait for the whole plan
    assert not list(tmp_path.rglob("*.tif"))


def test_disk_space_is_checked_page_by_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never more is started than fits in the space free before the first download."""
    with Emulator() as emu:
        plan = plan_jobs(query(), catalog_items(emu), tmp_path)
        per_file = plan[0].grid.width * plan[0].grid.height * 2  # B04, uint16, raw: no temporaries
        free = per_file * (len(plan) // 2)
        monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))
        with pytest.raises(BudgetError, match="stopped before more was requested") as info:
            get_query(query(), settings=settings_for(emu, tmp_path), fmt="raw")
        asked = emu.log.settle().count(kind="process")
    assert "which has" in str(info.value) and "another --out" in info.value.hint
    assert 0 < asked <= len(plan) // 2  # the first page's jobs ran; nothing beyond the space
    assert len(list(tmp_path.rglob("*.tif"))) <= len(plan) // 2


def test_cli_says_downloads_start_during_the_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    with Emulator() as emu:
        for key, value in {"SH_BASE_URL": emu.url, "SH_TOKEN_URL": emu.token_url,
                           "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET}.items():
            monkeypatch.setenv(key, value)
        args = ["get", "--lon", "10", "--lat", "45", "--size", "1000", "--start", START, "--end", END,
                "--bands", "B04", "--format", "raw", "--provider", "sentinelhub"]
        assert main([*args, "--out", str(tmp_path / "s" / "out")]) == 0
        err = capsys.readouterr().err
        note = err.index("downloads start with the first, the totals follow when the search ends")
        assert note < err.index("240 items -> 48 acquisitions")  # the totals, at the search's end
        assert main([*args, "--out", str(tmp_path / "j" / "out"), "--json"]) == 0
        streamed = json.loads(capsys.readouterr().out)
        assert main([*args, "--out", str(tmp_path / "w" / "out"), "--json", "--no-stream"]) == 0
        out, err = capsys.readouterr()
        assert "downloads start" not in err
        assert comparable(streamed, tmp_path / "j" / "out") == comparable(json.loads(out), tmp_path / "w" / "out")
        assert main([*args, "--out", str(tmp_path / "m"), "--max-pu", "1000"]) == 0
        assert "--max-pu needs the whole plan, so downloads start when the search has ended" in \
            capsys.readouterr().err


def test_the_open_group_at_a_page_end_waits_and_names_follow_time_order(tmp_path: Path) -> None:
    """Chained items (each within the tolerance of the next) and same-second passes."""
    with Emulator() as emu:
        items = catalog_items(emu)
    whole = plan_jobs(query(), items, tmp_path)
    for size in (1, 3, 7, 37, 100):  # any page size gives the whole search's plan
        stream = PageStream(query(), tmp_path)
        early = [j for k in range(0, len(items), size) for j in stream.add(items[k:k + size])]
        rest = stream.finish()
        assert early and stream.ordered
        got = sorted(early + rest, key=lambda j: (j.acquisition.datetime, j.acquisition.key))
        assert [(j.destination, j.acquisition.item_ids) for j in got] == [
            (j.destination, j.acquisition.item_ids) for j in whole]
    # a pass whose items are 50 minutes apart chains: what comes after a page's end can
    # regroup it, so nothing of the chain is released before the chain's end is seen
    base = items[0]
    chain = []
    for n in range(4):  # newest first, as the Catalog pages
        item = base.clone()
        item.id = f"{base.id}-chain{n}"
        item.datetime = base.datetime - timedelta(minutes=50 * n)
        item.properties["datetime"] = item.datetime.isoformat().replace("+00:00", "Z")
        chain.append(item)
    stream = PageStream(query(), tmp_path)
    assert stream.add(chain[:3]) == []  # the whole chain is within reach of what may follow
    assert stream.add(chain[3:]) == []
    rest = stream.finish()
    assert len(rest) == 2 and chain[0].id in rest[-1].acquisition.item_ids  # with chain[1], not alone
    assert [j.acquisition.item_ids for j in rest] == [
        j.acquisition.item_ids for j in plan_jobs(query(), chain, tmp_path)]


def test_items_out_of_time_order_stop_early_releases(tmp_path: Path) -> None:
    with Emulator() as emu:
        items = catalog_items(emu)
    # harmless: a later page newer than the frontier, but no released acquisition changes
    stream = PageStream(query(), tmp_path)
    early = stream.add(items[100:200])
    assert early and stream.add(items[:100]) == [] and not stream.ordered
    assert stream.add(items[200:]) == []
    rest = stream.finish()
    assert {j.destination for j in early + rest} == {j.destination for j in plan_jobs(query(), items, tmp_path)}
    # harmful: an item of an acquisition already released arrives after it
    stream = PageStream(query(), tmp_path)
    released = stream.add(items[:2] + items[3:100])
    assert any(items[0].id in j.acquisition.item_ids for j in released)
    stream.add([items[2]] + items[100:])
    with pytest.raises(ServiceError, match="out of time order") as info:
        stream.finish()
    assert "--no-stream" in info.value.hint


def test_names_shared_within_a_second_follow_time_order(tmp_path: Path) -> None:
    """Tolerance 0: two acquisitions of one pass in the same second are ``X`` and ``X-2`` in time
    order; the later one must not be named before the earlier one has arrived."""
    with Emulator() as emu:
        items = catalog_items(emu)
    s2a = next(it for it in items if it.properties.get("platform") == "sentinel-2a")
    s2b = next(it for it in items if it.properties.get("platform") == "sentinel-2b")
    second = datetime(2021, 3, 1, 10, 0, 0, tzinfo=timezone.utc)

    def at(item: pystac.Item, ms: int, tag: str) -> pystac.Item:
        twin = item.clone()
        twin.id = f"{item.id}-{tag}"
        twin.datetime = second + timedelta(milliseconds=ms)
        twin.properties["datetime"] = twin.datetime.isoformat().replace("+00:00", "Z")
        return twin

    late, other, early = at(s2a, 700, "late"), at(s2b, 200, "other"), at(s2a, 100, "early")
    zero = timedelta(0)
    whole = plan_jobs(query(), [late, other, early], tmp_path, tolerance=zero)
    names = {j.acquisition.item_ids: j.destination.name for j in whole}
    assert names[(late.id,)] == names[(early.id,)].replace(".tif", "-2.tif")
    stream = PageStream(query(), tmp_path, tolerance=zero)
    early_jobs = stream.add([late, other]) + stream.add([early])
    got = early_jobs + stream.finish()
    assert sorted((j.destination, j.acquisition.item_ids) for j in got) == sorted(
        (j.destination, j.acquisition.item_ids) for j in whole)
