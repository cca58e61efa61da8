"""``stacfetch preview``: a contact sheet PNG of the acquisitions in a ``get`` output folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidOptionError
from ..preview import contact_sheet, quicklook
from . import output


def run(args: argparse.Namespace) -> int:
    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise InvalidOptionError(f"{folder} is not a folder", hint="give the --out folder of a `get` run")
    if not 32 <= args.thumb <= 1024:
        raise InvalidOptionError(f"--thumb {args.thumb} is outside 32..1024")
    try:
        sheets = contact_sheet(folder, Path(args.output) if args.output else None, thumb=args.thumb)
    except FileNotFoundError as exc:
        raise InvalidOptionError(str(exc), hint="run `stacfetch get ... --out DIR` first") from None
    looks = [quicklook(p) for p in sorted(folder.rglob("*.tif"))] if args.quicklooks else []
    if args.json:
        output.print_json({"contact_sheets": [str(p) for p in sheets], "quicklooks": [str(p) for p in looks]},
                          indent=2)
    else:
        for path in [*sheets, *looks]:
            print(path)
    return 0
