"""Orchestration of a download run: executor, resume, retries of bad tiles, progress, manifest.

Each job (one acquisition) runs ``run_job``: skip it when a complete file exists, otherwise
request its tiles one by one, validate and write each into ``<dest>.part``, then tag and
rename. Jobs run on any ``concurrent.futures.Executor``; threads (the default) share one
session and so one rate limiter. A job that fails does not stop the others.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed
from concurrent.futures import wait as wait_for
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from tqdm import TqdmWarning

from .config import Settings
from .errors import (
    Interrupted,
    InvalidResponseError,
    QuotaExhaustedError,
    StacfetchError,
)
from .http import open_session, redact
from .memory import return_large_buffers_to_the_os  # noqa: F401 - its old place (cli, benchmarks)
from .plan import Job
from .raster import (
    PartFile,
    convert_format,
    destination_lock,
    discard_partial,
    file_identity,
    run_tag,
    tags_for,
    verified_format,
)
from .raster.profiles import gdal_options
from .result import GetResult, Outcome
from .sources import source_for
from .stac.manifest import add_to_manifest, write_manifest

with warnings.catch_warnings():  # without ipywidgets, tqdm.auto falls back to the text bar
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

log = logging.getLogger(__name__)

TILE_ATTEMPTS = 4  # a response that fails validation (size, bands, CRS, truncation) is asked again
SPOOL_BYTES = 16 * 1024 * 1024  # responses expected larger than this go to a spool file, not RAM
MAX_TILE_WORKERS = 2  # tiles of one acquisition in flight at once (each strip copy costs ~70 MB)
THREADS_PER_SLOT = 2  # job threads per request slot: one waits on the service while one writes


class StopSignal(threading.Event):
    """The run's stop (Ctrl-C, the monthly quota), seen by every worker.

    A ``threading.Event`` in this process; ``set()`` also creates a file in the temporary
    folder, which the copy a process-pool worker unpickles sees (``is_set()`` looks for it).
    Workers on other machines (Dask) do not share the folder: they stop at their next refused
    request. ``close()`` removes the file.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return StopSignal, (self.path,)

    def set(self) -> None:
        super().set()
        with contextlib.suppress(OSError):
            self.path.touch()

    def is_set(self) -> bool:
        if super().is_set():
            return True
        if self.path.exists():  # set by the run in another process
            super().set()
            return True
        return False

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class RunContext:
    """What every job needs. Picklable: a process-pool worker opens its own session and sees
    the run's stop (``StopSignal``); it has no request slots (its own pool bounds it)."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: Any = None,
        overwrite: bool = False,
        tags: dict[str, str] | None = None,
        session_options: dict[str, Any] | None = None,
        fmt: str = "cog",
        digests: dict[tuple[str, int, int, int], str] | None = None,
        compress: str | None = None,
    ) -> None:
        self.settings = settings
        self.digests = digests if digests is not None else {}  # files this run already hashed
        self.source = source_for(settings)  # the pixel source, chosen once from the provider
        self.overwrite = overwrite
        self.fmt = fmt
        self.compress = compress  # of cog and gtiff output (None: deflate); see raster.profiles
        self.tags = dict(tags or {})
        self.session_options = dict(session_options or {})
        self._session = session
        self.remote: Any = None  # on a Dask worker: finds that worker's session for the run
        self.tag = run_tag()  # in this run's temporary file names (never another run's)
        self.stop = StopSignal(Path(tempfile.gettempdir()) / f"stacfetch-{self.tag}.stop")
        self.quota: QuotaExhaustedError | None = None  # set when the monthly quota stops the run
        self.tile_workers = 1  # threads for the tiles of one acquisition (set by execute)
        # at most this many Process requests in flight (set by execute; None: no bound)
        self.request_slots: threading.BoundedSemaphore | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        state["request_slots"] = None
        return state

    def close(self) -> None:
        """Remove the stop's file (when no worker of the run is left to see it)."""
        self.stop.close()

    def for_workers(self, remote: Any) -> RunContext:
        """A copy for tasks on a cluster: ``remote.session()`` gives the worker's session."""
        twin = copy.copy(self)
        twin._session, twin.remote = None, remote
        twin.request_slots, twin.tile_workers = None, 1
        return twin

    def session(self) -> Any:
        if self.remote is not None:
            return self.remote.session()
        if self._session is None:
            self._session = open_session(self.settings, **self.session_options)
        return self._session


def run_job(job: Job, context: RunContext) -> Outcome:
    """Produce one acquisition's GeoTIFF (or find it complete). Never raises for service errors.

    Holds the destination's lock throughout: a second run (or a duplicate job) asking for
    the same file waits for the first, then finds the file complete and skips it.
    """
    def waiting() -> None:
        log.info("%s: another stacfetch run is writing it; waiting", job.destination.name)

    try:
        with destination_lock(job.destination, context.stop, on_wait=waiting):
            return _run_locked(job, context)
    except InterruptedError:  # stopped while waiting for the lock
        raise Interrupted("stopped before this acquisition was complete") from None
    except OSError as exc:  # the lock itself could not be made (EMFILE, ENOSPC, NFS): not unlocked
        return Outcome(job, "failed", error=f"cannot lock {job.destination} against other runs: "
                       f"{exc.strerror or exc}")


def _run_locked(job: Job, context: RunContext) -> Outcome:
    fmt = context.fmt
    found, digest, damaged = (None, None, False) if context.overwrite else \
        verified_format(job.destination, job.grid, job.bands, job.dtype, digests=context.digests)
    if damaged:
        log.warning("%s looks complete but its data is not what was written (checksum or "
                    "last block); fetching it again", job.destination.name)
    if found == fmt:
        return Outcome(job, "skipped", sha256=digest, identity=file_identity(job.destination))
    if found is not None:  # complete in another format: convert locally, no request
        try:
            convert_format(job.destination, fmt, job.bands, job.dtype, compress=context.compress)
            log.info("%s: converted to %s", job.destination.name, fmt)
            return Outcome(job, "written", bytes=job.destination.stat().st_size)
        except Exception as exc:
            log.warning("converting %s to %s failed (%s); downloading again",
                        job.destination.name, fmt, exc)
    requests_made = 0
    try:
        discard_partial(job.destination)  # any run's leftovers: we hold the lock
        session = context.session()
        acq = job.acquisition
        reader = context.source.open(job, session)
        with PartFile(job.destination, job.grid, job.bands, job.dtype, fmt=fmt, masked=True,
                      tag=context.tag, compress=context.compress) as part:
            if not context.source.concurrent_tiles:  # a STAC API's COG assets (sources.assets)
                for tile in job.tiles:
                    _check_stop(context)
                    part.write_tile(tile, reader.read_tile(tile))
                requests_made = reader.reads
            else:
                def one_tile(tile: Any) -> int:
                    return _process_tile(job, tile, part, reader, context)

                workers = min(max(1, context.tile_workers), len(job.tiles))
                if workers == 1:
                    requests_made = sum(one_tile(tile) for tile in job.tiles)
                else:  # few acquisitions, many tiles: keep every worker busy
                    with ThreadPoolExecutor(workers, thread_name_prefix="stacfetch-tile") as tiles:
                        requests_made = sum(tiles.map(one_tile, job.tiles))
            if context.stop is not None and context.stop.is_set():
                raise Interrupted("stopped before this acquisition was complete")
            part.commit(
                tags={**tags_for(acq, job.bands, provider=context.settings.provider),
                      **context.tags, **reader.tags()},
                band_descriptions=job.bands,
                items=[item.to_dict(transform_hrefs=False) for item in acq.items],
                scaling=reader.scaling(),
            )
        identity = file_identity(job.destination)
        return Outcome(job, "written", bytes=identity[1], requests=requests_made, sha256=part.sha256,
                       identity=identity)
    except QuotaExhaustedError as exc:
        _quota_stop(context, exc)
        raise
    except Interrupted:
        raise
    except StacfetchError as exc:
        log.debug("acquisition %s failed", job.acquisition.key, exc_info=True)
        return Outcome(job, "failed", requests=requests_made,
                       error=redact(str(exc)).replace("\n", " "))
    except OSError as exc:
        return Outcome(job, "failed", requests=requests_made,
                       error=f"cannot write {job.destination}: {exc.strerror or exc}")
    except Exception as exc:  # GDAL's own errors writing the .part (disk full: CPLE_*Error)
        if not isinstance(exc, (RasterioError, CPLE_BaseError)):
            raise
        return Outcome(job, "failed", requests=requests_made,
                       error=f"cannot write {job.destination} (disk full?): {exc}")


def _quota_stop(context: RunContext, exc: QuotaExhaustedError) -> None:
    """The monthly quota is used up: the whole run stops (see _execute), no worker sends more."""
    context.quota = exc
    context.stop.set()


def _check_stop(context: RunContext) -> None:
    if context.stop is not None and context.stop.is_set():
        raise Interrupted("stopped before this acquisition was complete")


def _process_tile(job: Job, tile: Any, part: Any, reader: Any, context: RunContext) -> int:
    """Request one tile from the Process API, validate it and write it; return requests made.

    Large responses are streamed to a spool file next to the ``.part`` (never held whole in
    memory); a response that is not the GeoTIFF asked for is asked again.
    """
    acq = job.acquisition
    expected = tile.width * tile.height * len(job.bands) * np.dtype(job.dtype).itemsize
    spool = part.spool_path(tile.name) if expected > SPOOL_BYTES else None
    for attempt in range(1, TILE_ATTEMPTS + 1):
        _check_stop(context)
        try:  # a 200 that is no GeoTIFF, or a wrong/truncated one: ask again
            with context.request_slots or contextlib.nullcontext():
                _check_stop(context)  # stopped while waiting for a slot: send nothing more
                try:
                    data = reader.read_tile(tile, spool=spool)
                except QuotaExhaustedError as exc:
                    _quota_stop(context, exc)  # before the slot is released to a waiting job
                    raise
            try:
                part.write_tile(tile, data)
            finally:
                if spool is not None:
                    spool.unlink(missing_ok=True)
            return attempt
        except InvalidResponseError as exc:
            if attempt == TILE_ATTEMPTS:
                raise InvalidResponseError(
                    f"{exc.message} (asked {TILE_ATTEMPTS} times)", hint=exc.hint
                ) from None
            log.warning("tile %s of %s: %s; asking again", tile.name, acq.key, exc.message)
    raise AssertionError("unreachable")


def in_jupyter() -> bool:
    """True inside a Jupyter (ipykernel) shell: no terminal, but a progress bar still shows."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _progress(total: int | None, enabled: bool | None) -> Any:
    """The acquisitions' progress bar (``tqdm.auto``: a widget in Jupyter, text on a terminal).

    ``enabled``: True always, False never, None (default) on a terminal or in Jupyter only.
    ``total`` None: not known yet (jobs still arriving from the search).
    """
    if enabled is False or total == 0:
        return None
    if enabled is None and not (sys.stderr.isatty() or in_jupyter()):
        return None
    return tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True, desc="acquisitions")


def execute(
    jobs: Iterable[Job],
    context: RunContext,
    *,
    executor: Executor | None = None,
    workers: int = 4,
    progress: bool | None = None,
    manifest_root: Path | None = None,
) -> GetResult:
    """Run every job; write the manifest of what is complete; return the result.

    ``jobs``: a list, or an iterable that yields them while it is still searching (each is
    submitted as it comes; the result lists them in time order). ``executor``: any
    ``concurrent.futures.Executor``, or a Dask ``distributed.Client`` (or its executor): see
    :mod:`stacfetch.cluster`.

    On Ctrl-C the workers stop at the next tile, unfinished ``.part`` files are removed,
    the manifest lists what is complete, and ``Interrupted`` (exit 130) is raised. The run
    uses stacfetch's GDAL settings (``raster.profiles.GDAL_OPTIONS``), restored after.
    """
    cluster_client = None
    if executor is not None and context.remote is None and type(executor).__module__.startswith("distributed"):
        from . import cluster  # the optional Dask extra: only for a Dask executor

        cluster_client = cluster.client_of(executor)
    if cluster_client is not None and jobs:
        with cluster.on_cluster(cluster_client, context) as (pool, remote, stats):
            result = execute(jobs, remote, executor=pool, workers=workers, progress=progress,
                             manifest_root=manifest_root)
        result.stats = {"cluster": stats}  # the shared limiter on the cluster
        return result
    with rasterio.Env(**gdal_options()):
        return _execute(jobs, context, executor=executor, workers=workers, progress=progress,
                        manifest_root=manifest_root)


def run_job_on_worker(job: Job, context: RunContext) -> Outcome:
    """``run_job`` in a process of a cluster, under stacfetch's GDAL settings there too."""
    with rasterio.Env(**gdal_options()):
        return run_job(job, context)


def _execute(
    jobs: Iterable[Job],
    context: RunContext,
    *,
    executor: Executor | None,
    workers: int,
    progress: bool | None,
    manifest_root: Path | None,
) -> GetResult:
    """Run ``jobs`` on ``executor`` (or an own thread pool of ``workers``), then write the manifest.

    ``progress`` None: a bar only on a terminal or in Jupyter (see :func:`_progress`).
    """
    started = time.monotonic()
    known = list(jobs) if isinstance(jobs, (list, tuple)) else None  # else jobs still arriving
    result = GetResult(jobs=[])
    own_executor = executor is None
    # `workers` requests in flight; twice as many job threads, so that a worker writing its
    # file does not leave a request slot idle (writing releases the GIL: GDAL, fsync)
    context.request_slots = threading.BoundedSemaphore(max(1, workers))
    pool: Executor = executor or ThreadPoolExecutor(max_workers=max(1, workers) * THREADS_PER_SLOT,
                                                    thread_name_prefix="stacfetch")
    if own_executor and known:
        # fewer acquisitions than workers (a large area): spread the workers over tiles
        context.tile_workers = min(MAX_TILE_WORKERS, max(1, workers // len(known)))
    bar = _progress(len(known) if known is not None else None, progress)
    futures: dict[Future[Outcome], Job] = {}
    try:
        task = run_job if context.remote is None else run_job_on_worker
        try:
            for job in (known if known is not None else jobs):  # a stream: submitted as they come
                if known is None and context.stop.is_set():
                    break  # the quota ran out while the search went on: nothing more is started
                result.jobs.append(job)
                futures[pool.submit(task, job, context)] = job
        except Exception:  # a broken executor: nothing submitted may go on writing after we return
            _wind_down(futures, result, context, wait=None)
            result.seconds = time.monotonic() - started
            result.manifest = _write_manifest(result, manifest_root)
            raise
        if bar is not None and known is None:
            bar.total = len(result.jobs)
            bar.refresh()
        for future in as_completed(futures):
            outcome = _outcome_of(future, futures[future])
            result.outcomes.append(outcome)
            if outcome.status == "written":  # in the manifest now: a run killed later keeps it
                _add_to_manifest(outcome, manifest_root)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{result.bytes / 1e6:.1f} MB, {len(result.failed)} failed")
            elif outcome.status == "failed":
                log.warning("%s failed: %s", outcome.job.acquisition.key, outcome.error)
    except (KeyboardInterrupt, Interrupted, QuotaExhaustedError) as exc:
        done = _stop(futures, context, result, started, manifest_root)
        quota = exc if isinstance(exc, QuotaExhaustedError) else context.quota
        if quota is not None:  # every further request would be refused: stopped at once
            raise QuotaExhaustedError(
                f"{quota.message}; {len(done)} of {len(result.jobs)} acquisitions complete"
                + (f" (manifest {result.manifest})" if result.manifest else ""),
                hint=quota.hint, status=quota.status, code=quota.code, url=quota.url,
            ) from None
        raise Interrupted(
            f"interrupted: {len(done)} of {len(result.jobs)} acquisitions complete"
            + (f"; manifest {result.manifest}" if result.manifest else ""),
            hint="run the same command again to download the rest",
        ) from None
    finally:
        if bar is not None:
            bar.close()
        if own_executor:
            pool.shutdown(wait=not context.stop.is_set(), cancel_futures=True)
        if all(f.done() for f in futures):  # else a worker still running must see the stop
            context.close()
    if known is None:  # jobs that arrived as an iterable: the plan's order, by time
        result.jobs.sort(key=lambda j: (j.acquisition.datetime, j.acquisition.key))
    order = {job.destination: i for i, job in enumerate(result.jobs)}
    result.outcomes.sort(key=lambda o: order[o.job.destination])
    result.seconds = time.monotonic() - started
    result.manifest = _write_manifest(result, manifest_root)
    return result


def _outcome_of(future: Future[Outcome], job: Job) -> Outcome:
    """The job's Outcome. A job that raised what no job should (not a stacfetch error: a bug,
    or an executor's own failure) is that acquisition's failure: the others go on and the
    manifest still lists what is complete. A stop (Ctrl-C, the quota) is raised."""
    try:
        return future.result()
    except (Interrupted, QuotaExhaustedError):
        raise
    except Exception as exc:
        log.debug("acquisition %s raised", job.acquisition.key, exc_info=exc)
        return Outcome(job, "failed", error=f"unexpected {type(exc).__name__}: {exc} (a bug in "
                       "stacfetch or the executor; please report it, with -v output)")


def _stop(futures: dict[Future[Outcome], Job], context: RunContext, result: GetResult,
          started: float, manifest_root: Path | None) -> set[Path]:
    """Stop every worker (within 1.5 s), keep what is complete, remove this run's ``.part``
    files of the rest, write the manifest; returns the complete files."""
    _wind_down(futures, result, context, wait=1.5)
    result.seconds = time.monotonic() - started
    result.manifest = _write_manifest(result, manifest_root)
    return {o.job.destination for o in result.outcomes if o.status in ("written", "skipped")}


def _wind_down(futures: dict[Future[Outcome], Job], result: GetResult, context: RunContext, *,
               wait: float | None) -> None:
    """Stop the run: cancel what has not started, let running jobs stop at their next tile
    (for ``wait`` seconds; None: until they have), keep their outcomes, and remove this run's
    temporaries of finished jobs that are not complete (never those of a job still running:
    it may be writing or renaming them; its ``PartFile`` removes them when it stops). A job
    that commits after the manifest was written is found complete, and listed, by the next run."""
    context.stop.set()
    for future in futures:
        future.cancel()
    wait_for(futures, timeout=wait)
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is None:
            outcome = future.result()
            if outcome not in result.outcomes:
                result.outcomes.append(outcome)
    done = {o.job.destination for o in result.outcomes if o.status in ("written", "skipped")}
    for future, job in futures.items():
        if not future.done():  # still running past the wait: its PartFile removes its own
            log.debug("%s still finishing; it removes its own temporaries", job.destination.name)
        elif job.destination not in done:
            discard_partial(job.destination, context.tag)


def _record(o: Outcome) -> dict[str, Any]:
    """The manifest record of a complete file: the worker's checksum, size and identity, taken
    under the file's lock; the manifest hashes what the worker did not, and again a file
    replaced since (another run)."""
    known = o.sha256 is not None and o.identity is not None
    return {"job": o.job, "path": o.job.destination, "sha256": o.sha256 if known else None,
            "size": o.identity[1] if known else None, "identity": o.identity}


def _add_to_manifest(outcome: Outcome, root: Path | None) -> None:
    """Add one file just written to the manifest (see ``stac.manifest.add_to_manifest``);
    a failure is logged: the manifest written at the end of the run still lists it."""
    if root is None:
        return
    try:
        add_to_manifest(root, _record(outcome))
    except (OSError, ValueError) as exc:
        log.warning("could not add %s to the manifest in %s yet: %s", outcome.job.destination.name,
                    root, exc)


def _write_manifest(result: GetResult, root: Path | None) -> Path | None:
    """Record every complete file with its checksum in the run's STAC catalog manifest."""
    complete = [o for o in result.outcomes if o.status in ("written", "skipped")]
    if not complete or root is None:
        return None
    records = [_record(o) for o in complete if o.job.destination.exists()]
    try:
        return write_manifest(root, records, skip_bad=True)  # a bad record costs only itself
    except OSError as exc:
        log.warning("could not write the manifest in %s: %s", root, exc)
        return None
