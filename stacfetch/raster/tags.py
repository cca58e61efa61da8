"""The tags of a written GeoTIFF, made once from typed values; band scale/offset; clean text.

``tags_for`` makes an acquisition's standard tags (datetimes formatted here, never parsed
back); ``clean_tags`` reduces any tags to what is written (keys ``[A-Za-z0-9_]``, no NULs,
no URL query strings) and adds stacfetch's own, including ``STACFETCH_COMPLETE=1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .. import __version__
from ..bands import BANDS
from ..http.urls import strip_query
from ..plan import Acquisition

__all__ = [
    "COMPLETE_TAG",
    "band_scale_offset",
    "clean_tags",
    "clean_value",
    "describe",
    "iso",
    "strip_href_queries",
    "tags_for",
]

COMPLETE_TAG = "STACFETCH_COMPLETE"
_TAG_KEY = re.compile(r"[^A-Za-z0-9_]+")
_TIFF_DATETIME = "%Y:%m:%d %H:%M:%S"


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``."""
    return _utc(value).isoformat().replace("+00:00", "Z")


def clean_value(value: Any) -> str:
    """A tag value as text, without NULs and without URL query strings (tokens, signatures)."""
    if isinstance(value, datetime):
        text = iso(value)
    elif isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return strip_query(text.replace("\x00", ""))


def strip_href_queries(value: Any) -> Any:
    """Copy of a JSON value with query strings removed from every ``href`` (signed URLs)."""
    if isinstance(value, dict):
        return {
            k: (strip_query(v) if k == "href" and isinstance(v, str) else strip_href_queries(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [strip_href_queries(v) for v in value]
    return value


def tags_for(
    acquisition: Acquisition,
    bands: Sequence[str],
    *,
    provider: str | None = None,
    collection: str | None = None,
    synthetic: bool = False,
) -> dict[str, str]:
    """The standard dataset tags of one acquisition (no URLs, no secrets)."""
    acq = acquisition
    collection = collection or acq.collection
    when = _utc(acq.datetime)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    band_list = ",".join(bands)
    description = f"{collection} {band_list} acquired {stamp} by {acq.platform or 'Sentinel-2'}"
    if acq.cloud_cover is not None:
        description += f", scene cloud cover {acq.cloud_cover:.1f} %"
    tags = {
        "COLLECTION": collection,
        "ITEM_IDS": ",".join(acq.item_ids),
        "PRIMARY_ITEM_IDS": ",".join(it.id for it in acq.primary_items),
        "ACQUISITION_DATETIME": stamp,
        "ACQUISITION_START": iso(acq.start),
        "ACQUISITION_END": iso(acq.end),
        "TIFFTAG_DATETIME": when.strftime(_TIFF_DATETIME),
        "TIFFTAG_IMAGEDESCRIPTION": description,
        "PLATFORM": acq.platform or "",
        "MGRS_TILES": ",".join(acq.tiles),
        "BANDS": band_list,
        "CLOUD_COVER": "" if acq.cloud_cover is None else f"{acq.cloud_cover:.2f}",
    }
    if acq.relative_orbit is not None:
        tags["RELATIVE_ORBIT"] = str(acq.relative_orbit)
    if provider:
        tags["PROVIDER"] = provider
    if synthetic:
        tags["SYNTHETIC"] = "true"
    return tags


def clean_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags as written: keys reduced to ``[A-Za-z0-9_]``, values cleaned, stacfetch's own added.

    ``TIFFTAG_DATETIME`` is derived from an ``ACQUISITION_DATETIME`` text only when a caller
    gave tags of its own without it (``tags_for`` sets both).
    """
    clean = {}
    for key, value in (tags or {}).items():
        name = _TAG_KEY.sub("_", str(key)).strip("_").upper()
        if name and value is not None:
            clean[name] = clean_value(value)
    if "TIFFTAG_DATETIME" not in clean and "ACQUISITION_DATETIME" in clean:
        try:
            when = datetime.fromisoformat(clean["ACQUISITION_DATETIME"].replace("Z", "+00:00"))
            clean["TIFFTAG_DATETIME"] = _utc(when).strftime(_TIFF_DATETIME)
        except ValueError:
            pass
    clean.setdefault("TIFFTAG_SOFTWARE", f"stacfetch {__version__}")
    clean["STACFETCH_VERSION"] = __version__
    clean[COMPLETE_TAG] = "1"
    return clean


def band_scale_offset(band: str, dtype: str) -> tuple[float, float]:
    """``(scale, offset)`` turning stored values into physical ones (value * scale + offset).

    uint16 reflectance digital numbers are reflectance x 10000 and AOT is x 1000 (the Process
    API's DN units); everything else (float32 reflectance, SCL, masks, percentages) is 1, 0.
    """
    info = BANDS.get(band)
    if info is None or np.dtype(dtype).kind == "f":
        return 1.0, 0.0
    if info.kind == "reflectance":
        return 0.0001, 0.0
    if info.kind == "aot":
        return 0.001, 0.0
    return 1.0, 0.0


def describe(dst: Any, descriptions: Sequence[str], scaling: Sequence[tuple[float, float]],
             tags: Mapping[str, str]) -> None:
    """Band names, scale/offset (when not 1/0) and dataset tags of an open writable dataset."""
    for i, name in enumerate(descriptions, start=1):
        dst.set_band_description(i, clean_value(name))
    if any(s != (1.0, 0.0) for s in scaling):
        dst.scales = tuple(s for s, _ in scaling)
        dst.offsets = tuple(o for _, o in scaling)
    dst.update_tags(**tags)
