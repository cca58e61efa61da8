"""``input.data[0].dataFilter`` and ``.processing`` of a Process request, checked like the service.

From the OpenAPI ``S2L2AFiltering``/``S2Processing`` schemas (reference §3.2) and the CDSE
S2L2A page: ``mosaickingOrder`` mostRecent | leastRecent | leastCC; ``maxCloudCoverage``
0..100; ``previewMode`` DETAIL | PREVIEW | EXTENDED_PREVIEW; ``upsampling``/``downsampling``
NEAREST | BILINEAR | BICUBIC (default NEAREST); ``harmonizeValues`` a boolean, default true.
The CDSE examples send ``"true"``/``"false"`` strings, which a JSON binder coerces, so those
two strings are accepted too; anything else (``1``, ``"yes"``, a misspelt key) is a 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .responses import bad_payload

MOSAICKING = ("mostRecent", "leastRecent", "leastCC")
RESAMPLING = ("NEAREST", "BILINEAR", "BICUBIC")
PREVIEW_MODES = ("DETAIL", "PREVIEW", "EXTENDED_PREVIEW")
_FILTER_KEYS = ("timeRange", "mosaickingOrder", "maxCloudCoverage", "previewMode")
_PROCESSING_KEYS = ("upsampling", "downsampling", "harmonizeValues")


@dataclass(frozen=True)
class Processing:
    upsampling: str = "NEAREST"
    downsampling: str = "NEAREST"
    harmonize: bool = True


def _enum(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise bad_payload(f"{name}: {value!r} is not one of [{', '.join(allowed)}]")
    return str(value)


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise bad_payload(f"{name}: {value!r} is not a boolean (true or false)")


def _object(value: Any, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_payload(f"{name} must be an object")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise bad_payload(f"{name}: unrecognized field {unknown[0]!r}; known fields: {', '.join(keys)}")
    return value


def parse_processing(value: Any) -> Processing:
    """``input.data[0].processing`` -> Processing; 400 on a bad enum, boolean or key."""
    obj = _object(value, "processing", _PROCESSING_KEYS)
    where = "input.data[0].processing"
    return Processing(
        upsampling=_enum(obj.get("upsampling", "NEAREST"), f"{where}.upsampling", RESAMPLING),
        downsampling=_enum(obj.get("downsampling", "NEAREST"), f"{where}.downsampling", RESAMPLING),
        harmonize=_boolean(obj.get("harmonizeValues", True), f"{where}.harmonizeValues"),
    )


def parse_data_filter(value: Any) -> dict[str, Any]:
    """``input.data[0].dataFilter`` with its enums checked (timeRange is checked by the caller)."""
    obj = _object(value, "dataFilter", _FILTER_KEYS)
    where = "input.data[0].dataFilter"
    if "mosaickingOrder" in obj:
        _enum(obj["mosaickingOrder"], f"{where}.mosaickingOrder", MOSAICKING)
    if "previewMode" in obj:
        _enum(obj["previewMode"], f"{where}.previewMode", PREVIEW_MODES)
    return obj
