"""Ctrl-C and SIGKILL against a real `python -m stacfetch get` subprocess and the emulator.

SIGINT: stops within 2 s, exit 130, no ``.part`` left (by design they are removed), the
manifest lists what is complete with correct checksums. SIGKILL at random (seeded) moments
in 20 runs: never an invalid ``.tif``, never a manifest entry without its file; a re-run
completes and never downloads an acquisition that was already complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pystac
import rasterio

import stacfetch
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from stacfetch.testing.emulator import Emulator

KILL_TRIALS = 20
REPO = str(Path(stacfetch.__file__).resolve().parents[1])
SERIES = 2  # fresh output folder every KILL_TRIALS // SERIES kills, each ended by a full re-run


def command(out: Path, start: str = "2022-01-01", end: str = "2022-04-30") -> list[str]:
    return [sys.executable, "-m", "stacfetch", "get", "--lon", "34.665", "--lat", "31.625",
            "--size", "1000", "--start", start, "--end", end, "--bands", "B04",
            "--out", str(out), "--workers", "2", "-q"]


def environment(emu: Emulator) -> dict[str, str]:
    return {**os.environ, "SH_BASE_URL": emu.url, "SH_TOKEN_URL": emu.token_url,
            "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
            "STACFETCH_PROVIDER": "sentinelhub", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": REPO}  # this checkout, not another installed copy


def complete_acquisitions(out: Path) -> set[str]:
    """ACQUISITION_DATETIME of every .tif; each must be a valid, complete stacfetch file."""
    done = set()
    for path in out.rglob("*.tif"):
        with rasterio.open(path) as src:
            src.read()
            tags = src.tags()
        assert tags.get("STACFETCH_COMPLETE") == "1", path
        assert Path(f"{path}.json").is_file(), f"{path} has no sidecar"
        done.add(tags["ACQUISITION_DATETIME"])
    return done


def manifest_entries(out: Path) -> list[Path]:
    """Files the manifest claims; each must exist with the recorded size and checksum."""
    catalog = out / "catalog.json"
    if not catalog.exists():
        return []
    files = []
    for item in pystac.Catalog.from_file(str(catalog)).get_items():
        asset = item.assets["data"]
        path = Path(asset.get_absolute_href() or "")
        assert path.is_file(), f"the manifest claims a missing file: {path}"
        assert path.stat().st_size == asset.extra_fields["file:size"]
        digest = "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == asset.extra_fields["file:checksum"], path
        files.append(path)
    return files


def requested_acquisitions(emu: Emulator, since: float) -> list[str]:
    """Acquisition datetimes of Process requests that arrived after ``since`` (time.time())."""
    keys = []
    for record in emu.log.records(kind="process"):
        if record.started >= since and isinstance(record.body, dict):
            start = record.body["input"]["data"][0]["dataFilter"]["timeRange"]["from"]
            when = datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(minutes=1)
            keys.append(when.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return keys


def settle(emu: Emulator) -> None:
    """Let requests a killed client left in flight reach the log."""
    emu.log.settle(0.1)


def test_sigint_stops_within_2s_keeps_manifest_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Emulator() as emu:
        emu.faults.latency_ms = 700  # requests are in flight when Ctrl-C comes
        env = environment(emu)
        proc = subprocess.Popen(command(out), env=env, cwd=tmp_path, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.rglob("*.tif"))) < 2:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
        took = time.monotonic() - sent
        stderr = proc.stderr.read() if proc.stderr else ""
        assert code == 130, stderr
        assert took <= 2.0, f"took {took:.2f} s to stop"
        assert "interrupted" in stderr
        assert not list(out.rglob("*.part"))
        done = complete_acquisitions(out)
        listed = manifest_entries(out)
        assert len(done) >= 2 and len(listed) >= 2
        assert {p.resolve() for p in listed} <= {p.resolve() for p in out.rglob("*.tif")}

        emu.faults.latency_ms = 0
        settle(emu)
        since = time.time()
        rerun = subprocess.run(command(out) + ["--json"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        report = json.loads(rerun.stdout)
        assert len(report["skipped"]) >= len(done) and report["written"]
        again = requested_acquisitions(emu, since)
        assert not set(again) & done, "a complete acquisition was downloaded again"
        assert len(again) == len(set(again)) == len(report["written"])
        assert len(manifest_entries(out)) == len(report["written"]) + len(report["skipped"])


def test_sigkill_at_random_moments_never_corrupts_and_rerun_completes(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    trials: list[dict[str, Any]] = []
    with Emulator() as emu:
        emu.faults.latency_ms = 150
        env = environment(emu)
        for series in range(SERIES):
            out = tmp_path / f"series{series}"
            for _ in range(KILL_TRIALS // SERIES):
                before = complete_acquisitions(out) if out.exists() else set()
                since = time.time()
                delay = rng.uniform(0.8, 2.8)  # start-up takes ~1.4 s: some die before any work
                proc = subprocess.Popen(command(out), env=env, cwd=tmp_path,
                                        stderr=subprocess.DEVNULL)
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                settle(emu)
                after = complete_acquisitions(out)  # every .tif valid and complete
                listed = manifest_entries(out)  # every manifest entry exists, checksum ok
                duplicates = set(requested_acquisitions(emu, since)) & before
                assert not duplicates, f"downloaded again after SIGKILL: {sorted(duplicates)}"
                assert before <= after
                trials.append({"delay": round(delay, 2), "complete": len(after),
                               "listed": len(listed), "exit": proc.returncode})
            since = time.time()
            before = complete_acquisitions(out)
            rerun = subprocess.run(command(out) + ["--json"], env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=120)
            assert rerun.returncode == 0, rerun.stderr
            report = json.loads(rerun.stdout)
            settle(emu)
            again = requested_acquisitions(emu, since)
            assert not set(again) & before
            assert len(again) == len(set(again)) == len(report["written"])
            assert not list(out.rglob("*.part"))
            total = len(report["written"]) + len(report["skipped"])
            assert len(complete_acquisitions(out)) == len(manifest_entries(out)) == total
    assert len(trials) == KILL_TRIALS
    assert any(t["complete"] > 0 for t in trials), "no kill landed after some work"
    print("\nSIGKILL trials", json.dumps(trials))
