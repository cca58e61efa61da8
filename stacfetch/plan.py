"""Plan a download: group items into acquisitions, lay the output grid, cut tiles, name files.

Acquisitions
    Items of the same platform and relative orbit (when known) are sorted by datetime (then
    id). An item joins the current acquisition when its datetime is at most ``tolerance``
    (default 1 h, inclusive) after the acquisition's *first* item; otherwise it starts a new
    one. Anchoring on the first item (not the previous one) keeps
    every acquisition at most ``tolerance`` wide, so a long series of items can never chain
    into one huge group. Neighbouring tiles of one pass (seconds apart) and duplicate
    processing baselines of one tile (same sensing time) fall into one acquisition; passes of
    different days never do. Where one MGRS tile appears several times, the item with the
    newest processing baseline (then newest generation time) is that tile's *primary* item;
    every item id is still recorded.

Output grid
    CRS: ``query.crs`` or, by default, the UTM zone of the area's centroid (EPSG:326zz north,
    327zz south; with the Norway/Svalbard exceptions: ``location.utm_epsg``). The EPSG:4326 area is
    densified, reprojected with pyproj and its bounds are rounded *outwards* to whole
    multiples of the resolution, so the grid covers the whole area and grids of overlapping
    areas (from any run) share pixel edges exactly.

Tiles
    The grid is cut into ``ceil(width / max_px)`` x ``ceil(height / max_px)`` tiles of sizes
    as equal as possible (5001 px -> 1667 + 1667 + 1667), or, with ``align=512`` (what
    ``plan_jobs`` uses by default), of block-aligned sizes when that needs no extra tile
    (2048 + 2048 + 905), so no block of the output GeoTIFF is shared by two tiles; tiles
    partition the grid exactly.
    Tile bounds are computed from integer pixel indices, never by accumulating floats.

Layout (deterministic; every part is sanitised to ``[A-Za-z0-9._-]``)::

    <out>/<collection>/<area-id>/<YYYY-MM-DD>T<HHMMSS>_<platform>_<R###|T#####>.tif

    e.g. sentinel-2-l2a/31.62N_34.67E_5.0km_utm36n_10m_all_uint16-3f9a2c1b/
         2022-01-21T083201_S2A_R021.tif

    ``area-id`` = centre (lat, lon), extent, CRS, resolution, band-set name and dtype, then
    an 8-hex-digit SHA-256 of (geometry WKB, bands, dtype, resolution, CRS): different
    areas, band sets, dtypes, resolutions or CRSs never share a folder. The time is the
    acquisition's earliest item datetime (UTC). The last part is the relative orbit
    (``R021``) when known, else the tile (``T36RXV``) of a single-tile acquisition, else
    ``<n>tiles``. Names that would still coincide (also case-insensitively) get ``-2``,
    ``-3`` ... in acquisition order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from .bands import PRESETS, output_dtype
from .crs import canonical_crs, check_resolution
from .errors import InvalidOptionError
from .location import is_rectangle, utm_epsg
from .query import DEFAULT_COLLECTION, DEFAULT_TOLERANCE, Query
from .stac.items import SceneFacts, scene_facts

__all__ = [
    "DEFAULT_ALIGN",
    "DEFAULT_MAX_PX",
    "DEFAULT_TOLERANCE",
    "Acquisition",
    "Grid",
    "Job",
    "Plan",
    "Tile",
    "area_id",
    "band_set_name",
    "cut_tiles",
    "destination_name",
    "estimate_processing_units",
    "group_acquisitions",
    "grid_for",
    "plan_jobs",
    "safe_join",
    "sanitize",
]

DEFAULT_MAX_PX = 2500  # Process API: output width/height 1..2500
DEFAULT_ALIGN = 512  # the output GeoTIFF's block size (write.BLOCK)
MAX_GRID_SIDE_PX = 1_000_000  # refuse absurd grids before allocating tile lists
_PX_EPS = 1e-6  # pixel fraction ignored when rounding bounds (reprojection noise)
_DENSIFY_DEG = 0.01  # densify the EPSG:4326 outline every ~1 km before reprojecting


# --- acquisitions -----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Acquisition:
    """Items of one satellite pass over the area: one output GeoTIFF.

    ``items`` are sorted by (datetime, id). ``primary_items`` hold one item per MGRS tile
    (newest processing baseline); items without a known tile are all primary.
    ``cloud_cover`` is the mean ``eo:cloud_cover`` of the primary items (None if none has one).
    """

    items: tuple[pystac.Item, ...]
    primary_items: tuple[pystac.Item, ...]
    datetime: datetime
    start: datetime
    end: datetime
    platform: str
    tiles: tuple[str, ...]
    relative_orbit: int | None
    cloud_cover: float | None

    @classmethod
    def from_items(cls, items: Iterable[pystac.Item]) -> Acquisition:
        return cls._from_scenes([(it, scene_facts(it)) for it in items])

    @classmethod
    def _from_scenes(cls, scenes: Sequence[tuple[pystac.Item, SceneFacts]]) -> Acquisition:
        """From items and their facts (parsed once by the caller)."""
        ordered = sorted(scenes, key=lambda s: (s[1].sensing_time(), s[0].id))
        if not ordered:
            raise ValueError("an acquisition needs at least one item")
        times = [f.sensing_time() for _, f in ordered]
        best: dict[str, tuple[pystac.Item, SceneFacts]] = {}
        untiled: list[pystac.Item] = []
        for it, f in ordered:
            if f.tile is None:
                untiled.append(it)
            elif f.tile not in best or (f.baseline_key, it.id) > (best[f.tile][1].baseline_key, best[f.tile][0].id):
                best[f.tile] = (it, f)
        keep = {id(it) for it, _ in best.values()} | {id(it) for it in untiled}
        primary = [(it, f) for it, f in ordered if id(it) in keep]
        platforms = sorted({f.platform for _, f in ordered if f.platform})
        orbits = [f.relative_orbit for _, f in primary if f.relative_orbit is not None]
        clouds = [f.cloud_cover for _, f in primary if f.cloud_cover is not None]
        return cls(
            items=tuple(it for it, _ in ordered),
            primary_items=tuple(it for it, _ in primary),
            datetime=times[0],
            start=times[0],
            end=times[-1],
            platform="-".join(platforms) or "S2",
            tiles=tuple(sorted(best)),
            relative_orbit=statistics.mode(orbits) if orbits else None,
            cloud_cover=statistics.fmean(clouds) if clouds else None,
        )

    @property
    def collection(self) -> str:
        """The collection id of the items (``sentinel-2-l2a`` when unknown)."""
        return str(self.items[0].collection_id or DEFAULT_COLLECTION)

    @property
    def primary(self) -> pystac.Item:
        """The first primary item (earliest), representative of the acquisition."""
        return self.primary_items[0]

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(it.id for it in self.items)

    @property
    def duplicate_ids(self) -> tuple[str, ...]:
        """Ids of items superseded by a newer processing baseline of the same tile."""
        keep = {id(it) for it in self.primary_items}
        return tuple(it.id for it in self.items if id(it) not in keep)

    @property
    def key(self) -> str:
        """Readable, unique within one plan: ``2022-01-21T08:32:01Z_S2A_R021``."""
        stamp = self.datetime.strftime("%Y-%m-%dT%H:%M:%S")
        if self.datetime.microsecond:
            stamp += f".{self.datetime.microsecond:06d}"
        return f"{stamp}Z_{self.platform}_{self._place()}"

    def _place(self) -> str:
        if self.relative_orbit is not None:
            return f"R{self.relative_orbit:03d}"
        if len(self.tiles) == 1:
            return f"T{self.tiles[0]}"
        if self.tiles:
            return f"{len(self.tiles)}tiles"
        return "unknown"

    def __repr__(self) -> str:
        return f"Acquisition({self.key}, {len(self.items)} items, tiles={','.join(self.tiles)})"


def group_acquisitions(
    items: Iterable[pystac.Item], tolerance: timedelta = DEFAULT_TOLERANCE
) -> list[Acquisition]:
    """Group items of one pass: same platform and relative orbit, datetimes within
    ``tolerance`` of the group's first item (inclusive).

    Platform and orbit are compared only when known (unknown is its own value). They keep
    apart passes that a wide search area can bring within the hour (S2A and S2B passes 48
    minutes apart over western Canada in the Sentinel Hub sample page). Items with the same
    id are kept once. The result is sorted by datetime.
    """
    if tolerance < timedelta(0):
        raise InvalidOptionError(f"time tolerance must not be negative, got {tolerance}")
    unique: dict[str, pystac.Item] = {}
    for it in items:
        unique.setdefault(it.id, it)
    passes: dict[tuple[str | None, int | None], list[tuple[pystac.Item, SceneFacts]]] = {}
    for it in unique.values():
        f = scene_facts(it)
        passes.setdefault((f.platform, f.relative_orbit), []).append((it, f))
    groups: list[list[tuple[pystac.Item, SceneFacts]]] = []
    for members in passes.values():
        anchor: datetime | None = None
        for it, f in sorted(members, key=lambda s: (s[1].sensing_time(), s[0].id)):
            t = f.sensing_time()
            if anchor is None or t - anchor > tolerance:
                groups.append([])
                anchor = t
            groups[-1].append((it, f))
    acquisitions = [Acquisition._from_scenes(g) for g in groups]
    return sorted(acquisitions, key=lambda a: (a.datetime, a.key))


# --- the output grid --------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _transformer(source: str, target: str) -> Transformer:
    """A cached lon/lat-ordered Transformer (building one costs tens of milliseconds)."""
    return Transformer.from_crs(source, target, always_xy=True)


def _index(value: float) -> int:
    """Nearest integer of a value that is an integer up to float noise."""
    return int(round(value))


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid whose origin is a whole multiple of ``resolution``."""

    crs: str
    transform: Affine
    width: int
    height: int
    resolution: float

    def __post_init__(self) -> None:
        t, res = self.transform, self.resolution
        if not (res > 0 and t.a == res and t.e == -res and t.b == 0 and t.d == 0):
            raise ValueError(f"Grid needs a north-up transform with pixel size {res}, got {t!r}")
        for v in (t.c, t.f):
            if abs(v / res - round(v / res)) > 1e-6:
                raise ValueError(f"Grid origin {v} is not a multiple of the resolution {res}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"Grid size must be positive, got {self.width} x {self.height}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` as rasterio and numpy order them."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the grid CRS."""
        return self.window_bounds(Window(0, 0, self.width, self.height))

    @property
    def origin_index(self) -> tuple[int, int]:
        """``(column, row)`` of the top-left corner in resolution units from the CRS origin."""
        return (_index(self.transform.c / self.resolution), _index(self.transform.f / self.resolution))

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """Exact ``(left, bottom, right, top)`` of an integer window (no float accumulation)."""
        col0, row0 = int(window.col_off), int(window.row_off)
        w, h = int(window.width), int(window.height)
        ix, iy = self.origin_index
        res = self.resolution
        return ((ix + col0) * res, (iy - row0 - h) * res, (ix + col0 + w) * res, (iy - row0) * res)

    def window_transform(self, window: Window) -> Affine:
        left, _, _, top = self.window_bounds(window)
        return Affine(self.resolution, 0.0, left, 0.0, -self.resolution, top)

    @property
    def is_geographic(self) -> bool:
        return CRS.from_user_input(self.crs).is_geographic

    def footprint_4326(self) -> BaseGeometry:
        """The grid's outline in EPSG:4326 (densified), for STAC geometry."""
        left, bottom, right, top = self.bounds
        box = shapely.box(left, bottom, right, top)
        if self.is_geographic:
            return box
        step = max(right - left, top - bottom) / 8
        to_4326 = _transformer(self.crs, "EPSG:4326")
        return shapely.transform(shapely.segmentize(box, step), to_4326.transform, interleaved=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "crs": self.crs,
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
            "resolution": self.resolution,
        }


def grid_for(geometry: BaseGeometry, crs: str | None = None, resolution: float = 10.0) -> Grid:
    """The snapped grid covering ``geometry`` (EPSG:4326) in ``crs`` (default: UTM zone)."""
    if geometry.is_empty:
        raise InvalidOptionError("the area is empty")
    # default: the zone the point square was built in (Norway/Svalbard aware)
    name = f"EPSG:{utm_epsg(geometry)}" if crs is None else canonical_crs(crs)
    res = check_resolution(name, resolution)
    target = CRS.from_user_input(name)
    if target.is_geographic and target.to_epsg() == 4326:
        projected = geometry
    else:
        to_target = Transformer.from_crs("EPSG:4326", target, always_xy=True)
        dense = shapely.segmentize(geometry, _DENSIFY_DEG)
        projected = shapely.transform(dense, to_target.transform, interleaved=False)
    minx, miny, maxx, maxy = projected.bounds
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InvalidOptionError(f"the area cannot be expressed in {name}")
    col0 = math.floor(minx / res + _PX_EPS)
    col1 = math.ceil(maxx / res - _PX_EPS)
    row_top = math.ceil(maxy / res - _PX_EPS)
    row_bottom = math.floor(miny / res + _PX_EPS)
    width, height = max(col1 - col0, 1), max(row_top - row_bottom, 1)
    if width > MAX_GRID_SIDE_PX or height > MAX_GRID_SIDE_PX:
        raise InvalidOptionError(
            f"the area is {width} x {height} pixels at {res:g} {'degrees' if target.is_geographic else 'm'}",
            hint="use a smaller area or a coarser --resolution",
        )
    transform = Affine(res, 0.0, col0 * res, 0.0, -res, row_top * res)
    return Grid(crs=name, transform=transform, width=width, height=height, resolution=res)


# --- tiles ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tile:
    """One Process API request: a window of the grid and its exact bounds."""

    row: int
    col: int
    window: Window
    bounds: tuple[float, float, float, float]

    @property
    def width(self) -> int:
        return int(self.window.width)

    @property
    def height(self) -> int:
        return int(self.window.height)

    @property
    def name(self) -> str:
        return f"r{self.row}c{self.col}"


def _split(length: int, max_px: int, align: int | None = None) -> list[tuple[int, int]]:
    """``(offset, size)`` pieces of ``length``, none above ``max_px``, as few as possible.

    Sizes are as equal as possible (bigger ones first), or with ``align`` multiples of
    ``align`` except the last, when that needs no more pieces.
    """
    parts = math.ceil(length / max_px)
    if align:
        size = math.ceil(math.ceil(length / parts) / align) * align
        if size <= max_px:
            return [(off, min(size, length - off)) for off in range(0, length, size)]
    base, extra = divmod(length, parts)
    out, offset = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append((offset, size))
        offset += size
    return out


def cut_tiles(grid: Grid, max_px: int = DEFAULT_MAX_PX, *, align: int | None = None) -> list[Tile]:
    """Partition ``grid`` into tiles of at most ``max_px`` a side, row-major.

    Default: sizes as equal as possible (5001 -> 3 x 1667). ``align=512`` makes tile edges
    fall on the output's 512-px block edges when that costs no extra request (5001 ->
    2048 + 2048 + 905), so no GeoTIFF block is written twice (GDAL otherwise rewrites
    the shared blocks, leaving some dead space in the file).
    """
    if not isinstance(max_px, int) or isinstance(max_px, bool) or max_px < 1:
        raise InvalidOptionError(f"max_px must be a positive integer, got {max_px!r}")
    if align is not None and (not isinstance(align, int) or align < 1):
        raise InvalidOptionError(f"align must be a positive integer, got {align!r}")
    rows = _split(grid.height, max_px, align)
    cols = _split(grid.width, max_px, align)
    tiles = []
    for r, (row_off, h) in enumerate(rows):
        for c, (col_off, w) in enumerate(cols):
            window = Window(col_off, row_off, w, h)
            tiles.append(Tile(r, c, window, grid.window_bounds(window)))
    return tiles


# --- names ------------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


def sanitize(part: str, max_len: int = 100) -> str:
    """A safe single path component: ``[A-Za-z0-9._-]`` only, no leading dot/dash, capped.

    Over-long names keep a prefix plus a hash of the whole original, so they stay distinct.
    """
    text = str(part)
    clean = _UNSAFE.sub("_", text).lstrip(".-").rstrip(". ")
    clean = clean or "unnamed"
    if clean.split(".")[0].upper() in _WINDOWS_RESERVED:
        clean = "_" + clean
    if len(clean) > max_len:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        clean = clean[: max_len - 9].rstrip(".") + "-" + digest
    return clean


def safe_join(root: Path, *parts: str) -> Path:
    """``root / sanitize(p) / ...``, verified to resolve inside ``root``."""
    path = Path(root).joinpath(*(sanitize(p) for p in parts))
    base = Path(root).resolve()
    final = path.resolve()
    if final == base or base not in final.parents:
        raise InvalidOptionError(f"refusing output path outside {base}: {final}")
    return path


def band_set_name(bands: Sequence[str]) -> str:
    """A preset's name (``all``, ``truecolor``), up to 4 band names joined, or ``<n>bands``."""
    for name, preset in PRESETS.items():
        if tuple(bands) == preset:
            return name
    if len(bands) <= 4:
        return "-".join(bands)
    return f"{len(bands)}bands"


def _crs_label(crs: str) -> str:
    code = CRS.from_user_input(crs).to_epsg() or 0
    if 32601 <= code <= 32660:
        return f"utm{code - 32600}n"
    if 32701 <= code <= 32760:
        return f"utm{code - 32700}s"
    return f"epsg{code}"


def _res_label(grid: Grid) -> str:
    return f"{grid.resolution:g}{'deg' if grid.is_geographic else 'm'}"


def area_id(geometry: BaseGeometry, grid: Grid, bands: Sequence[str], dtype: str,
            harmonize: bool = True) -> str:
    """Readable prefix + hash of everything that changes the pixels: see the module docstring.

    Archive values (``harmonize`` false) get ``_raw`` in the name and their own hash."""
    c = geometry.centroid
    lat = f"{abs(c.y):.2f}{'N' if c.y >= 0 else 'S'}"
    lon = f"{abs(c.x):.2f}{'E' if c.x >= 0 else 'W'}"
    if grid.is_geographic:
        size = f"{max(grid.width, grid.height) * grid.resolution:.3g}deg"
    else:
        size = f"{max(grid.width, grid.height) * grid.resolution / 1000:.1f}km"
    fingerprint = json.dumps(
        {
            "geometry": shapely.to_wkb(geometry, hex=True, byte_order=1),
            "bands": list(bands),
            "dtype": dtype,
            "resolution": repr(float(grid.resolution)),
            "crs": grid.crs,
            **({} if harmonize else {"harmonize": False}),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:8]
    prefix = "_".join([lat, lon, size, _crs_label(grid.crs), _res_label(grid), band_set_name(bands), dtype]
                      + ([] if harmonize else ["raw"]))
    return sanitize(prefix, max_len=110) + "-" + digest


def destination_name(acquisition: Acquisition) -> str:
    """``2022-01-21T083201_S2A_R021`` (no suffix, no collision handling)."""
    stamp = acquisition.datetime.strftime("%Y-%m-%dT%H%M%S")
    return sanitize(f"{stamp}_{acquisition.platform}_{acquisition._place()}", max_len=120)


# --- jobs and the plan ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Job:
    """Everything needed to render and write one acquisition."""

    acquisition: Acquisition
    grid: Grid
    tiles: tuple[Tile, ...]
    bands: tuple[str, ...]
    dtype: str
    destination: Path
    geometry: BaseGeometry | None = None  # the area's polygon (lon/lat); None for a bbox or point
    harmonize: bool = True  # Process API harmonizeValues; False: the archive's values

    @property
    def key(self) -> str:
        return self.acquisition.key

    @property
    def area_dir(self) -> Path:
        """The folder holding this area's files and its manifest."""
        return self.destination.parent


def plan_jobs(
    query: Query,
    items: Sequence[pystac.Item],
    out_dir: Path,
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    max_px: int = DEFAULT_MAX_PX,
    align: int | None = DEFAULT_ALIGN,
) -> list[Job]:
    """One Job per acquisition, sorted by time; all share one grid and one area folder.

    ``align`` is passed to ``cut_tiles``: by default tile edges fall on the GeoTIFF's
    512-px block edges (same number of requests; shared blocks written twice made files
    up to twice as big in tests). ``align=None`` gives equal tile sizes.
    """
    bands = tuple(query.bands) or PRESETS["all"]
    dtype = output_dtype(bands, query.dtype)
    grid = grid_for(query.geometry, query.crs, query.resolution)
    tiles = tuple(cut_tiles(grid, max_px, align=align))
    folder = safe_join(Path(out_dir), query.collection,
                       area_id(query.geometry, grid, bands, dtype, query.harmonize))
    polygon = None if is_rectangle(query.geometry) else query.geometry
    jobs: list[Job] = []
    taken: set[str] = set()
    for acq in group_acquisitions(items, tolerance):
        stem = destination_name(acq)
        name, n = stem, 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name.lower())
        destination = safe_join(folder, name + ".tif")
        jobs.append(Job(acq, grid, tiles, bands, dtype, destination, polygon, query.harmonize))
    return jobs


def estimate_processing_units(width: int, height: int, bands: int | Sequence[str], dtype: str) -> float:
    """Sentinel Hub PU of one Process request: THE estimate (dry run, plan echo, --min-clear).

    The documented rule ("Processing Unit definition"): area factor = pixels / 512², at least
    0.01; times input bands / 3 with **no** floor (``dataMask`` is free: pass band names and it
    is not counted); times 2 for FLOAT32 output; at least 0.005 PU a request. The service
    reports what it charged in ``x-processingunits-spent``.
    """
    n = bands if isinstance(bands, int) else len([b for b in dict.fromkeys(bands) if b != "dataMask"])
    area = max(0.01, width * height / 262144)
    pu = area * n / 3
    if dtype == "float32":
        pu *= 2
    return max(pu, 0.005)


@dataclass(frozen=True)
class Plan:
    """Totals of a list of jobs, for ``--dry-run``."""

    jobs: tuple[Job, ...] = field(default_factory=tuple)

    @property
    def acquisitions(self) -> int:
        return len(self.jobs)

    @property
    def requests(self) -> int:
        """Process API requests: one per tile per acquisition."""
        return sum(len(j.tiles) for j in self.jobs)

    @property
    def tiles_per_acquisition(self) -> int:
        return len(self.jobs[0].tiles) if self.jobs else 0

    @property
    def pixels(self) -> int:
        return sum(j.grid.width * j.grid.height for j in self.jobs)

    @property
    def processing_units(self) -> float:
        """Estimated Sentinel Hub processing units (see ``estimate_processing_units``)."""
        return sum(
            estimate_processing_units(t.width, t.height, j.bands, j.dtype)
            for j in self.jobs
            for t in j.tiles
        )

    @property
    def estimated_bytes(self) -> int:
        """Upper bound: uncompressed size of all GeoTIFFs (deflate usually does better)."""
        return sum(j.grid.width * j.grid.height * len(j.bands) * np.dtype(j.dtype).itemsize for j in self.jobs)

    def summary(self) -> dict[str, Any]:
        """JSON-ready totals; PU and bytes are estimates."""
        first = self.jobs[0] if self.jobs else None
        return {
            "acquisitions": self.acquisitions,
            "tiles_per_acquisition": self.tiles_per_acquisition,
            "requests": self.requests,
            "pixels": self.pixels,
            "estimated_processing_units": round(self.processing_units, 3),
            "estimated_bytes_uncompressed": self.estimated_bytes,
            "grid": first.grid.to_dict() if first else None,
            "bands": list(first.bands) if first else [],
            "dtype": first.dtype if first else None,
            "area_dir": str(first.area_dir) if first else None,
            "files": [
                {
                    "key": j.key,
                    "destination": str(j.destination),
                    "item_ids": list(j.acquisition.item_ids),
                    "cloud_cover": j.acquisition.cloud_cover,
                }
                for j in self.jobs
            ],
        }
