"""Atomic, windowed GeoTIFF writing; completeness checks for resume; the STAC manifest.

A file is written as ``<dest>.part`` in the destination folder (so the final rename is
atomic), one tile at a time and in strips of at most one 512-px block row, so neither a
whole tile nor the mosaic is ever held decoded in memory. ``commit`` adds the band names
and tags (including ``STACFETCH_COMPLETE=1``), flushes and fsyncs, writes the sidecar
``<dest>.json`` (the source STAC items as a FeatureCollection) atomically, then renames the
``.part`` over ``<dest>``. A file is complete only when it carries that tag, matches the
expected grid, bands and dtype, and has its sidecar.

The manifest is a self-contained STAC Catalog (``catalog.json`` + ``items/<id>.json``)
in the area folder: one Item per GeoTIFF with the file as asset ``data`` carrying
``file:checksum`` (SHA-256 multihash, ``1220`` + hex digest) and ``file:size``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pystac
import rasterio
from pystac.layout import CustomLayoutStrategy
from pystac.stac_io import DefaultStacIO
from rasterio.crs import CRS
from rasterio.windows import Window

from . import __version__
from .errors import DownloadError, InvalidResponseError
from .plan import Acquisition, Grid, Job, Tile, sanitize

__all__ = [
    "BLOCK",
    "COG_BLOCK",
    "COMPLETE_TAG",
    "FORMATS",
    "ManifestRecord",
    "PartFile",
    "band_scale_offset",
    "complete_format",
    "convert_format",
    "discard_partial",
    "file_format",
    "is_complete",
    "part_path",
    "profile_for",
    "record_for",
    "sha256_file",
    "sidecar_path",
    "tags_for",
    "write_manifest",
]

log = logging.getLogger(__name__)

# GDAL's block cache defaults to 5 % of RAM; windowed writes of a large mosaic would fill it
# with dirty blocks. A bounded cache keeps peak memory flat (unless the user chose a value);
# 48 MB holds the block row of two tiles being copied at once.
os.environ.setdefault("GDAL_CACHEMAX", "48")

BLOCK = 512
COG_BLOCK = 512  # COG tiles (GDAL's default); also the size below which no further overview is made
# DEFLATE (readable everywhere) at level 1: on real Sentinel-2 data (../shared/data/rasters
# B04) level 1 was as small as level 6 (2.19 vs 2.27 MB) and 1.5x faster to write.
DEFLATE_LEVEL = 1
LARGE_COPY_PIXELS = 100_000_000  # samples above which the COG copy runs single-threaded
SMALL_COPY_PIXELS = 16_000_000  # samples up to which a copy is single-threaded (jobs run in parallel)
COPY_CACHE_MB = 64  # GDAL block cache while converting to COG
COMPLETE_TAG = "STACFETCH_COMPLETE"
FORMATS = ("cog", "gtiff", "raw")
MANIFEST_NAME = "catalog.json"
_FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
_PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_EO_EXT = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
# GDAL settings for our own reads and writes: no directory listing next to in-memory
# responses, compression on all cores.
_GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_NUM_THREADS": "ALL_CPUS"}


def part_path(dest: Path) -> Path:
    """``<dest>.part``: same folder, so ``os.replace`` onto ``dest`` is atomic."""
    return dest.with_name(dest.name + ".part")


def cog_part_path(dest: Path) -> Path:
    """``<dest>.cog.part``: the Cloud-Optimized copy being made from ``<dest>.part``."""
    return dest.with_name(dest.name + ".cog.part")


def tile_spool_path(dest: Path, tile_name: str) -> Path:
    """``<dest>.<tile>.tile.part``: one large response streamed to disk before it is written."""
    return dest.with_name(f"{dest.name}.{tile_name}.tile.part")


def sidecar_path(dest: Path) -> Path:
    """``<dest>.json``: the source STAC items of the file."""
    return dest.with_name(dest.name + ".json")


def profile_for(grid: Grid, bands: Sequence[str], dtype: str, *, nodata: float | None = 0) -> dict[str, Any]:
    """The GTiff creation profile: tiled 512 x 512, deflate with the right predictor, BigTIFF if needed."""
    kind = np.dtype(dtype).kind
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": len(bands),
        "dtype": dtype,
        "crs": CRS.from_user_input(grid.crs),
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "zlevel": DEFLATE_LEVEL,
        "predictor": 3 if kind == "f" else 2,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }


# --- output formats ---------------------------------------------------------------------
def check_format(fmt: str) -> str:
    """``"cog"``, ``"gtiff"`` or ``"raw"`` (case-insensitive); ValueError otherwise."""
    value = str(fmt).strip().lower()
    if value not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    return value


def band_scale_offset(band: str, dtype: str) -> tuple[float, float]:
    """``(scale, offset)`` turning stored values into physical ones (value * scale + offset).

    uint16 reflectance digital numbers are reflectance x 10000 and AOT is x 1000 (the Process
    API's DN units); everything else (float32 reflectance, SCL, masks, percentages) is 1, 0.
    """
    from .bands import BANDS

    info = BANDS.get(band)
    if info is None or np.dtype(dtype).kind == "f":
        return 1.0, 0.0
    if info.kind == "reflectance":
        return 0.0001, 0.0
    if info.kind == "aot":
        return 0.001, 0.0
    return 1.0, 0.0


def _overview_resampling(bands: Sequence[str]) -> str:
    """AVERAGE for continuous bands only; NEAREST as soon as a class or mask band is present."""
    from .bands import BANDS

    continuous = all(BANDS.get(b) is not None and BANDS[b].kind in ("reflectance", "aot") for b in bands)
    return "AVERAGE" if continuous else "NEAREST"


def _creation_options(fmt: str, bands: Sequence[str], dtype: str) -> dict[str, Any]:
    floating = np.dtype(dtype).kind == "f"
    if fmt == "cog":
        return {
            "driver": "COG",
            "COMPRESS": "DEFLATE",
            "LEVEL": DEFLATE_LEVEL,
            "PREDICTOR": "FLOATING_POINT" if floating else "STANDARD",
            "BLOCKSIZE": COG_BLOCK,
            "OVERVIEWS": "AUTO",
            "OVERVIEW_RESAMPLING": _overview_resampling(bands),
            "BIGTIFF": "IF_SAFER",
            "NUM_THREADS": "ALL_CPUS",
        }
    options = {
        "driver": "GTiff",
        "TILED": "YES",
        "BLOCKXSIZE": BLOCK,
        "BLOCKYSIZE": BLOCK,
        "COMPRESS": "DEFLATE",
        "ZLEVEL": DEFLATE_LEVEL,
        "PREDICTOR": 3 if floating else 2,
        "INTERLEAVE": "PIXEL",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }
    if fmt == "raw":  # tiled, uncompressed: what a stitched "as served" file becomes
        del options["COMPRESS"], options["ZLEVEL"], options["PREDICTOR"]
    return options


def _copy_as(source: Path | str, target: Path, fmt: str, bands: Sequence[str], dtype: str,
             *, pixels: int | None = None) -> None:
    """Copy a GeoTIFF (a path or a ``/vsimem/`` name) into ``fmt``; GDAL streams it block by block.

    The COG driver first writes overviews to ``<target>.ovr.tmp`` next to the target.
    ``pixels`` (samples of the source) saves opening it once more to count them.
    """
    import rasterio.shutil

    options = _creation_options(fmt, bands, dtype)
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        if pixels is None:
            with rasterio.open(source) as src:
                pixels = src.width * src.height * src.count
    if pixels <= SMALL_COPY_PIXELS or (fmt == "cog" and pixels > LARGE_COPY_PIXELS):
        # small files: threads cost more than they save while other jobs use the cores;
        # large COGs: GDAL's threaded overview/compression buffers cost ~40 MB more
        options["NUM_THREADS"] = "1"
    # Changing GDAL_CACHEMAX resizes (and flushes) GDAL's one global block cache: worth it
    # to bound memory on a large copy, but it made small copies 2.5x slower.
    large = pixels > SMALL_COPY_PIXELS
    env = {"GDAL_CACHEMAX": COPY_CACHE_MB} if large else {}
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", **env):
        if fmt == "cog" and large:  # our own pyramid: GDAL's needs the mosaic in its cache
            from .overviews import pyramid

            average = options["OVERVIEW_RESAMPLING"] == "AVERAGE"
            with pyramid(str(source), Path(target), COG_BLOCK, average=average) as vrt:
                rasterio.shutil.copy(vrt, str(target), **{**options, "OVERVIEWS": "FORCE_USE_EXISTING"})
        else:
            rasterio.shutil.copy(str(source), str(target), **options)
        _check_copy(target, pixels)


def _check_copy(target: Path, pixels: int) -> None:
    """Raise OSError unless ``target`` is tagged complete and its last block lies in the file.

    GDAL's copy and in-place tag updates only log their write errors. (A full disk or a
    file-size limit made ``rasterio.shutil.copy`` return normally with "_tiffWriteProc: File
    too large" on stderr and a file missing its last tiles.) The last block is written last,
    so its offset and size, read from the TIFF directory, show a cut without decoding it
    (decoding the last row cost 15 ms a file).
    """
    try:
        with rasterio.open(target) as out:
            if out.width * out.height * out.count != pixels:
                raise OSError(f"{out.width} x {out.height} x {out.count} samples, expected {pixels}")
            if out.tags().get(COMPLETE_TAG) != "1":
                raise OSError(f"{target.name} lost its tags while being written (disk full?)")
            rows, cols = out.block_shapes[0]
            last = f"{-(-out.width // cols) - 1}_{-(-out.height // rows) - 1}"
            offset = out.get_tag_item(f"BLOCK_OFFSET_{last}", "TIFF", bidx=out.count)
            size = out.get_tag_item(f"BLOCK_SIZE_{last}", "TIFF", bidx=out.count)
            if offset is None or size is None:  # not told: decode the last row instead
                out.read(window=Window(0, out.height - 1, out.width, 1))
            elif not (int(offset) > 0 and int(size) > 0
                      and int(offset) + int(size) <= os.path.getsize(target)):
                raise OSError(f"{target.name} is cut short: its last block is missing (disk full?)")
    except OSError:
        raise
    except Exception as exc:
        raise OSError(f"the copy written to {target.name} is incomplete (disk full?): {exc}") from exc


def file_format(path: Path) -> str | None:
    """``"cog"`` (Cloud-Optimized), ``"gtiff"`` (compressed) or ``"raw"`` (uncompressed); None if no GeoTIFF."""
    try:
        with rasterio.Env(**_GDAL_ENV), rasterio.open(path) as src:
            return _format_of(src)
    except Exception:
        return None


def _format_of(src: Any) -> str | None:
    if src.driver != "GTiff":
        return None
    structure = src.tags(ns="IMAGE_STRUCTURE")
    if structure.get("LAYOUT") == "COG":
        return "cog"
    return "gtiff" if structure.get("COMPRESSION") else "raw"


def convert_format(dest: Path, fmt: str, bands: Sequence[str], dtype: str) -> Path:
    """Rewrite a complete file in place as ``fmt`` (atomically: a temporary copy, then rename)."""
    fmt = check_format(fmt)
    dest = Path(dest)
    tmp = cog_part_path(dest)
    try:
        _copy_as(dest, tmp, fmt, bands, dtype)
        _fsync_file(tmp)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    finally:
        _discard_cog_part(dest)
    return dest


def _discard_cog_part(dest: Path) -> bool:
    from .overviews import discard

    tmp = cog_part_path(dest)
    removed = discard(tmp)
    for leftover in (tmp, tmp.with_name(tmp.name + ".ovr.tmp"), tmp.with_name(tmp.name + ".msk.ovr.tmp")):
        if leftover.exists():
            leftover.unlink(missing_ok=True)
            removed = True
    return removed


# --- tags -------------------------------------------------------------------------------
_URL_QUERY = re.compile(r"(?i)\b((?:https?|s3|gs)://[^\s?#]*)[?#][^\s,;]*")
_TAG_KEY = re.compile(r"[^A-Za-z0-9_]+")


def _clean_value(value: Any) -> str:
    """A tag value as text, without NULs and without URL query strings (tokens, signatures)."""
    if isinstance(value, datetime):
        text = _iso(value)
    elif isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return _URL_QUERY.sub(r"\1", text.replace("\x00", ""))


def _iso(value: datetime) -> str:
    value = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.isoformat().replace("+00:00", "Z")


def tags_for(
    acquisition: Acquisition,
    bands: Sequence[str],
    *,
    provider: str | None = None,
    synthetic: bool = False,
) -> dict[str, str]:
    """The standard dataset tags of one acquisition (no URLs, no secrets)."""
    acq = acquisition
    tags = {
        "ITEM_IDS": ",".join(acq.item_ids),
        "PRIMARY_ITEM_IDS": ",".join(it.id for it in acq.primary_items),
        "ACQUISITION_DATETIME": _iso(acq.datetime),
        "ACQUISITION_START": _iso(acq.start),
        "ACQUISITION_END": _iso(acq.end),
        "TIFFTAG_DATETIME": acq.datetime.astimezone(timezone.utc).strftime("%Y:%m:%d %H:%M:%S"),
        "PLATFORM": acq.platform,
        "MGRS_TILES": ",".join(acq.tiles),
        "BANDS": ",".join(bands),
    }
    if acq.relative_orbit is not None:
        tags["RELATIVE_ORBIT"] = str(acq.relative_orbit)
    if acq.cloud_cover is not None:
        tags["CLOUD_COVER"] = f"{acq.cloud_cover:.2f}"
    if provider:
        tags["PROVIDER"] = provider
    if synthetic:
        tags["SYNTHETIC"] = "true"
    return tags


def _strip_href_queries(value: Any) -> Any:
    """Copy of a JSON value with query strings removed from every ``href`` (signed URLs)."""
    if isinstance(value, dict):
        return {
            k: (v.split("?", 1)[0] if k == "href" and isinstance(v, str) else _strip_href_queries(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_strip_href_queries(v) for v in value]
    return value


# --- atomic small files -----------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name[:50] + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the .part file ---------------------------------------------------------------------
def _strips(window: Window) -> Iterable[tuple[int, int]]:
    """``(row, height)`` pieces of a window cut at global multiples of the block height."""
    row, end = int(window.row_off), int(window.row_off + window.height)
    while row < end:
        nxt = min(end, (row // BLOCK + 1) * BLOCK)
        yield row, nxt - row
        row = nxt


class PartFile:
    """Write one acquisition into ``<dest>.part``, then ``commit`` it to ``dest``.

    Use as a context manager; leaving it without ``commit`` (or by an exception) removes
    the ``.part``. ``write_tile`` may be called from several threads (writes are locked).
    With ``allow_missing_georef`` a response without any CRS/transform is accepted (its
    position is the requested tile's); a *different* CRS or transform is always refused.
    ``fmt="cog"`` turns the finished ``.part`` into a Cloud-Optimized GeoTIFF at commit
    (``<dest>.cog.part``, then the rename); ``"gtiff"`` renames the tiled ``.part`` itself;
    ``"raw"`` keeps the service's bytes (uncompressed).

    One tile covering the whole grid (the common case: areas up to 2500 px a side) is not
    decoded and re-written: the response itself is tagged in place, then renamed (``raw``)
    or copied once into the output format.
    """

    def __init__(
        self,
        destination: Path,
        grid: Grid | Mapping[str, Any],
        bands: Sequence[str] | None = None,
        dtype: str | None = None,
        *,
        nodata: float | None = 0,
        allow_missing_georef: bool = True,
        fmt: str = "gtiff",
    ) -> None:
        self.destination = Path(destination)
        self.fmt = check_format(fmt)
        self.part = part_path(self.destination)
        if isinstance(grid, Mapping):  # a ready profile, e.g. from profile_for()
            profile = dict(grid)
            self.grid = _grid_from_profile(profile)
            self.bands = tuple(bands) if bands else tuple(f"band{i}" for i in range(1, profile["count"] + 1))
            self.dtype = np.dtype(dtype or profile["dtype"]).name
            if len(self.bands) != profile["count"] or self.dtype != np.dtype(profile["dtype"]).name:
                raise ValueError("bands/dtype disagree with the profile")
            self.profile = profile
        else:
            if bands is None or dtype is None:
                raise TypeError("PartFile(destination, grid, bands, dtype) or PartFile(destination, profile)")
            self.grid = grid
            self.bands = tuple(bands)
            self.dtype = np.dtype(dtype).name
            self.profile = profile_for(grid, self.bands, self.dtype, nodata=nodata)
        if self.fmt in ("cog", "raw"):
            # cog: the COG driver compresses the final file; compressing the .part too would
            # cost a second deflate pass and slow the overview builder, which re-reads it
            self.profile = {k: v for k, v in self.profile.items()
                            if k not in ("compress", "zlevel", "predictor")}
        self.allow_missing_georef = allow_missing_georef
        self._dst: Any = None  # the .part being stitched, opened at the first partial tile
        self._whole: Any = None  # a whole-grid response: a MemoryFile, or the .part itself
        self._lock = threading.Lock()
        self._written: set[tuple[int, int, int, int]] = set()
        self._pixels_written = 0
        self._entered = False
        self.committed = False
        self.sha256: str | None = None  # of the committed file, when known without reading it back

    # context manager
    def __enter__(self) -> PartFile:
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        discard_partial(self.destination)
        self._entered = True
        return self

    def _open_part(self) -> Any:
        with self._lock:
            if self._dst is None:
                if self._whole is not None:
                    raise RuntimeError("a whole-grid tile was written already")
                with rasterio.Env(**_GDAL_ENV):
                    self._dst = rasterio.open(self.part, "w", **self.profile)
        return self._dst

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            self._abort()

    def _abort(self) -> None:
        try:
            if self._dst is not None and not self._dst.closed:
                self._dst.close()
        except Exception:  # closing a broken file must not hide the original error
            log.debug("closing %s failed", self.part, exc_info=True)
        finally:
            self._dst = None
            self._drop_whole()
            discard_partial(self.destination)

    def _drop_whole(self) -> None:
        whole, self._whole = self._whole, None
        if whole is not None and not isinstance(whole, Path):
            whole.close()

    # writing
    def write_tile(self, tile: Tile, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Validate one tile's GeoTIFF bytes (or array ``(bands, h, w)``) and write it in place."""
        if not self._entered:
            raise RuntimeError("PartFile is not open; use it in a `with` block")
        key = (int(tile.window.col_off), int(tile.window.row_off), tile.width, tile.height)
        whole = key == (0, 0, self.grid.width, self.grid.height)
        if whole and self._dst is None and not isinstance(data, np.ndarray):
            self._adopt_whole(tile, data)
        elif isinstance(data, np.ndarray):
            self._open_part()
            self._write_array(tile, data)
        elif isinstance(data, Path):
            self._open_part()
            self._write_source(tile, data, f"{data.stat().st_size} bytes")
        else:
            self._open_part()
            self._write_bytes(tile, bytes(data))
        with self._lock:
            if key not in self._written:
                self._written.add(key)
                self._pixels_written += tile.width * tile.height

    def _write_array(self, tile: Tile, data: np.ndarray) -> None:
        if data.ndim == 2:
            data = data[np.newaxis]
        expected = (len(self.bands), tile.height, tile.width)
        if data.shape != expected:
            raise ValueError(f"tile {tile.name}: array shape {data.shape}, expected {expected}")
        if data.dtype != np.dtype(self.dtype):
            raise ValueError(f"tile {tile.name}: array dtype {data.dtype}, expected {self.dtype}")
        col0, row0 = int(tile.window.col_off), int(tile.window.row_off)
        for row, h in _strips(tile.window):
            part = data[:, row - row0 : row - row0 + h, :]
            with self._lock, rasterio.Env(**_GDAL_ENV):
                self._dst.write(part, window=Window(col0, row, tile.width, h))

    def _write_bytes(self, tile: Tile, data: bytes) -> None:
        if not data:
            raise InvalidResponseError(f"{self._what(tile)} is empty (0 bytes)")
        with rasterio.Env(**_GDAL_ENV), rasterio.MemoryFile(data) as mem:
            self._write_source(tile, mem, f"{len(data)} bytes")

    def _write_source(self, tile: Tile, source: Any, size: str) -> None:
        """Validate a response (a MemoryFile or a spooled file's path) and copy it strip by strip."""
        what = self._what(tile)
        col0, row0 = int(tile.window.col_off), int(tile.window.row_off)
        with rasterio.Env(**_GDAL_ENV):
            try:
                src = source.open() if hasattr(source, "open") and not isinstance(source, Path) \
                    else rasterio.open(source)
            except Exception as exc:  # any decoding failure is the response's fault
                raise _undecodable(what, size, exc) from exc
            with src:
                self._validate(src, tile, what, size)
                for row, h in _strips(tile.window):
                    try:
                        block = src.read(window=Window(0, row - row0, tile.width, h))
                    except Exception as exc:
                        raise _undecodable(what, size, exc) from exc
                    # errors writing our own file (disk full ...) propagate unchanged
                    with self._lock:
                        self._dst.write(block, window=Window(col0, row, tile.width, h))

    def _adopt_whole(self, tile: Tile, data: bytes | bytearray | memoryview | Path) -> None:
        """Keep a whole-grid response as it is (validated, not decoded) for ``commit`` to tag."""
        what = self._what(tile)
        if isinstance(data, Path):
            size = f"{data.stat().st_size} bytes"
            os.replace(data, self.part)  # a spooled response becomes the .part itself
            holder: Any = self.part
            name = str(self.part)
        else:
            size = f"{len(data)} bytes"
            if not len(data):
                raise InvalidResponseError(f"{what} is empty (0 bytes)")
            holder = rasterio.MemoryFile()
            holder.write(data)  # a copy GDAL owns, so tags can grow the file in place
            name = holder.name
        try:
            with rasterio.Env(**_GDAL_ENV), rasterio.open(name) as src:
                self._validate(src, tile, what, size)
                # a body cut short loses its last strips or tiles: the last row no longer reads
                src.read(window=Window(0, src.height - 1, src.width, 1))
        except Exception as exc:
            if isinstance(holder, Path):
                holder.unlink(missing_ok=True)
            else:
                holder.close()
            if isinstance(exc, InvalidResponseError):
                raise
            raise _undecodable(what, size, exc) from exc
        with self._lock:
            self._drop_whole()
            self._whole = holder

    def _what(self, tile: Tile) -> str:
        return f"GeoTIFF for tile {tile.name} of {self.destination.name}"

    def _validate(self, src: Any, tile: Tile, what: str, size: str) -> None:
        problems = []
        if (src.width, src.height) != (tile.width, tile.height):
            problems.append(f"size {src.width}x{src.height} px, expected {tile.width}x{tile.height}")
        if src.count != len(self.bands):
            problems.append(f"{src.count} bands, expected {len(self.bands)} ({','.join(self.bands)})")
        if any(d != self.dtype for d in src.dtypes):
            problems.append(f"data type {','.join(sorted(set(src.dtypes)))}, expected {self.dtype}")
        no_georef = src.crs is None and src.transform.is_identity
        if no_georef and not self.allow_missing_georef:
            problems.append("no georeferencing (CRS/transform)")
        elif not no_georef:
            expected_crs = CRS.from_user_input(self.grid.crs)
            if src.crs is None or not _same_crs(src.crs, expected_crs):
                problems.append(f"CRS {src.crs.to_string() if src.crs else None}, expected {self.grid.crs}")
            want = self.grid.window_transform(tile.window)
            if not _close_transform(src.transform, want, 0.01 * self.grid.resolution):
                problems.append(f"transform {tuple(src.transform)[:6]}, expected {tuple(want)[:6]}")
        if problems:
            raise InvalidResponseError(f"{what} does not match the request ({size}): " + "; ".join(problems))

    # committing
    def commit(
        self,
        tags: Mapping[str, Any] | None = None,
        band_descriptions: Sequence[str] | None = None,
        items: Sequence[pystac.Item | Mapping[str, Any]] = (),
        scaling: Sequence[tuple[float, float]] | None = None,
    ) -> Path:
        """Tag, close, fsync and rename to the destination; write the sidecar. Returns ``dest``.

        ``tags`` are written as given (keys reduced to ``[A-Za-z0-9_]``, URL query strings
        dropped); ``STACFETCH_VERSION`` and ``STACFETCH_COMPLETE=1`` are added, and
        ``TIFFTAG_DATETIME`` is derived from ``ACQUISITION_DATETIME`` when not given. Each band
        gets its description, and scale/offset to physical units (``band_scale_offset``, or
        ``scaling``: one ``(scale, offset)`` per band, e.g. a STAC item's ``raster:bands``).
        """
        if not self._entered:
            raise RuntimeError("PartFile is not open; use it in a `with` block")
        total = self.grid.width * self.grid.height
        if self._pixels_written != total:
            raise DownloadError(
                f"{self.destination.name}: only {self._pixels_written} of {total} pixels were written"
            )
        descriptions = tuple(band_descriptions) if band_descriptions is not None else self.bands
        if len(descriptions) != len(self.bands):
            raise ValueError(f"{len(descriptions)} band descriptions for {len(self.bands)} bands")
        if scaling is None:
            scaling = [band_scale_offset(str(b), self.dtype) for b in descriptions]
        elif len(scaling) != len(self.bands):
            raise ValueError(f"{len(scaling)} scale/offset pairs for {len(self.bands)} bands")
        clean = _clean_tags(tags)
        try:
            final = self._finish_whole(descriptions, scaling, clean) if self._whole is not None \
                else self._finish_part(descriptions, scaling, clean)
            _fsync_file(final)
            features = [
                _strip_href_queries(it.to_dict(include_self_link=False, transform_hrefs=False))
                if isinstance(it, pystac.Item)
                else _strip_href_queries(dict(it))
                for it in items
            ]
            sidecar = {"type": "FeatureCollection", "features": features}
            _atomic_write_text(sidecar_path(self.destination), json.dumps(sidecar, indent=1))
            os.replace(final, self.destination)
            _fsync_dir(self.destination.parent)
        except BaseException:
            self._abort()
            raise
        self.committed = True
        return self.destination

    def _finish_part(self, descriptions: Sequence[str], scaling: Sequence[tuple[float, float]],
                     tags: dict[str, str]) -> Path:
        """Tag and close the stitched ``.part``; convert it to a COG if asked. Returns the file to rename."""
        dst = self._open_part()  # (a grid of zero tiles never happens; this keeps commit total)
        with rasterio.Env(**_GDAL_ENV):
            _describe(dst, descriptions, scaling, tags)
            dst.close()
        self._dst = None
        samples = self.grid.width * self.grid.height * len(self.bands)
        if self.fmt != "cog":
            _check_copy(self.part, samples)
            return self.part
        _copy_as(self.part, cog_part_path(self.destination), "cog", self.bands, self.dtype,
                 pixels=samples)
        self.part.unlink()
        return cog_part_path(self.destination)

    def _finish_whole(self, descriptions: Sequence[str], scaling: Sequence[tuple[float, float]],
                      tags: dict[str, str]) -> Path:
        """Tag the kept response in place, then write it out once. Returns the file to rename."""
        whole = self._whole
        name = str(whole) if isinstance(whole, Path) else whole.name
        with rasterio.Env(**_GDAL_ENV), rasterio.open(name, "r+") as dst:
            if dst.crs is None and dst.transform.is_identity:  # allowed by _validate
                dst.crs = CRS.from_user_input(self.grid.crs)
                dst.transform = self.grid.transform
            if dst.nodata is None and self.profile.get("nodata") is not None:
                dst.nodata = self.profile["nodata"]
            _describe(dst, descriptions, scaling, tags)
            samples = dst.width * dst.height * dst.count
        if self.fmt == "raw":
            if isinstance(whole, Path):
                _check_copy(self.part, samples)  # GDAL only logs a failed in-place tag update
            else:  # Python's own write raises on a full disk
                buffer = whole.getbuffer()
                self.sha256 = hashlib.sha256(buffer).hexdigest()
                with open(self.part, "wb") as fh:
                    fh.write(buffer)
                del buffer
            self._drop_whole()
            return self.part
        target = cog_part_path(self.destination)
        _copy_as(name, target, self.fmt, self.bands, self.dtype, pixels=samples)
        self._drop_whole()
        self.part.unlink(missing_ok=True)
        return target


def _undecodable(what: str, size: str, exc: Exception) -> InvalidResponseError:
    """A response that did not decode: always the response's fault, so it is asked again."""
    return InvalidResponseError(f"{what} cannot be decoded ({size}; truncated or not a GeoTIFF): {exc}")


def _clean_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags as written: keys reduced to ``[A-Za-z0-9_]``, values cleaned, stacfetch's own added."""
    clean = {}
    for key, value in (tags or {}).items():
        name = _TAG_KEY.sub("_", str(key)).strip("_").upper()
        if name and value is not None:
            clean[name] = _clean_value(value)
    if "TIFFTAG_DATETIME" not in clean and "ACQUISITION_DATETIME" in clean:
        try:
            when = datetime.fromisoformat(clean["ACQUISITION_DATETIME"].replace("Z", "+00:00"))
            clean["TIFFTAG_DATETIME"] = when.astimezone(timezone.utc).strftime("%Y:%m:%d %H:%M:%S")
        except ValueError:
            pass
    clean.setdefault("TIFFTAG_SOFTWARE", f"stacfetch {__version__}")
    clean["STACFETCH_VERSION"] = __version__
    clean[COMPLETE_TAG] = "1"
    return clean


def _describe(dst: Any, descriptions: Sequence[str], scaling: Sequence[tuple[float, float]],
              tags: Mapping[str, str]) -> None:
    """Band names, scale/offset (when not 1/0) and dataset tags of an open writable dataset."""
    for i, name in enumerate(descriptions, start=1):
        dst.set_band_description(i, _clean_value(name))
    if any(s != (1.0, 0.0) for s in scaling):
        dst.scales = tuple(s for s, _ in scaling)
        dst.offsets = tuple(o for _, o in scaling)
    dst.update_tags(**tags)


def _grid_from_profile(profile: Mapping[str, Any]) -> Grid:
    crs = CRS.from_user_input(profile["crs"])
    epsg = crs.to_epsg()
    transform = profile["transform"]
    return Grid(
        crs=f"EPSG:{epsg}" if epsg else crs.to_string(),
        transform=transform,
        width=int(profile["width"]),
        height=int(profile["height"]),
        resolution=float(transform.a),
    )


def _close_transform(a: Any, b: Any, tolerance: float) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(tuple(a)[:6], tuple(b)[:6], strict=True))


def _same_crs(a: CRS, b: CRS) -> bool:
    if a == b:
        return True
    ea, eb = a.to_epsg(), b.to_epsg()
    return ea is not None and ea == eb


def discard_partial(dest: Path) -> bool:
    """Remove ``<dest>.part`` (a leftover of an interrupted run). True if one was removed."""
    part = part_path(Path(dest))
    existed = part.exists()
    part.unlink(missing_ok=True)
    for spool in Path(dest).parent.glob(f"{glob.escape(Path(dest).name)}.*.tile.part"):
        spool.unlink(missing_ok=True)
        existed = True
    return _discard_cog_part(Path(dest)) or existed


def is_complete(
    dest: Path,
    grid: Grid,
    bands: Sequence[str],
    dtype: str,
    *,
    deep: bool = False,
    fmt: str | None = None,
) -> bool:
    """True when ``dest`` is a finished stacfetch file for exactly this grid, bands and dtype.

    Checks size, CRS, transform, band count and names, dtype, the completion tag and the
    sidecar. ``deep`` also decodes every block (slow; catches damaged pixel data). Every
    output format is accepted unless ``fmt`` ("cog", "gtiff" or "raw") names one.
    """
    found = complete_format(dest, grid, bands, dtype, deep=deep)
    return found is not None and (fmt is None or found == check_format(fmt))


def complete_format(
    dest: Path, grid: Grid, bands: Sequence[str], dtype: str, *, deep: bool = False
) -> str | None:
    """The format (``cog``/``gtiff``/``raw``) of ``dest`` if it is complete (see ``is_complete``), else None."""
    dest = Path(dest)
    if not dest.is_file() or not sidecar_path(dest).is_file():
        return None
    try:
        with rasterio.Env(**_GDAL_ENV), rasterio.open(dest) as src:
            ok = (
                src.driver == "GTiff"
                and (src.width, src.height) == (grid.width, grid.height)
                and src.count == len(bands)
                and all(d == np.dtype(dtype).name for d in src.dtypes)
                and src.crs is not None
                and _same_crs(src.crs, CRS.from_user_input(grid.crs))
                and _close_transform(src.transform, grid.transform, 1e-6 * grid.resolution)
                and tuple(src.descriptions) == tuple(bands)
                and src.tags().get(COMPLETE_TAG) == "1"
            )
            if ok and deep:
                for _, window in src.block_windows(1):
                    src.read(window=window)
            return _format_of(src) if ok else None
    except Exception:  # unreadable in any way: not complete
        log.debug("%s is not a complete file", dest, exc_info=True)
        return None


# --- checksums and the manifest ---------------------------------------------------------
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ManifestRecord:
    """One written GeoTIFF as the manifest lists it."""

    destination: Path
    item_ids: tuple[str, ...]
    datetime: datetime
    start: datetime
    end: datetime
    platform: str
    cloud_cover: float | None
    sha256: str
    size: int
    bands: tuple[str, ...]
    dtype: str
    grid: Grid
    synthetic: bool = False


def record_for(
    job: Job,
    *,
    path: Path | None = None,
    sha256: str | None = None,
    size: int | None = None,
    synthetic: bool = False,
) -> ManifestRecord:
    """The manifest record of a committed job (hashes the file unless ``sha256`` is given)."""
    acq = job.acquisition
    path = Path(path or job.destination)
    return ManifestRecord(
        destination=path,
        item_ids=acq.item_ids,
        datetime=acq.datetime,
        start=acq.start,
        end=acq.end,
        platform=acq.platform,
        cloud_cover=acq.cloud_cover,
        sha256=sha256 or sha256_file(path),
        size=path.stat().st_size if size is None else int(size),
        bands=job.bands,
        dtype=job.dtype,
        grid=job.grid,
        synthetic=synthetic,
    )


def _record_from_mapping(entry: Mapping[str, Any]) -> ManifestRecord:
    return record_for(
        entry["job"],
        path=entry.get("path"),
        sha256=entry.get("sha256"),
        size=entry.get("size"),
        synthetic=bool(entry.get("synthetic", False)),
    )


def _multihash_sha256(hexdigest: str) -> str:
    return "1220" + hexdigest


class _AtomicStacIO(DefaultStacIO):
    """pystac IO that writes every file through a temporary file and a rename."""

    def write_text_to_href(self, href: str, txt: str) -> None:
        path = Path(href)
        try:
            if path.read_text(encoding="utf-8") == txt:
                return  # unchanged (an entry of an earlier run): no rewrite, no fsync
        except (OSError, UnicodeDecodeError):
            pass
        _atomic_write_text(path, txt)


def _platform_name(code: str) -> str:
    return "+".join(f"sentinel-2{p[-1].lower()}" if re.fullmatch(r"S2[A-D]", p) else p for p in code.split("-"))


def _item_for(record: ManifestRecord, root: Path) -> pystac.Item:
    rel = record.destination.resolve().relative_to(root)
    item_id = rel.with_suffix("").as_posix()
    grid = record.grid
    footprint = grid.footprint_4326()
    props: dict[str, Any] = {
        "start_datetime": _iso(record.start),
        "end_datetime": _iso(record.end),
        "platform": _platform_name(record.platform),
        "constellation": "sentinel-2",
        "stacfetch:item_ids": list(record.item_ids),
        "stacfetch:bands": list(record.bands),
        "stacfetch:dtype": record.dtype,
        "proj:code": grid.crs,
        "proj:shape": [grid.height, grid.width],
        "proj:transform": list(grid.transform)[:6],
        "proj:bbox": list(grid.bounds),
    }
    if record.cloud_cover is not None:
        props["eo:cloud_cover"] = record.cloud_cover
    if record.synthetic:
        props["stacfetch:synthetic"] = True
    item = pystac.Item(
        id=item_id,
        geometry=footprint.__geo_interface__,
        bbox=list(footprint.bounds),
        datetime=record.datetime,
        properties=props,
        stac_extensions=[_FILE_EXT, _PROJ_EXT, _EO_EXT],
    )
    item.add_asset(
        "data",
        pystac.Asset(
            href=str(record.destination.resolve()),
            media_type=pystac.MediaType.GEOTIFF,
            roles=["data"],
            title=", ".join(record.bands),
            extra_fields={"file:checksum": _multihash_sha256(record.sha256), "file:size": record.size},
        ),
    )
    side = sidecar_path(record.destination.resolve())
    if side.exists():
        item.add_asset(
            "source-items",
            pystac.Asset(href=str(side), media_type=pystac.MediaType.GEOJSON, roles=["metadata"]),
        )
    return item


def _existing_items(catalog_path: Path) -> dict[str, pystac.Item]:
    """Items of an earlier manifest whose files still exist with the recorded size."""
    if not catalog_path.is_file():
        return {}
    try:
        catalog = pystac.Catalog.from_file(str(catalog_path))
        old = list(catalog.get_items())
    except Exception as exc:  # a damaged manifest is rebuilt from this run's records
        log.warning("ignoring unreadable manifest %s: %s", catalog_path, exc)
        return {}
    kept: dict[str, pystac.Item] = {}
    for item in old:
        asset = item.assets.get("data")
        if asset is None:
            continue
        path = Path(asset.get_absolute_href() or "")
        if not path.is_file() or path.stat().st_size != asset.extra_fields.get("file:size"):
            log.info("manifest: dropping %s (file missing or changed)", item.id)
            continue
        fresh = pystac.Item.from_dict(item.to_dict(include_self_link=False, transform_hrefs=False))
        fresh.clear_links()
        for key, a in item.assets.items():
            fresh.assets[key].href = a.get_absolute_href() or a.href
        kept[item.id] = fresh
    return kept


def write_manifest(
    root: Path, records: Iterable[ManifestRecord | Mapping[str, Any]], *, title: str | None = None
) -> Path:
    """Write or update ``<root>/catalog.json``; returns its path.

    ``root`` is the area folder or the whole output folder (item ids are the files' paths
    relative to it, without ``.tif``). A record is a ``ManifestRecord`` or a mapping
    ``{"job": Job, "path": Path, "sha256": hex, "size": int}`` (``path``, ``sha256`` and
    ``size`` optional: taken from the job and the file).

    Earlier entries are kept when their file still exists with the recorded size; entries
    for the same file are replaced; every record must point at an existing file inside
    ``root``. Each file is written atomically, the catalog last. Not safe for two
    concurrent writers of the same ``root``.
    """
    root = Path(root).resolve()
    catalog_path = root / MANIFEST_NAME
    items = _existing_items(catalog_path)
    for entry in records:
        record = entry if isinstance(entry, ManifestRecord) else _record_from_mapping(entry)
        dest = record.destination.resolve()
        if root not in dest.parents:
            raise ValueError(f"manifest record {dest} is not inside {root}")
        if not dest.is_file():
            raise FileNotFoundError(f"manifest record points at a missing file: {dest}")
        item = _item_for(record, root)
        items[item.id] = item
    catalog = pystac.Catalog(
        id=sanitize("stacfetch-" + root.name),
        description=title or f"GeoTIFFs written by stacfetch {__version__} in {root.name}",
        title=title,
    )
    for item_id in sorted(items):
        catalog.add_item(items[item_id])

    def item_href(item: pystac.Item, parent_dir: str) -> str:
        return str(root / "items" / (sanitize(item.id.replace("/", "__"), 200) + ".json"))

    catalog.normalize_hrefs(str(root), strategy=CustomLayoutStrategy(item_func=item_href))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=_AtomicStacIO())
    # Item files no longer listed (their GeoTIFF vanished) are removed after the catalog.
    listed = {Path(it.get_self_href() or "").name for it in catalog.get_items()}
    items_dir = root / "items"
    if items_dir.is_dir():
        for stale in items_dir.glob("*.json"):
            if stale.name not in listed:
                stale.unlink(missing_ok=True)
    return catalog_path

