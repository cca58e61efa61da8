"""Stitching and COG copies in bounded memory: the same bytes with any number of threads and any
working-memory budget, spooled tiles removed whatever happens, and a peak that stays bounded."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from test_get import run_get  # tests/ is on sys.path (no package)

from stacfetch import memory
from stacfetch.plan import Grid, cut_tiles
from stacfetch.raster import PartFile
from stacfetch.raster import formats as write
from stacfetch.raster.overviews import halve_masked, write_levels
from stacfetch.testing.emulator import Emulator, Faults

BANDS = ("B04", "B08", "B11")


def grid_of(width: int, height: int) -> Grid:
    return Grid("EPSG:32636", Affine(10, 0, 600000.0, 0, -10, 3500000.0), width, height, 10.0)


def mosaic(grid: Grid, bands: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Pixels with texture (so blocks compress differently) and a mask with a margin and holes."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 12000, size=(bands, grid.height, grid.width), dtype=np.uint16)
    mask = np.ones((grid.height, grid.width), np.uint16)
    mask[:, :97] = 0
    mask[rng.random(mask.shape) < 0.05] = 0
    return data, mask


def spool_tiles(grid: Grid, data: np.ndarray, mask: np.ndarray, folder: Path, max_px: int) -> dict:
    """One stripped, uncompressed GeoTIFF per tile (the emulator's kind), bands then dataMask."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for tile in cut_tiles(grid, max_px):
        r0, c0 = int(tile.window.row_off), int(tile.window.col_off)
        block = np.concatenate([data[:, r0:r0 + tile.height, c0:c0 + tile.width],
                                mask[np.newaxis, r0:r0 + tile.height, c0:c0 + tile.width]])
        path = folder / f"{tile.name}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=tile.width, height=tile.height,
                           count=block.shape[0], dtype="uint16", crs=grid.crs,
                           transform=grid.window_transform(tile.window)) as dst:
            dst.write(block)
        files[tile.name] = (tile, path.read_bytes())
    return files


def stitch(grid: Grid, tiles: dict, dest: Path, fmt: str, threads: int) -> str:
    """Write every tile (from a spool file, as the run does) on ``threads``; the file's SHA-256."""
    with PartFile(dest, grid, BANDS, "uint16", fmt=fmt, masked=True, tag="t") as part:
        def one(name: str) -> None:
            tile, body = tiles[name]
            spool = part.spool_path(tile.name)
            spool.write_bytes(body)
            try:
                part.write_tile(tile, spool)
            finally:
                spool.unlink(missing_ok=True)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, sorted(tiles)))
        part.commit()
    return hashlib.sha256(dest.read_bytes()).hexdigest()


class Recording(memory.MemoryBudget):
    """A budget that remembers what was asked of it."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.asked: list[int] = []

    def hold(self, nbytes: int):  # type: ignore[no-untyped-def]
        self.asked.append(nbytes)
        return super().hold(nbytes)


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small mosaics take the large-copy path: our pyramid on 2 threads, a 2-thread COG copy."""
    monkeypatch.setattr(write, "SMALL_COPY_PIXELS", 1000)
    monkeypatch.setattr(write, "LARGE_COPY_PIXELS", 2000)


def test_a_stitched_cog_is_the_same_bytes_with_any_threads_and_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, large: None
) -> None:
    grid = grid_of(1300, 1100)
    data, mask = mosaic(grid, len(BANDS))
    tiles = spool_tiles(grid, data, mask, tmp_path / "tiles", max_px=500)  # 3 x 3 tiles
    monkeypatch.setattr(write, "LARGE_COPY_THREADS", 1)  # as before: one thread, the whole budget
    before = stitch(grid, tiles, tmp_path / "one" / "a.tif", "cog", threads=1)
    monkeypatch.setattr(write, "LARGE_COPY_THREADS", 2)
    tiny = Recording(1)  # every strip and copy waits for the one before it
    monkeypatch.setattr(memory, "WORKING_MEMORY", tiny)
    monkeypatch.setattr("stacfetch.raster.part.WORKING_MEMORY", tiny)
    monkeypatch.setattr(write, "WORKING_MEMORY", tiny)
    after = stitch(grid, tiles, tmp_path / "many" / "a.tif", "cog", threads=6)
    assert after == before
    assert tiny.peak == 1 and tiny.held == 0  # strips and the copy held it, one at a time
    strips = [n for n in tiny.asked if n != tiny.limit]
    # strips cut at the 512-px block rows: 1 per tile in the first tile row, 2 in the others
    assert len(strips) == 15 and max(strips) == 434 * 367 * (4 * 2 + 1)
    with rasterio.open(tmp_path / "many" / "a.tif") as cog:
        assert cog.overviews(1) == [2]  # 550 px >= 512; a 275-px level would not help (level_count)
        np.testing.assert_array_equal(cog.read(), data)
        np.testing.assert_array_equal(cog.read_masks(1), np.where(mask != 0, 255, 0))
        with rasterio.open(tmp_path / "many" / "a.tif", OVERVIEW_LEVEL=0) as ov:
            expected, expected_mask = halve_masked(data, np.where(mask != 0, 255, 0), True)
            np.testing.assert_array_equal(ov.read_masks(1), expected_mask)
            np.testing.assert_array_equal(ov.read(masked=True).filled(0),
                                          np.where(expected_mask, expected, 0))
    assert not [p for p in tmp_path.rglob("*") if ".part" in p.name or p.suffix == ".tmp"]


def test_the_threaded_pyramid_writes_the_same_levels(tmp_path: Path) -> None:
    grid = grid_of(2600, 2100)  # two levels: 1050 and 525 px (level_count)
    data, mask = mosaic(grid, 2, seed=9)
    source = tmp_path / "m.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            source, "w", driver="GTiff", width=grid.width, height=grid.height, count=2,
            dtype="uint16", crs=grid.crs, transform=grid.transform, tiled=True) as dst:
        dst.write(data)
        dst.write_mask(np.where(mask != 0, 255, 0).astype(np.uint8))
    digests = []
    for threads in (1, 2, 3):
        folder = tmp_path / f"t{threads}"
        folder.mkdir()
        levels = write_levels(str(source), folder / "c.tif", 512, average=True, threads=threads)
        assert [p.name for p in levels] == ["c.tif.ov2.tmp", "c.tif.ov4.tmp"]
        digests.append([hashlib.sha256(p.read_bytes()).hexdigest() for p in levels])
    assert digests[0] == digests[1] == digests[2]


def test_the_mean_of_an_all_valid_block_is_the_rounded_mean() -> None:
    rng = np.random.default_rng(2)
    block = rng.integers(0, 65536, size=(3, 8, 10), dtype=np.uint16)
    block[:, 0, :2] = 65535  # sums beyond 16 bits
    got, got_mask = halve_masked(block, np.full((8, 10), 255, np.uint8), True)
    wide = block.astype(np.uint64)
    total = wide[:, 0::2, 0::2] + wide[:, 0::2, 1::2] + wide[:, 1::2, 0::2] + wide[:, 1::2, 1::2]
    np.testing.assert_array_equal(got, ((total + 2) // 4).astype(np.uint16))
    assert (got_mask == 255).all()


def test_budget_holds_wait_and_one_larger_than_the_budget_runs_alone() -> None:
    budget = memory.MemoryBudget(100)
    with budget.hold(60), budget.hold(40):
        assert budget.held == 100
    with budget.hold(10**9):  # clipped to the whole budget
        assert budget.held == 100
    assert budget.held == 0 and budget.peak == 100


def test_spooled_tiles_are_removed_when_a_job_succeeds_and_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stacfetch.run as run_module

    monkeypatch.setattr(run_module, "SPOOL_BYTES", 0)  # spool every tile
    args = ([34.665, 31.625], "2022-01-10", "2022-01-12")
    with Emulator() as emu:
        emu.faults.only_kinds = {"process"}
        emu.faults.fail_next = [Faults.TRUNCATE] * run_module.TILE_ATTEMPTS  # every attempt of one tile
        failed = run_get(emu, tmp_path / "failed", *args, bands="B04,B08", workers=1)
        ok = run_get(emu, tmp_path / "ok", *args, bands="B04,B08", workers=1)
    assert len(failed.failed) == 1 and not ok.failed
    assert ok.written and list((tmp_path / "ok").rglob("*.tif"))
    for root in (tmp_path / "failed", tmp_path / "ok"):
        assert not [p for p in root.rglob("*") if ".part" in p.name], list(root.rglob("*"))


CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import test_stitch_memory as t
    from stacfetch import memory
    from stacfetch.raster import formats
    formats.SMALL_COPY_PIXELS = 1000
    memory.return_large_buffers_to_the_os()

    def status(key):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))

    grid = t.grid_of(2600, 2600)
    data, mask = t.mosaic(grid, len(t.BANDS))
    tiles = t.spool_tiles(grid, data, mask, Path(sys.argv[2]) / "tiles", max_px=900)
    del data, mask
    memory.release_free_memory()
    base = status("VmRSS:")
    t.stitch(grid, tiles, Path(sys.argv[2]) / "out" / "a.tif", "cog", threads=9)
    print(json.dumps({"base_kb": base, "peak_kb": status("VmHWM:"),
                      "budget_peak": memory.WORKING_MEMORY.peak, "limit": memory.WORKING_MEMORY.limit}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_stitching_nine_tiles_on_nine_threads_stays_in_bounded_memory(tmp_path: Path) -> None:
    """2600 x 2600 x 3 bands (40 MB decoded, 9 spooled tiles written at once): the job's peak
    stays far below the mosaic plus its tiles, and the budget is never exceeded."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = subprocess.run([sys.executable, str(script), str(Path(__file__).parent), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < figures["budget_peak"] <= figures["limit"]
    grown_mb = (figures["peak_kb"] - figures["base_kb"]) / 1024
    # the GDAL cache (16 MB), strips within the budget (40 MB), the copy's buffers; unbounded
    # (nine tiles decoded at once, twice: 2 x 9 x 900 x 900 x 4 x 2 bytes) would be ~120 MB more
    assert grown_mb < 180, figures


def test_a_large_copy_leaves_the_process_block_cache_alone(tmp_path: Path) -> None:
    """GDAL has one block cache per process: resizing it during a copy flushed the dirty blocks
    of files other threads were writing (heap corruption with 4 large COGs at once)."""
    from rasterio.env import get_gdal_config

    from stacfetch.raster.tags import COMPLETE_TAG

    grid = grid_of(2100, 2000)  # 4 bands: 16.8 M samples, a "large" copy
    data, _ = mosaic(grid, 4)
    source = tmp_path / "s.tif"
    with rasterio.open(source, "w", driver="GTiff", width=grid.width, height=grid.height, count=4,
                       dtype="uint16", crs=grid.crs, transform=grid.transform, tiled=True) as dst:
        dst.write(data)
        dst.update_tags(**{COMPLETE_TAG: "1"})  # what a finished .part carries
    assert grid.width * grid.height * 4 > write.SMALL_COPY_PIXELS
    seen: set[int] = set()
    done = False

    def watch() -> None:
        while not done:
            seen.add(int(get_gdal_config("GDAL_CACHEMAX")))

    run_cache = 48 * 1024 * 1024
    with rasterio.Env(GDAL_CACHEMAX=run_cache), ThreadPoolExecutor(1) as pool:
        watcher = pool.submit(watch)
        try:
            write.copy_as(source, tmp_path / "out.tif", "cog", ("B02", "B03", "B04", "B08"), "uint16")
        finally:
            done = True
        watcher.result()
    assert seen == {run_cache}
    with rasterio.open(tmp_path / "out.tif") as out:
        np.testing.assert_array_equal(out.read(), data)
