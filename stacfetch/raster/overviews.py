"""Overview pyramids computed in bounded memory, handed to GDAL's COG driver as a VRT.

GDAL's own overview builder needs most of a large mosaic in its block cache: with a 48 MB
cache (stacfetch keeps 16 MB, for flat memory), a 5001 x 5001 px, 12-band mosaic took 33-51 s, and
raising the cache to 160 MB brought it to 9 s but 460 MB of memory. Here each level is made
from the one before, a window of 512 x 1024 px at a time (2 x 2 means that skip nodata, or
the top-left sample for class bands), into an uncompressed tiled GeoTIFF next to the target;
a VRT lists them as the source's overviews and the COG driver copies them as they are
(``OVERVIEWS=FORCE_USE_EXISTING``). Windows are halved on ``threads`` threads (the cores are
idle once the last response is in) and written in order by one, so the files do not depend
on the thread count; with 2 threads and a 2-thread COG copy that mosaic takes ~4 s after its
last tile (6 s before) and ~120 MB above the process's resting size (see ``write_levels``).

Which levels are built is :func:`level_count`, the one rule for every COG (GDAL's own builder
is told it too, see ``formats.copy_as``): only levels whose smaller side is still at least one
COG block (512 px), so a file of up to 1023 px a side gets none. Levels have exact factors of
2: level ``k`` is ``ceil(size / 2**k)`` px and covers the same extent.

A source whose no data is a per-dataset mask band (see part.py) gets mask levels in the same
pass: each level file carries an internal mask, 255 where any of the 2 x 2 samples is valid;
means (or the nearest sample) take valid samples only. The VRT lists them as its mask band's
overviews, and the COG driver copies them too (its own builder needed ~50 s and 340 MB for the
mosaic above).
"""

from __future__ import annotations

import collections
import contextlib
import glob
import math
import queue
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from ..memory import release_free_memory
from .profiles import PROFILES

CHUNK_ROWS = 512  # source rows per window (a multiple of 2, and of the 512-px blocks)
CHUNK_COLS = 1024  # source columns per window: ~12 MB of 12-band uint16, ~30 MB of temporaries

_T = TypeVar("_T")


def halve(block: np.ndarray, nodata: float | None, average: bool) -> np.ndarray:
    """One overview step of a ``(bands, rows, cols)`` block: 2 x 2 means, or nearest samples.

    Means skip ``nodata`` (and NaN) samples; a 2 x 2 cell with no valid sample is ``nodata``.
    Odd edges repeat their last row/column, so the output is ``ceil(rows/2) x ceil(cols/2)``.
    """
    block = _even(block)
    if not average:
        return block[:, 0::2, 0::2].copy()
    return _mean(block, nodata if nodata is not None else 0, nodata=nodata)


def halve_masked(block: np.ndarray, mask: np.ndarray, average: bool) -> tuple[np.ndarray, np.ndarray]:
    """One overview step of a ``(bands, rows, cols)`` block whose no data is ``mask`` (``rows, cols``; 0 no data).

    Returns the block and its mask halved: the mask is 255 where any of the 2 x 2 samples is
    valid, else 0; the block is the mean of the valid samples (NaN skipped too), or the first
    valid one (row by row) when not ``average``; 0 where none is valid. Odd edges as ``halve``.
    """
    block, valid = _even(block), _even(mask[np.newaxis] != 0)[0]
    any_valid = valid[0::2, 0::2] | valid[0::2, 1::2] | valid[1::2, 0::2] | valid[1::2, 1::2]
    halved_mask = np.where(any_valid, 255, 0).astype(np.uint8)
    if average:
        return _mean(block, 0, valid=valid), halved_mask
    out = np.zeros((block.shape[0], *any_valid.shape), block.dtype)
    taken = np.zeros(any_valid.shape, bool)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):  # the first valid sample wins
        take = valid[dy::2, dx::2] & ~taken
        out[:, take] = block[:, dy::2, dx::2][:, take]
        taken |= take
    return out, halved_mask


def _even(block: np.ndarray) -> np.ndarray:
    """``block`` with an odd last row/column repeated, so both sizes are even."""
    _, rows, cols = block.shape
    if rows % 2 or cols % 2:
        return np.pad(block, ((0, 0), (0, rows % 2), (0, cols % 2)), mode="edge")
    return block


def _mean(block: np.ndarray, fill: float, *, nodata: float | None = None,
          valid: np.ndarray | None = None) -> np.ndarray:
    """2 x 2 means of an even-sized block over its valid samples: those ``valid`` marks (one 2-D
    array for every band), else those not ``nodata``; NaN is never valid. Integers get the
    rounded mean; a cell without a valid sample gets ``fill``."""
    floating = block.dtype.kind == "f"
    if valid is not None and block.dtype.kind == "u":
        return _mean_of_valid(block, fill, valid)
    total = np.zeros((block.shape[0], block.shape[1] // 2, block.shape[2] // 2),
                     np.float64 if floating else np.uint32)
    count = np.zeros(total.shape, np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            part = block[:, dy::2, dx::2]
            if valid is not None:
                ok = np.broadcast_to(valid[dy::2, dx::2], part.shape)
            else:
                ok = np.ones(part.shape, bool) if nodata is None else part != nodata
            if floating:
                ok = ok & ~np.isnan(part)
            total += np.where(ok, part, 0).astype(total.dtype)
            count += ok
    empty = count == 0
    # floats: the mean; integers: the rounded mean
    out = total / np.maximum(count, 1) if floating else (total + count // 2) // np.maximum(count, 1)
    out[empty] = fill
    return out.astype(block.dtype)


def _mean_of_valid(block: np.ndarray, fill: float, valid: np.ndarray) -> np.ndarray:
    """``_mean`` of unsigned integers whose valid samples are a 2-D ``valid`` (the same for every band):
    counted once, not per band, and with no masking at all where every sample is valid (the
    common case): 3x faster, the same values."""
    quarters = [(block[:, dy::2, dx::2], valid[dy::2, dx::2]) for dy in (0, 1) for dx in (0, 1)]
    count = np.zeros(quarters[0][1].shape, np.uint8)
    for _, ok in quarters:
        count += ok
    total = np.zeros((block.shape[0], *count.shape), np.uint32)
    if count.min() == 4:  # every sample valid: (sum + 2) // 4
        for part, _ in quarters:
            np.add(total, part, out=total)
        total += 2
        total >>= 2
        return total.astype(block.dtype)
    for part, ok in quarters:
        np.add(total, np.where(ok, part, 0), out=total, casting="unsafe")
    out = (total + count // 2) // np.maximum(count, 1)
    out[:, count == 0] = fill
    return out.astype(block.dtype)


def level_count(width: int, height: int, block: int) -> int:
    """How many overview levels a ``width`` x ``height`` COG gets: halvings whose smaller side
    stays at least ``block`` px (none under one COG block; GDAL's ``AUTO`` halves until the
    image fits in one block, rio-cogeo while the smaller side before halving exceeds it).

    A level under one block spares a reader few block reads, yet costs as much to compute as
    the finer levels together: on real Sentinel-2 texture the levels were 58 % of a 2001 x
    2001 x 3 COG's CPU (0.27 of 0.46 s, deflate), the finest one 0.18 s of it."""
    levels = 0
    while min(math.ceil(width / 2), math.ceil(height / 2)) >= block:
        width, height = math.ceil(width / 2), math.ceil(height / 2)
        levels += 1
    return levels


def level_paths(target: Path, levels: int) -> list[Path]:
    """The temporary files of a target's levels: ``<target>.ov2.tmp``, ``.ov4.tmp`` ..."""
    return [target.with_name(f"{target.name}.ov{2 ** k}.tmp") for k in range(1, levels + 1)]


def vrt_path(target: Path) -> Path:
    return target.with_name(f"{target.name}.vrt.tmp")


def _windows(width: int, height: int) -> Iterator[Window]:
    for row in range(0, height, CHUNK_ROWS):
        for col in range(0, width, CHUNK_COLS):
            yield Window(col, row, min(CHUNK_COLS, width - col), min(CHUNK_ROWS, height - row))


def has_mask(src: Any) -> bool:
    """Whether an open dataset marks no data with a per-dataset mask band."""
    return MaskFlags.per_dataset in src.mask_flag_enums[0]


def write_levels(source: str, target: Path, block: int, *, average: bool,
                 threads: int = 1) -> list[Path]:
    """Write every overview level of ``source`` (and of its mask) next to ``target``; returns their paths.

    ``threads`` > 1: that many threads read and halve windows (each with its own handle on the
    level before; numpy and GDAL release the GIL), while this thread writes them in order, so
    the files are the same and at most ``threads`` windows wait in memory.
    """
    with rasterio.open(source) as src:
        profile = src.profile
        width, height, nodata, masked = src.width, src.height, src.nodata, has_mask(src)
    paths = level_paths(target, level_count(width, height, block))
    previous = source
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(threads, thread_name_prefix="stacfetch-ov")) \
            if threads > 1 else None
        for k, path in enumerate(paths, start=1):
            out_w, out_h = math.ceil(width / 2), math.ceil(height / 2)
            # tiled, uncompressed: read once more by the COG driver. Band-interleaved: GDAL keeps
            # a pixel-interleaved file's last tile of all bands (6 MB at 12 bands) per open
            # handle, and the VRT holds each level open through the whole copy (~35 MB).
            level_profile = {
                **PROFILES["raw"], "width": out_w, "height": out_h, "count": profile["count"],
                "dtype": profile["dtype"], "crs": profile["crs"], "nodata": nodata,
                "transform": profile["transform"] * Affine.scale(2**k), "interleave": "band",
            }
            with _Sources(previous, threads) as sources, rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
                    rasterio.open(path, "w", **level_profile) as dst:
                def halved(window: Window) -> tuple[Window, np.ndarray, np.ndarray | None]:
                    with sources.one() as src:
                        if masked:
                            small, mask = halve_masked(src.read(window=window),
                                                       src.read_masks(1, window=window), average)
                        else:
                            small, mask = halve(src.read(window=window), nodata, average), None
                    out = Window(int(window.col_off) // 2, int(window.row_off) // 2,
                                 small.shape[2], small.shape[1])
                    return out, small, mask

                for out, small, mask in _in_order(halved, _windows(width, height), pool, threads):
                    dst.write(small, window=out)
                    if mask is not None:
                        dst.write_mask(mask, window=out)
            previous, width, height = str(path), out_w, out_h
    return paths


class _Sources:
    """``count`` open handles on one file, lent to one thread at a time (a GDAL dataset is not
    thread-safe)."""

    def __init__(self, path: str, count: int) -> None:
        self.path, self.count = path, max(1, count)
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._all: list[Any] = []

    def __enter__(self) -> _Sources:
        try:
            for _ in range(self.count):
                self._all.append(rasterio.open(self.path))
                self._free.put(self._all[-1])
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for src in self._all:
            src.close()

    @contextlib.contextmanager
    def one(self) -> Iterator[Any]:
        src = self._free.get()
        try:
            yield src
        finally:
            self._free.put(src)


def _in_order(work: Callable[[Window], _T], windows: Iterable[Window], pool: Executor | None,
              ahead: int) -> Iterator[_T]:
    """``work(window)`` for each window, in order; on ``pool``, at most ``ahead`` at a time."""
    if pool is None:
        yield from map(work, windows)
        return
    pending: collections.deque[Future[_T]] = collections.deque()
    try:
        for window in windows:
            pending.append(pool.submit(work, window))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # an error (or the caller stopping): nothing left running on our files
        for future in pending:
            future.cancel()
        wait_for(pending)


def write_vrt(source: str, levels: list[Path], target: Path) -> Path:
    """A VRT of ``source`` (its tags, band names, nodata, scale/offset, mask band) listing ``levels``
    as the overviews of its bands and of its mask band."""
    path = vrt_path(target)
    path.unlink(missing_ok=True)
    rasterio.shutil.copy(source, str(path), driver="VRT")
    tree = ET.parse(path)
    root = tree.getroot()
    bands = [(band, band.get("band")) for band in root.findall("VRTRasterBand")]
    bands += [(band, "mask,1") for band in root.findall("MaskBand/VRTRasterBand")]
    for band, source_band in bands:
        for level in levels:
            overview = ET.SubElement(band, "Overview")
            ET.SubElement(overview, "SourceFilename", relativeToVRT="0").text = str(level)
            ET.SubElement(overview, "SourceBand").text = source_band
    tree.write(path)
    return path


@contextlib.contextmanager
def pyramid(source: str, target: Path, block: int, *, average: bool, threads: int = 1) -> Iterator[str]:
    """Yield a VRT of ``source`` with its overviews computed (by ``threads``, see
    ``write_levels``); remove the temporaries after."""
    levels: list[Path] = []
    try:
        levels = write_levels(source, target, block, average=average, threads=threads)
        release_free_memory()  # the windows' temporaries, before the COG driver's buffers
        yield str(write_vrt(source, levels, target))
    finally:
        discard(target)


def discard(target: Path) -> bool:
    """Remove a target's level files and VRT (leftovers of an interrupted run). True if any."""
    removed = False
    for leftover in [*target.parent.glob(f"{glob.escape(target.name)}.ov*.tmp"), vrt_path(target)]:
        if leftover.exists():
            leftover.unlink(missing_ok=True)
            removed = True
    return removed

