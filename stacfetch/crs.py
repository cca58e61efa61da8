"""The output CRS and resolution, validated in one place (the query and the plan both ask here).

A CRS is an EPSG code (``EPSG:32636``, ``epsg:4326`` or a bare ``32636``); its canonical form is
``EPSG:<code>``. A resolution is in the CRS's units: 1 .. 1000 m for metre CRSs, 1e-6 .. 0.1 degrees
for geographic ones; other units (US feet) are refused.
"""

from __future__ import annotations

import math
from typing import Any

from pyproj import CRS
from pyproj.exceptions import CRSError

from .errors import InvalidOptionError

__all__ = ["canonical_crs", "check_resolution", "is_geographic"]

_EPSG_HINT = "use an EPSG code such as EPSG:32636 or EPSG:4326"


def _parse(text: str) -> CRS:
    return CRS.from_user_input(text)


def canonical_crs(value: Any) -> str:
    """``EPSG:<code>`` for an EPSG code given as text or a number; InvalidOptionError otherwise."""
    text = str(value).strip()
    if text.isdigit():
        text = f"EPSG:{text}"
    try:
        crs = _parse(text)
    except CRSError:
        raise InvalidOptionError(f"unknown CRS {value!r}", hint=_EPSG_HINT) from None
    code = crs.to_epsg()
    if code is None or not text.upper().startswith("EPSG:"):
        raise InvalidOptionError(f"CRS {value!r} is not an EPSG code", hint=_EPSG_HINT)
    return f"EPSG:{code}"


def is_geographic(crs: str) -> bool:
    """True for a CRS in degrees (EPSG:4326)."""
    return bool(_parse(canonical_crs(crs)).is_geographic)


def check_resolution(crs: str | None, resolution: Any) -> float:
    """``resolution`` as a float, checked against the units of ``crs`` (see the module docstring).

    ``crs`` None stands for the area's UTM zone (metres), chosen later by the plan.
    """
    if isinstance(resolution, bool):
        raise InvalidOptionError(f"resolution must be a number, got {resolution!r}")
    try:
        res = float(resolution)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"resolution must be a number, got {resolution!r}") from None
    name = "EPSG:32631" if crs is None else canonical_crs(crs)  # any UTM zone: metres
    parsed = _parse(name)
    if parsed.is_geographic:
        if not (math.isfinite(res) and 1e-6 <= res <= 0.1):
            raise InvalidOptionError(
                f"resolution {resolution!r} is not usable in {name}, whose units are degrees",
                hint="give 1e-6 .. 0.1 degrees (0.0001 is about 11 m), or use a UTM CRS in metres",
            )
        return res
    units = {(a.unit_name or "").lower() for a in parsed.axis_info[:2]}
    if not units <= {"metre", "meter", "m"}:
        raise InvalidOptionError(
            f"{name} has units {sorted(units)}; only metre or degree CRSs are supported",
            hint="use the default UTM zone or EPSG:4326",
        )
    if not (math.isfinite(res) and 1 <= res <= 1000):
        raise InvalidOptionError(
            f"resolution {resolution!r} m is outside 1 .. 1000 m",
            hint="Sentinel-2 bands are 10, 20 or 60 m; e.g. --resolution 10",
        )
    return res
