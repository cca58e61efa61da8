"""Spectral indices and per-acquisition statistics: ``stacfetch.stats(...)``.

    df = stacfetch.stats("out", index="ndvi")   # one row per acquisition

Each index is a normalised difference ``(a - b) / (a + b)`` of two bands' reflectance. A
pixel counts when both bands have data and, when the files hold SCL, it is clear (classes
4 vegetation, 5 not vegetated, 6 water, 11 snow). The clear share is measured as
``--min-clear`` measures it: clear pixels among the pixels with an SCL class (0 = no data
does not count). Needs the ``stacfetch[xarray]`` extra (xarray, dask, pandas).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .bands import SCL_CLEAR
from .clouds import clear_percent
from .dataset import area_files, open_dataset, read_scene, require_extra
from .errors import InvalidOptionError

try:  # part of the stacfetch[xarray] extra (xarray requires it); stats() says how to install it
    import pandas as pd
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    pd = None  # type: ignore[assignment]

__all__ = ["BATCH_PIXELS", "INDICES", "compute_index", "index_bands", "stats"]

BATCH_PIXELS = 8_000_000  # pixels of one computed batch of acquisitions (~100 MB of float64 + SCL)

# name -> (a, b, what it shows): index = (a - b) / (a + b)
INDICES: dict[str, tuple[str, str, str]] = {
    "ndvi": ("B08", "B04", "vegetation (NIR, red)"),
    "ndwi": ("B03", "B08", "open water, McFeeters (green, NIR)"),
    "ndmi": ("B08", "B11", "vegetation moisture (NIR, SWIR 1.6 um)"),
    "nbr": ("B08", "B12", "burn ratio (NIR, SWIR 2.2 um)"),
    "ndre": ("B08", "B05", "red edge chlorophyll (NIR, red edge 704 nm)"),
    "ndsi": ("B03", "B11", "snow (green, SWIR 1.6 um)"),
    "ndbi": ("B11", "B08", "built-up (SWIR 1.6 um, NIR)"),
}


def index_bands(name: str) -> tuple[str, str]:
    """The two bands of index ``name`` (case-insensitive); InvalidOptionError naming the known ones."""
    key = str(name).strip().lower()
    if key not in INDICES:
        raise InvalidOptionError(f"unknown index {name!r}",
                                 hint="use one of: " + ", ".join(INDICES))
    a, b, _ = INDICES[key]
    return a, b


def compute_index(ds: Any, name: str, *, dtype: str | None = None) -> Any:
    """``(a - b) / (a + b)`` of the dataset's bands, NaN where either is missing or the sum is 0.

    ``dtype``: compute in this float type (default: the bands' own, float32).
    """
    a, b = index_bands(name)
    missing = [band for band in (a, b) if band not in ds.data_vars]
    if missing:
        raise InvalidOptionError(
            f"{name} needs {a} and {b}; the files have no {', '.join(missing)}",
            hint=f"download them too, e.g. --bands {a},{b},SCL",
        )
    first, second = ds[a], ds[b]
    if dtype is not None:
        first, second = first.astype(dtype), second.astype(dtype)
    total = first + second
    result = ((first - second) / total.where(total != 0)).rename(name.lower())
    result.attrs = {"long_name": name.upper(), "description": INDICES[name.lower()][2],
                    "formula": f"({a} - {b}) / ({a} + {b})"}
    return result


def stats(source: Any, *, index: str = "ndvi", clear_classes: Sequence[int] = SCL_CLEAR,
          chunks: Any = None) -> Any:
    """One row per acquisition: date, platform, clear share, and the index's mean/median/std.

    Columns: ``date`` (UTC), ``platform``, ``clear_percent`` (None without SCL or data),
    ``pixels`` (pixels counted), ``<index>_mean``, ``<index>_median``, ``<index>_std``
    (population std; NaN when no pixel counts), ``cloud_cover`` (the scene's), ``file``.
    ``source`` is anything ``open_dataset`` accepts.
    """
    require_extra("stats")  # xarray needs pandas: with the extra, pd is there
    name = str(index).strip().lower()
    a, b = index_bands(name)
    files = area_files(source)
    available = read_scene(files[0]).bands
    # only the bands the index needs: every chunk read decodes all the bands it is asked for
    wanted = [band for band in (a, b, "SCL") if band in available]
    ds = open_dataset(files, bands=wanted or None, chunks=chunks)
    values = compute_index(ds, name, dtype="float64")
    lazy = values.to_dataset(name="value")
    has_scl = "SCL" in ds.data_vars
    if has_scl:
        lazy["scl"] = ds["SCL"]
    rows = []
    per_batch = max(1, BATCH_PIXELS // max(1, ds.sizes["y"] * ds.sizes["x"]))
    for t in range(ds.sizes["time"]):
        if t % per_batch == 0:  # a few acquisitions at once: one dask compute, bounded memory
            batch = lazy.isel(time=slice(t, t + per_batch)).compute()
        step = batch["value"].values[t % per_batch]
        counted = np.isfinite(step)
        clear = None
        if has_scl:
            scl = batch["scl"].values[t % per_batch]
            clear, _ = clear_percent(scl)
            counted &= np.isin(scl, list(clear_classes))
        picked = step[counted]
        empty = picked.size == 0
        rows.append({
            "date": pd.Timestamp(ds.time.values[t], tz="UTC"),
            "platform": str(ds.platform.values[t]),
            "clear_percent": clear,
            "pixels": int(picked.size),
            f"{name}_mean": np.nan if empty else float(picked.mean()),
            f"{name}_median": np.nan if empty else float(np.median(picked)),
            f"{name}_std": np.nan if empty else float(picked.std()),
            "cloud_cover": float(ds.cloud_cover.values[t]),
            "file": str(ds.file.values[t]),
        })
    frame = pd.DataFrame(rows, columns=["date", "platform", "clear_percent", "pixels", f"{name}_mean",
                                        f"{name}_median", f"{name}_std", "cloud_cover", "file"])
    frame.attrs["index"] = name
    frame.attrs["source_folder"] = ds.attrs.get("source_folder", "")
    return frame
