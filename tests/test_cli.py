"""The `stacfetch` command as a user runs it: a real process, real HTTP, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stacfetch.api import build_query
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from stacfetch.testing.emulator import Emulator

REPO = Path(__file__).resolve().parents[1]
WHERE = ["--lon", "34.665", "--lat", "31.625", "--start", "2022-01-20", "--end", "2022-01-25"]


def run(args: list[str], emu: Emulator | None, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SH_", "STACFETCH_"))}
    environ["PYTHONPATH"] = str(REPO)
    if emu is not None:
        environ.update(SH_BASE_URL=emu.url, SH_TOKEN_URL=emu.token_url,
                       SH_CLIENT_ID=SANDBOX_CLIENT_ID, SH_CLIENT_SECRET=SANDBOX_CLIENT_SECRET)
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "stacfetch", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_search_prints_a_table_and_json_only_json(emulator: Emulator, tmp_path: Path) -> None:
    table = run(["search", *WHERE], emulator, tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["date", "time", "id", "tile"]
    query = build_query([34.665, 31.625], "2022-01-20", "2022-01-25")
    expected = emulator.items_for(query.geometry, query.interval.start, query.interval.end)
    assert len(lines) - 1 == len(expected) >= 2
    assert "scene(s) on" in table.stderr and "area: centre 31.6250°N 34.6650°E" in table.stderr

    as_json = run(["search", *WHERE, "--json"], emulator, tmp_path)
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)  # stdout holds the JSON and nothing else
    assert doc["type"] == "FeatureCollection"
    assert sorted(f["id"] for f in doc["features"]) == sorted(it["id"] for it in expected)


@pytest.mark.parametrize(
    ("args", "env", "code", "words"),
    [
        pytest.param(["search", *WHERE], {"SH_CLIENT_SECRET": "wrong-secret-value"}, 3,
                     "Invalid client", id="wrong-credentials"),
        pytest.param(["search", "--lon", "200", "--lat", "31.6", "--start", "2022-01-20"], {}, 2,
                     "longitude", id="bad-longitude"),
        pytest.param(["search", "--lon", "34.6", "--lat", "31.6", "--start", "2022-01-25",
                      "--end", "2022-01-20"], {}, 2, "after", id="reversed-dates"),
        pytest.param(["search", *WHERE], {"SH_BASE_URL": "https://scihub.copernicus.eu/dhus"}, 3,
                     "shut down", id="old-hub"),
        pytest.param(["get", *WHERE, "--bands", "B10"], {}, 2, "B10", id="no-B10-in-L2A"),
    ],
)
def test_errors_have_exit_codes_messages_and_no_traceback(
    emulator: Emulator, tmp_path: Path, args: list[str], env: dict[str, str], code: int, words: str
) -> None:
    done = run(args, emulator, tmp_path, **env)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error:") or "\nerror:" in done.stderr
    assert words in done.stderr
    assert "wrong-secret-value" not in done.stderr + done.stdout


def test_get_json_reports_files_and_sandbox_needs_nothing(tmp_path: Path) -> None:
    done = run(["get", "--provider", "sandbox", *WHERE, "--bands", "truecolor", "--json", "--out", "o"],
               None, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["written"]) >= 2 and not report["failed"]
    assert all((tmp_path / p).exists() or Path(p).exists() for p in report["written"])


def test_help_teaches_axis_order_and_examples(tmp_path: Path) -> None:
    done = run(["get", "--help"], None, tmp_path)
    assert done.returncode == 0
    assert "longitude first" in done.stdout and "--location_lon" in done.stdout
    assert "stacfetch get --provider sandbox" in done.stdout
