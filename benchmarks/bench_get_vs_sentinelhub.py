"""Benchmark: ``stacfetch get`` against sentinelhub-py, same job, one emulator, same run.

    python -m pip install -q 'sentinelhub>=3.10' psutil 'dask[distributed]'  # or: pip install -e '.[bench,dask]'
    python benchmarks/bench_get_vs_sentinelhub.py --scenario all --workers 4 --repeat 3
    python benchmarks/bench_get_vs_sentinelhub.py --scenario a --quick   # smoke run, ~1 min

Each client runs in its own subprocess (so CPU seconds and peak RSS are its own, from
``os.wait4``); the emulator runs in this process and its CPU is counted in no client. Request
counts come from the emulator's log, cleared between clients (the rate limits too).

Scenarios (the issue's; 45 N 10 E, 10 m, uint16 DN):

* ``a``: 50 ms latency per request, 20 km square, 3 bands, 6 acquisitions.
* ``b``: 300 requests/min as a token bucket with a burst of 5 (``--limit-mode window``: a
  sliding 60-s window instead), 429 + ``Retry-After`` in ms; 50 ms latency; 2 km, 12 bands,
  137 acquisitions. stacfetch told the rate, adaptive (not told), and adaptive again with the
  limits the previous run learnt (same cache folder; every other run gets a fresh one).
* ``c``: a processing-unit budget of 120 PU/min (a bucket of one minute's worth) plus
  300 requests/min (bucket, burst 5); 20 km, 4 bands, 10 acquisitions of ~20 PU each;
  stacfetch without flags, again remembering what it learnt, and told ``pu_limit=120``.
* ``rss``: one acquisition of 50 km x 50 km, 12 bands (tiled and stitched by stacfetch);
  sentinelhub-py with its own ``BBoxSplitter`` and no stitching.

A "dask" row runs stacfetch with a ``distributed.LocalCluster`` of 2 worker processes
(2 threads each; started before the clock) through ``client.get_executor()``.

Pace (the issue's definition): over the rate-limited phase only, from the first request
sent after the first Catalog page was answered to the last answer, against the best
possible: max((requests let through - burst) / request rate, (PU let through - PU bucket) /
PU rate). A client sending at exactly the refill rate scores about 100 %. Physical limit of
a run = max(server time of its successful requests / workers, best possible).
Prints figures and goals (medians over ``--repeat`` runs); asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ALL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
RGB = ("B02", "B03", "B04")
RGBN = ("B02", "B03", "B04", "B08")
LOCATION = (10.0, 45.0)  # lon, lat: four MGRS tiles overlap (duplicate items), one orbit a pass
CHILD_TIMEOUT_S = 900.0  # a client run longer than this is killed and reported as failed
MB = 1024 * 1024
# modules a stacfetch run uses, imported before the clock starts (old and new layout)
STACFETCH_MODULES = ("stacfetch.http.session", "stacfetch.catalog", "stacfetch.sources.process",
                     "stacfetch.run", "stacfetch.raster", "stacfetch.plan", "stacfetch.api",
                     "stacfetch.auth", "stacfetch.process", "stacfetch.write")  # new layout, old


# ------------------------------------------------------------------------------ job specs
@dataclass(frozen=True)
class Client:
    """One client run of a scenario."""

    label: str
    tool: str  # "stacfetch" | "sentinelhub"
    rpm: float | None = None  # stacfetch requests_per_minute
    pu_limit: float | None = None  # stacfetch pu_limit
    fmt: str = "cog"
    dask: bool = False
    cache_from: str | None = None  # reuse the cache folder (learnt limits) of this label's run
    slow_start: bool = True  # False: the adaptive limiter's slow start off (what it costs in a)


@dataclass
class Scenario:
    """One benchmark scenario: the job, the emulator's limits and which clients run."""

    name: str
    title: str
    size_m: float
    start: str
    end: str
    bands: tuple[str, ...] = ALL_BANDS
    latency_ms: float = 0.0
    rate_limit: int | None = None
    burst: int | None = None  # request token bucket size; None: sliding window
    pu_limit: float | None = None
    clients: list[Client] = field(default_factory=list)
    first_only: bool = False  # only the first acquisition (rss)

    @property
    def limited(self) -> bool:
        return self.rate_limit is not None or self.pu_limit is not None


def scenarios(quick: bool, mode: str, dask: bool) -> dict[str, Scenario]:
    """The scenarios; ``quick`` shrinks areas and periods for a smoke run."""
    dask_row = [Client("stacfetch dask", "stacfetch", dask=True)] if dask else []
    shpy = Client("sentinelhub-py", "sentinelhub")
    rpm = 300
    burst = None if mode == "window" else 5
    limit_text = f"{rpm} requests/min " + ("sliding window" if burst is None else f"bucket, burst {burst}")
    return {
        "a": Scenario("a", "latency 50 ms/request, equal concurrency",
                      size_m=5000 if quick else 20_000, start="2021-05-01", end="2021-05-15",
                      bands=RGB, latency_ms=50,
                      clients=[Client("stacfetch", "stacfetch"), Client("stacfetch raw", "stacfetch", fmt="raw"),
                               Client("stacfetch no slow start", "stacfetch", slow_start=False),
                               shpy, *dask_row]),
        "b": Scenario("b", f"{limit_text} (429 + Retry-After ms), 50 ms latency",
                      size_m=2000, start="2021-01-01", end="2021-03-31" if quick else "2021-12-07",
                      latency_ms=50, rate_limit=rpm, burst=burst,
                      clients=[Client(f"stacfetch rpm={rpm}", "stacfetch", rpm=rpm),
                               Client("stacfetch adaptive", "stacfetch"),
                               Client("stacfetch remembered", "stacfetch", cache_from="stacfetch adaptive"),
                               shpy, *dask_row]),
        "c": Scenario("c", f"120 PU/min (bucket of a minute) + {limit_text}, 50 ms latency",
                      size_m=20_000, start="2021-05-01", end="2021-05-10" if quick else "2021-05-25",
                      bands=RGBN, latency_ms=50, rate_limit=rpm, burst=burst, pu_limit=120,
                      clients=[Client("stacfetch", "stacfetch"),
                               Client("stacfetch remembered", "stacfetch", cache_from="stacfetch"),
                               Client("stacfetch pu=120", "stacfetch", rpm=rpm, pu_limit=120),
                               shpy, *dask_row]),
        "rss": Scenario("rss", "one acquisition, " + ("10 km" if quick else "50 km") + " square, "
                        "12 bands, 10 m",
                        size_m=10_000 if quick else 50_000, start="2021-05-03", end="2021-05-03",
                        clients=[Client("stacfetch", "stacfetch"),
                                 Client("stacfetch gtiff", "stacfetch", fmt="gtiff"), shpy],
                        first_only=True),
    }


def _build_query(spec: dict[str, Any]) -> Any:
    """stacfetch's Query for the job (``build_query`` lives in api or query, by version)."""
    try:
        from stacfetch.query import build_query  # type: ignore[attr-defined]
    except ImportError:
        from stacfetch.api import build_query
    return build_query(list(spec["location"]), spec["start"], spec["end"], size=spec["size_m"],
                       bands=list(spec["bands"]), resolution=10.0)


# --------------------------------------------------------------------------- child side
def _child_stacfetch(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the job through stacfetch's Python API; return in-process figures."""
    # everything the job uses, imported before the clock starts (sentinelhub-py's child
    # imports its whole API first too); stacfetch would otherwise import these lazily
    import pystac_client  # noqa: F401
    import rasterio  # noqa: F401

    for name in STACFETCH_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from stacfetch.api import get_query
    from stacfetch.config import load_settings

    with contextlib.suppress(ImportError):  # what the CLI, the process owner, does (mallopt)
        from stacfetch.run import return_large_buffers_to_the_os

        return_large_buffers_to_the_os()
    if not spec.get("slow_start", True):  # measuring what the slow start costs: switch it off
        from stacfetch.http import ratelimit

        ratelimit.RateLimiter._slow_start = lambda self: False  # type: ignore[method-assign]
        ratelimit.PU_STAGGER = 0.0  # and the stagger of costly requests while no PU budget is known
    cluster = client = executor = None
    if spec["dask"]:
        from distributed import Client as DaskClient
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=max(1, spec["workers"] // 2),
                               processes=True, dashboard_address=None)
        client = DaskClient(cluster)
        executor = client.get_executor()
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        query = _build_query(spec)
        settings = load_settings(environ={}, env_file=None, provider="sentinelhub",
                                 client_id=spec["client_id"], client_secret=spec["client_secret"],
                                 base_url=spec["base_url"], token_url=spec["token_url"],
                                 output_dir=spec["out_dir"])
        options: dict[str, Any] = {"workers": spec["workers"], "requests_per_minute": spec["rpm"],
                                   "fmt": spec["format"]}
        if spec["pu_limit"] is not None:
            if not _has_option("pu_limit"):
                raise SystemExit("this stacfetch has no pu_limit option")
            options["pu_limit"] = spec["pu_limit"]
        if executor is not None:
            options["executor"] = executor
        result = get_query(query, settings=settings, **options)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return {"wall": wall, "cpu": cpu, "import_cpu": c0,
            "files": len(result.written), "failed": len(result.failed),
            "errors": [o.error for o in result.failed][:3], "stats": result.stats}


def _has_option(name: str) -> bool:
    """Whether ``get_query`` takes option ``name`` (directly, or through ``build_options``)."""
    from stacfetch.api import get_query

    if name in inspect.signature(get_query).parameters:
        return True
    try:
        from stacfetch.query import build_options  # type: ignore[attr-defined]
    except ImportError:
        return False
    return name in inspect.signature(build_options).parameters


def _evalscript(bands: list[str]) -> str:
    return (
        "//VERSION=3\n"
        "function setup() {\n"
        "  return {input: [{bands: " + json.dumps(bands) + ', units: "DN"}],\n'
        '          output: {bands: ' + str(len(bands)) + ', sampleType: "UINT16"}};\n'
        "}\n"
        "function evaluatePixel(s) {\n"
        "  return [" + ", ".join(f"s.{b}" for b in bands) + "];\n"
        "}\n"
    )


def _child_sentinelhub(spec: dict[str, Any]) -> dict[str, Any]:
    """sentinelhub-py's documented recipe: Catalog -> filter_times(1 h) -> one request per time."""
    from sentinelhub import (
        CRS,
        BBox,
        BBoxSplitter,
        DataCollection,
        MimeType,
        SentinelHubCatalog,
        SentinelHubDownloadClient,
        SentinelHubRequest,
        SHConfig,
        bbox_to_dimensions,
        filter_times,
    )

    t0, c0 = time.perf_counter(), time.process_time()
    config = SHConfig(use_defaults=True, sh_base_url=spec["base_url"], sh_token_url=spec["token_url"],
                      sh_client_id=spec["client_id"], sh_client_secret=spec["client_secret"])
    collection = DataCollection.SENTINEL2_L2A.define_from("s2l2a", service_url=config.sh_base_url)
    bbox = BBox(tuple(spec["bounds"]), crs=CRS(spec["epsg"]))
    start = datetime.fromisoformat(spec["start"]).replace(tzinfo=timezone.utc)
    end = datetime.fromisoformat(spec["end"]).replace(tzinfo=timezone.utc) + timedelta(days=1)
    search = SentinelHubCatalog(config=config).search(
        collection, bbox=bbox, time=(start, end - timedelta(seconds=1)),
        fields={"include": ["id", "properties.datetime"], "exclude": []})
    times = filter_times(search.get_timestamps(), timedelta(hours=1))
    if spec["first_only"]:
        times = times[:1]
    width, height = spec["width"], spec["height"]
    pieces = [(bbox, (width, height))]
    if max(width, height) > 2500:  # the service's limit: split with its own splitter, no stitching
        shape = (math.ceil(width / 2500), math.ceil(height / 2500))
        parts = BBoxSplitter([bbox], bbox.crs, shape).get_bbox_list()
        pieces = [(p, bbox_to_dimensions(p, resolution=10)) for p in parts]
    evalscript = _evalscript(list(spec["bands"]))
    requests = [
        SentinelHubRequest(
            evalscript=evalscript,
            input_data=[SentinelHubRequest.input_data(
                data_collection=collection, time_interval=(t - timedelta(hours=1), t + timedelta(hours=1)))],
            responses=[SentinelHubRequest.output_response("default", MimeType.TIFF)],
            bbox=piece, size=size, data_folder=spec["out_dir"], config=config,
        )
        for t in times for piece, size in pieces
    ]
    downloads = []
    for request in requests:
        download = request.download_list[0]
        download.save_response, download.return_data = True, False  # as request.save_data() does
        downloads.append(download)
    SentinelHubDownloadClient(config=config).download(downloads, max_threads=spec["workers"])
    files = sum(1 for _ in Path(spec["out_dir"]).rglob("response.tiff"))
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "import_cpu": c0,
            "files": files,
            "failed": len(downloads) - files, "errors": [], "stats": {}}


def _peak_rss_kb() -> int | None:
    """This process's own peak RSS (Linux ``VmHWM``), or None.

    ``ru_maxrss`` is no good here: a child inherits its parent's peak at fork and keeps it
    across exec, so after the emulator (in the parent) has rendered a 50 km mosaic every
    client started later "peaked" at ~800 MB even for ``python -c pass``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def child_main(spec_path: str) -> int:
    """Entry point of a client subprocess: run, then write the figures as JSON."""
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    warnings.simplefilter("default")
    spec = json.loads(Path(spec_path).read_text())
    run = _child_stacfetch if spec["client"] == "stacfetch" else _child_sentinelhub
    out = run(spec)
    out["maxrss_self_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["vmhwm_kb"] = _peak_rss_kb()
    Path(spec["result_path"]).write_text(json.dumps(out, default=str))
    return 0


# -------------------------------------------------------------------------- parent side
@dataclass
class Row:
    """Figures of one client run."""

    label: str
    ok: bool = False
    note: str = ""
    wall_job: float = math.nan
    wall_process: float = math.nan
    cpu_process: float = math.nan
    cpu_job: float = math.nan
    cpu_start: float = math.nan  # interpreter start-up and imports, before the job
    rss_mb: float = math.nan
    files: int = 0
    out_mb: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    r429: dict[str, int] = field(default_factory=dict)
    pu_429: int = 0
    served: int = 0
    server_s: float = 0.0
    emulator_cpu: float = math.nan  # CPU seconds of this process (the emulator) while the client ran
    pu_served: float = 0.0
    best_s: float = math.nan  # best possible duration of the rate-limited phase
    phase_s: float = math.nan  # its measured duration
    limit_s: float = math.nan
    first_process_s: float = math.nan  # from the process start to the first Process request
    last_catalog_s: float = math.nan  # from the process start to the last Catalog answer
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def total_429(self) -> int:
        return sum(self.r429.values())

    @property
    def api_requests(self) -> int:
        return self.counts.get("process", 0) + self.counts.get("catalog", 0)

    @property
    def share_429(self) -> float:
        return self.total_429 / self.api_requests if self.api_requests else 0.0

    @property
    def pace(self) -> float:
        return self.best_s / self.phase_s if self.phase_s > 0 and self.best_s > 0 else math.nan

    @property
    def efficiency(self) -> float:
        return self.limit_s / self.wall_job if self.wall_job > 0 else math.nan


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, resource.struct_rusage | None]:
    """Wait for ``proc`` at most ``timeout`` s with ``os.wait4``: its own rusage, no one else's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        time.sleep(0.05)
    proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = -9
    return -9, usage


def _units(record: Any) -> float:
    """PU of a served Process request, from its logged body (the emulator's own rule)."""
    from stacfetch.testing.render import parse_request, processing_units

    try:
        return processing_units(parse_request(record.body))
    except Exception:  # noqa: BLE001 - a body the emulator refused costs nothing
        return 0.0


def measure_pace(row: Row, records: list[Any], scen: Scenario) -> None:
    """The rate-limited phase of a run (see the module docstring) and its best possible length."""
    api = sorted((r for r in records if r.kind in ("catalog", "process")), key=lambda r: r.started)
    first_page = next((r for r in api if r.kind == "catalog"), None)
    if not scen.limited or first_page is None:
        return
    after = first_page.started + first_page.duration
    phase = [r for r in api if r.started >= after]
    if not phase:
        return
    ok = [r for r in phase if r.status == 200]
    best = 0.0
    if scen.rate_limit:
        burst = scen.burst if scen.burst is not None else scen.rate_limit
        best = max(best, (len(ok) - burst) / scen.rate_limit * 60.0)
    if scen.pu_limit:
        pus = sum(_units(r) for r in ok if r.kind == "process")
        best = max(best, (pus - scen.pu_limit) / scen.pu_limit * 60.0)
    row.best_s = best
    row.phase_s = max(r.started + r.duration for r in phase) - min(r.started for r in phase)


def run_client(client: Client, scen: Scenario, grid: Any, emu: Any, workers: int, work: Path,
               run_no: int) -> Row:
    """Run one client in a subprocess against ``emu``; collect its figures and the emulator's."""
    from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

    slug = client.label.replace(" ", "_").replace("=", "")
    out_dir = work / slug
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    # learnt limits live in the user's cache folder: a fresh one per run unless told to reuse one
    cache_slug = (client.cache_from or client.label).replace(" ", "_").replace("=", "")
    cache_dir = work / f"cache-{scen.name}-{run_no}-{cache_slug}"
    cache_dir.mkdir(exist_ok=True)
    spec = {
        "client": client.tool, "location": LOCATION, "size_m": scen.size_m, "start": scen.start,
        "end": scen.end, "bands": list(scen.bands), "workers": workers, "rpm": client.rpm,
        "pu_limit": client.pu_limit, "format": client.fmt, "dask": client.dask,
        "first_only": scen.first_only, "slow_start": client.slow_start,
        "base_url": emu.url, "token_url": emu.token_url, "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET, "out_dir": str(out_dir),
        "result_path": str(work / f"{slug}.result.json"),
        "bounds": list(grid.bounds), "epsg": int(grid.crs.split(":")[1]),
        "width": grid.width, "height": grid.height,
    }
    spec_path = work / f"{slug}.spec.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result_path"]).unlink(missing_ok=True)
    env = dict(os.environ, OAUTHLIB_INSECURE_TRANSPORT="1",  # sentinelhub-py: http token URL
               XDG_CACHE_HOME=str(cache_dir))
    emu.log.clear()
    emu.faults.reset_window()
    row = Row(client.label)
    log_path = work / f"{slug}.log"
    with log_path.open("wb") as log_file:
        t0, started, emu_cpu0 = time.perf_counter(), time.time(), time.process_time()
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(spec_path)],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env)
        code, usage = _wait(proc, CHILD_TIMEOUT_S)
        row.wall_process = time.perf_counter() - t0
        row.emulator_cpu = time.process_time() - emu_cpu0
    if usage is not None:
        row.cpu_process = usage.ru_utime + usage.ru_stime
        row.rss_mb = usage.ru_maxrss * 1024 / MB  # KiB on Linux
    result_file = Path(spec["result_path"])
    if code == 0 and result_file.exists():
        res = json.loads(result_file.read_text())
        row.ok = res["failed"] == 0
        row.wall_job, row.cpu_job, row.files = res["wall"], res["cpu"], res["files"]
        row.cpu_start = res.get("import_cpu", math.nan)
        if res.get("vmhwm_kb"):  # the child's own peak (see _peak_rss_kb)
            row.rss_mb = res["vmhwm_kb"] * 1024 / MB
        row.stats = res.get("stats") or {}
        if res["failed"]:
            row.note = f"{res['failed']} failed: {res['errors']}"
    else:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        row.note = f"exit {code}: " + " | ".join(tail)
    row.out_mb = sum(p.stat().st_size for p in out_dir.rglob("*.tif*") if p.is_file()) / MB
    records = list(emu.log)
    for kind in ("token", "catalog", "process"):
        row.counts[kind] = sum(1 for r in records if r.kind == kind)
        row.r429[kind] = sum(1 for r in records if r.kind == kind and r.status == 429)
    row.pu_429 = sum(1 for r in records if r.status == 429 and (r.fault or "").startswith("pu_"))
    served = [r for r in records if r.kind in ("catalog", "process") and r.status == 200]
    row.served = len(served)
    process = [r.started for r in records if r.kind == "process"]
    catalog = [r.started + r.duration for r in records if r.kind == "catalog"]
    row.first_process_s = min(process) - started if process else math.nan
    row.last_catalog_s = max(catalog) - started if catalog else math.nan
    row.server_s = sum(r.duration for r in served)
    measure_pace(row, records, scen)
    if DUMP_DIR is not None:  # --dump: every request the emulator saw, for a timeline
        DUMP_DIR.mkdir(parents=True, exist_ok=True)
        with (DUMP_DIR / f"{scen.name}-{run_no + 1}-{slug}.jsonl").open("w") as fh:
            for r in sorted(records, key=lambda r: r.started):
                fh.write(json.dumps({"kind": r.kind, "status": r.status, "fault": r.fault,
                                     "started": r.started, "duration": round(r.duration, 4)}) + "\n")
    row.limit_s = max(row.server_s / workers, row.best_s if row.best_s > 0 else 0.0)
    shutil.rmtree(out_dir, ignore_errors=True)
    return row


DUMP_DIR: Path | None = None  # --dump


def _fmt(value: Any, spec: str = ".2f") -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def table(rows: list[Row]) -> str:
    """Rows = metrics, columns = clients."""
    metrics: list[tuple[str, Any]] = [
        ("files written", lambda r: str(r.files)),
        ("wall time, job (s)", lambda r: _fmt(r.wall_job)),
        ("wall time, process (s)", lambda r: _fmt(r.wall_process)),
        ("CPU seconds, process", lambda r: _fmt(r.cpu_process)),
        ("CPU seconds, job only", lambda r: _fmt(r.cpu_job)),
        ("CPU s, start-up+imports", lambda r: _fmt(r.cpu_start)),
        ("peak RSS (MB, VmHWM)", lambda r: _fmt(r.rss_mb, ".0f")),
        ("Process requests", lambda r: str(r.counts.get("process", 0))),
        ("Catalog requests", lambda r: str(r.counts.get("catalog", 0))),
        ("token requests", lambda r: str(r.counts.get("token", 0))),
        ("first Process request (s)", lambda r: _fmt(r.first_process_s)),
        ("last Catalog answer (s)", lambda r: _fmt(r.last_catalog_s)),
        ("429s received", lambda r: f"{r.total_429} ({r.share_429:.1%})"),
        ("  of them PU 429s", lambda r: str(r.pu_429)),
        ("server time, served (s)", lambda r: _fmt(r.server_s)),
        ("emulator CPU s (parent)", lambda r: _fmt(r.emulator_cpu)),
        ("limited phase: best (s)", lambda r: _fmt(r.best_s)),
        ("limited phase: took (s)", lambda r: _fmt(r.phase_s)),
        ("pace", lambda r: _pct(r.pace)),
        ("physical limit (s)", lambda r: _fmt(r.limit_s)),
        ("limit / wall", lambda r: _pct(r.efficiency)),
        ("output (MB)", lambda r: _fmt(r.out_mb, ".1f")),
    ]
    width0 = max(len(m[0]) for m in metrics)
    widths = [max(len(r.label), 14) for r in rows]
    lines = [" " * width0 + " | " + " | ".join(r.label.rjust(w) for r, w in zip(rows, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    for name, get in metrics:
        lines.append(name.ljust(width0) + " | " + " | ".join(get(r).rjust(w) for r, w in zip(rows, widths, strict=True)))
    for r in rows:
        if r.note:
            lines.append(f"note {r.label}: {r.note[:400]}")
        if r.stats:
            lines.append(f"stats {r.label}: {r.stats}")
    return "\n".join(lines)


def _spread(values: list[float], spec: str, scale: float = 1.0) -> str:
    """median (min-max) of the finite values."""
    vals = sorted(v * scale for v in values if not math.isnan(v))
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return format(med, spec)
    return f"{format(med, spec)} ({format(vals[0], spec)}-{format(vals[-1], spec)})"


def summary(runs: list[list[Row]]) -> str:
    """Per client: wall time, 429 share and pace as median (min-max) over the runs."""
    labels = [r.label for r in runs[0]]
    head = (f"{'client':<22} | {'runs ok':>7} | {'wall, job (s)':>22} | {'CPU, job (s)':>18} | "
            f"{'emulator CPU (s)':>18} | {'429 share (%)':>20} | {'pace (%)':>16} | {'PU 429s':>7}")
    lines = [head, "-" * len(head)]
    for i, label in enumerate(labels):
        rows = [run[i] for run in runs]
        ok = sum(r.ok for r in rows)
        lines.append(f"{label:<22} | {ok:>3}/{len(rows):<3} | {_spread([r.wall_job for r in rows], '.2f'):>22} | "
                     f"{_spread([r.cpu_job for r in rows], '.2f'):>18} | "
                     f"{_spread([r.emulator_cpu for r in rows], '.2f'):>18} | "
                     f"{_spread([r.share_429 for r in rows], '.1f', 100):>20} | "
                     f"{_spread([r.pace for r in rows], '.0f', 100):>16} | "
                     f"{_spread([float(r.pu_429) for r in rows], '.0f'):>7}")
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _median(rows: list[Row], attr: str) -> float:
    vals = [getattr(r, attr) for r in rows if r.ok and not math.isnan(getattr(r, attr))]
    return statistics.median(vals) if vals else math.nan


def goals(scen: Scenario, runs: list[list[Row]]) -> list[str]:
    """The issue's floors for this scenario on the medians, each with PASS/MISS."""
    cols = {r.label: [run[i] for run in runs] for i, r in enumerate(runs[0])}
    out: list[str] = []
    for label, rows in cols.items():
        failed = [r for r in rows if not r.ok]
        if failed and label.startswith("stacfetch"):
            out.append(f"MISS  {label}: {len(failed)} run(s) failed ({failed[0].note[:200]})")
    shpy = _median(cols.get("sentinelhub-py", []), "wall_job")

    def med(label: str, attr: str) -> float:
        return _median(cols.get(label, []), attr)

    def pace_goal(label: str, pace: float, share: float) -> None:
        if label not in cols:
            return
        p, s = med(label, "pace"), med(label, "share_429")
        out.append(f"{_mark(p >= pace)}  {label}: pace {_pct(p)} >= {pace:.0%}")
        out.append(f"{_mark(s < share)}  {label}: {s:.1%} of requests answered 429 < {share:.0%}")

    if scen.name == "a":
        for label in ("stacfetch", "stacfetch raw"):
            w = med(label, "wall_job")
            out.append(f"{_mark(w <= 0.9 * shpy)}  {label}: wall {w:.2f} s <= 0.9 x sentinelhub-py "
                       f"{shpy:.2f} s")
    elif scen.name == "b":
        pace_goal("stacfetch rpm=300", 0.97, 0.01)
        pace_goal("stacfetch adaptive", 0.95, 0.03)
        pace_goal("stacfetch remembered", 0.95, 0.01)
        for label in cols:
            if label.startswith("stacfetch"):
                w = med(label, "wall_job")
                out.append(f"{_mark(w <= shpy)}  {label}: wall {w:.1f} s <= sentinelhub-py {shpy:.1f} s")
    elif scen.name == "c":
        pace_goal("stacfetch", 0.90, 0.05)
        pace_goal("stacfetch remembered", 0.90, 0.05)
        pace_goal("stacfetch pu=120", 0.90, 0.01)
    elif scen.name == "rss":
        for label in ("stacfetch", "stacfetch gtiff"):
            m = med(label, "rss_mb")
            out.append(f"{_mark(m < 300)}  {label}: peak RSS {m:.0f} MB < 300 MB")
    if "stacfetch dask" in cols and scen.limited:
        s = med("stacfetch dask", "share_429")
        out.append(f"{_mark(s < 0.05)}  stacfetch dask: {s:.1%} of requests answered 429 < 5 %")
    return out


def run_scenario(scen: Scenario, workers: int, work: Path, repeat: int) -> tuple[str, list[str]]:
    """Start one emulator with the scenario's limits, run every client ``repeat`` times."""
    from stacfetch.plan import grid_for
    from stacfetch.testing.emulator import Emulator
    from stacfetch.testing.faults import Faults

    query = _build_query({"location": LOCATION, "start": scen.start, "end": scen.end,
                          "size_m": scen.size_m, "bands": scen.bands})
    grid = grid_for(query.geometry, query.crs, query.resolution)
    faults = Faults(latency_ms=scen.latency_ms, rate_limit_per_minute=scen.rate_limit,
                    rate_limit_burst=scen.burst, pu_limit_per_minute=scen.pu_limit)
    runs: list[list[Row]] = []
    texts = []
    with Emulator(faults=faults) as emu:
        for run_no in range(repeat):
            rows = []
            for client in scen.clients:
                print(f"  [{scen.name} {run_no + 1}/{repeat}] running {client.label} ...",
                      file=sys.stderr, flush=True)
                rows.append(run_client(client, scen, grid, emu, workers, work, run_no))
            runs.append(rows)
            texts.append(f"-- run {run_no + 1}\n" + table(rows))
            print(texts[-1], flush=True)
    head = (f"== scenario {scen.name}: {scen.title}; {LOCATION[1]:.2f}N {LOCATION[0]:.2f}E, "
            f"{scen.size_m / 1000:g} km square = {grid.width} x {grid.height} px, "
            f"{len(scen.bands)} bands uint16, {scen.start}..{scen.end}, workers={workers}, "
            f"runs={repeat}; median (min-max)")
    return head + "\n" + summary(runs), goals(scen, runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=("a", "b", "c", "rss", "all"), default="all")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each client (medians)")
    parser.add_argument("--limit-mode", choices=("bucket", "window"), default="bucket",
                        help="the emulator's request limit in b and c (default: token bucket, burst 5)")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask row")
    parser.add_argument("--only", help="comma-separated client labels to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--dump", type=Path, help="write each client's request log (JSON lines) here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child)
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be 1..64")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be 1..20")
    global DUMP_DIR
    DUMP_DIR = args.dump
    chosen = ["a", "b", "c", "rss"] if args.scenario == "all" else [args.scenario]
    table_of = scenarios(args.quick, args.limit_mode, dask=not args.no_dask)
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        for scen in table_of.values():
            keep = [c for c in scen.clients if c.label in wanted]
            # a "remembered" run needs the run it remembers
            needed = {c.cache_from for c in keep if c.cache_from}
            scen.clients = [c for c in scen.clients if c.label in wanted or c.label in needed]
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}; emulator in the parent process (its CPU is counted in no client); "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-get-") as tmp:
        for name in chosen:
            if not table_of[name].clients:
                continue
            text, marks = run_scenario(table_of[name], args.workers, Path(tmp), args.repeat)
            print("\n" + text + "\ngoals (medians):")
            for line in marks:
                print("  " + line)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
