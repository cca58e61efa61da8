"""The Python API: ``stacfetch.search()`` and ``stacfetch.get()``, thin layers over the pipeline.

    import stacfetch
    result = stacfetch.get([34.665, 31.625], "2022-01-20", "2022-01-25", provider="sandbox")
    for path in result.paths: ...
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from concurrent.futures import Executor
from datetime import timedelta
from pathlib import Path
from typing import Any

from .config import Settings, load_settings
from .errors import InvalidOptionError
from .query import DEFAULT_COLLECTION, Interval, Query

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION_M = 10.0
DEFAULT_RESOLUTION_DEG = 0.0001


def build_query(
    location: Any,
    start: Any,
    end: Any = None,
    *,
    size: float = 5000.0,
    collection: str = DEFAULT_COLLECTION,
    max_cloud: float | None = None,
    bands: Any = None,
    resolution: float | None = None,
    crs: str | None = None,
    dtype: str = "uint16",
) -> Query:
    """Validate every input once and return the canonical Query (raises UsageError subclasses)."""
    from .bands import output_dtype, parse_bands
    from .dates import to_interval
    from .location import to_geometry

    geometry = to_geometry(location, size=size)
    interval = start if isinstance(start, Interval) else to_interval(start, end)
    if max_cloud is not None:
        max_cloud = _finite(max_cloud, "max_cloud")
        if not 0 <= max_cloud <= 100:
            raise InvalidOptionError(
                f"max cloud cover {max_cloud:g} is outside 0..100", hint="give a percentage, e.g. --max-cloud 20"
            )
    if not isinstance(collection, str) or not collection.strip():
        raise InvalidOptionError("the collection id is empty", hint="e.g. --collection sentinel-2-l2a")
    band_tuple = parse_bands(bands)
    canonical_crs, is_geographic = _parse_crs(crs)
    if resolution is None:
        resolution = DEFAULT_RESOLUTION_DEG if is_geographic else DEFAULT_RESOLUTION_M
    resolution = _finite(resolution, "resolution")
    if is_geographic and not 1e-6 <= resolution <= 0.1:
        raise InvalidOptionError(
            f"resolution {resolution:g} is not a sensible pixel size in degrees for {canonical_crs}",
            hint="use e.g. --resolution 0.0001 (about 10 m) with --crs EPSG:4326",
        )
    if not is_geographic and not 1 <= resolution <= 1000:
        raise InvalidOptionError(
            f"resolution {resolution:g} m is outside 1..1000 m",
            hint="Sentinel-2's finest bands are 10 m; e.g. --resolution 10 or 20 or 60",
        )
    return Query(
        geometry=geometry,
        interval=interval,
        collection=collection.strip(),
        max_cloud=max_cloud,
        bands=band_tuple,
        resolution=float(resolution),
        crs=canonical_crs,
        dtype=output_dtype(band_tuple, dtype),
    )


def _finite(value: Any, name: str) -> float:
    import math

    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(number) or isinstance(value, bool):
        raise InvalidOptionError(f"{name} {value!r} is not a finite number")
    return number


def _parse_crs(crs: str | None) -> tuple[str | None, bool]:
    """``EPSG:NNNN`` (or a bare number) -> canonical string and whether it is geographic."""
    if crs is None:
        return None, False
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    text = str(crs).strip()
    if text.isdigit():
        text = f"EPSG:{text}"
    try:
        parsed = CRS.from_user_input(text)
        code = parsed.to_epsg()
    except CRSError:
        code = None
    if code is None or not text.upper().startswith("EPSG:"):
        raise InvalidOptionError(
            f"unsupported CRS {crs!r}", hint="give an EPSG code, e.g. --crs EPSG:32636 or --crs EPSG:4326"
        )
    return f"EPSG:{code}", bool(CRS.from_epsg(code).is_geographic)


@contextlib.contextmanager
def open_service(settings: Settings) -> Iterator[Settings]:
    """Yield settings with service URLs; for the sandbox, run the emulator for the block."""
    if not settings.is_sandbox:
        yield settings
        return
    from .testing.emulator import Emulator

    with Emulator() as emulator:
        log.info("sandbox: emulator running at %s (synthetic data)", emulator.url)
        yield settings.with_urls(emulator.url, emulator.token_url)


def _settings(settings: Settings | None, provider: str | None, env_file: Any, **extra: Any) -> Settings:
    if settings is not None:
        return settings
    return load_settings(env_file=env_file, provider=provider, **extra)


def search_query(query: Query, *, settings: Settings, max_items: int | None = None) -> list[Any]:
    """Search the catalog for ``query``; items in time order."""
    from .catalog import search as catalog_search
    from .http import open_session

    with open_service(settings) as live:
        session = open_session(live)
        try:
            return catalog_search(session, live.catalog_url, query, max_items=max_items)
        finally:
            session.close()


def search(
    location: Any,
    start: Any,
    end: Any = None,
    *,
    provider: str | None = None,
    env_file: str | Path | None = None,
    settings: Settings | None = None,
    size: float = 5000.0,
    collection: str = DEFAULT_COLLECTION,
    max_cloud: float | None = None,
    max_items: int | None = None,
) -> Any:
    """Search Sentinel-2 L2A scenes; returns a ``pystac.ItemCollection`` in time order.

    ``location``: [lon, lat], [W, S, E, N], a ring of [lon, lat] pairs, a GeoJSON dict or a
    shapely geometry (longitude first). ``start``/``end``: dates; the end day is inclusive.
    """
    from pystac import ItemCollection

    query = build_query(location, start, end, size=size, collection=collection, max_cloud=max_cloud)
    items = search_query(query, settings=_settings(settings, provider, env_file), max_items=max_items)
    return ItemCollection(items)


def get_query(
    query: Query,
    *,
    settings: Settings,
    workers: int = 4,
    executor: Executor | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    time_tolerance_minutes: float = 60.0,
    progress: bool = False,
    echo: bool = False,
    requests_per_minute: float | None = None,
    fmt: str = "cog",
    preview: bool = False,
    min_clear: float | None = None,
) -> Any:
    """Search, plan and download; returns a ``GetResult``.

    ``fmt``: ``"cog"`` (Cloud-Optimized GeoTIFF), ``"gtiff"`` or ``"raw"``. ``preview``: a quicklook PNG
    next to each file. ``min_clear``: screen each acquisition with one small SCL request and
    skip those with less than this percentage of clear pixels over the area.
    """
    from .catalog import search as catalog_search
    from .http import RateLimiter, open_session
    from .plan import plan_jobs, summarize
    from .raster import check_format
    from .run import GetResult, RunContext, execute

    try:
        fmt = check_format(fmt)
    except ValueError:
        raise InvalidOptionError(f"unknown output format {fmt!r}",
                                 hint="use --format cog (default), gtiff or raw") from None
    if min_clear is not None:
        min_clear = _finite(min_clear, "min_clear")
        if not 0 <= min_clear <= 100:
            raise InvalidOptionError(f"--min-clear {min_clear:g} is outside 0..100",
                                     hint="give a percentage of clear pixels, e.g. --min-clear 70")
        if getattr(settings, "source", "process") != "process":
            raise InvalidOptionError(
                f"--min-clear needs the Sentinel Hub Process API; the {settings.provider} provider has none",
                hint="use --max-cloud with this provider, or a sentinelhub/cdse/sandbox provider",
            )

    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 64:
        raise InvalidOptionError(f"workers={workers!r} must be a whole number from 1 to 64")
    if not 0 < time_tolerance_minutes <= 24 * 60:
        raise InvalidOptionError(
            f"time tolerance {time_tolerance_minutes:g} min must be above 0 and at most 1440",
            hint="the default of 60 minutes groups tiles of one satellite pass",
        )
    out_dir = _prepare_output_dir(settings.output_dir, create=not dry_run)
    if requests_per_minute is not None:
        requests_per_minute = _finite(requests_per_minute, "rate limit")
        if not 1 <= requests_per_minute <= 100_000:
            raise InvalidOptionError(
                f"rate limit {requests_per_minute:g} requests/minute is outside 1..100000",
                hint="give your account's limit, e.g. --rate-limit 300 for the CDSE free tier",
            )
    with open_service(settings) as live:
        limiter = RateLimiter(requests_per_minute=requests_per_minute)
        session = open_session(live, limiter=limiter, pool_size=max(workers, 4))
        try:
            items = catalog_search(session, live.catalog_url, query)
            jobs = plan_jobs(query, items, out_dir,
                             tolerance=timedelta(minutes=time_tolerance_minutes))
            if echo:
                print(summarize(jobs, query=query, item_count=len(items), fetch="cog" if live.source == "assets" else "process"),
                      file=sys.stderr)
            if dry_run:
                if echo and min_clear is not None:
                    print(f"--min-clear {min_clear:g}: a real run screens each acquisition first "
                          "(one small SCL request each)", file=sys.stderr)
                return GetResult(jobs=jobs, dry_run=True)
            screened: list[Any] = []
            if min_clear is not None:
                jobs, screened = _screen(jobs, session, live, query, min_clear, overwrite=overwrite,
                                         fmt=fmt, workers=workers, echo=echo)
            tags = {"SYNTHETIC": "true"} if settings.is_sandbox else {}
            context = RunContext(live, session=session, overwrite=overwrite, tags=tags,
                                 session_options={"pool_size": 2}, fmt=fmt)
            result = execute(jobs, context, executor=executor, workers=workers,
                             progress=progress, manifest_root=out_dir)
            result.min_clear, result.screened = min_clear, screened
            if preview:
                result.previews = _previews(result.paths, overwrite=overwrite)
            result.stats = _session_stats(session)
            return result
        finally:
            session.close()


def _screen(jobs: list[Any], session: Any, settings: Settings, query: Query, min_clear: float, *,
            overwrite: bool, fmt: str, workers: int, echo: bool) -> tuple[list[Any], list[Any]]:
    """Jobs left after --min-clear; complete files are kept without a screening request."""
    from .clouds import screen
    from .raster import is_complete

    todo = [j for j in jobs if overwrite or not is_complete(j.destination, j.grid, j.bands, j.dtype)]
    _, shares = screen(todo, session, settings.process_url, min_clear, geometry=query.geometry,
                       workers=workers)
    cloudy = {id(s.job) for s in shares if not s.keep(min_clear)}
    if echo and shares:
        print(f"clear share over the area (SCL 4/5/6/11; --min-clear {min_clear:g}):", file=sys.stderr)
        for share in shares:
            verdict = "skip" if id(share.job) in cloudy else "keep"
            print(f"  {verdict}  {share.describe()}", file=sys.stderr)
    return [j for j in jobs if id(j) not in cloudy], shares


def _previews(paths: list[Path], *, overwrite: bool) -> list[Path]:
    """A quicklook PNG next to each GeoTIFF (redone when older than its GeoTIFF)."""
    from .preview import quicklook, quicklook_path

    written = []
    for path in paths:
        png = quicklook_path(path)
        try:
            if overwrite or not png.exists() or png.stat().st_mtime_ns < path.stat().st_mtime_ns:
                quicklook(path, png)
            written.append(png)
        except Exception as exc:  # a picture must never fail a download
            log.warning("no quicklook for %s: %s", path.name, exc)
    return written


def _session_stats(session: Any) -> dict[str, Any]:
    stats = getattr(session, "stats", None)
    if callable(stats):
        stats = stats()
    return dict(stats) if isinstance(stats, dict) else {}


def _prepare_output_dir(path: Path, *, create: bool) -> Path:
    """The output folder, created if missing; a clear error when it cannot be used."""
    import os

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


def get(
    location: Any,
    start: Any,
    end: Any = None,
    *,
    out: str | Path | None = None,
    provider: str | None = None,
    env_file: str | Path | None = None,
    settings: Settings | None = None,
    size: float = 5000.0,
    collection: str = DEFAULT_COLLECTION,
    max_cloud: float | None = None,
    bands: Any = "all",
    resolution: float | None = None,
    crs: str | None = None,
    dtype: str = "uint16",
    workers: int = 4,
    executor: Executor | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    time_tolerance: timedelta | float = timedelta(hours=1),
    progress: bool = False,
    format: str = "cog",  # noqa: A002 - the user-facing name of --format
    preview: bool = False,
    min_clear: float | None = None,
    requests_per_minute: float | None = None,
) -> Any:
    """Download every acquisition over ``location`` between ``start`` and ``end`` (inclusive).

    Returns a ``GetResult`` with ``paths`` (complete files, time order), ``written``,
    ``skipped``, ``failed`` and ``cloudy`` (skipped by ``min_clear``). ``executor`` may be any
    ``concurrent.futures.Executor``. ``format``: ``"cog"``, ``"gtiff"`` or ``"raw"``; ``preview``: a
    quicklook PNG next to each file; ``min_clear``: minimum percentage of clear pixels (SCL)
    over the area, screened with one small request per acquisition; ``requests_per_minute``:
    the account's rate limit to pace to (default: learnt from the first 429).
    """
    query = build_query(location, start, end, size=size, collection=collection, max_cloud=max_cloud,
                        bands=bands, resolution=resolution, crs=crs, dtype=dtype)
    tolerance = (time_tolerance.total_seconds() / 60 if isinstance(time_tolerance, timedelta)
                 else _finite(time_tolerance, "time_tolerance"))
    live = _settings(settings, provider, env_file, output_dir=out)
    if settings is not None and out is not None:
        from dataclasses import replace

        live = replace(settings, output_dir=Path(out))
    return get_query(query, settings=live, workers=workers, executor=executor, overwrite=overwrite,
                     dry_run=dry_run, time_tolerance_minutes=tolerance, progress=progress,
                     fmt=format, preview=preview, min_clear=min_clear,
                     requests_per_minute=requests_per_minute)
