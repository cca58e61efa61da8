"""The emulator's deterministic pixel function, shared by the emulator and the tests.

Every value depends only on the band, the acquisition date, the pixel centre's coordinates
in the request CRS and (for SCL/CLD) the cloud cover of the item rendered there. Tests
recompute the expected value of any pixel of any file from its grid alone.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from ..bands import BANDS

_BAND_NO = {name: i + 1 for i, name in enumerate(BANDS)}


def coordinate_unit(is_geographic: bool) -> float:
    """Quantum of the coordinate grid the pattern is laid on: 1 m, or 1e-5 degree."""
    return 1e-5 if is_geographic else 1.0


def pixel_centers(transform, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre coordinates ``(x, y)`` of every pixel, as 2-D arrays (rows, cols)."""
    cols = np.arange(width, dtype=np.float64) + 0.5
    rows = np.arange(height, dtype=np.float64) + 0.5
    xs = transform.c + cols * transform.a
    ys = transform.f + rows * transform.e
    return np.broadcast_to(xs, (height, width)), np.broadcast_to(ys[:, None], (height, width))


def _cells(x: np.ndarray, y: np.ndarray, unit: float) -> tuple[np.ndarray, np.ndarray]:
    return np.floor(x / unit).astype(np.int64), np.floor(y / unit).astype(np.int64)


def is_cloudy(day: int, x: np.ndarray, y: np.ndarray, unit: float, cloud_cover: float) -> np.ndarray:
    """True where the pixel is cloud; about ``cloud_cover`` percent of 200-unit blocks are."""
    ix, iy = _cells(x, y, unit)
    h = ((ix // 200) * 31 + (iy // 200) * 17 + day * 7) % 100
    return h < cloud_cover


def band_values(
    band: str, day: int, x: np.ndarray, y: np.ndarray, unit: float, cloud_cover: float = 0.0
) -> np.ndarray:
    """Digital numbers of ``band`` (uint16 for reflectance/AOT, uint8 otherwise).

    ``day`` is the acquisition date's proleptic ordinal (``date.toordinal()``).
    Reflectance DN = 1000 + (7*ix + 13*iy + 101*band_no + 37*day) mod 8000, so 1000..8999.
    """
    ix, iy = _cells(x, y, unit)
    kind = BANDS[band].kind
    if kind == "reflectance":
        v = 1000 + (ix * 7 + iy * 13 + _BAND_NO[band] * 101 + day * 37) % 8000
        return v.astype(np.uint16)
    if kind == "aot":
        return (100 + (ix + iy + day) % 200).astype(np.uint16)
    cloudy = is_cloudy(day, x, y, unit, cloud_cover)
    if band == "SCL":
        clear = 4 + ((ix // 500) + (iy // 500) + day) % 3  # 4 vegetation, 5 bare soil, 6 water
        return np.where(cloudy, 9, clear).astype(np.uint8)
    if band == "CLD":
        return np.where(cloudy, 90, 2).astype(np.uint8)
    if band == "SNW":
        return np.zeros(np.shape(x), dtype=np.uint8)
    if band == "dataMask":
        return np.ones(np.shape(x), dtype=np.uint8)
    raise KeyError(band)


def reflectance(dn: np.ndarray) -> np.ndarray:
    """DN to reflectance as float32 (the service's REFLECTANCE units: DN / 10000)."""
    return (dn.astype(np.float32) / np.float32(10000)).astype(np.float32)


def day_number(value: date) -> int:
    return value.toordinal()
