"""``stacfetch search``: list the scenes that match (no download)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..api import search_query
from ..catalog import service_dict
from ..config import load_settings
from ..preview import timeline
from ..query import build_query
from . import output, query_args


def run(args: argparse.Namespace) -> int:
    query = build_query(**query_args(args))
    settings = load_settings(env_file=args.env_file, provider=args.provider, timeout=args.timeout)
    if not args.quiet:
        output.echo_query(query)
    items = search_query(query, settings=settings, max_items=args.limit)
    if args.plot:
        plot = timeline(items, Path(args.plot), start=query.interval.start, end=query.interval.end,
                        max_cloud=query.max_cloud)
        if not args.quiet:
            print(f"timeline: {plot}", file=sys.stderr)
    if args.json:
        # the service's own item JSON, unchanged (pystac would rewrite it to STAC 1.1)
        output.print_json({"type": "FeatureCollection", "features": [service_dict(it) for it in items]})
    else:
        output.print_items(items)
    return 0
