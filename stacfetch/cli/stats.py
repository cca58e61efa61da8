"""``stacfetch stats``: per-acquisition statistics of a spectral index, as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError
from ..indices import index_bands, stats
from ..raster.files import atomic_write_text
from . import output


def _cell(value: Any) -> Any:
    """A JSON-ready value: timestamps as ISO text, NaN as null."""
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def table(frame: Any, index: str) -> str:
    """The rows as aligned text (stdout)."""
    headers = ["acquired (UTC)", "platform", "clear %", "pixels", f"{index} mean", "median", "std"]
    rows = []
    for r in frame.itertuples(index=False):
        values = r._asdict()
        rows.append([
            values["date"].strftime("%Y-%m-%d %H:%M:%S"), values["platform"],
            "" if values["clear_percent"] is None or math.isnan(values["clear_percent"])
            else f"{values['clear_percent']:.1f}",
            str(values["pixels"]),
            *("n/a" if math.isnan(values[f"{index}_{k}"]) else f"{values[f'{index}_{k}']:.4f}"
              for k in ("mean", "median", "std")),
        ])
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) if i > 1 else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    lines += ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
              for row in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    folder = Path(args.folder).expanduser()
    if not folder.exists():
        raise InvalidOptionError(f"{folder} does not exist", hint="give the --out folder of a `get` run")
    index = args.index.strip().lower()
    index_bands(index)  # an unknown index fails before any file is opened
    frame = stats(folder, index=index)
    if args.csv:
        atomic_write_text(Path(args.csv).expanduser(), frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ"))
    if args.json:
        rows = [{k: _cell(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
        output.print_json({"index": index, "rows": rows}, indent=2)
        return 0
    print(table(frame, index))
    if not args.quiet:
        counted = int((frame["pixels"] > 0).sum())
        print(f"{len(frame)} acquisition(s), {counted} with pixels to count"
              + (f"; CSV: {args.csv}" if args.csv else ""), file=sys.stderr)
    return 0
