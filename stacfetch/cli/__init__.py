"""The ``stacfetch`` command line: parse, call the library, print (data on stdout, the rest on stderr).

This package is what ``stacfetch --help`` imports, so it stays light: the parser is built
here and each command lives in its own module (``search``, ``get``, ``preview``, ``stats``,
``check``), imported only when that command runs. Arguments reach ``query.build_query`` and
``query.build_options`` as the raw text the user typed; they validate it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, StacfetchError
from ..http.redact import install_redaction, redact

__all__ = ["build_parser", "entry", "main"]

log = logging.getLogger("stacfetch")

AXIS_NOTE = "Coordinates are always longitude first, then latitude (x, y), in degrees (WGS84)."

EPILOG_SEARCH = f"""\
examples:
  stacfetch search --provider sandbox --lon 34.665 --lat 31.625 --start 2022-01-20 --end 2022-01-25
  stacfetch search --bbox 34.60,31.58,34.72,31.67 --start 2022-01-01 --end 2022-01-31 --max-cloud 20
  stacfetch search --geojson field.geojson --start 2023-06-01 --end 2023-06-30 --json > items.json

{AXIS_NOTE}
Dates: 2022-01-20, 2022-01-20T10:00Z, 2022/01/20, 20.01.2022 or 20220120; the end date is
inclusive (its whole UTC day). Settings come from arguments, then the environment, then .env.
exit codes: 0 ok, 2 bad input, 3 configuration/credentials, 4 service/network, 130 interrupted.
"""

EPILOG_GET = f"""\
examples:
  stacfetch get --provider sandbox --lon 34.665 --lat 31.625 --start 2022-01-20 --end 2022-01-25
  stacfetch get --bbox 34.60,31.58,34.72,31.67 --start 2022-01-01 --end 2022-01-31 --bands truecolor
  stacfetch get --lon 34.665 --lat 31.625 --size 20000 --start 2022-01-20 --dry-run

Writes one GeoTIFF per acquisition to <out>/<collection>/<area-id>/<date>T<time>_<platform>_<orbit>.tif
with a sidecar .json (the STAC items) and a catalog.json manifest. A re-run skips complete files.
{AXIS_NOTE}
exit codes: 0 ok, 2 bad input, 3 configuration/credentials, 4 service/network,
5 some acquisitions failed (the others were written),
6 acquisitions failed and none was written (no complete file), 130 interrupted.
"""

EPILOG_STATS = """\
examples:
  stacfetch get --provider sandbox --lon 34.665 --lat 31.625 --start 2022-01-01 --end 2022-02-28 \\
      --bands B04,B08,SCL --resolution 20 --out out
  stacfetch stats out                      # NDVI per acquisition
  stacfetch stats out --index ndwi --csv ndwi.csv
"""

EPILOG_CHECK = """\
examples:
  stacfetch check
  stacfetch check --provider sandbox
  stacfetch check --env-file ~/cdse.env --out /data/s2

exit codes: 0 everything fine, 2 output folder or disk, 3 configuration/credentials,
4 service/network (the first failed check decides).
"""

EPILOG_PREVIEW = """\
examples:
  stacfetch get --provider sandbox --lon 34.665 --lat 31.625 --start 2022-01-01 --end 2022-01-31 \\
      --bands B04,B03,B02,SCL --out out
  stacfetch preview out            # writes out/sentinel-2-l2a/<area>/contact-sheet.png
"""


def _add_output_flags(group: Any, *, json: str, verbose: str = "more detail on stderr",
                      quiet: str = "only errors on stderr") -> None:
    """``--json``, ``-v`` and ``-q``, the same flags on every command (each with its own help)."""
    group.add_argument("--json", action="store_true", help=json)
    group.add_argument("-v", "--verbose", action="count", default=0, help=verbose)
    group.add_argument("-q", "--quiet", action="store_true", help=quiet)


def _add_common(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group(
        "location (one of)", "Longitude first, then latitude, in degrees (WGS84)."
    )
    where.add_argument("--lon", "--location_lon", dest="lon", type=str, metavar="LON",
                       help="longitude of a point, e.g. 34.665 (east positive)")
    where.add_argument("--lat", "--location_lat", dest="lat", type=str, metavar="LAT",
                       help="latitude of a point, e.g. 31.625 (north positive)")
    where.add_argument("--size", type=str, default="5000", metavar="METERS",
                       help="side of the square around --lon/--lat in metres (default 5000)")
    where.add_argument("--bbox", metavar="W,S,E,N", help="bounding box: west,south,east,north")
    where.add_argument("--location", metavar="JSON",
                       help="a JSON list of [lon, lat] pairs (a polygon ring; one pair = a point)")
    where.add_argument("--geojson", metavar="FILE",
                       help="a GeoJSON file: geometry, Feature or FeatureCollection")

    when = parser.add_argument_group("time window")
    when.add_argument("--start", "--start_date", dest="start", metavar="DATE",
                      help="first day (or instant), e.g. 2022-01-20")
    when.add_argument("--end", "--end_date", dest="end", metavar="DATE",
                      help="last day, inclusive (default: the start day)")

    what = parser.add_argument_group("catalog")
    what.add_argument("--collection", default="sentinel-2-l2a", help="collection id (default sentinel-2-l2a)")
    what.add_argument("--max-cloud", type=str, metavar="PERCENT",
                      help="keep scenes whose cloud cover is at most PERCENT (0-100)")

    conf = parser.add_argument_group("configuration")
    # no argparse choices for --provider/--format: the library checks them and suggests the
    # nearest valid name ("sandbx" -> did you mean 'sandbox'?)
    conf.add_argument("--provider", metavar="NAME",
                      help="sentinelhub, cdse, sandbox, earth-search, planetary-computer or stac; "
                      "overrides STACFETCH_PROVIDER; 'sandbox' runs a local emulator (synthetic data); "
                      "earth-search, planetary-computer and stac (STACFETCH_STAC_URL) read the archived "
                      "COG assets, no Sentinel Hub account needed")
    conf.add_argument("--env-file", metavar="PATH", help="read settings from PATH instead of ./.env")
    conf.add_argument("--timeout", default=None, metavar="SECONDS",
                      help="how long a request waits for the service to start answering (default "
                      "120); a silent service is asked twice, then the run stops and says so")

    _add_output_flags(parser.add_argument_group("output"),
                      json="print machine-readable JSON on stdout only",
                      verbose="more detail on stderr (-vv: debug)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stacfetch",
        description="Find Sentinel-2 L2A scenes for a place and a time window and download every "
        "acquisition as a georeferenced GeoTIFF.",
        epilog="Start without an account: stacfetch get --provider sandbox --lon 34.665 --lat 31.625 "
        "--start 2022-01-20 --end 2022-01-25\n" + AXIS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stacfetch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    search = sub.add_parser("search", help="list the scenes that match (no download)",
                            description="List Sentinel-2 L2A scenes for an area and time window.",
                            epilog=EPILOG_SEARCH, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(search)
    search.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N items")
    search.add_argument("--plot", metavar="FILE.png",
                        help="also draw the scenes over time against their cloud cover into a PNG")

    get = sub.add_parser("get", help="download every acquisition as a GeoTIFF",
                         description="Download one GeoTIFF per acquisition for an area and time window.",
                         epilog=EPILOG_GET, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(get)
    g = get.add_argument_group("download")
    g.add_argument("--out", metavar="DIR", help="output folder (overrides STACFETCH_OUTPUT_DIR)")
    g.add_argument("--bands", default="all", metavar="LIST",
                   help="comma list (B01..B12, B8A, SCL, CLD, SNW, CLP, CLM, AOT, dataMask) or a preset: truecolor, "
                   "all (12 spectral bands, default), all+scl")
    g.add_argument("--resolution", type=str, default=None, metavar="R",
                   help="pixel size in CRS units (default 10 m; degrees with --crs EPSG:4326)")
    g.add_argument("--crs", metavar="EPSG:NNNN", help="output CRS (default: UTM zone of the area)")
    g.add_argument("--dtype", choices=("uint16", "float32"), default="uint16",
                   help="uint16 digital numbers (reflectance x 10000, default) or float32 reflectance")
    g.add_argument("--no-harmonize", dest="harmonize", action="store_false",
                   help="the archive's own values (baseline 04.00+ DNs keep their +1000; the band "
                   "offset -0.1 is written in the file) instead of harmonised ones (default)")
    g.add_argument("--workers", type=str, default="4", metavar="N", help="concurrent requests (default 4)")
    g.add_argument("--rate-limit", type=str, default=None, metavar="RPM",
                   help="your account's requests per minute, e.g. 300 on the CDSE free tier: "
                   "stacfetch paces itself to it (default: learn it from the first 429; "
                   "--provider cdse: the free tier's 300)")
    g.add_argument("--pu-limit", type=str, default=None, metavar="PU_PER_MIN",
                   help="your account's processing units per minute, e.g. 300 on the CDSE free "
                   "tier: stacfetch paces itself to it (default as for --rate-limit)")
    g.add_argument("--time-tolerance", type=str, default="60", metavar="MINUTES",
                   help="items this close in time are one acquisition (default 60)")
    g.add_argument("--dry-run", action="store_true", help="print the plan and estimated cost; download nothing")
    g.add_argument("--overwrite", action="store_true", help="download again even if a complete file exists")
    g.add_argument("--no-stream", dest="stream", action="store_false",
                   help="plan the whole search before the first download (default: downloads start "
                   "with the first Catalog page; the plan is the same)")
    g.add_argument("--format", dest="fmt", default="cog", metavar="FORMAT",
                   help="cog: Cloud-Optimized GeoTIFF with overviews, DEFLATE (default); gtiff: tiled "
                        "DEFLATE GeoTIFF; raw: the service's GeoTIFF as sent, tags added, uncompressed "
                        "(least CPU, largest files)")
    g.add_argument("--compress", default=None, metavar="CODEC",
                   help="compression of cog and gtiff: deflate (default, readable everywhere) or "
                        "zstd (faster to write and to read, files ~5 %% larger; GDAL 2.3+, QGIS 3)")
    g.add_argument("--preview", action="store_true",
                   help="also write a small true-colour PNG quicklook next to each GeoTIFF")
    g.add_argument("--max-pu", type=str, metavar="N",
                   help="refuse, before any request, a plan estimated above N Sentinel Hub "
                   "processing units (the dry run shows the estimate)")
    g.add_argument("--min-clear", type=str, metavar="PERCENT",
                   help="skip acquisitions with less than PERCENT clear pixels over the area "
                   "(SCL 4,5,6,11; one small Process request each, or the SCL asset's windows "
                   "with a COG provider)")

    prev = sub.add_parser("preview", help="draw a contact sheet PNG of the acquisitions in a folder",
                          description="Write one contact sheet PNG per area folder under OUT_DIR: every "
                          "acquisition in time order, labelled with date, scene cloud cover and the "
                          "clear share over the area (when the files have SCL).",
                          epilog=EPILOG_PREVIEW, formatter_class=argparse.RawDescriptionHelpFormatter)
    prev.add_argument("folder", metavar="OUT_DIR", help="a `get` output folder (or one area folder in it)")
    prev.add_argument("--output", "-o", metavar="FILE.png", help="where to write the sheet (one area only)")
    prev.add_argument("--thumb", type=int, default=220, metavar="PX", help="thumbnail size (default 220)")
    prev.add_argument("--quicklooks", action="store_true", help="also write a quicklook PNG next to each GeoTIFF")
    _add_output_flags(prev, json="print the written paths as JSON")

    stats = sub.add_parser("stats", help="per-acquisition statistics of a spectral index (NDVI, ...)",
                           description="For each acquisition in a `get` output folder: date, platform, "
                           "clear share over the area (when the files have SCL) and the mean, median "
                           "and standard deviation of a spectral index over the pixels with data "
                           "(and, with SCL, clear: classes 4, 5, 6, 11). Needs the xarray extra: "
                           "pip install 'stacfetch[xarray]'.",
                           epilog=EPILOG_STATS, formatter_class=argparse.RawDescriptionHelpFormatter)
    stats.add_argument("folder", metavar="OUT_DIR",
                       help="a `get` output folder, one area folder in it, or its catalog.json")
    stats.add_argument("--index", default="ndvi", metavar="NAME",
                       help="ndvi (default), ndwi, ndmi, nbr, ndre, ndsi or ndbi")
    stats.add_argument("--csv", metavar="FILE", help="also write the table as CSV to FILE")
    _add_output_flags(stats, json="print the rows as JSON on stdout")

    check = sub.add_parser("check", help="check the configuration, credentials and service (doctor)",
                           description="Check, line by line, what `get` needs: the .env file and where "
                           "each setting comes from (secrets masked), the token endpoint, the "
                           "credentials and their deployment, the Catalog, the collection, the output "
                           "folder and free disk space. Exit status 0 when everything is fine.",
                           epilog=EPILOG_CHECK, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--provider", metavar="NAME", help="overrides STACFETCH_PROVIDER")
    check.add_argument("--env-file", metavar="PATH", help="read settings from PATH instead of ./.env")
    check.add_argument("--out", metavar="DIR", help="output folder to check (overrides STACFETCH_OUTPUT_DIR)")
    check.add_argument("--collection", default="sentinel-2-l2a", help="collection id (default sentinel-2-l2a)")
    _add_output_flags(check, json="print the checks as JSON on stdout", quiet="print only failed checks")
    return parser


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests and wrappers replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def _print_traceback() -> None:
    """The current exception's traceback on stderr, secrets masked (its messages and the
    exceptions it chains may quote a server that echoed a token)."""
    print(redact(traceback.format_exc()), file=sys.stderr, end="")


def _no_core_dumps() -> None:
    """No core dump of this process (soft RLIMIT_CORE 0, as ssh and gpg do): it would hold the
    client secret and tokens. The CLI owns the process; the library never changes this."""
    try:
        import resource  # POSIX only: absent on Windows, where there is nothing to do
    except ImportError:
        return
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if getattr(args, "quiet", False):
        level = logging.ERROR
    elif getattr(args, "verbose", 0) >= 2:
        level = logging.DEBUG
    elif getattr(args, "verbose", 0) == 1:
        level = logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    install_redaction()


def query_args(args: argparse.Namespace) -> dict[str, Any]:
    """The location, time window and catalog arguments, raw, as ``build_query`` keywords."""
    return dict(location=args.location, start=args.start, end=args.end, lon=args.lon, lat=args.lat,
                bbox=args.bbox, geojson=args.geojson, size=args.size, collection=args.collection,
                max_cloud=args.max_cloud)


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """The process's parser: built once (3.6 ms), since parsing never changes it."""
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    _no_core_dumps()
    _configure_logging(args)
    try:
        command = importlib.import_module(f"{__name__}.{args.command}")  # heavy imports: only now
        return int(command.run(args))
    except StacfetchError as exc:
        if args.verbose >= 2:
            _print_traceback()
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so plainly, details with -v
        if args.verbose:
            _print_traceback()
        print(
            f"internal error: {type(exc).__name__}: {redact(str(exc))}\n"
            "  this is a bug in stacfetch; run again with -v for details and report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def entry() -> None:
    """Console-script entry point. After Ctrl-C, exit at once rather than wait for workers."""
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
