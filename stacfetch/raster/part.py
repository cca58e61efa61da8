"""The part file: one acquisition stitched into ``<dest>.part``, then committed atomically.

A file is written as ``<dest>.part`` in the destination folder (so the final rename is
atomic), one tile at a time and in strips of at most one 512-px block row, so neither a
whole tile nor the mosaic is ever held decoded in memory. ``commit`` adds the band names
and tags (including ``STACFETCH_COMPLETE=1``), flushes and fsyncs, writes the sidecar
``<dest>.json`` (the source STAC items as a FeatureCollection, and the file's SHA-256 and size
under ``stacfetch:file`` for resume to check) atomically, then renames the ``.part`` over
``<dest>``. With a run ``tag`` the temporaries are ``<dest>.<tag>.part`` etc. (see ``files``).

No data is marked by a **per-dataset mask band** (GDAL's internal ``.msk``-style mask,
``GDAL_TIFF_INTERNAL_MASK``), never by a nodata value: with ``masked=True`` every tile
carries one band more than the file, the ``dataMask`` (non-zero = data), which becomes the
mask (255 data, 0 no data) and is not stored as a band. So a valid 0 (dark water, 0 % cloud)
stays valid; ``rasterio``'s ``read(masked=True)``/``read_masks()``, GDAL, QGIS and the COG
driver honour it. The same for every format: ``raw`` is then rewritten (uncompressed, tiled)
too, since the service's bytes cannot carry a GDAL mask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pystac
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from ..errors import DownloadError, InvalidResponseError
from ..memory import WORKING_MEMORY, release_free_memory
from ..plan import Grid, Tile
from .files import (
    SIDECAR_FILE_KEY,
    atomic_write_text,
    cog_part_path,
    fsync_dir,
    fsync_file,
    part_path,
    sha256_file,
    sidecar_path,
    tile_spool_path,
)
from .formats import check_copy, close_transform, copy_as, discard_partial, same_crs
from .profiles import BLOCK, IO_ENV, READ_ENV, check_compress, check_format, profile_for
from .tags import band_scale_offset, clean_tags, describe, strip_href_queries

__all__ = ["PartFile", "TileData"]

log = logging.getLogger(__name__)

# The one shape of a tile's data: a GeoTIFF response, in memory (bytes) or spooled to a
# file (Path), validated against the tile; or pixels already decoded, ``(bands, h, w)``.
TileData = bytes | Path | np.ndarray
READ_ROWS = 128  # rows of a spooled response decoded at a time (see _read_rows)
TRIM_SAMPLES = 16_000_000  # samples above which freed memory is released after each tile


def _strips(window: Window) -> Iterable[tuple[int, int]]:
    """``(row, height)`` pieces of a window cut at global multiples of the block height."""
    row, end = int(window.row_off), int(window.row_off + window.height)
    while row < end:
        nxt = min(end, (row // BLOCK + 1) * BLOCK)
        yield row, nxt - row
        row = nxt


def _read_rows(src: Any, source: Any, window: Window) -> np.ndarray:
    """``window`` of an open response; of a spooled one, ``READ_ROWS`` at a time, each through a
    handle closed after it: GDAL's block cache (the process's) would otherwise fill with the
    response's blocks, each read once, beside the ``.part``'s (+50 MB for a 1667-px tile)."""
    if not isinstance(source, Path):
        return src.read(window=window)
    row0, height = int(window.row_off), int(window.height)
    out = np.empty((src.count, height, int(window.width)), src.dtypes[0])
    for row in range(0, height, READ_ROWS):
        rows = min(READ_ROWS, height - row)
        with rasterio.open(source) as piece:
            out[:, row:row + rows] = piece.read(window=Window(window.col_off, row0 + row, window.width, rows))
    return out


def _undecodable(what: str, size: str, exc: Exception) -> InvalidResponseError:
    """A response that did not decode: always the response's fault, so it is asked again."""
    return InvalidResponseError(f"{what} cannot be decoded ({size}; truncated or not a GeoTIFF): {exc}")


class PartFile:
    """Write one acquisition into ``<dest>.part``, then ``commit`` it to ``dest``.

    ``PartFile(destination, grid, bands, dtype, fmt=...)``. Use as a context manager;
    leaving it without ``commit`` (or by an exception) removes the ``.part``. ``write_tile``
    may be called from several threads (writes are locked). With ``allow_missing_georef`` a
    response without any CRS/transform is accepted (its position is the requested tile's); a
    *different* CRS or transform is always refused. ``fmt="cog"`` turns the finished
    ``.part`` into a Cloud-Optimized GeoTIFF at commit (``<dest>.cog.part``, then the
    rename); ``"gtiff"`` renames the tiled ``.part`` itself; ``"raw"`` keeps the service's
    bytes (uncompressed).

    One tile covering the whole grid (the common case: areas up to 2500 px a side) is not
    decoded and re-written: the response itself is tagged in place, then renamed (``raw``)
    or copied once into the output format.
    """

    def __init__(
        self,
        destination: Path,
        grid: Grid,
        bands: Sequence[str],
        dtype: str,
        *,
        nodata: float | None = 0,
        allow_missing_georef: bool = True,
        fmt: str = "gtiff",
        masked: bool = False,
        tag: str | None = None,
        compress: str | None = None,
    ) -> None:
        self.destination = Path(destination)
        self.masked = masked  # tiles carry dataMask as one more, last band (see the module docstring)
        if masked:
            nodata = None
        self.fmt = check_format(fmt)
        self.compress = check_compress(compress, self.fmt)  # None: deflate (cog, gtiff)
        self.tag = tag  # the run's tag in the temporary names (files.run_tag); None: untagged
        self.part = part_path(self.destination, tag)
        self.cog_part = cog_part_path(self.destination, tag)
        self.grid = grid
        self.bands = tuple(bands)
        self.dtype = np.dtype(dtype).name
        # cog: the COG driver compresses the final file; compressing the .part too would
        # cost a second deflate pass and slow the overview builder, which re-reads it
        self.profile = profile_for(grid, self.bands, self.dtype, nodata=nodata,
                                   fmt="gtiff" if self.fmt == "gtiff" else "raw", compress=self.compress)
        self.allow_missing_georef = allow_missing_georef
        # a mosaic large enough that what stitching frees is worth handing back (memory.py);
        # for small files the few ms it costs each time would add up
        self._large = grid.width * grid.height * len(self.bands) > TRIM_SAMPLES
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
        discard_partial(self.destination, self.tag)
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            self._abort()

    def spool_path(self, tile_name: str) -> Path:
        """Where a large response for tile ``tile_name`` is spooled (removed with the part)."""
        return tile_spool_path(self.destination, tile_name, self.tag)

    def _open_part(self) -> Any:
        with self._lock:
            if self._dst is None:
                if self._whole is not None:
                    raise RuntimeError("a whole-grid tile was written already")
                with rasterio.Env(**IO_ENV, GDAL_TIFF_INTERNAL_MASK=True):
                    self._dst = rasterio.open(self.part, "w", **self.profile)
        return self._dst

    def _put(self, block: np.ndarray, window: Window) -> None:
        """Write one block of the tile's bands (the mask band last when ``masked``); locked by the caller."""
        if not self.masked:
            self._dst.write(block, window=window)
            return
        self._dst.write(block[:-1], window=window)
        self._dst.write_mask(np.where(block[-1] != 0, np.uint8(255), np.uint8(0)), window=window)

    def _abort(self) -> None:
        try:
            if self._dst is not None and not self._dst.closed:
                self._dst.close()
        except Exception:  # closing a broken file must not hide the original error
            log.debug("closing %s failed", self.part, exc_info=True)
        finally:
            self._dst = None
            self._drop_whole()
            discard_partial(self.destination, self.tag)

    def _drop_whole(self) -> None:
        whole, self._whole = self._whole, None
        if whole is not None and not isinstance(whole, Path):
            whole.close()

    # writing
    def write_tile(self, tile: Tile, data: TileData) -> None:
        """Validate one tile's data (see ``TileData``) and write it in place."""
        if not self._entered:
            raise RuntimeError("PartFile is not open; use it in a `with` block")
        if not isinstance(data, (bytes, Path, np.ndarray)):
            raise TypeError(f"tile data is bytes, a Path or an array, not {type(data).__name__}")
        key = (int(tile.window.col_off), int(tile.window.row_off), tile.width, tile.height)
        whole = key == (0, 0, self.grid.width, self.grid.height)
        if isinstance(data, np.ndarray):
            self._open_part()
            self._write_array(tile, data)
        elif whole and self._dst is None and not self.masked:
            self._adopt_whole(tile, data)
        elif isinstance(data, Path):
            self._open_part()
            self._write_source(tile, data, f"{data.stat().st_size} bytes")
        else:
            self._open_part()
            self._write_bytes(tile, data)
        if self._dst is not None and self._large:  # its freed strips would stay resident
            release_free_memory()
        with self._lock:
            if key not in self._written:
                self._written.add(key)
                self._pixels_written += tile.width * tile.height

    @property
    def _count(self) -> int:
        """Bands a tile carries: the file's, plus the mask band when ``masked``."""
        return len(self.bands) + int(self.masked)

    def _write_array(self, tile: Tile, data: np.ndarray) -> None:
        expected = (self._count, tile.height, tile.width)
        if data.shape != expected:
            raise ValueError(f"tile {tile.name}: array shape {data.shape}, expected {expected}")
        if data.dtype != np.dtype(self.dtype):
            raise ValueError(f"tile {tile.name}: array dtype {data.dtype}, expected {self.dtype}")
        col0, row0 = int(tile.window.col_off), int(tile.window.row_off)
        for row, h in _strips(tile.window):
            part = data[:, row - row0 : row - row0 + h, :]
            with self._lock, rasterio.Env(**IO_ENV):
                self._put(part, Window(col0, row, tile.width, h))

    def _write_bytes(self, tile: Tile, data: bytes) -> None:
        if not data:
            raise InvalidResponseError(f"{self._what(tile)} is empty (0 bytes)")
        with rasterio.Env(**READ_ENV), rasterio.MemoryFile(data) as mem:
            self._write_source(tile, mem, f"{len(data)} bytes")

    def _write_source(self, tile: Tile, source: Any, size: str) -> None:
        """Validate a response (a MemoryFile or a spooled file's path) and copy it strip by strip."""
        what = self._what(tile)
        col0, row0 = int(tile.window.col_off), int(tile.window.row_off)
        with rasterio.Env(**READ_ENV):  # (the .part was created under IO_ENV: its threads stay)
            try:
                src = rasterio.open(source) if isinstance(source, Path) else source.open()
            except Exception as exc:  # any decoding failure is the response's fault
                raise _undecodable(what, size, exc) from exc
            with src:
                self._validate(src, tile, what, size)
                itemsize = np.dtype(self.dtype).itemsize
                for row, h in _strips(tile.window):
                    # the decoded strip and its mask, from the process's budget (see memory.py)
                    with WORKING_MEMORY.hold(tile.width * h * (self._count * itemsize + 1)):
                        try:
                            block = _read_rows(src, source, Window(0, row - row0, tile.width, h))
                        except Exception as exc:
                            raise _undecodable(what, size, exc) from exc
                        # errors writing our own file (disk full ...) propagate unchanged
                        with self._lock:
                            self._put(block, Window(col0, row, tile.width, h))
                        del block

    def _adopt_whole(self, tile: Tile, data: bytes | Path) -> None:
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
            with rasterio.Env(**READ_ENV), rasterio.open(name) as src:
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
        if src.count != self._count:
            names = ",".join(self.bands) + (",dataMask" if self.masked else "")
            problems.append(f"{src.count} bands, expected {self._count} ({names})")
        if any(d != self.dtype for d in src.dtypes):
            problems.append(f"data type {','.join(sorted(set(src.dtypes)))}, expected {self.dtype}")
        no_georef = src.crs is None and src.transform.is_identity
        if no_georef and not self.allow_missing_georef:
            problems.append("no georeferencing (CRS/transform)")
        elif not no_georef:
            expected_crs = CRS.from_user_input(self.grid.crs)
            if src.crs is None or not same_crs(src.crs, expected_crs):
                problems.append(f"CRS {src.crs.to_string() if src.crs else None}, expected {self.grid.crs}")
            want = self.grid.window_transform(tile.window)
            if not close_transform(src.transform, want, 0.01 * self.grid.resolution):
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

        ``tags`` (e.g. ``tags.tags_for``) are written as ``tags.clean_tags`` leaves them:
        keys reduced to ``[A-Za-z0-9_]``, URL query strings dropped, ``STACFETCH_VERSION``
        and ``STACFETCH_COMPLETE=1`` added. Each band gets its description, and scale/offset
        to physical units (``band_scale_offset``, or ``scaling``: one ``(scale, offset)`` per
        band, e.g. a STAC item's ``raster:bands``).
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
        clean = clean_tags(tags)
        try:
            final = self._finish_whole(descriptions, scaling, clean) if self._whole is not None \
                else self._finish_part(descriptions, scaling, clean)
            fsync_file(final)
            self.sha256 = self.sha256 or sha256_file(final)
            features = [
                strip_href_queries(it.to_dict(include_self_link=False, transform_hrefs=False))
                if isinstance(it, pystac.Item)
                else strip_href_queries(dict(it))
                for it in items
            ]
            sidecar = {"type": "FeatureCollection", "features": features,
                       SIDECAR_FILE_KEY: {"sha256": self.sha256, "size": os.path.getsize(final)}}
            atomic_write_text(sidecar_path(self.destination), json.dumps(sidecar, indent=1))
            os.replace(final, self.destination)
            fsync_dir(self.destination.parent)
        except BaseException:
            self._abort()
            raise
        self.committed = True
        return self.destination

    def _finish_part(self, descriptions: Sequence[str], scaling: Sequence[tuple[float, float]],
                     tags: dict[str, str]) -> Path:
        """Tag and close the stitched ``.part``; convert it to a COG if asked. Returns the file to rename."""
        dst = self._open_part()  # (a grid of zero tiles never happens; this keeps commit total)
        with rasterio.Env(**IO_ENV):
            describe(dst, descriptions, scaling, tags)
            dst.close()
        self._dst = None
        samples = self.grid.width * self.grid.height * len(self.bands)
        if self._large:
            release_free_memory()  # what stitching freed, before the copy's own buffers
        if self.fmt != "cog":
            check_copy(self.part, samples)
            return self.part
        copy_as(self.part, self.cog_part, "cog", self.bands, self.dtype, pixels=samples,
                size=(self.grid.width, self.grid.height), compress=self.compress)  # (the copy keeps the mask: see formats.copy_as)
        self.part.unlink()
        return self.cog_part

    def _finish_whole(self, descriptions: Sequence[str], scaling: Sequence[tuple[float, float]],
                      tags: dict[str, str]) -> Path:
        """Tag the kept response in place, then write it out once. Returns the file to rename."""
        whole = self._whole
        name = str(whole) if isinstance(whole, Path) else whole.name
        with rasterio.Env(**IO_ENV), rasterio.open(name, "r+") as dst:
            if dst.crs is None and dst.transform.is_identity:  # allowed by _validate
                dst.crs = CRS.from_user_input(self.grid.crs)
                dst.transform = self.grid.transform
            if dst.nodata is None and self.profile.get("nodata") is not None:
                dst.nodata = self.profile["nodata"]
            describe(dst, descriptions, scaling, tags)
            samples = dst.width * dst.height * dst.count
        if self.fmt == "raw":
            if isinstance(whole, Path):
                check_copy(self.part, samples)  # GDAL only logs a failed in-place tag update
            else:  # Python's own write raises on a full disk
                buffer = whole.getbuffer()
                self.sha256 = hashlib.sha256(buffer).hexdigest()
                with open(self.part, "wb") as fh:
                    fh.write(buffer)
                del buffer
            self._drop_whole()
            return self.part
        target = self.cog_part
        copy_as(name, target, self.fmt, self.bands, self.dtype, pixels=samples,
                size=(self.grid.width, self.grid.height), compress=self.compress)
        self._drop_whole()
        self.part.unlink(missing_ok=True)
        return target
