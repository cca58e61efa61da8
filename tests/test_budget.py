"""Guard rails before spending: --max-pu, disk space and the CDSE free tier, with 0 Process requests."""

from __future__ import annotations

import logging
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from stacfetch.api import get_query
from stacfetch.budget import CDSE_FREE_TIER_PU, estimate
from stacfetch.cli import main
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_settings
from stacfetch.errors import BudgetError, InvalidOptionError
from stacfetch.plan import Plan
from stacfetch.query import build_query
from stacfetch.testing.emulator import Emulator

POINT = [34.665, 31.625]
Usage = namedtuple("Usage", "total used free")


def settings_for(emu: Emulator, out: Path, provider: str = "sentinelhub"):
    return load_settings(environ={}, provider=provider, client_id=SANDBOX_CLIENT_ID,
                         client_secret=SANDBOX_CLIENT_SECRET, base_url=emu.url,
                         token_url=emu.token_url, output_dir=out)


def query(size: float = 3000, end: str = "2022-01-25", bands: str = "B04,B08,SCL"):
    return build_query(POINT, "2022-01-20", end, size=size, bands=bands)


def test_max_pu_refuses_before_any_process_request(emulator: Emulator, tmp_path: Path) -> None:
    plan: list = []
    with pytest.raises(BudgetError) as info:
        get_query(query(), settings=settings_for(emulator, tmp_path), max_pu=0.05, min_clear=50,
                  on_plan=lambda jobs, n: plan.extend(jobs))
    tiles = Plan(tuple(plan)).processing_units
    cost = estimate(plan, source="process", screening=True, out_dir=tmp_path).processing_units
    assert cost > tiles  # the screening requests are counted too
    text = str(info.value)
    assert f"{len(plan)} acquisition(s)" in text and "more than --max-pu 0.05" in text
    assert f"about {cost:,.1f} processing units" in text
    assert "--max-pu" in info.value.hint
    assert emulator.log.count(kind="process") == 0  # neither screening nor tiles
    assert not list(tmp_path.rglob("*.tif"))
    result = get_query(query(), settings=settings_for(emulator, tmp_path), max_pu=1000)
    assert result.written and emulator.log.count(kind="process") > 0
    # complete files cost nothing: a re-run under a tiny budget passes
    again = get_query(query(), settings=settings_for(emulator, tmp_path), max_pu=0.001)
    assert again.skipped == result.written


def test_cli_max_pu_and_bad_values(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for key, value in {"SH_BASE_URL": emulator.url, "SH_TOKEN_URL": emulator.token_url,
                       "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET}.items():
        monkeypatch.setenv(key, value)
    args = ["get", "--lon", "34.665", "--lat", "31.625", "--start", "2022-01-20", "--end", "2022-01-25",
            "--bands", "B04", "--provider", "sentinelhub", "--out", str(tmp_path / "o")]
    assert main([*args, "--max-pu", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "processing units (estimate), more than --max-pu 0.01; nothing was requested" in err
    assert emulator.log.count(kind="process") == 0
    with pytest.raises(InvalidOptionError, match="must be above 0"):
        get_query(query(), settings=settings_for(emulator, tmp_path), max_pu=0)


def test_a_plan_larger_than_the_free_disk_space_is_refused(emulator: Emulator, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 2000, 2000))
    with pytest.raises(BudgetError) as info:
        get_query(query(), settings=settings_for(emulator, tmp_path), min_clear=10)
    text = str(info.value)
    assert "(uncompressed estimate)" in text and "which has 2.0 kB free" in text
    assert str(tmp_path) in text and "another --out" in info.value.hint
    assert emulator.log.count(kind="process") == 0 and not list(tmp_path.rglob("*.tif"))


def test_above_the_cdse_free_tier_warns_with_the_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**15, 0, 10**15))
    big = build_query(POINT, "2022-01-01", "2022-01-31", size=100_000, bands="all")
    with Emulator(deployment="cdse") as emu, caplog.at_level(logging.WARNING, logger="stacfetch"):
        plan: list = []
        get_query(big, settings=settings_for(emu, tmp_path, provider="cdse"), dry_run=True,
                  on_plan=lambda jobs, n: plan.extend(jobs))
        estimate = Plan(tuple(plan)).processing_units
        assert estimate > CDSE_FREE_TIER_PU
        warned = [r.getMessage() for r in caplog.records if "free tier" in r.getMessage()]
        assert warned and f"{estimate:,.0f} processing units" in warned[0] and "10,000" in warned[0]
        caplog.clear()
        get_query(query(), settings=settings_for(emu, tmp_path, provider="cdse"), dry_run=True)
        assert not [r for r in caplog.records if "free tier" in r.getMessage()]
        assert emu.log.count(kind="process") == 0


def test_the_disk_check_counts_the_temporaries(emulator: Emulator, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """.part and .cog.part coexist during the COG conversion; large tiles are spooled to disk."""
    plan: list = []
    get_query(query(), settings=settings_for(emulator, tmp_path), dry_run=True,
              on_plan=lambda jobs, n: plan.extend(jobs))
    files = Plan(tuple(plan)).estimated_bytes
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, files + 1000))
    with pytest.raises(BudgetError) as info:  # the files fit, not with a COG copy of one of them
        get_query(query(), settings=settings_for(emulator, tmp_path / "cog"), fmt="cog")
    assert "temporary files" in str(info.value) and emulator.log.count(kind="process") == 0
    # small single-tile GeoTIFFs are written in place: no temporaries, the run goes ahead
    result = get_query(query(), settings=settings_for(emulator, tmp_path / "gtiff"), fmt="gtiff")
    assert result.written and not result.failed

    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**15, 0, 10**15))
    big: list = []  # 100 km at 10 m: 2048-px tiles of 25 MB each (3 bands), spooled to disk
    get_query(build_query(POINT, "2022-01-20", "2022-01-25", size=100_000, bands="B04,B08,B03"),
              settings=settings_for(emulator, tmp_path), dry_run=True, on_plan=lambda jobs, n: big.extend(jobs))
    tile = max(t.width * t.height * 3 * 2 for j in big for t in j.tiles)
    assert len(big[0].tiles) > 1 and tile > 16 * 2**20
    at_once = min(len(big), 2)  # one worker: two jobs in flight
    sizes = sorted((j.grid.width * j.grid.height * 3 * 2 for j in big), reverse=True)
    assert estimate(big, source="process", screening=False, out_dir=tmp_path, fmt="gtiff",
                    workers=1).temporary_bytes == at_once * tile
    assert estimate(big, source="process", screening=False, out_dir=tmp_path, fmt="cog",
                    workers=1).temporary_bytes == sum(sizes[:at_once])
