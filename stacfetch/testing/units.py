"""Processing units (PU) of a Process API request, after Sentinel Hub's documented rule.

1 PU = 512 x 512 px of 3 input bands, 8/16-bit. The area factor is the pixel count over
512², at least 0.01; the band factor is input bands / 3 with no floor (``dataMask`` is not an
input band); FLOAT32 output counts twice; a request costs at least 0.005 PU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the hint: render imports this module
    from .render import ProcessRequest

MIN_AREA_FACTOR = 0.01
MIN_REQUEST_PU = 0.005


def processing_units(width: int, height: int, input_bands: int, float32: bool) -> float:
    """PU of one request of ``width`` x ``height`` px reading ``input_bands`` bands."""
    area = max(MIN_AREA_FACTOR, width * height / 512**2)
    return max(MIN_REQUEST_PU, area * input_bands / 3 * (2.0 if float32 else 1.0))


def request_units(req: ProcessRequest) -> float:
    """PU of a parsed request: its size, its evalscript's input bands, its output sample type."""
    bands = sum(1 for band in req.script.units if band != "dataMask")
    return processing_units(req.width, req.height, bands, req.output.sample_type == "FLOAT32")


__all__ = ["processing_units", "request_units"]
