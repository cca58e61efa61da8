"""The examples in examples/ run against the sandbox and print what the README shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SH_", "STACFETCH_"))}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--provider", "sandbox", "--out", "out"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("name", ["first_user.py", "ndvi_timeseries.py"])
def test_example_runs_against_the_sandbox(name: str, tmp_path: Path) -> None:
    out = run_example(name, tmp_path)
    if name == "first_user.py":
        assert "2 downloaded" in out and "12 bands, EPSG:32636" in out and "reflectance = DN x 0.0001" in out
        assert out.count("quicklook: ") == 2
    else:
        rows = [line for line in out.splitlines() if line.startswith("2022-")]
        assert len(rows) >= 10 and "skipped (cloudy over the field)" in out
        assert all(float(r.split()[-1]) >= 50 for r in rows)
        assert "contact sheet: " in out
    assert list((tmp_path / "out").rglob("*.png"))
