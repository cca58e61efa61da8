"""`stacfetch get` end to end over real HTTP against the emulator: files, pixels, tiles, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from stacfetch.api import build_query, get_query
from stacfetch.bands import PRESETS
from stacfetch.cli import main
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Settings, load_settings
from stacfetch.raster import is_complete
from stacfetch.testing import pixels
from stacfetch.testing.emulator import Emulator, Faults

UTC = timezone.utc


def settings_for(emu: Emulator, out: Path) -> Settings:
    return load_settings(
        environ={}, provider="sentinelhub", client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET, base_url=emu.url, token_url=emu.token_url,
        output_dir=out,
    )


def run_get(emu: Emulator, out: Path, location, start, end, **options):
    query = build_query(location, start, end, bands=options.pop("bands", "all"),
                        resolution=options.pop("resolution", None), crs=options.pop("crs", None),
                        dtype=options.pop("dtype", "uint16"))
    return get_query(query, settings=settings_for(emu, out), **options)


def passes(items: list[dict], gap: timedelta = timedelta(hours=1)) -> list[set[str]]:
    """Item ids clustered into passes, computed independently of stacfetch.plan."""
    ordered = sorted(items, key=lambda it: it["properties"]["datetime"])
    groups: list[list[dict]] = []
    for it in ordered:
        t = datetime.fromisoformat(it["properties"]["datetime"].replace("Z", "+00:00"))
        if groups and t - groups[-1][0]["_t"] <= gap and it["properties"]["platform"] == groups[-1][0]["properties"]["platform"]:
            groups[-1].append({**it, "_t": groups[-1][0]["_t"]})
        else:
            groups.append([{**it, "_t": t}])
    return [{it["id"] for it in g} for g in groups]


def expected_band(src: rasterio.io.DatasetReader, band: str, window: Window, cloud_cover: float = 0.0) -> np.ndarray:
    when = datetime.fromisoformat(src.tags()["ACQUISITION_DATETIME"].replace("Z", "+00:00"))
    transform = src.window_transform(window)
    x, y = pixels.pixel_centers(transform, int(window.width), int(window.height))
    unit = pixels.coordinate_unit(src.crs.is_geographic)
    return pixels.band_values(band, pixels.day_number(when.date()), x, y, unit, cloud_cover)


# A point on the corner of four emulator tiles: neighbouring tiles of one pass (seconds apart)
# and, every 4th pass, a duplicate processing baseline.
CORNER = [35.0, 32.0]


def test_one_file_per_acquisition_with_same_pass_neighbours_and_duplicates(emulator: Emulator, tmp_path: Path) -> None:
    start, end = "2022-01-01", "2022-01-20"
    query = build_query(CORNER, start, end)
    items = emulator.items_for(query.geometry, query.interval.start, query.interval.end)
    groups = passes(items)
    assert len(items) > len(groups) >= 4, "the window must hold neighbours/duplicates"
    assert any(len(g) >= 3 for g in groups)
    tiles = [(it["id"].split("_")[5], it["properties"]["datetime"]) for it in items]
    assert len(set(tiles)) < len(tiles), "the window must hold a duplicate processing baseline"

    result = run_get(emulator, tmp_path / "out", CORNER, start, end, bands="truecolor")
    assert not result.failed
    assert len(result.written) == len(groups) == len(set(result.paths))
    got = []
    for path in result.paths:
        with rasterio.open(path) as src:
            got.append(set(src.tags()["ITEM_IDS"].split(",")))
    assert sorted(map(sorted, got)) == sorted(map(sorted, groups))
    # one request per acquisition (1 tile each), plus nothing else
    assert emulator.log.count(kind="process") == len(groups)


def test_each_file_matches_what_the_emulator_rendered(emulator: Emulator, tmp_path: Path) -> None:
    point = [34.665, 31.625]
    result = run_get(emulator, tmp_path / "out", point, "2022-01-20", "2022-01-25")
    assert len(result.written) >= 2
    bands = PRESETS["all"]
    for path in result.paths:
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32636
            assert src.count == len(bands) and src.descriptions == bands
            assert src.dtypes == ("uint16",) * len(bands)
            # no data is a per-dataset mask band, never a value (issue 11): all data here
            assert src.nodata is None and src.mask_flag_enums[0] == [MaskFlags.per_dataset]
            assert (src.read_masks(1) == 255).all()
            assert src.res == (10.0, 10.0)
            # the grid is snapped to multiples of the resolution and covers the 5 km square
            assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0
            assert 500 <= src.width <= 502 and 500 <= src.height <= 502
            tags = src.tags()
            assert tags["STACFETCH_COMPLETE"] == "1" and tags["BANDS"] == ",".join(bands)
            for row, col in [(0, 0), (0, src.width - 1), (src.height - 1, 0), (250, 250), (123, 456)]:
                window = Window(col, row, 1, 1)
                for i, band in enumerate(bands, start=1):
                    got = src.read(i, window=window)
                    assert got.tolist() == expected_band(src, band, window).tolist(), (path.name, band, row, col)
        sidecar = json.loads(Path(f"{path}.json").read_text())
        assert {f["id"] for f in sidecar["features"]} == set(tags["ITEM_IDS"].split(","))


def test_float32_reflectance_and_scl_alone(emulator: Emulator, tmp_path: Path) -> None:
    result = run_get(emulator, tmp_path / "f", [34.665, 31.625], "2022-01-22", None,
                     bands="B04,B08", dtype="float32", resolution=20)
    (path,) = result.paths
    with rasterio.open(path) as src:
        assert src.dtypes == ("float32", "float32") and src.res == (20.0, 20.0)
        window = Window(10, 20, 5, 5)
        assert np.array_equal(src.read(2, window=window), pixels.reflectance(expected_band(src, "B08", window)))
    result = run_get(emulator, tmp_path / "s", [34.665, 31.625], "2022-01-22", None, bands="SCL")
    (path,) = result.paths
    with rasterio.open(path) as src:
        assert src.dtypes == ("uint8",) and src.descriptions == ("SCL",)
        cloud = float(src.tags()["CLOUD_COVER"])
        window = Window(0, 0, src.width, src.height)
        assert np.array_equal(src.read(1), expected_band(src, "SCL", window, cloud))


def test_area_of_3x3_tiles_is_stitched_without_seams(emulator: Emulator, tmp_path: Path) -> None:
    # 52 km x 52 km at 10 m = 5200 px a side: 3 x 3 requests under the 2500 px limit.
    bbox = [34.22, 31.28, 34.78, 31.75]
    result = run_get(emulator, tmp_path / "out", bbox, "2022-01-22", None, bands="B04", workers=2)
    assert not result.failed and len(result.written) == 1
    (job,) = result.jobs
    assert len(job.tiles) >= 9
    assert len({t.window.row_off for t in job.tiles}) >= 3 and len({t.window.col_off for t in job.tiles}) >= 3
    assert emulator.log.count(kind="process") == len(job.tiles)
    for record in emulator.log.records(kind="process"):
        assert record.body["output"]["width"] <= 2500 and record.body["output"]["height"] <= 2500
    with rasterio.open(result.paths[0]) as src:
        assert src.width > 5000 and src.height > 5000
        for tile in job.tiles:
            w = tile.window
            # a 2-pixel band on each side of every tile edge, across the whole image
            for window in (
                Window(max(w.col_off - 2, 0), 0, 4, src.height),
                Window(0, max(w.row_off - 2, 0), src.width, 4),
            ):
                window = window.intersection(Window(0, 0, src.width, src.height))
                assert np.array_equal(src.read(1, window=window), expected_band(src, "B04", window))


def test_rerun_makes_no_process_requests_and_overwrite_does(emulator: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_get(emulator, out, [34.665, 31.625], "2022-01-20", "2022-01-25", bands="truecolor")
    before = {p: p.stat().st_mtime_ns for p in first.paths}
    emulator.log.clear()
    second = run_get(emulator, out, [34.665, 31.625], "2022-01-20", "2022-01-25", bands="truecolor")
    assert emulator.log.count(kind="process") == 0
    assert second.skipped == first.written and not second.written
    assert {p: p.stat().st_mtime_ns for p in second.paths} == before
    third = run_get(emulator, out, [34.665, 31.625], "2022-01-20", "2022-01-25", bands="truecolor",
                    overwrite=True)
    assert emulator.log.count(kind="process") == len(first.paths) == len(third.written)


def test_each_file_is_in_the_manifest_once_written_before_the_run_ends(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    import stacfetch.run
    from stacfetch.stac.manifest import manifest_items

    # the manifest of the run's end never comes (as when the process is killed before it)
    monkeypatch.setattr(stacfetch.run, "_write_manifest", lambda result, root: None)
    out = tmp_path / "out"
    result = run_get(emulator, out, [34.665, 31.625], "2022-01-20", "2022-01-25", bands="B04")
    assert len(result.written) >= 2 and result.manifest is None
    listed = {Path(item["assets"]["data"]["href"]): item["assets"]["data"] for item in manifest_items(out)}
    assert set(listed) == set(result.written)
    for path, asset in listed.items():
        assert asset["file:checksum"] == "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert asset["file:size"] == path.stat().st_size and asset["eo:bands"][0]["name"] == "B04"
    monkeypatch.undo()  # the next run's manifest keeps them (and its own clean-up)
    again = run_get(emulator, out, [34.665, 31.625], "2022-01-20", "2022-01-25", bands="B04")
    assert again.skipped == result.written and len(manifest_items(out)) == len(listed)


def test_leftover_part_file_is_discarded_and_redone(emulator: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_get(emulator, out, [34.665, 31.625], "2022-01-22", None, bands="truecolor")
    (path,) = first.paths
    original = path.read_bytes()
    path.unlink()
    Path(f"{path}.part").write_bytes(original[: len(original) // 2])
    second = run_get(emulator, out, [34.665, 31.625], "2022-01-22", None, bands="truecolor")
    assert second.written == [path] and path.read_bytes() == original
    assert not Path(f"{path}.part").exists()


def _tif_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tif"))}


def test_faults_do_not_change_a_single_byte(tmp_path: Path) -> None:
    args = ([34.665, 31.625], "2022-01-10", "2022-01-25")
    with Emulator() as clean:
        run_get(clean, tmp_path / "clean", *args, bands="B04,B08,SCL")
    expected = _tif_files(tmp_path / "clean")
    assert len(expected) >= 5
    with Emulator(token_lifetime=3) as faulty:
        faulty.faults.fail_next = [429, 503, 500, 429]
        faulty.faults.rate_5xx = 0.15
        faulty.faults.rate_drop = 0.1
        faulty.faults.rate_truncate = 0.15
        faulty.faults.rate_429 = 0.15
        faulty.faults.retry_after_ms = 200
        faulty.faults.latency_ms = 300  # with 3 s tokens, the run outlives several tokens
        result = run_get(faulty, tmp_path / "faulty", *args, bands="B04,B08,SCL", workers=3)
        assert not result.failed, result.summary()
        statuses = [r.status for r in faulty.log.records()]
        assert statuses.count(429) >= 2 and any(s >= 500 for s in statuses)
        assert faulty.log.count(kind="token") >= 2
    assert _tif_files(tmp_path / "faulty") == expected


def test_streamed_tiles_survive_drops_and_match_in_memory_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large responses are spooled to disk; a body cut mid-stream is asked again."""
    import stacfetch.run as run_module

    args = ([34.665, 31.625], "2022-01-10", "2022-01-20")
    with Emulator() as clean:
        run_get(clean, tmp_path / "memory", *args, bands="B04,B08")
    monkeypatch.setattr(run_module, "SPOOL_BYTES", 0)  # spool every tile
    with Emulator() as faulty:
        faulty.faults.only_kinds = {"process"}
        faulty.faults.fail_next = [Faults.DROP, Faults.TRUNCATE, Faults.DROP]
        result = run_get(faulty, tmp_path / "spooled", *args, bands="B04,B08", workers=1)
        assert not result.failed, result.summary()
        faults = [r.fault for r in faulty.log.records(kind="process") if r.fault]
        assert len(faults) == 3, faults
    assert _tif_files(tmp_path / "spooled") == _tif_files(tmp_path / "memory")
    assert not list((tmp_path / "spooled").rglob("*.part"))


@pytest.mark.parametrize(
    "location_args",
    [
        pytest.param(["--lon", "34.665", "--lat", "31.625"], id="point"),
        pytest.param(["--bbox", "34.64,31.60,34.69,31.65"], id="bbox"),
        pytest.param(["--location", "[[34.64,31.60],[34.69,31.60],[34.69,31.65],[34.64,31.65]]"], id="polygon"),
        pytest.param(["--location_lon", "31.625", "--location_lat", "34.665"], id="first-user"),
    ],
)
def test_cli_get_location_forms_echo_the_area(
    emulator: Emulator, tmp_path: Path, location_args: list[str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SH_BASE_URL", emulator.url)
    monkeypatch.setenv("SH_TOKEN_URL", emulator.token_url)
    monkeypatch.setenv("SH_CLIENT_ID", SANDBOX_CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", SANDBOX_CLIENT_SECRET)
    dates = (["--start_date", "2022-01-20", "--end_date", "2022-01-25"] if "--location_lon" in location_args
             else ["--start", "2022-01-20", "--end", "2022-01-25"])
    code = main(["get", *location_args, *dates, "--bands", "truecolor", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "area: centre" in err and "UTM zone" in err
    files = list((tmp_path / "o").rglob("*.tif"))
    assert files
    if "--location_lon" in location_args:
        # the first user's literal flags: lon 31.625, lat 34.665 - the echo shows 34.6650°N 31.6250°E
        assert "34.6650°N 31.6250°E" in err
    else:
        assert "31.6" in err.split("area: centre", 1)[1][:20]


def test_sigkill_mid_run_leaves_no_invalid_tif_and_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Emulator() as emu:
        emu.faults.latency_ms = 250
        env = {**os.environ, "SH_BASE_URL": emu.url, "SH_TOKEN_URL": emu.token_url,
               "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
               "STACFETCH_PROVIDER": "sentinelhub",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # this checkout's code
        cmd = [sys.executable, "-m", "stacfetch", "get", "--lon", "34.665", "--lat", "31.625",
               "--start", "2021-11-01", "--end", "2022-01-31", "--bands", "B04", "--size", "20000",
               "--out", str(out), "--workers", "2", "-q"]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.rglob("*.tif"))) < 3:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = list(out.rglob("*.tif"))
        assert len(done) >= 3, "the run should have written some files before the kill"
        for path in done:  # every .tif that exists is complete and valid
            with rasterio.open(path) as src:
                src.read()
                assert src.tags()["STACFETCH_COMPLETE"] == "1"
        emu.faults.latency_ms = 0
        time.sleep(1.0)  # requests the killed client left in flight finish on the server side
        emu.log.clear()
        rerun = subprocess.run(cmd + ["--json"], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        report = json.loads(rerun.stdout)
        assert len(report["skipped"]) >= len(done)
        assert emu.log.count(kind="process") == len(report["written"])
        bodies = [json.dumps(r.body["input"], sort_keys=True) for r in emu.log.records(kind="process")]
        assert len(bodies) == len(set(bodies)), "no acquisition may be downloaded twice"
        assert not list(out.rglob("*.part"))
        total = len(report["written"]) + len(report["skipped"])
        assert total > len(done)
        assert all(p.exists() for p in map(Path, report["written"] + report["skipped"]))


def test_dry_run_downloads_nothing(emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for k, v in {"SH_BASE_URL": emulator.url, "SH_TOKEN_URL": emulator.token_url,
                 "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET}.items():
        monkeypatch.setenv(k, v)
    code = main(["get", "--lon", "34.665", "--lat", "31.625", "--size", "30000", "--start", "2022-01-20",
                 "--end", "2022-01-25", "--dry-run", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 0
    assert "Process API requests" in err and "processing units" in err
    assert emulator.log.count(kind="process") == 0
    assert not (tmp_path / "o").exists()


def test_is_complete_rejects_a_file_from_another_grid(emulator: Emulator, tmp_path: Path) -> None:
    result = run_get(emulator, tmp_path / "o", [34.665, 31.625], "2022-01-22", None, bands="B04")
    (job,) = result.jobs
    assert is_complete(job.destination, job.grid, job.bands, job.dtype)
    assert not is_complete(job.destination, job.grid, ("B03",), job.dtype)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_any_executor_gives_the_same_files(emulator: Emulator, tmp_path: Path, kind: str) -> None:
    """``executor=`` accepts any concurrent.futures.Executor, e.g. a process pool."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    args = ([34.665, 31.625], "2022-01-10", "2022-01-20")
    default = run_get(emulator, tmp_path / "default", *args, bands="B04,SCL")
    emulator.log.clear()
    pool = (ThreadPoolExecutor(2) if kind == "thread"
            else ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")))
    with pool:
        custom = run_get(emulator, tmp_path / "custom", *args, bands="B04,SCL", executor=pool)
    assert not custom.failed and len(custom.written) == len(default.written) >= 3
    assert emulator.log.count(kind="process") == len(custom.written)
    assert _tif_files(tmp_path / "custom") == _tif_files(tmp_path / "default")
    assert (tmp_path / "custom" / "catalog.json").exists()
