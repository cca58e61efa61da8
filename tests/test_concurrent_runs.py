"""Several runs into one output folder, and an Executor that fails: nothing is lost.

* Four ``python -m stacfetch get`` at once (three areas, one of them twice) into one folder
  against one emulator: all exit 0, every ``.tif`` is valid and complete, no ``.part`` is
  left, and every file is in the manifest exactly once with the right checksum.
  ``STACFETCH_CONCURRENT_REPEATS=10`` repeats it (the figure of the issue).
* An Executor whose ``submit`` raises on the third job: ``get`` raises only after the jobs
  already submitted are finished or cancelled, nothing is written after it returned, and
  the manifest lists what was written.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pystac
import pytest
import rasterio

import stacfetch
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_settings
from stacfetch.testing.emulator import Emulator

pytestmark = pytest.mark.timeout(300)

REPO = str(Path(stacfetch.__file__).resolve().parents[1])
AREAS = {"a": ("34.665", "31.625"), "b": ("34.700", "31.600"), "c": ("34.630", "31.650")}
REPEATS = int(os.environ.get("STACFETCH_CONCURRENT_REPEATS", "1"))


def environment(emu: Emulator) -> dict[str, str]:
    return {**os.environ, "SH_BASE_URL": emu.url, "SH_TOKEN_URL": emu.token_url,
            "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
            "STACFETCH_PROVIDER": "sentinelhub", "PYTHONUNBUFFERED": "1", "PYTHONPATH": REPO}


def command(out: Path, area: str) -> list[str]:
    lon, lat = AREAS[area]
    return [sys.executable, "-m", "stacfetch", "get", "--lon", lon, "--lat", lat, "--size", "1000",
            "--start", "2022-01-01", "--end", "2022-01-31", "--bands", "B04", "--out", str(out),
            "--workers", "2", "-q"]


def valid_tifs(out: Path) -> set[Path]:
    """Every .tif under ``out``; each must be a readable, complete stacfetch file."""
    found = set()
    for path in out.rglob("*.tif"):
        with rasterio.open(path) as src:
            src.read()
            assert src.tags().get("STACFETCH_COMPLETE") == "1", path
        assert Path(f"{path}.json").is_file(), f"{path} has no sidecar"
        found.add(path.resolve())
    return found


def manifest_files(out: Path) -> list[Path]:
    """Files the manifest lists (with repeats); each must exist with its size and checksum."""
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    files = []
    for item in catalog.get_items():
        asset = item.assets["data"]
        path = Path(asset.get_absolute_href() or "").resolve()
        assert path.is_file(), f"the manifest lists a missing file: {path}"
        assert path.stat().st_size == asset.extra_fields["file:size"], path
        digest = "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == asset.extra_fields["file:checksum"], f"wrong checksum for {path}"
        files.append(path)
    return files


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_four_runs_at_once_into_one_folder_lose_nothing(tmp_path: Path, repeat: int) -> None:
    out = tmp_path / "out"
    with Emulator() as emu:
        env = environment(emu)
        runs = [subprocess.Popen(command(out, area), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for area in ("a", "b", "c", "a")]
        results = []
        for proc in runs:
            stdout, stderr = proc.communicate(timeout=240)
            results.append((proc.returncode, stderr))
    failures = [f"exit {code}: {err[-800:]}" for code, err in results if code != 0]
    tifs = valid_tifs(out)
    listed = manifest_files(out)
    repeated = [p for p, n in Counter(listed).items() if n > 1]
    lost = tifs - set(listed)
    leftovers = sorted(p.name for p in out.rglob("*.part"))
    print(f"repeat {repeat}: exits {[c for c, _ in results]}, {len(tifs)} files, "
          f"{len(listed)} manifest entries, {len(lost)} lost, {len(repeated)} repeated")
    assert not failures, failures
    assert len({p.parent for p in tifs}) == 3, "expected files of three areas"
    assert not lost, f"{len(lost)} of {len(tifs)} files are missing from the manifest"
    assert not repeated, f"listed more than once: {repeated}"
    assert not leftovers, leftovers


class FailingExecutor(ThreadPoolExecutor):
    """A thread pool whose ``submit`` raises on the third job (a pool that broke)."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted: list[Future[Any]] = []
        self.lock = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self.lock:
            if len(self.submitted) == 2:
                raise RuntimeError("the pool is broken (third submit)")
            future = super().submit(fn, *args, **kwargs)
            self.submitted.append(future)
            return future


def test_an_executor_that_fails_on_the_third_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stacfetch.api import build_query, get_query

    out = tmp_path / "out"
    with Emulator() as emu:
        emu.faults.latency_ms = 400  # each tile takes a while: the jobs are in flight when it breaks
        for name, value in environment(emu).items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        settings = load_settings(output_dir=out)
        query = build_query([34.665, 31.625], "2022-01-01", "2022-01-31", size=1000, bands="B04")
        pool = FailingExecutor()
        try:
            with pytest.raises(Exception) as caught:
                get_query(query, settings=settings, executor=pool, workers=2)
            running = [f for f in pool.submitted if not f.done()]
            files_at_return = {p.name for p in out.rglob("*.tif")}
            time.sleep(2.0)  # what was submitted must not go on writing after get() returned
            files_later = {p.name for p in out.rglob("*.tif")}
        finally:
            pool.shutdown(wait=True)
    assert "third submit" in str(caught.value) or "third submit" in repr(caught.value.__cause__)
    assert not running, f"{len(running)} submitted jobs still running when get() raised"
    assert files_later == files_at_return, "files were written after get() raised"
    assert not list(out.rglob("*.part"))
    if files_at_return:
        listed = {p.name for p in manifest_files(out)}
        assert listed == files_at_return, "the manifest does not list what was written"


def test_a_lock_that_cannot_be_made_is_an_error_not_a_silent_unlocked_run(tmp_path: Path) -> None:
    """Only a folder stacfetch may not write to (EROFS/EACCES/EPERM) runs unlocked; any other
    failure to make the lock (here: its path is a folder, EISDIR) raises instead of
    silently dropping the mutual exclusion between runs."""
    from stacfetch.raster.files import _lock_path, destination_lock

    dest = tmp_path / "area" / "scene.tif"
    _lock_path(dest).mkdir(parents=True)
    entered = False
    with pytest.raises(OSError), destination_lock(dest):
        entered = True
    assert not entered


def test_an_unwritable_folder_runs_unlocked_without_chaining_errors_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-only media (EACCES: root cannot be refused one, so filelock is made to raise it):
    the block runs unlocked, and an error inside it is not "During handling of" the lock's."""
    import errno

    import filelock

    from stacfetch.raster.files import destination_lock

    def refused(self: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", self.lock_file)

    monkeypatch.setattr(filelock.FileLock, "acquire", refused)
    with pytest.raises(ValueError) as info, destination_lock(tmp_path / "scene.tif"):
        raise ValueError("inside")
    assert info.value.__context__ is None


class CrashingExecutor(ThreadPoolExecutor):
    """A pool on which the first job raises an exception that is no StacfetchError (a bug)."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.crashed = False

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        if not self.crashed:
            self.crashed = True

            def crash(*_: Any, **__: Any) -> Any:
                raise RuntimeError("a bug in a worker")

            return super().submit(crash, *args, **kwargs)
        return super().submit(fn, *args, **kwargs)


def test_a_job_that_raises_a_non_stacfetch_error_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash becomes that acquisition's failure (the others are written, listed in the
    manifest), not an "internal error" that drops the manifest of what was complete."""
    from stacfetch.api import build_query, get_query

    out = tmp_path / "out"
    with Emulator() as emu:
        for name, value in environment(emu).items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        settings = load_settings(output_dir=out)
        query = build_query([34.665, 31.625], "2022-01-01", "2022-01-31", size=1000, bands="B04")
        with CrashingExecutor() as pool:
            result = get_query(query, settings=settings, executor=pool, workers=2)
    assert len(result.failed) == 1 and "RuntimeError" in (result.failed[0].error or ""), result.summary()
    assert result.written, result.summary()
    assert set(manifest_files(out)) == {p.resolve() for p in result.written}
    assert result.exit_code == 5


def test_wind_down_leaves_the_temporaries_of_a_job_still_running(tmp_path: Path) -> None:
    """Stopping the run removes the ``.part`` files of finished jobs only: a job still running
    (past the wait) cleans up its own; its file is never deleted under it."""
    from stacfetch.config import Settings
    from stacfetch.raster import part_path
    from stacfetch.result import GetResult, Outcome
    from stacfetch.run import RunContext, _wind_down

    context = RunContext(Settings(provider="sentinelhub", base_url="http://127.0.0.1:9",
                                  token_url="http://127.0.0.1:9/token"))
    release = threading.Event()

    class FakeJob:
        def __init__(self, name: str) -> None:
            self.destination = tmp_path / name

    running_job, done_job = FakeJob("running.tif"), FakeJob("done.tif")
    running_part = part_path(running_job.destination, context.tag)
    done_part = part_path(done_job.destination, context.tag)

    def still_writing() -> Outcome:
        running_part.write_bytes(b"tile")
        release.wait(10)
        return Outcome(running_job, "failed", error="stopped")  # type: ignore[arg-type]

    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(still_writing)
        while not running_part.exists():
            time.sleep(0.01)
        done_part.write_bytes(b"left over")
        finished = pool.submit(lambda: Outcome(done_job, "failed", error="x"))  # type: ignore[arg-type]
        finished.result()
        _wind_down({running: running_job, finished: done_job}, GetResult(), context, wait=0.2)
        still_there = running_part.exists()
        release.set()
    context.close()
    assert still_there, "the .part of a job still running was deleted under it"
    assert not done_part.exists(), "the .part of a finished job was left"


def test_the_stop_reaches_a_context_unpickled_elsewhere(tmp_path: Path) -> None:
    """A process-pool worker gets the RunContext pickled: it must still see Ctrl-C / the quota
    stop of the run (a file the stop creates), not a fresh Event that is never set."""
    import pickle

    from stacfetch.config import Settings
    from stacfetch.run import RunContext

    context = RunContext(Settings(provider="sentinelhub", base_url="http://127.0.0.1:9",
                                  token_url="http://127.0.0.1:9/token"))
    try:
        worker = pickle.loads(pickle.dumps(context))  # what a ProcessPoolExecutor worker receives
        assert not worker.stop.is_set()
        context.stop.set()
        assert worker.stop.is_set(), "a process-pool worker never sees the run's stop"
    finally:
        context.close()
