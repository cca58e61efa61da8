"""The emulator's deterministic pixel function, shared by the emulator and the tests.

Every value depends only on the band, the acquisition date, the pixel centre's coordinates
in the request CRS, (for SCL/CLD/CLP/CLM) the cloud cover of the item rendered there and,
for what the archive stores, the item's processing baseline. Tests recompute the expected value
of any pixel of any file from its grid alone.

The world has valid zeros, as the real one does: water (the blocks SCL calls 6 when clear) is
dark in NIR and SWIR (``B08 B8A B09 B11 B12``), where the true bottom-of-atmosphere value is
often at or below 0 (harmonised: clamped to 0), and ``CLD``/``SNW`` are 0 % wherever the sky is
clear. Optical values do not depend on the cloud cover (clouds show in SCL/CLD/CLP/CLM only).

Three views of an optical band (reference §3.4, CDSE S2L2A "Harmonize Values"):

* :func:`true_dn` — 10000 × reflectance, may be negative over dark water;
* :func:`band_values` — DN with ``harmonizeValues`` true (the default): ``max(0, true_dn)``, the
  same for every processing baseline;
* :func:`archive_dn` — DN with ``harmonizeValues`` false, as the product files hold them:
  ``true_dn + 1000`` for baseline 04.00 and later (BOA_ADD_OFFSET -1000), clamped at 0.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from .s2bands import BAND_NUMBER, BOA_ADD_OFFSET, DARK_OVER_WATER, S2L2A, has_offset


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


def _clear_class(day: int, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """SCL of a clear pixel: 4 vegetation, 5 bare soil, 6 water (500-unit blocks)."""
    return 4 + ((ix // 500) + (iy // 500) + day) % 3


def is_water(day: int, x: np.ndarray, y: np.ndarray, unit: float) -> np.ndarray:
    """True over water: where SCL says 6 when the sky is clear."""
    ix, iy = _cells(x, y, unit)
    return _clear_class(day, ix, iy) == 6


def true_dn(band: str, day: int, x: np.ndarray, y: np.ndarray, unit: float,
            cloud_cover: float = 0.0) -> np.ndarray:
    """10000 × reflectance of an optical band (int32); negative over dark water in NIR/SWIR.

    ``cloud_cover`` is accepted for symmetry with the other bands and not used.

    Land: 1000 + (7*ix + 13*iy + 101*band_no + 37*day) mod 8000, so 1000..8999. Clear water in
    NIR/SWIR: (7*ix + 13*iy + 5*band_no + day) mod 90 - 60, so -60..29 (two thirds at or below 0).
    """
    ix, iy = _cells(x, y, unit)
    no = BAND_NUMBER[band]
    land = 1000 + (ix * 7 + iy * 13 + no * 101 + day * 37) % 8000
    if band not in DARK_OVER_WATER:
        return land.astype(np.int32)
    dark = (ix * 7 + iy * 13 + no * 5 + day) % 90 - 60
    return np.where(is_water(day, x, y, unit), dark, land).astype(np.int32)


def band_values(
    band: str, day: int, x: np.ndarray, y: np.ndarray, unit: float, cloud_cover: float = 0.0
) -> np.ndarray:
    """DN of ``band`` as the Process API returns them by default (``harmonizeValues`` true).

    uint16 for optical bands and AOT, uint8 for SCL/SNW/CLD/CLP/CLM/dataMask, float32 for
    angles. ``day`` is the acquisition date's proleptic ordinal (``date.toordinal()``).
    """
    kind = S2L2A[band].kind
    if kind == "optical":
        return np.maximum(true_dn(band, day, x, y, unit, cloud_cover), 0).astype(np.uint16)
    ix, iy = _cells(x, y, unit)
    if kind == "aot":
        return (100 + (ix + iy + day) % 200).astype(np.uint16)
    if kind == "angle":
        base = {"sunAzimuthAngles": 150.0, "sunZenithAngles": 40.0, "viewAzimuthMean": 200.0,
                "viewZenithMean": 5.0}[band]
        return np.full(np.shape(ix), base + day % 10, dtype=np.float32)
    if kind == "mask":
        return np.ones(np.shape(ix), dtype=np.uint8)
    cloudy = is_cloudy(day, x, y, unit, cloud_cover)
    if band == "SCL":
        return np.where(cloudy, 9, _clear_class(day, ix, iy)).astype(np.uint8)
    if band == "CLD":
        return np.where(cloudy, 90, 0).astype(np.uint8)  # 0 % is the commonest valid value
    if band == "SNW":
        return np.zeros(np.shape(ix), dtype=np.uint8)
    if band == "CLP":  # s2cloudless probability x 255
        return np.where(cloudy, 200 + (ix + iy) % 56, (ix * 3 + iy) % 20).astype(np.uint8)
    if band == "CLM":
        return cloudy.astype(np.uint8)
    raise KeyError(band)


def archive_dn(band: str, day: int, x: np.ndarray, y: np.ndarray, unit: float,
               cloud_cover: float = 0.0, baseline: str = "0400") -> np.ndarray:
    """DN as the product files store them (``harmonizeValues`` false).

    Optical bands of baseline 04.00 and later carry the +1000 offset (BOA_ADD_OFFSET -1000);
    older baselines were clamped at 0. Other bands are the same as :func:`band_values`.
    """
    if S2L2A[band].kind != "optical":
        return band_values(band, day, x, y, unit, cloud_cover)
    shift = -BOA_ADD_OFFSET if has_offset(baseline) else 0
    return np.maximum(true_dn(band, day, x, y, unit, cloud_cover) + shift, 0).astype(np.uint16)


def sample_values(band: str, units: str, harmonize: bool, baseline: str, day: int,
                  x: np.ndarray, y: np.ndarray, unit: float, cloud_cover: float = 0.0) -> np.ndarray:
    """What ``sample.<band>`` holds in an evalscript for these units and ``harmonizeValues``.

    REFLECTANCE: (archive DN + BOA_ADD_OFFSET) / 10000, negatives clamped to 0 when harmonising;
    DN: :func:`band_values` when harmonising, else :func:`archive_dn`; OPTICAL_DEPTH: DN / 1000.
    """
    kind = S2L2A[band].kind
    if kind == "optical":
        if units == "REFLECTANCE":
            if harmonize:
                return reflectance(band_values(band, day, x, y, unit, cloud_cover))
            raw = archive_dn(band, day, x, y, unit, cloud_cover, baseline).astype(np.int32)
            if has_offset(baseline):
                raw = raw + BOA_ADD_OFFSET
            return (raw.astype(np.float32) / np.float32(10000)).astype(np.float32)
        if harmonize:
            return band_values(band, day, x, y, unit, cloud_cover)
        return archive_dn(band, day, x, y, unit, cloud_cover, baseline)
    dn = band_values(band, day, x, y, unit, cloud_cover)
    if units == "OPTICAL_DEPTH":
        return (dn.astype(np.float32) / np.float32(1000)).astype(np.float32)
    return dn


def reflectance(dn: np.ndarray) -> np.ndarray:
    """DN to reflectance as float32 (the service's REFLECTANCE units: DN / 10000)."""
    return (dn.astype(np.float32) / np.float32(10000)).astype(np.float32)


def day_number(value: date) -> int:
    return value.toordinal()
