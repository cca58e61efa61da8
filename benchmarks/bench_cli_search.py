"""Benchmark: `stacfetch --help` wall time and search throughput against the emulator.

    python benchmarks/bench_cli_search.py

Prints figures; asserts nothing (speed is measured here, not in tests).
Goal for --help: under 0.3 s (heavy modules are imported lazily).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone


def help_time(runs: int = 7) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stacfetch", "--help"], check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def search_throughput() -> None:
    from stacfetch.api import build_query, search_query
    from stacfetch.config import load_settings
    from stacfetch.testing.emulator import Emulator

    with Emulator() as emu:
        settings = load_settings(environ={}, env_file=None, provider="sentinelhub",
                                 client_id="sandbox", client_secret="sandbox-secret",
                                 base_url=emu.url, token_url=emu.token_url)
        # a 3 x 3 degree box over 18 months: many tiles, many passes
        query = build_query([10.0, 45.0, 13.0, 48.0], "2021-01-01", "2022-06-30")
        t0 = time.perf_counter()
        items = search_query(query, settings=settings)
        elapsed = time.perf_counter() - t0
        pages = emu.log.count(kind="catalog") - 2
        print(f"search: {len(items)} items in {elapsed:.2f} s over ~{pages} page requests "
              f"= {len(items) / elapsed:.0f} items/s ({elapsed / max(pages, 1) * 1000:.0f} ms a page)")


def main() -> None:
    times = help_time()
    print(f"stacfetch --help: median {statistics.median(times) * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f} ms over {len(times)} runs (goal < 300 ms)")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    print(f"(bare python startup: {(time.perf_counter() - t0) * 1000:.0f} ms)")
    print(f"now: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    search_throughput()


if __name__ == "__main__":
    main()
