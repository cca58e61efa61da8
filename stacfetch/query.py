"""The canonical, validated description of what the user asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from shapely.geometry.base import BaseGeometry

DEFAULT_COLLECTION = "sentinel-2-l2a"


@dataclass(frozen=True)
class Interval:
    """A closed UTC time interval ``[start, end]``; both ends are aware datetimes in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() != timedelta(0):
                raise ValueError(f"Interval.{name} must be an aware UTC datetime, got {value!r}")
        if self.end < self.start:
            raise ValueError("Interval.end is before Interval.start")

    def to_stac(self) -> str:
        """RFC 3339 interval as the Catalog wants it: ``2022-01-20T00:00:00Z/2022-01-25T23:59:59Z``."""
        return f"{_rfc3339(self.start)}/{_rfc3339(self.end)}"

    def __str__(self) -> str:
        return f"{_rfc3339(self.start)} to {_rfc3339(self.end)} (UTC)"


def _rfc3339(value: datetime) -> str:
    value = value.astimezone(timezone.utc)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Query:
    """Everything a search or download needs, already validated.

    ``geometry`` is in EPSG:4326 (lon, lat). ``crs`` is an ``EPSG:NNNN`` string or None
    (None: the UTM zone of the area's centroid). ``resolution`` is in units of the CRS.
    """

    geometry: BaseGeometry
    interval: Interval
    collection: str = DEFAULT_COLLECTION
    max_cloud: float | None = None
    bands: tuple[str, ...] = field(default_factory=tuple)
    resolution: float = 10.0
    crs: str | None = None
    dtype: str = "uint16"

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of the geometry in degrees."""
        return tuple(self.geometry.bounds)  # type: ignore[return-value]
