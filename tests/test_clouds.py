"""--min-clear: one small SCL request per acquisition; cloudy-over-the-area acquisitions are skipped and reported."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_bounds

from stacfetch.api import build_query, get_query
from stacfetch.cli import main
from stacfetch.clouds import MAX_SIDE, clear_percent, screening_size
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_settings
from stacfetch.errors import InvalidOptionError
from stacfetch.plan import grid_for
from stacfetch.testing import pixels
from stacfetch.testing.emulator import Emulator

POINT = [34.665, 31.625]
START, END = "2022-01-01", "2022-01-31"
SIZE = 300.0  # a small field: its own clouds differ from the tile's cloud cover


def settings_for(emu: Emulator, out: Path):
    return load_settings(environ={}, provider="sentinelhub", client_id=SANDBOX_CLIENT_ID,
                         client_secret=SANDBOX_CLIENT_SECRET, base_url=emu.url, token_url=emu.token_url,
                         output_dir=out)


def expected_clear(emu: Emulator, query) -> dict[str, tuple[float, float]]:
    """Per acquisition date: (item cloud cover, clear % of the area), from the emulator's pixel function."""
    grid = grid_for(query.geometry, None, query.resolution)
    width, height = screening_size(grid)
    x, y = pixels.pixel_centers(from_bounds(*grid.bounds, width, height), width, height)
    out = {}
    for item in emu.items_for(query.geometry, query.interval.start, query.interval.end):
        cover = item["properties"]["eo:cloud_cover"]
        day = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00")).date()
        scl = pixels.band_values("SCL", pixels.day_number(day), x, y, 1.0, cover)
        out[day.isoformat()] = (cover, clear_percent(scl)[0])
    return out


def test_clear_percent_counts_only_data_pixels() -> None:
    scl = np.array([[0, 4, 5, 6], [11, 8, 9, 3]], dtype=np.uint8)
    assert clear_percent(scl) == (pytest.approx(4 / 7 * 100), 7)
    inside = np.array([[True, True, True, True], [False, False, False, False]])
    assert clear_percent(scl, inside) == (100.0, 3)
    assert clear_percent(np.zeros((3, 3), np.uint8)) == (None, 0)


def test_screening_size_is_small_and_keeps_the_aspect() -> None:
    query = build_query(POINT, START, size=20000)
    grid = grid_for(query.geometry, None, 10.0)
    w, h = screening_size(grid)
    assert max(w, h) == MAX_SIDE and abs(w / h - grid.width / grid.height) < 0.02
    tiny = grid_for(build_query(POINT, START, size=300).geometry, None, 10.0)
    assert screening_size(tiny) == (tiny.width, tiny.height)


def test_min_clear_skips_an_area_that_is_cloudy_while_its_tile_is_not(emulator: Emulator, tmp_path: Path) -> None:
    query = build_query(POINT, START, END, size=SIZE, max_cloud=35, bands="B04,B03,B02")
    truth = expected_clear(emulator, query)
    low_tile_cloudy_area = {d for d, (cover, clear) in truth.items() if cover <= 35 and clear < 60}
    clear_days = {d for d, (cover, clear) in truth.items() if cover <= 35 and clear >= 60}
    assert low_tile_cloudy_area and clear_days, truth  # the window must hold both kinds

    result = get_query(query, settings=settings_for(emulator, tmp_path / "out"), min_clear=60)
    skipped = {s.job.acquisition.datetime.date().isoformat() for s in result.cloudy}
    written = {p.name[:10] for p in result.written}
    assert skipped == low_tile_cloudy_area
    assert written == clear_days
    for share in result.screened:
        day = share.job.acquisition.datetime.date().isoformat()
        # the truth counts the whole grid; screening counts pixels inside the area only
        assert share.clear == pytest.approx(truth[day][1], abs=3)
    assert "skipped as cloudy over the area" in result.summary()
    assert {c["acquisition"][:10] for c in result.to_dict()["cloudy"]} == skipped

    # one small SCL request per acquisition, then the full requests of the kept ones only
    process = emulator.log.records(kind="process", status=200)
    small = [r for r in process if '["SCL", "dataMask"]' in r.body["evalscript"]]
    assert len(small) == len(result.screened) == len(skipped) + len(written)
    assert all(max(r.body["output"]["width"], r.body["output"]["height"]) <= MAX_SIDE for r in small)
    full = [r for r in process if r not in small]
    assert len(full) == len(written) * len(result.jobs[0].tiles)


def test_complete_files_are_not_screened_again(emulator: Emulator, tmp_path: Path) -> None:
    query = build_query(POINT, START, "2022-01-10", size=SIZE, bands="truecolor")
    settings = settings_for(emulator, tmp_path / "out")
    first = get_query(query, settings=settings, min_clear=0)
    assert first.written and not first.cloudy
    emulator.log.clear()
    second = get_query(query, settings=settings, min_clear=90)
    assert emulator.log.count(kind="process") == 0
    assert second.skipped == first.written and not second.screened


def test_min_clear_is_validated(emulator: Emulator, tmp_path: Path) -> None:
    query = build_query(POINT, START, size=SIZE)
    with pytest.raises(InvalidOptionError, match="outside 0..100"):
        get_query(query, settings=settings_for(emulator, tmp_path), min_clear=120)


def test_cli_reports_what_it_skipped(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SH_BASE_URL", emulator.url)
    monkeypatch.setenv("SH_TOKEN_URL", emulator.token_url)
    monkeypatch.setenv("SH_CLIENT_ID", SANDBOX_CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", SANDBOX_CLIENT_SECRET)
    args = ["get", "--lon", str(POINT[0]), "--lat", str(POINT[1]), "--size", str(SIZE), "--start", START,
            "--end", END, "--bands", "truecolor", "--out", str(tmp_path / "o"), "--min-clear", "60"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "clear share over the area" in err and "  skip  " in err and "  keep  " in err
    assert "skipped as cloudy over the area (less than 60 % clear)" in err
    assert main([*args, "--json", "--overwrite"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cloudy"] and all(c["clear_percent"] < 60 for c in doc["cloudy"])
