"""Processing units as Sentinel Hub counts them: THE one formula of the emulator.

From the "Processing Unit definition" page (docs.sentinel-hub.com/api/latest/api/overview/
processing-unit; the CDSE copy says the same). One PU is a 512 × 512 px output of 3 input
bands, one sample per pixel, at most 16 bits per sample. Multiplication factors:

* area: output pixels / 512², **at least 0.01**;
* input bands: bands / 3, **no floor** (one band costs a third), ``dataMask`` not counted;
* output format: × 2 for FLOAT32 samples;
* one data sample per pixel (``SIMPLE`` mosaicking, the only one the emulator runs);
* a request costs **at least 0.005 PU** (Process API).

The emulator charges this in ``x-processingunits-spent``.

The client's estimate (``stacfetch.plan.estimate_processing_units``, used by the dry run,
``--max-pu`` and the budget) follows the same page but is written separately, on purpose:
the emulator stands for the service, so it follows the service's documentation and never
the client's code; a test comparing the client's estimate with what the emulator charges
then checks the client against the documented rule, not against itself.
"""

from __future__ import annotations

from collections.abc import Iterable

MIN_AREA_FACTOR = 0.01
MIN_REQUEST_PU = 0.005
PIXELS_PER_PU = 512 * 512
BANDS_PER_PU = 3


def input_band_count(bands: Iterable[str]) -> int:
    """Input bands as the PU rule counts them: ``dataMask`` is free."""
    return len([b for b in dict.fromkeys(bands) if b != "dataMask"])


def processing_units(width: int, height: int, input_bands: int, sample_type: str) -> float:
    """PU of one Process request: ``width`` × ``height`` px, ``input_bands`` (dataMask excluded),
    ``sample_type`` the output's (``"FLOAT32"`` doubles the cost)."""
    area = max(MIN_AREA_FACTOR, width * height / PIXELS_PER_PU)
    pu = area * input_bands / BANDS_PER_PU
    if str(sample_type).upper() == "FLOAT32":
        pu *= 2
    return max(MIN_REQUEST_PU, pu)


__all__ = ["input_band_count", "processing_units"]
