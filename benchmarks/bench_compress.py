"""Benchmark: output formats and compressions on REAL Sentinel-2 texture (not the emulator's).

    python benchmarks/bench_compress.py            # needs ../shared/data/rasters (STACFETCH_SHARED_DIR)

The emulator's synthetic pattern compresses ~56:1 and hides the cost of compression and
overviews. Here B02, B03 and B04 of a real L2A scene (``data/rasters/S2A_29RKH_20200219_0_L2A``,
1098 x 1098 px each, see its SOURCES.md) are stacked as one response would be, plus
``dataMask``, and written through stacfetch's own ``PartFile`` (the path a download takes:
the .part, then the copy into the format, overviews, checksum, fsync, sidecar) as:

* ``1098 px``: the scene as it is (a COG gets one overview level, 549 px);
* ``2001 px``: mirrored out to 2001 x 2001 px, the size of benchmark scenario a (one level,
  1001 px; the next, 501 px, would be under one 512-px block).

GDAL may log "Bad value 2 for ExtraSamples" for gtiff: its threaded compression of the .part
(``IO_ENV``) says so for 3-band pixel-interleaved tiles; the files read back identical.

CPU seconds (user + sys of this process, all threads) are the median of ``--repeat`` writes;
"read" is decoding the whole file once. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from stacfetch.plan import Grid, Tile
from stacfetch.raster import PartFile
from stacfetch.raster.profiles import gdal_options

BANDS = ("B02", "B03", "B04")
CASES = (("raw", None), ("gtiff", "deflate"), ("gtiff", "zstd"), ("cog", "deflate"), ("cog", "zstd"))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scene(folder: Path, size: int | None) -> tuple[np.ndarray, Grid]:
    """The three bands plus dataMask as one ``(4, h, w)`` uint16 array, and its grid."""
    arrays = []
    for band in BANDS:
        with rasterio.open(folder / f"{band}.tif") as src:
            data, transform, crs = src.read(1), src.transform, src.crs
        if size is not None:  # mirrored out: real texture, no repeat a compressor can see in a tile
            data = np.pad(data, ((0, size - data.shape[0]), (0, size - data.shape[1])), mode="symmetric")
        arrays.append(data)
    stack = np.stack(arrays)
    mask = (stack != 0).all(axis=0).astype(np.uint16)
    res = 10.0  # placed on a 10-m grid (the texture is what matters, not the pixel size)
    grid = Grid(crs=f"EPSG:{crs.to_epsg()}", transform=Affine(res, 0, round(transform.c), 0, -res,
                round(transform.f)), width=stack.shape[2], height=stack.shape[1], resolution=res)
    return np.concatenate([stack, mask[np.newaxis]]), grid


def write_once(data: np.ndarray, grid: Grid, dest: Path, fmt: str, compress: str | None) -> float:
    """CPU seconds of one download's write path for ``data``."""
    tile = Tile(0, 0, Window(0, 0, grid.width, grid.height), grid.bounds)
    start = _cpu()
    with PartFile(dest, grid, BANDS, "uint16", fmt=fmt, masked=True, compress=compress) as part:
        part.write_tile(tile, data)
        part.commit(tags={"BENCH": "1"}, band_descriptions=BANDS)
    return _cpu() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    shared = Path(os.environ.get("STACFETCH_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--scene", type=Path, default=shared / "data" / "rasters" / "S2A_29RKH_20200219_0_L2A")
    args = parser.parse_args(argv)
    print(f"{'size':>8} | {'format':<14} | {'CPU write (s)':>13} | {'MB':>6} | {'ratio':>5} | "
          f"{'CPU read (s)':>12} | overviews")
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp, rasterio.Env(**gdal_options()):
        for size in (None, 2001):
            data, grid = scene(args.scene, size)
            raw_bytes = grid.width * grid.height * len(BANDS) * 2
            for fmt, compress in CASES:
                dest = Path(tmp) / f"{fmt}-{compress}-{size}.tif"
                cpus = [write_once(data, grid, dest, fmt, compress) for _ in range(args.repeat)]
                start = _cpu()
                with rasterio.open(dest) as src:
                    src.read()
                    levels = src.overviews(1)
                read = _cpu() - start
                mb = dest.stat().st_size / 1e6
                label = fmt if compress is None else f"{fmt} {compress}"
                print(f"{grid.width:>5} px | {label:<14} | {statistics.median(cpus):>13.3f} | {mb:>6.2f} | "
                      f"{raw_bytes / 1e6 / mb:>5.2f} | {read:>12.3f} | {levels}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
