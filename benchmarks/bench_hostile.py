"""Figures: each hostile server case against `stacfetch get`, under `/usr/bin/time -v`.

    python benchmarks/bench_hostile.py

For every case of :mod:`stacfetch.testing.hostile` (silent token/Catalog/Process API with
``--timeout 5``, endless paging, huge pages, 200 MB of JSON, gzip bombs, a 403 echoing the
token, an HTML 200) prints a Markdown row: the exit code, the seconds until the run ended
with its message, the peak resident memory (``Maximum resident set size``), the requests the
hostile endpoint received, whether a "still waiting" line appeared, whether the token leaked,
and the message. Prints figures; asserts nothing (the bounds are tested in tests/test_hostile.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from stacfetch.testing.emulator import Emulator
from stacfetch.testing.hostile import Hostile

CASES = [
    ("token", "silent", ["--timeout", "5"]),
    ("catalog", "silent", ["--timeout", "5"]),
    ("process", "silent", ["--timeout", "5"]),
    ("catalog", "endless-same", []),
    ("catalog", "endless-new", []),
    ("catalog", "huge-page", []),
    ("catalog", "huge-json", []),
    ("catalog", "gzip-bomb", []),
    ("process", "gzip-bomb", []),
    ("process", "echo-token-403", []),
    ("catalog", "html", []),
]


def main() -> None:
    print("| case | exit | time to the message | peak RSS | hostile requests | waiting line | token shown | message |")
    print("|---|---|---|---|---|---|---|---|")
    with Emulator() as emu:
        for endpoint, mode, extra in CASES:
            with Hostile(emu, **{endpoint: mode}, lifetime=300, max_requests=5000) as front:
                env = {**os.environ, "SH_BASE_URL": front.url, "SH_TOKEN_URL": front.token_url,
                       "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
                       "STACFETCH_PROVIDER": "sentinelhub"}
                with tempfile.TemporaryDirectory() as out:
                    command = ["/usr/bin/time", "-v", sys.executable, "-m", "stacfetch", "get",
                               "--lon", "34.665", "--lat", "31.625", "--size", "1000",
                               "--start", "2022-01-01", "--end", "2022-01-10", "--bands", "B04",
                               "--out", out, "--workers", "2", *extra]
                    started = time.monotonic()
                    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
                    seconds = time.monotonic() - started
                kind = "search" if endpoint == "catalog" else endpoint
                peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
                lines = proc.stderr.splitlines()
                message = next((x for x in lines if x.startswith(("error:", "FAILED"))), "")
                waiting = any("still waiting" in x for x in lines)
                shown = any(token in proc.stderr + proc.stdout for token in front.tokens)
                print(f"| {endpoint} {mode} | {proc.returncode} | {seconds:.1f} s | "
                      f"{int(peak.group(1)) / 1024 if peak else 0:.0f} MB | {front.requests[kind]} | "
                      f"{'yes' if waiting else 'no'} | {'YES' if shown else 'no'} | {message[:120]} |",
                      flush=True)


if __name__ == "__main__":
    main()
