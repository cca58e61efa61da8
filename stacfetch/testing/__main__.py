"""Run the emulator in the foreground: ``python -m stacfetch.testing [--port N] [--deployment cdse]``.

Prints the URLs and the sandbox credentials to point your own scripts at
(``SH_BASE_URL``, ``SH_TOKEN_URL``, ``SH_CLIENT_ID``, ``SH_CLIENT_SECRET``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from ..config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from .emulator import Emulator
from .faults import Faults


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stacfetch.testing",
        description="A local Sentinel Hub emulator (token, Catalog, Process API) on 127.0.0.1.",
        epilog="example: python -m stacfetch.testing --port 8123 --deployment cdse --fault-429 0.1",
    )
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument("--deployment", choices=("sentinelhub", "cdse"), default="sentinelhub")
    p.add_argument("--client-id", default=SANDBOX_CLIENT_ID)
    p.add_argument("--client-secret", default=SANDBOX_CLIENT_SECRET)
    p.add_argument("--token-lifetime", type=float, default=3600.0, help="seconds (default 3600)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    g = p.add_argument_group("faults (all off by default)")
    g.add_argument("--fault-429", type=float, default=0.0, metavar="P", help="probability of 429")
    g.add_argument("--retry-after-ms", type=int, default=1500, help="Retry-After of those 429s")
    g.add_argument("--rate-limit", type=int, default=None, metavar="N",
                   help="allow N requests per sliding minute, then 429 (e.g. 300 like CDSE)")
    g.add_argument("--fault-5xx", type=float, default=0.0, metavar="P")
    g.add_argument("--fault-drop", type=float, default=0.0, metavar="P",
                   help="cut connections mid-body")
    g.add_argument("--fault-truncate", type=float, default=0.0, metavar="P",
                   help="Process: 200 with a short body")
    g.add_argument("--latency-ms", type=float, default=0.0)
    g.add_argument("--spike-ms", type=float, default=0.0, help="extra latency of a spike")
    g.add_argument("--fault-spike", type=float, default=0.0, metavar="P")
    g.add_argument("--fault-token", action="store_true", help="apply faults to the token endpoint too")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(message)s", stream=sys.stderr)
    faults = Faults(
        rate_429=args.fault_429, retry_after_ms=args.retry_after_ms,
        rate_limit_per_minute=args.rate_limit, rate_5xx=args.fault_5xx,
        rate_drop=args.fault_drop, rate_truncate=args.fault_truncate,
        latency_ms=args.latency_ms, latency_spike_ms=args.spike_ms, rate_spike=args.fault_spike,
        only_kinds={"token", "catalog", "process"} if args.fault_token else None,
    )
    emu = Emulator(port=args.port, deployment=args.deployment,
                   clients={args.client_id: args.client_secret},
                   token_lifetime=args.token_lifetime, faults=faults, seed=args.seed)
    with emu:
        print(f"Sentinel Hub emulator ({args.deployment}) running; Ctrl-C to stop", flush=True)
        print(f"SH_BASE_URL={emu.url}")
        print(f"SH_TOKEN_URL={emu.token_url}")
        print(f"SH_CLIENT_ID={args.client_id}")
        print(f"SH_CLIENT_SECRET={args.client_secret}")
        print(f"catalog: {emu.catalog_url}")
        print(f"process: {emu.process_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
