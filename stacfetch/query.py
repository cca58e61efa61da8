"""What the user asked for, validated once: ``Query`` (search) and ``GetOptions`` (a run).

``build_query`` and ``build_options`` are THE place that checks user input: the CLI and the
Python API both pass raw values (numbers or their text, dates, locations in any accepted
form) and get frozen, canonical objects back, or a ``UsageError`` subclass that says what was
wrong and what to do. Nothing downstream validates or converts these values again.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from shapely.geometry.base import BaseGeometry

from .bands import output_dtype, parse_bands
from .config import Settings
from .crs import canonical_crs, check_resolution, is_geographic
from .errors import InvalidLocationError, InvalidOptionError, closest
from .location import DEFAULT_SIZE_M, from_geojson_file, parse_bbox, point_geometry, to_geometry

DEFAULT_COLLECTION = "sentinel-2-l2a"
DEFAULT_RESOLUTION_M = 10.0
DEFAULT_RESOLUTION_DEG = 0.0001
DEFAULT_TOLERANCE = timedelta(hours=1)
MAX_WORKERS = 64


@dataclass(frozen=True)
class Interval:
    """A closed UTC time interval ``[start, end]``; both ends are aware datetimes in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() != timedelta(0):
                raise ValueError(f"Interval.{name} must be an aware UTC datetime, got {value!r}")
        if self.end < self.start:
            raise ValueError("Interval.end is before Interval.start")

    def to_stac(self) -> str:
        """RFC 3339 interval as the Catalog wants it: ``2022-01-20T00:00:00Z/2022-01-25T23:59:59Z``."""
        return f"{_rfc3339(self.start)}/{_rfc3339(self.end)}"

    def __str__(self) -> str:
        return f"{_rfc3339(self.start)} to {_rfc3339(self.end)} (UTC)"


def _rfc3339(value: datetime) -> str:
    value = value.astimezone(timezone.utc)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Query:
    """Everything a search or download needs, already validated.

    ``geometry`` is in EPSG:4326 (lon, lat). ``crs`` is an ``EPSG:NNNN`` string or None
    (None: the UTM zone of the area's centroid). ``resolution`` is in units of the CRS.
    """

    geometry: BaseGeometry
    interval: Interval
    collection: str = DEFAULT_COLLECTION
    max_cloud: float | None = None
    bands: tuple[str, ...] = field(default_factory=tuple)
    resolution: float = 10.0
    crs: str | None = None
    dtype: str = "uint16"
    harmonize: bool = True  # Process API harmonizeValues: comparable values across baselines

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of the geometry in degrees."""
        return tuple(self.geometry.bounds)  # type: ignore[return-value]


@dataclass(frozen=True)
class GetOptions:
    """How to run a download, validated (see ``build_options``)."""

    out_dir: Path
    fmt: str = "cog"  # "cog" | "gtiff" | "raw": the output file format
    compress: str | None = None  # "deflate" (None: the default) | "zstd", of cog and gtiff
    workers: int = 4
    overwrite: bool = False
    dry_run: bool = False
    tolerance: timedelta = DEFAULT_TOLERANCE  # items this close in time are one acquisition
    min_clear: float | None = None  # percent of clear pixels (SCL) an acquisition needs
    requests_per_minute: float | None = None  # the account's rate limit (None: learn it)
    preview: bool = False  # a quicklook PNG next to each file
    pu_limit: float | None = None  # the account's processing units per minute (None: learn it)
    limits_note: str | None = None  # where the limits come from, when not from the caller
    max_pu: float | None = None  # refuse a plan estimated above this many processing units
    stream: bool = True  # download from the first Catalog page on (False: plan the whole search first)


# --- the query --------------------------------------------------------------------------
def build_query(
    location: Any = None,
    start: Any = None,
    end: Any = None,
    *,
    lon: Any = None,
    lat: Any = None,
    bbox: Any = None,
    geojson: Any = None,
    size: Any = DEFAULT_SIZE_M,
    collection: Any = DEFAULT_COLLECTION,
    max_cloud: Any = None,
    bands: Any = None,
    resolution: Any = None,
    crs: Any = None,
    dtype: Any = "uint16",
    harmonize: Any = True,
) -> Query:
    """Validate every input once and return the canonical Query (raises UsageError subclasses).

    The area is ``location`` (anything ``location.to_geometry`` accepts) or exactly one of the
    CLI's forms: ``lon`` + ``lat`` (+ ``size``), ``bbox`` (``"W,S,E,N"``) or ``geojson`` (a
    file path). Numbers may be given as text. ``start`` may be an ``Interval``. ``harmonize``
    False asks for the archive's own values (see the README, "Harmonised values").
    """
    # dates builds its Interval from this module: importing it at the top would be a cycle
    from .dates import to_interval

    geometry = _geometry(location, lon=lon, lat=lat, bbox=bbox, geojson=geojson, size=size)
    interval = start if isinstance(start, Interval) else to_interval(start, end)
    if max_cloud is not None:
        max_cloud = _percent(max_cloud, "max cloud cover", hint="give a percentage, e.g. --max-cloud 20")
    if not isinstance(collection, str) or not collection.strip():
        raise InvalidOptionError("the collection id is empty", hint="e.g. --collection sentinel-2-l2a")
    band_tuple = parse_bands(bands)
    if not isinstance(harmonize, bool):
        raise InvalidOptionError(f"harmonize must be True or False, got {harmonize!r}")
    output_crs, output_resolution = _crs_and_resolution(crs, resolution)
    return Query(
        geometry=geometry,
        interval=interval,
        collection=collection.strip(),
        max_cloud=max_cloud,
        bands=band_tuple,
        resolution=output_resolution,
        crs=output_crs,
        dtype=output_dtype(band_tuple, dtype),
        harmonize=harmonize,
    )


def _geometry(location: Any, *, lon: Any, lat: Any, bbox: Any, geojson: Any, size: Any) -> BaseGeometry:
    """The area from exactly one location form, built once."""
    forms = [name for name, given in (("lon/lat", lon is not None or lat is not None),
                                      ("bbox", bbox is not None), ("location", location is not None),
                                      ("geojson", geojson is not None)) if given]
    if len(forms) != 1:
        raise InvalidLocationError(
            "give exactly one location" + (f"; got {', '.join(forms)}" if forms else ""),
            hint="use --lon X --lat Y, --bbox W,S,E,N, --location '[[lon,lat],...]' or --geojson FILE "
            "(in Python: the location argument, e.g. [lon, lat])",
        )
    if forms[0] == "lon/lat":
        if lon is None or lat is None:
            missing = "--lat" if lat is None else "--lon"
            raise InvalidLocationError(f"{missing} is missing", hint="a point needs both --lon and --lat")
        return point_geometry(lon, lat, size)
    if forms[0] == "bbox":
        return to_geometry(parse_bbox(bbox))
    if forms[0] == "geojson":
        return from_geojson_file(geojson, size=size)
    return to_geometry(location, size=size)


def _crs_and_resolution(crs: Any, resolution: Any) -> tuple[str | None, float]:
    """The canonical output CRS (None: the area's UTM zone) and its checked resolution."""
    name = None if crs is None else canonical_crs(crs)
    if resolution is None:
        geographic = name is not None and is_geographic(name)
        return name, DEFAULT_RESOLUTION_DEG if geographic else DEFAULT_RESOLUTION_M
    return name, check_resolution(name, number(resolution, "resolution", hint="e.g. --resolution 10"))


# --- the run options --------------------------------------------------------------------
def build_options(
    settings: Settings,
    *,
    fmt: Any = "cog",
    workers: Any = 4,
    overwrite: bool = False,
    dry_run: bool = False,
    time_tolerance: Any = DEFAULT_TOLERANCE,
    min_clear: Any = None,
    requests_per_minute: Any = None,
    preview: bool = False,
    pu_limit: Any = None,
    max_pu: Any = None,
    stream: bool = True,
    compress: Any = None,
) -> GetOptions:
    """Validate the options of a run once; the output folder is ``settings.output_dir``.

    ``time_tolerance``: a ``timedelta`` or minutes (a number or its text). The output folder is
    created here unless ``dry_run`` (a dry run creates nothing), so a folder that cannot be
    used fails before any request. ``stream`` False: plan the whole search before the first
    download (``--no-stream``), as ``--max-pu``, ``--min-clear`` and a dry run always do.
    """
    # raster/ imports plan, which imports this module: importing it at the top is a cycle
    from .raster.profiles import COMPRESSIONS, FORMATS, check_compress, check_format

    try:
        fmt = check_format(fmt)
    except ValueError:
        near = closest(fmt, FORMATS)
        raise InvalidOptionError(f"unknown output format {fmt!r}" + (f"; did you mean {near!r}?" if near else ""),
                                 hint="use --format cog (default), gtiff or raw") from None
    if compress is not None and str(compress).strip().lower() not in COMPRESSIONS:
        near = closest(str(compress), COMPRESSIONS)
        raise InvalidOptionError(f"unknown compression {compress!r}" + (f"; did you mean {near!r}?" if near else ""),
                                 hint="use --compress deflate (default) or zstd (less CPU, 5 % larger files)")
    try:
        compress = check_compress(compress, fmt)
    except ValueError:
        raise InvalidOptionError(f"--compress {compress} does not apply to --format raw (uncompressed)",
                                 hint="leave --compress out, or use --format cog or gtiff") from None
    if min_clear is not None:
        min_clear = _percent(min_clear, "--min-clear",
                             hint="give a percentage of clear pixels, e.g. --min-clear 70")
    workers = _whole(workers, "workers", hint="e.g. --workers 4")
    if not 1 <= workers <= MAX_WORKERS:
        raise InvalidOptionError(f"workers={workers!r} must be a whole number from 1 to {MAX_WORKERS}")
    tolerance = _tolerance(time_tolerance)
    if requests_per_minute is not None:
        requests_per_minute = _per_minute(requests_per_minute, "rate limit", "requests",
                                          "--rate-limit", 100_000)
    if pu_limit is not None:
        pu_limit = _per_minute(pu_limit, "processing-unit limit", "PU", "--pu-limit", 1_000_000)
    requests_per_minute, pu_limit, note = _provider_limits(settings, requests_per_minute, pu_limit)
    if max_pu is not None:
        max_pu = number(max_pu, "--max-pu", hint="give a number of processing units, e.g. --max-pu 500")
        if max_pu <= 0:
            raise InvalidOptionError(f"--max-pu {max_pu:g} must be above 0",
                                     hint="give a number of processing units, e.g. --max-pu 500")
    return GetOptions(
        out_dir=prepare_output_dir(settings.output_dir, create=not dry_run),
        fmt=fmt, compress=compress, workers=workers, overwrite=bool(overwrite), dry_run=bool(dry_run),
        tolerance=tolerance, min_clear=min_clear, requests_per_minute=requests_per_minute,
        preview=bool(preview), pu_limit=pu_limit, limits_note=note, max_pu=max_pu,
        stream=bool(stream),
    )


# CDSE's free tier for the Sentinel Hub APIs (published quotas): requests and PU per minute
CDSE_FREE_TIER = (300.0, 300.0)


def _provider_limits(settings: Settings, rpm: float | None,
                     pu: float | None) -> tuple[float | None, float | None, str | None]:
    """With the cdse provider, unset limits are the free tier's published ones."""
    if settings.provider != "cdse" or (rpm is not None and pu is not None):
        return rpm, pu, None
    defaulted = []
    if rpm is None:
        rpm = CDSE_FREE_TIER[0]
        defaulted.append(f"{rpm:g} requests/min")
    if pu is None:
        pu = CDSE_FREE_TIER[1]
        defaulted.append(f"{pu:g} processing units/min")
    note = (f"rate limits: CDSE free tier's published {' and '.join(defaulted)} (a paid tier: "
            "set --rate-limit and --pu-limit)")
    return rpm, pu, note


def _tolerance(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        minutes = value.total_seconds() / 60
    else:
        minutes = number(value, "time tolerance", hint="e.g. --time-tolerance 60 (minutes)")
    if not 0 < minutes <= 24 * 60:
        raise InvalidOptionError(
            f"time tolerance {minutes:g} min must be above 0 and at most 1440",
            hint="the default of 60 minutes groups tiles of one satellite pass",
        )
    return value if isinstance(value, timedelta) else timedelta(minutes=minutes)


def prepare_output_dir(path: Path, *, create: bool) -> Path:
    """The output folder, created if missing (unless not ``create``); a clear error when unusable."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidOptionError(
            f"the output folder {path} exists and is not a folder",
            hint="set --out or STACFETCH_OUTPUT_DIR to a folder path",
        )
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidOptionError(
                f"cannot create the output folder {path}: {exc.strerror or exc}",
                hint="choose a folder you can write to with --out or STACFETCH_OUTPUT_DIR",
            ) from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise InvalidOptionError(
                f"the output folder {path} is not writable",
                hint="choose a folder you can write to with --out or STACFETCH_OUTPUT_DIR",
            )
    return path


# --- numbers ----------------------------------------------------------------------------
def number(value: Any, name: str, *, hint: str | None = None) -> float:
    """A finite float from a number or its text (bools, NaN and infinities are refused)."""
    if isinstance(value, bool):
        raise InvalidOptionError(f"{name} {value!r} is not a finite number", hint=hint)
    try:
        result = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidOptionError(f"{name} {value!r} is not a number", hint=hint) from None
    if not math.isfinite(result):
        raise InvalidOptionError(f"{name} {value!r} is not a finite number", hint=hint)
    return result


def _whole(value: Any, name: str, *, hint: str | None = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise InvalidOptionError(f"{name}={value!r} must be a whole number from 1 to {MAX_WORKERS}", hint=hint)


def _per_minute(value: Any, name: str, unit: str, flag: str, most: int) -> float:
    """An account's limit per minute, 1..``most`` (``--rate-limit``, ``--pu-limit``)."""
    result = number(value, name, hint=f"e.g. {flag} 300")
    if not 1 <= result <= most:
        raise InvalidOptionError(
            f"{name} {result:g} {unit}/minute is outside 1..{most}",
            hint=f"give your account's limit, e.g. {flag} 300 for the CDSE free tier",
        )
    return result


def _percent(value: Any, name: str, *, hint: str) -> float:
    result = number(value, name, hint=hint)
    if not 0 <= result <= 100:
        raise InvalidOptionError(f"{name} {result:g} is outside 0..100", hint=hint)
    return result
