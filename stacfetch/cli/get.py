"""``stacfetch get``: download every acquisition as a GeoTIFF (or, with --dry-run, show the plan)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..api import get_query
from ..clouds import ClearShare
from ..config import load_settings
from ..memory import return_large_buffers_to_the_os
from ..plan import Job
from ..query import build_options, build_query
from . import output, query_args


def run(args: argparse.Namespace) -> int:
    query = build_query(**query_args(args), bands=args.bands, resolution=args.resolution,
                        crs=args.crs, dtype=args.dtype, harmonize=args.harmonize)
    settings = load_settings(env_file=args.env_file, provider=args.provider, output_dir=args.out,
                             timeout=args.timeout)
    options = build_options(settings, fmt=args.fmt, compress=args.compress, workers=args.workers,
                            overwrite=args.overwrite,
                            dry_run=args.dry_run, time_tolerance=args.time_tolerance,
                            min_clear=args.min_clear, requests_per_minute=args.rate_limit,
                            preview=args.preview, pu_limit=args.pu_limit, max_pu=args.max_pu,
                            stream=args.stream)
    echo = not args.quiet
    if echo:
        output.echo_query(query)
    noted: list[bool] = []  # the limits note, printed once before the first download

    def limits_note() -> None:
        if options.limits_note and not noted:
            noted.append(True)
            print(options.limits_note, file=sys.stderr)

    def on_stream(needs_whole_plan: str | None) -> None:
        if echo:
            print(output.stream_note(needs_whole_plan), file=sys.stderr)
            if needs_whole_plan is None:
                limits_note()

    def on_plan(jobs: Sequence[Job], item_count: int) -> None:
        if not echo:
            return
        print(output.summarize(jobs, query=query, item_count=item_count, source=settings.source),
              file=sys.stderr)
        limits_note()
        if options.dry_run and options.min_clear is not None:
            print(output.dry_run_screening_note(options.min_clear, jobs, settings.source),
                  file=sys.stderr)

    def on_screen(shares: Sequence[ClearShare]) -> None:
        if echo and options.min_clear is not None:
            print(output.screening_text(shares, options.min_clear), file=sys.stderr)

    if not options.dry_run:
        return_large_buffers_to_the_os()  # process-wide (mallopt): the CLI owns the process
    progress = False if (args.quiet or args.json) else None  # None: a bar on a terminal only
    result = get_query(query, settings=settings, options=options, progress=progress,
                       on_plan=on_plan, on_screen=on_screen, on_stream=on_stream)
    if args.json:
        output.print_json(result.to_dict(), indent=2)
    elif not args.quiet:
        print(result.summary(), file=sys.stderr)
    return result.exit_code
