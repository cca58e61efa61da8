"""``stacfetch stats OUT_DIR``: the per-acquisition table, CSV and JSON agree with stacfetch.stats."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import stacfetch
from stacfetch.cli import main

pytest.importorskip("xarray")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stats")
    result = stacfetch.get([34.665, 31.625], "2022-01-01", "2022-01-15", size=3000, bands="B03,B04,B08,SCL",
                           resolution=20, provider="sandbox", out=folder)
    assert len(result.paths) >= 4
    return folder


def test_table_csv_and_json(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = stacfetch.stats(out, index="ndwi")
    target = tmp_path / "ndwi.csv"
    assert main(["stats", str(out), "--index", "NDWI", "--csv", str(target)]) == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert lines[0].split()[:3] == ["acquired", "(UTC)", "platform"] and len(lines) == 1 + len(frame)
    assert f"{frame.ndwi_mean[0]:.4f}" in lines[1] and f"{len(frame)} acquisition(s)" in printed.err
    rows = list(csv.DictReader(target.open()))
    assert len(rows) == len(frame) and rows[0]["date"].endswith("Z")
    assert [float(r["ndwi_median"]) for r in rows] == pytest.approx(list(frame.ndwi_median))
    assert main(["stats", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ndvi = stacfetch.stats(out)
    assert doc["index"] == "ndvi" and [r["ndvi_std"] for r in doc["rows"]] == pytest.approx(list(ndvi.ndvi_std))
    assert all(r["clear_percent"] is not None for r in doc["rows"])


def test_bad_input_says_what_to_do(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", str(out), "--index", "evi"]) == 2
    assert "unknown index 'evi'" in capsys.readouterr().err
    assert main(["stats", str(out), "--index", "nbr"]) == 2
    assert "--bands B08,B12,SCL" in capsys.readouterr().err
    assert main(["stats", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    code = ("import sys; sys.modules['xarray'] = None\n"
            "from stacfetch.cli import main\n"
            f"raise SystemExit(main(['stats', {str(out)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "pip install 'stacfetch[xarray]'" in proc.stderr, proc.stderr
