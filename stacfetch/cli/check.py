"""``stacfetch check``: the doctor, line by line (configuration, credentials, service, disk)."""

from __future__ import annotations

import argparse

from ..doctor import diagnose, exit_code
from . import output


def run(args: argparse.Namespace) -> int:
    checks = diagnose(env_file=args.env_file, provider=args.provider, output_dir=args.out,
                      collection=args.collection)
    if args.json:
        output.print_json(output.checks_json(checks), indent=2)
    else:
        output.print_checks(checks, quiet=args.quiet)
    return exit_code(checks)
