"""Benchmark: ``stacfetch get`` against sentinelhub-py, same job, one emulator, same run.

    python -m pip install -q 'sentinelhub>=3.10' psutil      # or: pip install -e '.[bench]'
    python benchmarks/bench_get_vs_sentinelhub.py --scenario all --workers 4
    python benchmarks/bench_get_vs_sentinelhub.py --scenario a --quick   # smoke run, ~1 min

Each client runs in its own subprocess (so CPU seconds and peak RSS are its own, from
``os.wait4``); the emulator runs in this process and its CPU is counted in neither. Request
counts come from the emulator's log, cleared between clients (the rate-limit window too).

Scenarios:

* ``a``: 50 ms latency per request, ~40 acquisitions, both clients at ``--workers``.
* ``b``: the emulator enforces 300 requests per sliding minute (429 + ``Retry-After`` in
  ms, like CDSE's free tier); a job of ~440 acquisitions. stacfetch runs twice: told the
  rate (``requests_per_minute=300``) and adaptive (not told).
* ``rss``: one acquisition of 50 km x 50 km, 12 bands, 10 m (5000 x 5000 px, tiled and
  stitched by stacfetch); sentinelhub-py with its own ``BBoxSplitter`` and no stitching.

Physical limit of a run = max(sum of server time of its successful Process/Catalog
requests / workers, those requests / allowed rate). Prints figures and goals; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# 12 spectral bands of Sentinel-2 L2A, DN as uint16 (stacfetch's "all" preset)
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
LOCATION = (10.0, 45.0)  # lon, lat: four MGRS tiles overlap (duplicate items), one orbit a pass
CHILD_TIMEOUT_S = 900.0  # a client run longer than this is killed and reported as failed
MB = 1024 * 1024


# ------------------------------------------------------------------------------ job specs
@dataclass
class Scenario:
    """One benchmark scenario: the job, the emulator's faults and which clients run."""

    name: str
    title: str
    size_m: float
    start: str
    end: str
    latency_ms: float = 0.0
    rate_limit: int | None = None
    # (label, client, rpm, stacfetch output format)
    clients: list[tuple[str, str, float | None, str]] = field(default_factory=list)
    first_only: bool = False  # only the first acquisition (rss)


def scenarios(quick: bool) -> dict[str, Scenario]:
    """The scenarios; ``quick`` shrinks areas, periods and the rate limit for a smoke run."""
    pair = [("stacfetch", "stacfetch", None, "cog"), ("stacfetch raw", "stacfetch", None, "raw"),
            ("sentinelhub-py", "sentinelhub", None, "")]
    limit = 20 if quick else 300
    return {
        "a": Scenario("a", "latency 50 ms/request, equal concurrency",
                      size_m=3000, start="2021-05-01" if quick else "2021-04-01",
                      end="2021-05-20" if quick else "2021-06-30",
                      latency_ms=50, clients=pair),
        "b": Scenario("b", f"rate limit {limit} requests/min (429 + Retry-After ms), 50 ms latency",
                      size_m=1000 if quick else 3000, start="2021-01-01" if quick else "2020-01-01",
                      end="2021-02-28" if quick else "2022-12-31",
                      latency_ms=50, rate_limit=limit,
                      clients=[("stacfetch rpm=" + str(limit), "stacfetch", float(limit), "cog"),
                               ("stacfetch adaptive", "stacfetch", None, "cog"),
                               ("stacfetch raw rpm=" + str(limit), "stacfetch", float(limit), "raw"),
                               ("sentinelhub-py", "sentinelhub", None, "")]),
        "rss": Scenario("rss", "one acquisition, " + ("10 km" if quick else "50 km") + " square, "
                        "12 bands, 10 m",
                        size_m=10_000 if quick else 50_000, start="2021-05-03", end="2021-05-03",
                        clients=[pair[0], ("stacfetch gtiff", "stacfetch", None, "gtiff"), pair[2]],
                        first_only=True),
    }


# --------------------------------------------------------------------------- child side
def _child_stacfetch(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the job through stacfetch's Python API; return in-process figures."""
    # everything the job uses, imported before the clock starts (sentinelhub-py's child
    # imports its whole API first too); stacfetch would otherwise import these lazily
    import pystac_client  # noqa: F401
    import rasterio  # noqa: F401

    import stacfetch.catalog
    import stacfetch.http.session
    import stacfetch.raster
    import stacfetch.run
    import stacfetch.sources.process  # noqa: F401
    from stacfetch.api import build_query, get_query
    from stacfetch.config import load_settings

    t0, c0 = time.perf_counter(), time.process_time()
    query = build_query(list(spec["location"]), spec["start"], spec["end"], size=spec["size_m"],
                        bands=list(BANDS), resolution=10.0)
    settings = load_settings(environ={}, env_file=None, provider="sentinelhub",
                             client_id=spec["client_id"], client_secret=spec["client_secret"],
                             base_url=spec["base_url"], token_url=spec["token_url"],
                             output_dir=spec["out_dir"])
    result = get_query(query, settings=settings, workers=spec["workers"],
                       requests_per_minute=spec["rpm"], fmt=spec["format"])
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "import_cpu": c0,
            "files": len(result.written), "failed": len(result.failed),
            "errors": [o.error for o in result.failed][:3], "stats": result.stats}


_EVALSCRIPT = (
    "//VERSION=3\n"
    "function setup() {\n"
    "  return {input: [{bands: " + json.dumps(list(BANDS)) + ', units: "DN"}],\n'
    '          output: {bands: ' + str(len(BANDS)) + ', sampleType: "UINT16"}};\n'
    "}\n"
    "function evaluatePixel(s) {\n"
    "  return [" + ", ".join(f"s.{b}" for b in BANDS) + "];\n"
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
    requests = [
        SentinelHubRequest(
            evalscript=_EVALSCRIPT,
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
    served: int = 0
    server_s: float = 0.0
    limit_s: float = math.nan
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


def run_client(label: str, client: str, rpm: float | None, fmt: str, scen: Scenario, grid: Any,
                emu: Any, workers: int, work: Path) -> Row:
    """Run one client in a subprocess against ``emu``; collect its figures and the emulator's."""
    from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

    slug = label.replace(" ", "_").replace("=", "")
    out_dir = work / slug
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    spec = {
        "client": client, "location": LOCATION, "size_m": scen.size_m, "start": scen.start,
        "end": scen.end, "workers": workers, "rpm": rpm, "format": fmt, "first_only": scen.first_only,
        "base_url": emu.url, "token_url": emu.token_url, "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET, "out_dir": str(out_dir),
        "result_path": str(work / f"{slug}.result.json"),
        "bounds": list(grid.bounds), "epsg": int(grid.crs.split(":")[1]),
        "width": grid.width, "height": grid.height,
    }
    spec_path = work / f"{slug}.spec.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result_path"]).unlink(missing_ok=True)
    env = dict(os.environ, OAUTHLIB_INSECURE_TRANSPORT="1")  # sentinelhub-py: http token URL
    emu.log.clear()
    emu.faults.reset_window()
    row = Row(label)
    log_path = work / f"{slug}.log"
    with log_path.open("wb") as log_file:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(spec_path)],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env)
        code, usage = _wait(proc, CHILD_TIMEOUT_S)
        row.wall_process = time.perf_counter() - t0
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
    for kind in ("token", "catalog", "process"):
        row.counts[kind] = emu.log.count(kind=kind)
        row.r429[kind] = emu.log.count(kind=kind, status=429)
    served = [r for r in emu.log if r.kind in ("catalog", "process") and r.status == 200]
    row.served = len(served)
    row.server_s = sum(r.duration for r in served)
    by_workers = row.server_s / workers
    by_rate = row.served / scen.rate_limit * 60.0 if scen.rate_limit else 0.0
    row.limit_s = max(by_workers, by_rate)
    shutil.rmtree(out_dir, ignore_errors=True)
    return row


def _fmt(value: Any, spec: str = ".2f") -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


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
        ("429s received", lambda r: f"{r.total_429} ({r.share_429:.1%})"),
        ("server time, served (s)", lambda r: _fmt(r.server_s)),
        ("physical limit (s)", lambda r: _fmt(r.limit_s)),
        ("limit / wall", lambda r: f"{r.efficiency:.0%}" if not math.isnan(r.efficiency) else "-"),
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


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def goals(scen: Scenario, rows: list[Row]) -> list[str]:
    """The issue's goals for this scenario, each with PASS/MISS and the figures behind it."""
    by = {r.label: r for r in rows}
    shpy = by.get("sentinelhub-py")
    ours = [r for r in rows if r.label.startswith("stacfetch")]
    out: list[str] = []
    for r in ours:
        if not r.ok:
            out.append(f"MISS  {r.label}: the run failed ({r.note[:200]})")
            continue
        if scen.name == "rss":
            out.append(f"{_mark(r.rss_mb < 300)}  {r.label}: peak RSS {r.rss_mb:.0f} MB < 300 MB")
            continue
        if shpy is not None and shpy.ok:
            out.append(f"{_mark(r.wall_job <= shpy.wall_job)}  {r.label}: wall {r.wall_job:.2f} s <= "
                       f"sentinelhub-py {shpy.wall_job:.2f} s (same concurrency)")
            out.append(f"{_mark(r.cpu_process <= shpy.cpu_process / 2)}  {r.label}: CPU "
                       f"{r.cpu_process:.2f} s <= half of sentinelhub-py's {shpy.cpu_process:.2f} s "
                       f"(start-up and imports alone: {r.cpu_start:.2f} s)")
            out.append(f"{_mark(r.cpu_job <= shpy.cpu_job / 2)}  {r.label}: CPU of the job "
                       f"(after imports) {r.cpu_job:.2f} s <= half of sentinelhub-py's "
                       f"{shpy.cpu_job:.2f} s")
        out.append(f"{_mark(r.efficiency >= 0.9)}  {r.label}: {r.efficiency:.0%} of the physical "
                   f"limit ({r.limit_s:.2f} s / {r.wall_job:.2f} s), goal >= 90 %")
        if scen.rate_limit:
            out.append(f"{_mark(r.share_429 < 0.05)}  {r.label}: {r.share_429:.1%} of requests "
                       f"answered 429 ({r.total_429}/{r.api_requests}), goal < 5 %")
    return out


def run_scenario(scen: Scenario, workers: int, work: Path) -> tuple[str, list[str]]:
    """Start one emulator with the scenario's faults, run every client against it."""
    from stacfetch.api import build_query
    from stacfetch.plan import grid_for
    from stacfetch.testing.emulator import Emulator
    from stacfetch.testing.faults import Faults

    query = build_query(list(LOCATION), scen.start, scen.end, size=scen.size_m, bands=list(BANDS),
                        resolution=10.0)
    grid = grid_for(query.geometry, query.crs, query.resolution)
    faults = Faults(latency_ms=scen.latency_ms, rate_limit_per_minute=scen.rate_limit)
    rows = []
    with Emulator(faults=faults) as emu:
        for label, client, rpm, fmt in scen.clients:
            print(f"  running {label} ...", file=sys.stderr, flush=True)
            rows.append(run_client(label, client, rpm, fmt, scen, grid, emu, workers, work))
    head = (f"== scenario {scen.name}: {scen.title}; {LOCATION[1]:.2f}N {LOCATION[0]:.2f}E, "
            f"{scen.size_m / 1000:g} km square = {grid.width} x {grid.height} px, "
            f"{len(BANDS)} bands uint16, {scen.start}..{scen.end}, workers={workers}")
    return head + "\n" + table(rows), goals(scen, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=("a", "b", "rss", "all"), default="all")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child)
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be 1..64")
    chosen = ["a", "b", "rss"] if args.scenario == "all" else [args.scenario]
    table_of = scenarios(args.quick)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; emulator in the parent process "
          f"(its CPU is counted in no client); {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory(prefix="bench-get-") as tmp:
        for name in chosen:
            text, marks = run_scenario(table_of[name], args.workers, Path(tmp))
            print("\n" + text + "\ngoals:")
            for line in marks:
                print("  " + line)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
