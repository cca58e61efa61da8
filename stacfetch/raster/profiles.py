"""GeoTIFF creation profiles and GDAL settings, as data (rio-cogeo's ``profiles.py`` is the model).

``PROFILES`` holds, once, the creation options of each output format; ``profile_for`` makes
the profile the ``.part`` is opened with, ``creation_options`` the options a copy into a
format is made with. ``GDAL_OPTIONS`` are the settings a run enters with
``rasterio.Env(**gdal_options())``; nothing here changes the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rasterio.crs import CRS

from ..bands import BANDS
from ..plan import Grid

__all__ = [
    "BLOCK",
    "CODECS",
    "COG_BLOCK",
    "COMPRESSIONS",
    "DEFLATE_LEVEL",
    "FORMATS",
    "GDAL_OPTIONS",
    "IO_ENV",
    "READ_ENV",
    "PROFILES",
    "ZSTD_LEVEL",
    "check_compress",
    "check_format",
    "creation_options",
    "gdal_options",
    "overview_resampling",
    "profile_for",
]

BLOCK = 512  # internal tiles of every file written (the .part, the levels, gtiff and raw)
COG_BLOCK = 512  # COG tiles (GDAL's default); no overview level is smaller (overviews.level_count)
# DEFLATE (readable everywhere) at level 1: on real Sentinel-2 data (../shared/data/rasters
# B04) level 1 was as small as level 6 (2.19 vs 2.27 MB) and 1.5x faster to write.
DEFLATE_LEVEL = 1
# ZSTD (GDAL >= 2.3; QGIS, rasterio, GDAL-based tools read it) at level 1: on real Sentinel-2
# texture (2001 x 2001 x 3 uint16, predictor 2) 3.5x less CPU than DEFLATE level 1 for the
# full resolution (0.057 vs 0.20 s), decoded 3x faster, files 5 % larger; level 3 was 6 % smaller
# than DEFLATE but cost 2.7x level 1 (benchmarks/README.md).
ZSTD_LEVEL = 1
FORMATS = ("cog", "gtiff", "raw")
COMPRESSIONS = ("deflate", "zstd")  # of cog and gtiff (raw is uncompressed); deflate the default

# Creation options per output format (rasterio spelling; GDAL reads keys and values
# case-insensitively). "raw" is tiled and uncompressed: what a stitched "as served" file
# becomes, and the form of the .part and of the overview levels.
PROFILES: dict[str, dict[str, Any]] = {
    "gtiff": {
        "driver": "GTiff",
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "zlevel": DEFLATE_LEVEL,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    },
    "raw": {
        "driver": "GTiff",
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    },
    "cog": {
        "driver": "COG",
        "compress": "deflate",
        "level": DEFLATE_LEVEL,
        "blocksize": COG_BLOCK,
        "overviews": "AUTO",
        "BIGTIFF": "IF_SAFER",
    },
}
# Each compression's creation options, per format (the COG driver and GTiff spell the level
# differently); PROFILES holds the default, deflate.
CODECS: dict[str, dict[str, dict[str, Any]]] = {
    "deflate": {"cog": {"compress": "deflate", "level": DEFLATE_LEVEL},
                "gtiff": {"compress": "deflate", "zlevel": DEFLATE_LEVEL}},
    "zstd": {"cog": {"compress": "zstd", "level": ZSTD_LEVEL},
             "gtiff": {"compress": "zstd", "zstd_level": ZSTD_LEVEL}},
}
# The predictor of a compressed format: (integer data, floating-point data).
PREDICTORS: dict[str, tuple[Any, Any]] = {"gtiff": (2, 3), "cog": ("STANDARD", "FLOATING_POINT")}

# GDAL settings of a whole run. GDAL's block cache defaults to 5 % of RAM; windowed writes of
# a large mosaic would fill it with dirty blocks. A bounded cache keeps peak memory flat.
# It is set once per run, never during one (shrinking it flushes other threads' dirty blocks:
# see formats.copy_as). 16 MB: the 50 km COG peaked at 221 MB (282 MB with 48 MB), and
# scenario a's small COGs took no more CPU (2.39 s against 2.54 s). (rasterio takes bytes.)
GDAL_OPTIONS: dict[str, Any] = {"GDAL_CACHEMAX": 16 * 1024 * 1024}
# GDAL settings of each of our own writes: no directory listing next to in-memory responses,
# compression on all cores (GDAL takes the thread count when a file is created).
IO_ENV: dict[str, str] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_NUM_THREADS": "ALL_CPUS"}
# ... and of decoding a response: one thread. GDAL's threaded reader hands each strip to a
# worker; on the service's uncompressed one-row strips that cost 10x the CPU for nothing
# (2001 x 2001 x 4 uint16: 0.12 s against 0.012 s).
READ_ENV: dict[str, str] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_NUM_THREADS": "1"}


def gdal_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``GDAL_OPTIONS`` without those the user set in the environment (their choice wins)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in GDAL_OPTIONS.items() if k not in environ}


def check_format(fmt: str) -> str:
    """``"cog"``, ``"gtiff"`` or ``"raw"`` (case-insensitive); ValueError otherwise."""
    value = str(fmt).strip().lower()
    if value not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    return value


def check_compress(compress: str | None, fmt: str = "cog") -> str | None:
    """``"deflate"`` or ``"zstd"`` (case-insensitive) for ``fmt``; None (the default, deflate)
    stays None. ValueError for another name, or for any with ``raw`` (uncompressed)."""
    if compress is None:
        return None
    value = str(compress).strip().lower()
    if value not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compress!r}; expected one of: {', '.join(COMPRESSIONS)}")
    if fmt not in CODECS[value]:
        raise ValueError(f"--format {fmt} is uncompressed; a compression applies to cog and gtiff")
    return value


def _with_codec(options: dict[str, Any], fmt: str, compress: str | None) -> dict[str, Any]:
    """``options`` with the compression ``compress`` for ``fmt`` in place of the default's."""
    if compress is None or fmt not in CODECS[compress]:
        return options
    kept = {k: v for k, v in options.items() if k not in ("compress", "level", "zlevel", "zstd_level")}
    return {**kept, **CODECS[compress][fmt]}


def overview_resampling(bands: Sequence[str]) -> str:
    """AVERAGE for continuous bands only; NEAREST as soon as a class or mask band is present."""
    continuous = all(BANDS.get(b) is not None and BANDS[b].kind in ("reflectance", "aot") for b in bands)
    return "AVERAGE" if continuous else "NEAREST"


def creation_options(fmt: str, bands: Sequence[str], dtype: str, *,
                     compress: str | None = None) -> dict[str, Any]:
    """The options of a copy into ``fmt`` (``driver`` included) for these bands and dtype;
    ``compress`` (``COMPRESSIONS``; None: deflate) for cog and gtiff."""
    options = _with_codec(dict(PROFILES[fmt]), fmt, compress)
    if fmt in PREDICTORS:
        options["predictor"] = PREDICTORS[fmt][np.dtype(dtype).kind == "f"]
    if fmt == "cog":
        options["overview_resampling"] = overview_resampling(bands)
    options["num_threads"] = "ALL_CPUS"
    return options


def profile_for(grid: Grid, bands: Sequence[str], dtype: str, *, nodata: float | None = 0,
                fmt: str = "gtiff", compress: str | None = None) -> dict[str, Any]:
    """The profile a GeoTIFF of ``grid`` is opened with for writing: ``PROFILES[fmt]`` placed on the grid.

    The default (``gtiff``) is tiled 512 x 512, deflate (or ``compress``) with the right
    predictor, BigTIFF if needed.
    """
    profile = {
        **_with_codec(dict(PROFILES[fmt]), fmt, compress),
        "width": grid.width,
        "height": grid.height,
        "count": len(bands),
        "dtype": dtype,
        "crs": CRS.from_user_input(grid.crs),
        "transform": grid.transform,
        "nodata": nodata,
    }
    if fmt in PREDICTORS:
        profile["predictor"] = PREDICTORS[fmt][np.dtype(dtype).kind == "f"]
    return profile
