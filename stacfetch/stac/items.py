"""A Sentinel-2 scene's facts, parsed once from a STAC item.

Properties are read first; where they are missing (the real Sentinel Hub Catalog returns few
properties, e.g. no ``platform``, ``s2:mgrs_tile`` or ``sat:relative_orbit``) the facts come
from the id or the SAFE product name (``s2:product_uri``), e.g.
``S2A_MSIL2A_20220121T083201_N0400_R021_T36RXV_20220121T105105``; Earth Search ids such as
``S2A_36RXV_20220121_0_L2A`` give the tile.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pystac

from ..errors import InvalidResponseError

__all__ = ["SceneFacts", "scene_facts"]

_PRODUCT_RE = re.compile(
    r"(?P<platform>S2[A-D])_MSIL2A_(?P<sensing>\d{8}T\d{6})"
    r"(?:_N(?P<baseline>\d{4}))?_R(?P<orbit>\d{3})_T(?P<tile>\d{2}[A-Z]{3})"
    r"_(?P<generated>\d{8}T\d{6})"
)
_TILE_RE = re.compile(r"(?:^|_)T(\d{2}[A-Z]{3})(?:_|$)")
_EARTH_SEARCH_TILE_RE = re.compile(r"^S2[A-D]_(\d{2}[A-Z]{3})_")
_ORBIT_RE = re.compile(r"_R(\d{3})_")
_BASELINE_RE = re.compile(r"_N(\d{4})_")
_PLATFORM_RE = re.compile(r"^(S2[A-D])_")
_PLATFORM_PROPERTY_RE = re.compile(r"(?i)sentinel-?2([a-d])")
_MGRS_TILE_RE = re.compile(r"\d{1,2}[A-Z]{3}")
_BASELINE_PROPERTY_RE = re.compile(r"\d{1,2}\.\d{2}")


@dataclass(frozen=True)
class SceneFacts:
    """What planning, the search table and the timeline know of one item.

    ``baseline`` is the processing baseline times 100 (``05.09`` -> 509; -1 unknown),
    ``generated`` the product's generation time (``20220121T105105``; "" unknown).
    """

    id: str
    datetime: datetime | None  # aware UTC
    platform: str | None  # S2A, S2B, ...
    tile: str | None  # MGRS tile, 36RXV
    relative_orbit: int | None
    baseline: int
    generated: str
    cloud_cover: float | None  # percent
    collection: str | None

    @property
    def baseline_key(self) -> tuple[int, str]:
        """Sort key for "newest processing baseline": ``(baseline, generation time)``."""
        return self.baseline, self.generated

    @property
    def platform_name(self) -> str | None:
        """``sentinel-2a`` (the STAC ``platform`` spelling) or None."""
        return f"sentinel-2{self.platform[-1].lower()}" if self.platform else None

    def sensing_time(self) -> datetime:
        """The datetime; InvalidResponseError when the item has none."""
        if self.datetime is None:
            raise InvalidResponseError(f"STAC item {self.id!r} has no datetime")
        return self.datetime


def scene_facts(item: pystac.Item) -> SceneFacts:
    """Parse ``item`` once (never raises for missing or odd metadata)."""
    props = item.properties
    names = [item.id]
    uri = props.get("s2:product_uri")
    if isinstance(uri, str):
        names.append(uri)
    baseline, generated = _baseline(props, names)
    return SceneFacts(
        id=item.id,
        datetime=_datetime(item),
        platform=_platform(props, names),
        tile=_tile(props, names),
        relative_orbit=_relative_orbit(props, names),
        baseline=baseline,
        generated=generated,
        cloud_cover=_cloud_cover(props),
        collection=item.collection_id,
    )


def _datetime(item: pystac.Item) -> datetime | None:
    value = item.datetime
    if value is None:
        raw = item.properties.get("start_datetime")
        try:
            value = pystac.utils.str_to_datetime(raw) if isinstance(raw, str) else None
        except ValueError:
            value = None
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _platform(props: dict[str, Any], names: list[str]) -> str | None:
    raw = props.get("platform")
    if isinstance(raw, str):
        m = _PLATFORM_PROPERTY_RE.fullmatch(raw.strip())
        if m:
            return "S2" + m.group(1).upper()
    for name in names:
        m = _PLATFORM_RE.match(name)
        if m:
            return m.group(1)
    return None


def _tile(props: dict[str, Any], names: list[str]) -> str | None:
    for key in ("s2:mgrs_tile", "mgrs:tile"):
        raw = props.get(key)
        if isinstance(raw, str) and _MGRS_TILE_RE.fullmatch(raw.strip().upper()):
            return raw.strip().upper().zfill(5)
    zone, band, square = props.get("mgrs:utm_zone"), props.get("mgrs:latitude_band"), props.get("mgrs:grid_square")
    if isinstance(zone, int) and isinstance(band, str) and isinstance(square, str):
        return f"{zone:02d}{band}{square}".upper()
    for name in names:
        m = _TILE_RE.search(name) or _EARTH_SEARCH_TILE_RE.match(name)
        if m:
            return m.group(1)
    return None


def _relative_orbit(props: dict[str, Any], names: list[str]) -> int | None:
    raw = props.get("sat:relative_orbit")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    for name in names:
        m = _ORBIT_RE.search(name)
        if m:
            return int(m.group(1))
    return None


def _baseline(props: dict[str, Any], names: list[str]) -> tuple[int, str]:
    """``s2:processing_baseline`` ("05.09") or ``_N0509_`` in a name; the generation time."""
    baseline = -1
    raw = props.get("s2:processing_baseline")
    if isinstance(raw, str) and _BASELINE_PROPERTY_RE.fullmatch(raw.strip()):
        major, minor = raw.strip().split(".")
        baseline = int(major) * 100 + int(minor)
    generated = ""
    for name in names:
        m = _PRODUCT_RE.search(name)
        if m:
            if baseline < 0 and m.group("baseline"):
                baseline = int(m.group("baseline"))
            generated = generated or m.group("generated")
        elif baseline < 0:
            b = _BASELINE_RE.search(name)
            if b:
                baseline = int(b.group(1))
    return baseline, generated


def _cloud_cover(props: dict[str, Any]) -> float | None:
    raw = props.get("eo:cloud_cover")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
        return float(raw)
    return None
