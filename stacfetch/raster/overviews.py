"""Overview pyramids computed in bounded memory, handed to GDAL's COG driver as a VRT.

GDAL's own overview builder needs most of a large mosaic in its block cache: with the 48 MB
cache stacfetch keeps (for flat memory), a 5001 x 5001 px, 12-band mosaic took 33-51 s, and
raising the cache to 160 MB brought it to 9 s but 460 MB of memory. Here each level is made
from the one before, a window of 512 x 1024 px at a time (2 x 2 means that skip nodata, or
the top-left sample for class bands), into an uncompressed tiled GeoTIFF next to the target;
a VRT lists them as the source's overviews and the COG driver copies them as they are
(``OVERVIEWS=FORCE_USE_EXISTING``): about 6 s and 280 MB for that mosaic.

Levels halve until the image fits in one COG tile (GDAL's ``OVERVIEWS=AUTO`` rule), with
exact factors of 2: level ``k`` is ``ceil(size / 2**k)`` px and covers the same extent.
"""

from __future__ import annotations

import contextlib
import glob
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from .profiles import PROFILES

CHUNK_ROWS = 512  # source rows per window (a multiple of 2, and of the 512-px blocks)
CHUNK_COLS = 1024  # source columns per window: ~12 MB of 12-band uint16, ~60 MB of temporaries


def halve(block: np.ndarray, nodata: float | None, average: bool) -> np.ndarray:
    """One overview step of a ``(bands, rows, cols)`` block: 2 x 2 means, or nearest samples.

    Means skip ``nodata`` (and NaN) samples; a 2 x 2 cell with no valid sample is ``nodata``.
    Odd edges repeat their last row/column, so the output is ``ceil(rows/2) x ceil(cols/2)``.
    """
    _, rows, cols = block.shape
    if rows % 2 or cols % 2:
        block = np.pad(block, ((0, 0), (0, rows % 2), (0, cols % 2)), mode="edge")
    if not average:
        return block[:, 0::2, 0::2].copy()
    floating = block.dtype.kind == "f"
    total = np.zeros((block.shape[0], block.shape[1] // 2, block.shape[2] // 2),
                     np.float64 if floating else np.uint32)
    count = np.zeros(total.shape, np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            part = block[:, dy::2, dx::2]
            valid = np.ones(part.shape, bool) if nodata is None else part != nodata
            if floating:
                valid &= ~np.isnan(part)
            total += np.where(valid, part, 0).astype(total.dtype)
            count += valid
    empty = count == 0
    # floats: the mean; integers: the rounded mean
    out = total / np.maximum(count, 1) if floating else (total + count // 2) // np.maximum(count, 1)
    out[empty] = nodata if nodata is not None else 0
    return out.astype(block.dtype)


def level_count(width: int, height: int, block: int) -> int:
    """How many halvings until the image fits in one ``block`` x ``block`` tile."""
    levels = 0
    while max(width, height) > block:
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


def write_levels(source: str, target: Path, block: int, *, average: bool) -> list[Path]:
    """Write every overview level of ``source`` next to ``target``; returns their paths."""
    with rasterio.open(source) as src:
        profile = src.profile
        width, height, nodata = src.width, src.height, src.nodata
    paths = level_paths(target, level_count(width, height, block))
    previous = source
    for k, path in enumerate(paths, start=1):
        out_w, out_h = math.ceil(width / 2), math.ceil(height / 2)
        level_profile = {  # tiled, uncompressed: read once more by the COG driver
            **PROFILES["raw"], "width": out_w, "height": out_h, "count": profile["count"],
            "dtype": profile["dtype"], "crs": profile["crs"], "nodata": nodata,
            "transform": profile["transform"] * Affine.scale(2**k),
        }
        with rasterio.open(previous) as src, rasterio.open(path, "w", **level_profile) as dst:
            for window in _windows(width, height):
                small = halve(src.read(window=window), nodata, average)
                dst.write(small, window=Window(int(window.col_off) // 2, int(window.row_off) // 2,
                                               small.shape[2], small.shape[1]))
        previous, width, height = str(path), out_w, out_h
    return paths


def write_vrt(source: str, levels: list[Path], target: Path) -> Path:
    """A VRT of ``source`` (its tags, band names, nodata, scale/offset) listing ``levels`` as overviews."""
    path = vrt_path(target)
    path.unlink(missing_ok=True)
    rasterio.shutil.copy(source, str(path), driver="VRT")
    tree = ET.parse(path)
    for band in tree.getroot().iter("VRTRasterBand"):
        for level in levels:
            overview = ET.SubElement(band, "Overview")
            ET.SubElement(overview, "SourceFilename", relativeToVRT="0").text = str(level)
            ET.SubElement(overview, "SourceBand").text = band.get("band")
    tree.write(path)
    return path


@contextlib.contextmanager
def pyramid(source: str, target: Path, block: int, *, average: bool) -> Iterator[str]:
    """Yield a VRT of ``source`` with its overviews computed; remove the temporaries after."""
    levels: list[Path] = []
    try:
        levels = write_levels(source, target, block, average=average)
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

