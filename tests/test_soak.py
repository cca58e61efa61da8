"""Fault soak: a long `get` against the emulator with every fault on at once, byte for byte.

Also: the client never sleeps longer than the service asked (``Retry-After`` is in
milliseconds), and an hour-long ``Retry-After`` is reported at once instead of hanging.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stacfetch.http.ratelimit as ratelimit_module
from stacfetch.api import build_query, get_query
from stacfetch.cli import main
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Settings, load_settings
from stacfetch.http import RetryPolicy
from stacfetch.testing.emulator import Emulator

POINT = [34.665, 31.625]
WINDOW = ("2022-01-01", "2022-06-30")  # 72 acquisitions over a 1.5 km square
SIZE = 1500.0
BANDS = "B04,SCL"
RETRY_AFTER_MS = 400
POLICY = RetryPolicy()


def settings_for(emu: Emulator, out: Path) -> Settings:
    return load_settings(
        environ={}, provider="sentinelhub", client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET, base_url=emu.url, token_url=emu.token_url,
        output_dir=out,
    )


def soak_get(emu: Emulator, out: Path, **options: Any) -> Any:
    query = build_query(POINT, *WINDOW, size=SIZE, bands=BANDS)
    return get_query(query, settings=settings_for(emu, out), **options)


def tif_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tif"))}


class _SleepRecorder:
    """Stands in for ``time`` inside stacfetch.http.ratelimit (where every sleep is); records every sleep and who slept."""

    def __init__(self) -> None:
        self.sleeps: list[tuple[str, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append((sys._getframe(1).f_code.co_name, float(seconds)))
        time.sleep(seconds)

    def longest(self, caller: str) -> float:
        return max((s for c, s in self.sleeps if c == caller), default=0.0)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[_SleepRecorder]:
    recorder = _SleepRecorder()
    monkeypatch.setattr(ratelimit_module, "time", recorder)
    yield recorder


@pytest.mark.slow
def test_soak_every_fault_at_once_is_byte_identical(
    tmp_path: Path, sleeps: _SleepRecorder, record_property: Any
) -> None:
    with Emulator() as clean:
        reference = soak_get(clean, tmp_path / "clean", workers=4)
    expected = tif_files(tmp_path / "clean")
    assert len(expected) == len(reference.written) >= 60

    started = time.monotonic()
    with Emulator(token_lifetime=4, seed=7) as emu:
        f = emu.faults
        f.only_kinds = {"token", "catalog", "process"}
        f.rate_429, f.retry_after_ms = 0.12, RETRY_AFTER_MS
        f.rate_5xx = 0.12  # 500, 502 and 503
        f.rate_drop = 0.08  # connection cut mid-body
        f.rate_truncate = 0.06  # 200 with a short GeoTIFF and a matching Content-Length
        f.latency_ms, f.latency_spike_ms, f.rate_spike = 20, 1500, 0.05
        # An account with a known pace: with none, rate-independent 429s like these push
        # the adaptive limiter towards its floor (6/min) - right for a real rate limit,
        # far too slow for a soak.
        result = soak_get(emu, tmp_path / "faulty", workers=4, requests_per_minute=1200)
        first_failed = [o.job.destination for o in result.failed]
        for path in first_failed:  # a rare acquisition unlucky 3 times: reported, not written
            assert not path.exists() and not Path(f"{path}.part").exists()
        if first_failed:
            emu.log.clear()
            resumed = soak_get(emu, tmp_path / "faulty", workers=4, requests_per_minute=1200)
            assert not resumed.failed and sorted(resumed.written) == sorted(first_failed)
        records = emu.log.records()
        stats = result.stats
    seconds = time.monotonic() - started

    assert tif_files(tmp_path / "faulty") == expected  # every file, byte for byte
    assert not list((tmp_path / "faulty").rglob("*.part"))
    faults = Counter(r.fault.split(":")[0] for r in records if r.fault)
    statuses = Counter(r.status for r in records if r.fault == "rate_5xx")
    for kind in ("rate_429", "rate_5xx", "rate_drop", "rate_truncate"):
        assert faults[kind] >= 1, (kind, faults)
    assert len(statuses) >= 2, statuses
    assert stats["token_fetches"] >= 3  # several token lifetimes
    assert any(r.duration >= 1.5 for r in records), "no latency spike happened"
    # never longer than the service asked (+ <= 10 % jitter), never a millisecond read as seconds
    assert sleeps.longest("acquire") <= RETRY_AFTER_MS / 1000 * (1 + POLICY.rate_limit_jitter) + 0.05
    assert sleeps.longest("backoff") <= POLICY.backoff_max
    report = {
        "acquisitions": len(expected),
        "faults_injected": dict(faults),
        "fault_statuses": {str(k): v for k, v in statuses.items()},
        "session_retries": stats["retries"],
        "tile_retries_after_bad_bodies": faults["rate_truncate"],
        "token_fetches": stats["token_fetches"],
        "failed_first_pass": len(first_failed),
        "longest_sleep_s": round(max(s for _, s in sleeps.sleeps), 3),
        "seconds": round(seconds, 1),
    }
    record_property("soak", json.dumps(report))
    print("\nSOAK", json.dumps(report))


def test_retry_after_is_milliseconds_and_waited_no_longer(
    tmp_path: Path, sleeps: _SleepRecorder
) -> None:
    with Emulator() as emu:
        emu.faults.only_kinds = {"process"}
        emu.faults.retry_after_ms = 1500
        emu.faults.fail_next = [429, 429]
        started = time.monotonic()
        query = build_query(POINT, "2022-01-22", None, size=SIZE, bands="B04")
        result = get_query(query, settings=settings_for(emu, tmp_path), workers=1)
        elapsed = time.monotonic() - started
    assert not result.failed and len(result.written) == 1
    assert result.stats["retries"] == {"429": 2}
    # the waits after the two 429s (not the slow start's short polls: the landing page and
    # the search leave together, and one waits for the other's answer)
    waits = [s for c, s in sleeps.sleeps if c == "acquire" and s > ratelimit_module.POLL]
    assert len(waits) == 2
    assert all(1.5 <= w <= 1.5 * (1 + POLICY.rate_limit_jitter) + 0.01 for w in waits), waits
    assert elapsed < 6.0  # 1500 read as seconds would be 25 minutes


def test_an_hour_long_retry_after_is_reported_not_waited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    sleeps: _SleepRecorder,
) -> None:
    with Emulator() as emu:
        emu.faults.only_kinds = {"process"}
        emu.faults.retry_after_ms = 3_600_000  # one hour
        emu.faults.fail_next = [429]
        monkeypatch.chdir(tmp_path)
        for name, value in {"SH_BASE_URL": emu.url, "SH_TOKEN_URL": emu.token_url,
                            "SH_CLIENT_ID": SANDBOX_CLIENT_ID,
                            "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET}.items():
            monkeypatch.setenv(name, value)
        started = time.monotonic()
        code = main(["get", "--lon", "34.665", "--lat", "31.625", "--size", "1500", "--start",
                     "2022-01-20", "--end", "2022-01-25", "--bands", "B04", "--workers", "1",
                     "--out", str(tmp_path / "o"), "--json"])
        elapsed = time.monotonic() - started
    report = json.loads(capsys.readouterr().out)
    assert code == 5 and len(report["failed"]) == 1 and report["written"]
    error = report["failed"][0]["error"]
    assert "3600.0 s" in error and "more than the 120 s" in error
    assert elapsed < 10.0 and sleeps.longest("acquire") < 1.0
