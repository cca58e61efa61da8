"""The Python API: ``stacfetch.search()`` and ``stacfetch.get()``, thin layers over query + run.

    import stacfetch
    result = stacfetch.get([34.665, 31.625], "2022-01-20", "2022-01-25", provider="sandbox")
    for path in result.paths: ...

Raw arguments are validated once, by ``query.build_query`` and ``query.build_options``; this
module opens the service, searches, plans and hands the jobs to ``run.execute``. It prints
nothing: the CLI passes ``on_plan``/``on_screen`` callbacks to show the plan and the screening.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from pystac import Item, ItemCollection

from .bands import PRESETS, output_dtype
from .budget import CDSE_FREE_TIER_PU, check_budget, free_space, max_px_for_budget
from .catalog import Page, iter_pages, sort_key
from .catalog import search as catalog_search
from .clouds import ClearShare, screen, screen_assets
from .config import Settings, check_timeout, load_settings
from .http import LimitMemory, RateLimiter, open_service, open_session
from .plan import Job, plan_jobs
from .preview import quicklook, quicklook_path
from .query import (
    DEFAULT_COLLECTION,
    DEFAULT_TOLERANCE,
    GetOptions,
    Query,
    build_options,
    build_query,
)
from .raster import is_complete
from .result import GetResult
from .run import RunContext, execute
from .sources.process import check_crs
from .stream import PageStream

__all__ = ["build_query", "get", "get_query", "open_service", "search", "search_query"]

log = logging.getLogger(__name__)

PlanHook = Callable[[Sequence[Job], int], None]  # (jobs, number of items found)
ScreenHook = Callable[[Sequence[ClearShare]], None]  # the --min-clear measurements
# the search has more than one page: None when downloads start during it, else the option
# that needs the whole plan first ("--max-pu", "--min-clear")
StreamHook = Callable[[str | None], None]


def _settings(settings: Settings | None, provider: str | None, env_file: Any, *,
              timeout: float | None = None, **extra: Any) -> Settings:
    if settings is not None:
        return settings if timeout is None else replace(settings, timeout=check_timeout(timeout))
    return load_settings(env_file=env_file, provider=provider, timeout=timeout, **extra)


def search_query(query: Query, *, settings: Settings, max_items: int | None = None) -> list[Item]:
    """Search the catalog for ``query``; items in time order."""
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
    timeout: float | None = None,
) -> ItemCollection:
    """Search Sentinel-2 L2A scenes; returns a ``pystac.ItemCollection`` in time order.

    ``location``: [lon, lat], [W, S, E, N], a ring of [lon, lat] pairs, a GeoJSON dict or a
    shapely geometry (longitude first). ``start``/``end``: dates; the end day is inclusive.
    ``timeout``: seconds a request may wait for the service's answer to start (default 120).
    """
    query = build_query(location, start, end, size=size, collection=collection, max_cloud=max_cloud)
    items = search_query(query, settings=_settings(settings, provider, env_file, timeout=timeout),
                         max_items=max_items)
    return ItemCollection(items)


def get_query(
    query: Query,
    *,
    settings: Settings,
    options: GetOptions | None = None,
    executor: Executor | None = None,
    progress: bool | None = None,
    on_plan: PlanHook | None = None,
    on_screen: ScreenHook | None = None,
    on_stream: StreamHook | None = None,
    **raw: Any,
) -> GetResult:
    """Search, plan and download; returns a ``GetResult``.

    ``options``: validated run options; or give their raw values as keywords (``fmt``,
    ``workers``, ``overwrite``, ``dry_run``, ``time_tolerance``, ``min_clear``,
    ``requests_per_minute``, ``preview``, ``max_pu``, ``stream``: see ``query.build_options``).

    A search of several Catalog pages streams (``stream.PageStream``): each page's final
    acquisitions start downloading while the next page is asked, ``on_plan`` is told the whole
    plan when the search ends, and the result is the one of the whole search. Guard rails that
    need the whole plan keep it: ``max_pu`` and ``min_clear`` (and a dry run, and
    ``stream=False``) plan the whole search first; the disk space is checked page by page
    against the free space before the first download (never more is started than fits).
    """
    if options is None:
        options = build_options(settings, **raw)
    elif raw:
        raise TypeError(f"give either options= or raw option values, not both: {sorted(raw)}")
    if settings.source == "process" and query.crs is not None:
        check_crs(query.crs)  # refused before any request, with the list in the hint
    with open_service(settings) as live:
        memory = LimitMemory.for_service(live.base_url or live.stac_url or "", live.client_id)
        limiter = RateLimiter(requests_per_minute=options.requests_per_minute,
                              pu_per_minute=options.pu_limit, memory=memory)
        # a connection for each request in flight and one for the search's next page
        session = open_session(live, limiter=limiter, pool_size=max(options.workers + 1, 4))
        try:
            # no request costs more PU than the (configured or remembered) budget holds
            bands = tuple(query.bands) or PRESETS["all"]
            max_px = max_px_for_budget(limiter.pu_capacity, len(bands), output_dtype(bands, query.dtype))
            unstreamed = _needs_whole_plan(options)
            # a generic STAC API is asked to page newest first (the Sentinel Hub Catalog pages so
            # on its own and advertises no sort: its landing page is read beside the first page)
            newest_first = unstreamed is None and settings.source == "assets"
            pages = iter_pages(session, live.catalog_url, query, newest_first=newest_first)
            first, more = next(pages, ([], False))
            if more and on_stream is not None and not options.dry_run and options.stream:
                on_stream(unstreamed)
            tags = {"SYNTHETIC": "true"} if settings.is_sandbox else {}
            digests: dict[tuple[str, int, int, int], str] = {}  # each complete file hashed once
            context = RunContext(live, session=session, overwrite=options.overwrite, tags=tags,
                                 session_options={"pool_size": 2}, fmt=options.fmt, digests=digests,
                                 compress=options.compress)
            if more and unstreamed is None:  # several pages: download from the first one on
                stream = PageStream(query, options.out_dir, tolerance=options.tolerance, max_px=max_px)
                jobs_found = _streamed(stream, first, pages, live, options, digests, on_plan)
                result = execute(jobs_found, context, executor=executor, workers=options.workers,
                                 progress=progress, manifest_root=options.out_dir)
                return _finish(result, session, options, [])
            items = sorted([*first, *(item for page, _ in pages for item in page)], key=sort_key)
            jobs = plan_jobs(query, items, options.out_dir, tolerance=options.tolerance, max_px=max_px)
            if on_plan is not None:
                on_plan(jobs, len(items))
            todo = [j for j in jobs if options.overwrite
                    or not is_complete(j.destination, j.grid, j.bands, j.dtype, digests=digests)]
            # before any Process request (screening included): --max-pu, disk space, free tier
            check_budget(todo, source=live.source, provider=live.provider, out_dir=options.out_dir,
                         max_pu=options.max_pu, screening=options.min_clear is not None,
                         fmt=options.fmt, workers=options.workers)
            if options.dry_run:
                return GetResult(jobs=jobs, dry_run=True)
            screened: list[ClearShare] = []
            if options.min_clear is not None:
                jobs, screened = _screen(jobs, todo, session, live, query, options)
                if on_screen is not None and screened:
                    on_screen(screened)
            result = execute(jobs, context, executor=executor, workers=options.workers,
                             progress=progress, manifest_root=options.out_dir)
            return _finish(result, session, options, screened)
        finally:
            session.close()


def _needs_whole_plan(options: GetOptions) -> str | None:
    """Why the run plans the whole search before its first download (None: it may stream)."""
    if options.dry_run:
        return "--dry-run"
    if not options.stream:
        return "--no-stream"
    if options.max_pu is not None:
        return "--max-pu"  # refused before any request when the whole plan's estimate is above
    if options.min_clear is not None:
        return "--min-clear"  # screens the whole plan, then downloads what is clear
    return None


def _streamed(stream: PageStream, first: list[Item], pages: Iterator[Page], live: Settings,
              options: GetOptions, digests: dict[tuple[str, int, int, int], str],
              on_plan: PlanHook | None) -> Iterator[Job]:
    """The jobs of each page as it arrives, each batch checked (disk space, the free tier)
    with every job before it, against the free space measured before the first download;
    then the rest of the whole search's plan, told to ``on_plan``."""
    todo: list[Job] = []
    free = free_space(options.out_dir)  # before the first download: what every batch must fit in
    warned = False

    def checked(jobs: list[Job]) -> list[Job]:
        nonlocal warned
        started = bool(todo)  # jobs that request something were given out before these
        todo.extend(j for j in jobs if options.overwrite
                    or not is_complete(j.destination, j.grid, j.bands, j.dtype, digests=digests))
        budget = check_budget(todo, source=live.source, provider="" if warned else live.provider,
                              out_dir=options.out_dir, fmt=options.fmt, workers=options.workers,
                              free_bytes=free, started=started)
        warned = warned or (live.provider == "cdse" and budget.processing_units > CDSE_FREE_TIER_PU)
        return jobs

    yield from checked(stream.add(first))
    for page, _ in pages:
        yield from checked(stream.add(page))
    rest = stream.finish()
    if on_plan is not None:  # the totals, now that the search has ended
        on_plan(stream.plan, len(stream.items))
    yield from checked(rest)


def _finish(result: GetResult, session: Any, options: GetOptions,
            screened: list[ClearShare]) -> GetResult:
    """Quicklooks and counters after the downloads."""
    result.min_clear, result.screened = options.min_clear, screened
    if options.preview:
        result.previews = _previews(result.paths, overwrite=options.overwrite)
    result.stats = {**_session_stats(session), **result.stats}  # and a cluster's counters
    return result


def _screen(jobs: list[Job], todo: list[Job], session: Any, settings: Settings, query: Query,
            options: GetOptions) -> tuple[list[Job], list[ClearShare]]:
    """Jobs left after --min-clear; only ``todo`` (not yet complete) are screened."""
    assert options.min_clear is not None
    if settings.source == "assets":  # a STAC API's COGs: read each item's SCL asset over the area
        _, shares = screen_assets(todo, settings, options.min_clear, session=session,
                                  workers=options.workers)
    else:
        _, shares = screen(todo, session, settings.process_url, options.min_clear,
                           geometry=query.geometry, workers=options.workers)
    cloudy = {id(s.job) for s in shares if not s.keep(options.min_clear)}
    return [j for j in jobs if id(j) not in cloudy], shares


def _previews(paths: list[Path], *, overwrite: bool) -> list[Path]:
    """A quicklook PNG next to each GeoTIFF (redone when older than its GeoTIFF)."""
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
    harmonize: bool = True,
    workers: int = 4,
    executor: Executor | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    time_tolerance: timedelta | float = DEFAULT_TOLERANCE,
    progress: bool | None = None,
    format: str = "cog",  # noqa: A002 - the user-facing name of --format
    compress: str | None = None,
    preview: bool = False,
    min_clear: float | None = None,
    requests_per_minute: float | None = None,
    max_pu: float | None = None,
    timeout: float | None = None,
    stream: bool = True,
) -> GetResult:
    """Download every acquisition over ``location`` between ``start`` and ``end`` (inclusive).

    Returns a ``GetResult`` with ``paths`` (complete files, time order), ``written``,
    ``skipped``, ``failed`` and ``cloudy`` (skipped by ``min_clear``). ``executor`` may be any
    ``concurrent.futures.Executor``; a process pool's workers see the run's stop (Ctrl-C, the
    monthly quota) through a file in the temporary folder, but not its ``workers`` bound on
    requests in flight: size the pool to the requests you want at once (Dask workers on other
    machines see no stop: each stops at its next refused request). ``format``: ``"cog"``, ``"gtiff"`` or ``"raw"``;
    ``compress``: ``"deflate"`` (None, the default: readable everywhere) or ``"zstd"`` (faster to
    write and to read, files ~5 % larger; cog and gtiff only); ``preview``: a
    quicklook PNG next to each file; ``min_clear``: minimum percentage of clear pixels (SCL)
    over the area, screened with one small request per acquisition; ``time_tolerance``: a
    ``timedelta`` or minutes; ``requests_per_minute``: the account's rate limit to pace to
    (default: learnt from the first 429); ``harmonize=False``: the archive's own values
    (Process API ``harmonizeValues`` false; the band offset in the file's metadata);
    ``progress``: a progress bar (``tqdm.auto``) on a terminal or in Jupyter by default,
    ``True`` always, ``False`` never; ``max_pu``: refuse, before any Process request, a plan
    estimated above this many processing units. A plan larger than the output folder's free
    space is refused too. ``timeout``: seconds a request may wait for the service's answer to
    start (default 120; a silent service is asked twice, then the run says so). ``stream``:
    a search of several Catalog pages starts downloading with its first page (the plan and the
    result are the same); False plans the whole search first, as ``max_pu`` and ``min_clear``
    always do.
    """
    query = build_query(location, start, end, size=size, collection=collection, max_cloud=max_cloud,
                        bands=bands, resolution=resolution, crs=crs, dtype=dtype, harmonize=harmonize)
    live = _settings(settings, provider, env_file, timeout=timeout, output_dir=out)
    if settings is not None and out is not None:
        live = replace(live, output_dir=Path(out))
    options = build_options(live, fmt=format, compress=compress, workers=workers, overwrite=overwrite,
                            dry_run=dry_run,
                            time_tolerance=time_tolerance, min_clear=min_clear,
                            requests_per_minute=requests_per_minute, preview=preview, max_pu=max_pu,
                            stream=stream)
    return get_query(query, settings=live, options=options, executor=executor, progress=progress)
