"""The emulator's synthetic Sentinel-2 L2A archive: computed on demand, never stored.

Tiles
    A global grid of 1°×1° cells between 56°S and 84°N (Sentinel-2's coverage). Cell
    ``(lon, lat)`` (its south-west corner, integers) gets a stable MGRS-looking id
    ``T<zone><band><col><row>`` (UTM zone and latitude band of the cell, then one letter for
    the column inside the zone and one for the row), e.g. ``T39TWK``. Its footprint is the cell
    grown by 0.05° on every side, so neighbouring tiles overlap as MGRS tiles do.

Passes
    Each group of three tile columns (~290 km, the MSI swath) is one orbit track. S2A passes
    every 5 days, S2B every 5 days two days later (so a 2-3 day revisit), at 10:30 local solar
    time of the track's centre converted to UTC. Along the (descending) track a tile one degree
    further south is seen 15.5 s later, so tiles of one pass are seconds apart. No S2A data
    before 2015-06-23, no S2B data before 2017-03-07, nothing after the current time.

Items
    One item per tile and pass; every 4th pass of a satellite over a tile also has a second,
    reprocessed item (another processing baseline, identical datetime and footprint).
    Cloud cover comes from a hash (0-100 %, about a third above 60 %). Items are shaped exactly
    as the real Catalog items of each deployment (``real-responses/item_sh_v100_notebook.json``
    and ``item_cdse_v100_notebook.json``): both have a lon/lat ``MultiPolygon`` geometry with a
    ``crs`` member, ``proj:epsg``/``proj:bbox``/``proj:geometry`` and one ``data`` asset, and no
    ``s2:``/``sat:`` properties (tile, orbit and baseline are only in the id).
    ``sentinelhub``: ids without suffix, whole-second datetimes, **no** ``collection`` key, links
    ``self``/``parent``/``derived_from`` (the dead Open Access Hub). ``cdse``: ``.SAFE`` ids,
    millisecond datetimes, ``"collection": "sentinel-2-l2a"``, links ``root``/``self``/
    ``parent``/``collection``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cached_property, lru_cache
from typing import Any

from pyproj import Transformer
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep

LAT_MIN, LAT_MAX = -56, 84
GROW = 0.05  # degrees added around each cell
SWATH_COLUMNS = 3
REVISIT_DAYS = 5
SECONDS_PER_DEGREE = 15.5  # along-track ground speed ~7.1 km/s
LAUNCH = {"S2A": date(2015, 6, 23), "S2B": date(2017, 3, 7)}
SAT_PHASE = {"S2A": 0, "S2B": 2}  # days after the track's S2A phase
COLLECTION = "sentinel-2-l2a"
DEPLOYMENTS = ("sentinelhub", "cdse")

_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_ROWS = "ABCDEFGHJKLMNPQRSTUV"
_UTC = timezone.utc


def _hash01(*parts: object) -> float:
    """A stable number in [0, 1) from ``parts``."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, order=True)
class Tile:
    """One grid cell; ``lon``/``lat`` are its south-west corner in whole degrees."""

    lon: int
    lat: int

    @property
    def zone(self) -> int:
        return min((self.lon + 180) // 6 + 1, 60)

    @property
    def epsg(self) -> int:
        return (32600 if self.lat >= 0 else 32700) + self.zone

    @cached_property
    def id(self) -> str:
        band = _BANDS[min((self.lat + 80) // 8, len(_BANDS) - 1)]
        col = _COLS[(self.lon + 180) % 24]
        row = _ROWS[(self.lat + 90) % 20]
        return f"T{self.zone:02d}{band}{col}{row}"

    @property
    def track(self) -> int:
        """Orbit track (group of SWATH_COLUMNS columns), 0..119."""
        return (self.lon + 180) // SWATH_COLUMNS

    @property
    def footprint(self) -> Polygon:
        return box(
            max(self.lon - GROW, -180.0),
            max(self.lat - GROW, -90.0),
            min(self.lon + 1 + GROW, 180.0),
            min(self.lat + 1 + GROW, 90.0),
        )

    @classmethod
    def from_id(cls, tile_id: str) -> Tile | None:
        """Inverse of ``id``; None when no cell has that id."""
        if len(tile_id) != 6 or tile_id[0] != "T" or not tile_id[1:3].isdigit():
            return None
        zone = int(tile_id[1:3])
        for ci in range(6):
            lon = (zone - 1) * 6 - 180 + ci
            if lon > 179:
                break
            for lat in range(LAT_MIN, LAT_MAX):
                t = cls(lon, lat)
                if t.id == tile_id:
                    return t
        return None


def tiles_intersecting(geometry: BaseGeometry) -> list[Tile]:
    """Tiles whose footprint intersects ``geometry`` (lon/lat)."""
    if geometry.is_empty:
        return []
    minx, miny, maxx, maxy = geometry.bounds
    lons = range(max(math.floor(minx - GROW), -180), min(math.floor(maxx + GROW), 179) + 1)
    lats = range(max(math.floor(miny - GROW), LAT_MIN), min(math.floor(maxy + GROW), LAT_MAX - 1) + 1)
    prepared = prep(geometry)
    return [Tile(x, y) for x in lons for y in lats if prepared.intersects(Tile(x, y).footprint)]


def _baseline(day: date, deployment: str) -> str:
    if deployment == "cdse" and day < date(2022, 1, 25):
        return "0500"  # CDSE serves the reprocessed Collection-1 archive
    for until, baseline in (
        (date(2021, 3, 30), "0214"),
        (date(2022, 1, 25), "0300"),
        (date(2022, 12, 6), "0400"),
        (date(2024, 7, 23), "0509"),
    ):
        if day < until:
            return baseline
    return "0511"


@dataclass(frozen=True)
class Acquisition:
    """One item: a tile seen on one pass, in one processing baseline."""

    tile: Tile
    sat: str  # "S2A" | "S2B"
    datetime: datetime  # aware UTC; whole seconds for sentinelhub, milliseconds for cdse
    datatake: datetime
    baseline: str  # "0400"
    reprocessed: bool
    deployment: str

    @property
    def relative_orbit(self) -> int:
        return (self.tile.track * 37 + (0 if self.sat == "S2A" else 72)) % 143 + 1

    @cached_property
    def cloud_cover(self) -> float:
        u = _hash01("cc", self.tile.id, self.datetime.strftime("%Y%m%dT%H%M%S"))
        return round(100 * u**1.3, 2)

    @cached_property
    def processed(self) -> datetime:
        """Processing time in the id: hours after sensing, or weeks later when reprocessed."""
        h = _hash01("proc", self.tile.track, self.datatake.isoformat(), self.baseline)
        delay = timedelta(days=40 + h * 300) if self.reprocessed else timedelta(hours=1 + h * 3)
        return (self.datatake + delay).replace(microsecond=0)

    @cached_property
    def id(self) -> str:
        sid = (
            f"{self.sat}_MSIL2A_{self.datatake:%Y%m%dT%H%M%S}_N{self.baseline}"
            f"_R{self.relative_orbit:03d}_{self.tile.id}_{self.processed:%Y%m%dT%H%M%S}"
        )
        return sid + ".SAFE" if self.deployment == "cdse" else sid

    @property
    def datetime_str(self) -> str:
        if self.deployment == "cdse":
            return self.datetime.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.datetime.microsecond // 1000:03d}Z"
        return self.datetime.strftime("%Y-%m-%dT%H:%M:%SZ")

    @cached_property
    def sort_key(self) -> tuple:
        """Newest first (as the real Catalog pages), then by id (its fields are fixed-width)."""
        return (-self.datetime.timestamp(), self.sat, self.datatake, self.baseline,
                self.relative_orbit, self.tile.id)


def _pass_time(tile: Tile, day_ordinal: int, deployment: str) -> tuple[datetime, datetime]:
    """(sensing time of ``tile``, datatake start) for the pass on local solar day ``day``."""
    track_lon = -180 + tile.track * SWATH_COLUMNS + SWATH_COLUMNS / 2
    midnight = datetime.combine(date.fromordinal(day_ordinal), datetime.min.time(), _UTC)
    base = midnight + timedelta(hours=10.5 - track_lon / 15)
    offset = -(tile.lat + 0.5) * SECONDS_PER_DEGREE + (tile.lon + 180) % SWATH_COLUMNS * 1.7
    sensed = base + timedelta(seconds=offset)
    if deployment == "cdse":
        ms = int(_hash01("ms", tile.id, day_ordinal) * 1000)
        sensed = sensed.replace(microsecond=0) + timedelta(milliseconds=ms)
    else:
        sensed = sensed.replace(microsecond=0)
    datatake = (base - timedelta(seconds=80 * SECONDS_PER_DEGREE)).replace(microsecond=0)
    return sensed, datatake


def acquisitions(
    tile: Tile, start: datetime, end: datetime, deployment: str, now: datetime | None = None
) -> Iterator[Acquisition]:
    """Every item of ``tile`` sensed within ``[start, end]`` (aware datetimes, inclusive)."""
    now = now or datetime.now(_UTC)
    end = min(end, now)
    if end < start:
        return
    first = start.date().toordinal() - 2
    last = end.date().toordinal() + 2
    phase = (tile.track * 2) % REVISIT_DAYS
    for sat, sat_phase in SAT_PHASE.items():
        p = phase + sat_phase
        day = first + ((p - first) % REVISIT_DAYS)
        launch = LAUNCH[sat].toordinal()
        while day <= last:
            sensed, datatake = _pass_time(tile, day, deployment)
            if start <= sensed <= end and sensed.date().toordinal() >= launch:
                baseline = _baseline(sensed.date(), deployment)
                yield Acquisition(tile, sat, sensed, datatake, baseline, False, deployment)
                if ((day - p) // REVISIT_DAYS) % 4 == 0:
                    again = "0510" if baseline == "0500" else "0500"
                    yield Acquisition(tile, sat, sensed, datatake, again, True, deployment)
            day += REVISIT_DAYS


def search(
    geometry: BaseGeometry, start: datetime, end: datetime, deployment: str
) -> list[Acquisition]:
    """All acquisitions whose footprint intersects ``geometry`` within ``[start, end]``, sorted."""
    now = datetime.now(_UTC)
    found = [a for t in tiles_intersecting(geometry) for a in acquisitions(t, start, end, deployment, now)]
    found.sort(key=lambda a: a.sort_key)
    return found


def find(item_id: str, deployment: str) -> Acquisition | None:
    """The acquisition with this id, or None."""
    parts = item_id.removesuffix(".SAFE").split("_")
    if len(parts) != 7 or parts[1] != "MSIL2A":
        return None
    tile = Tile.from_id(parts[5])
    try:
        datatake = datetime.strptime(parts[2], "%Y%m%dT%H%M%S").replace(tzinfo=_UTC)
    except ValueError:
        return None
    if tile is None:
        return None
    for acq in acquisitions(tile, datatake - timedelta(days=1), datatake + timedelta(days=1), deployment):
        if acq.id == item_id:
            return acq
    return None


@lru_cache(maxsize=256)
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


def _ring(poly: Polygon) -> list[list[float]]:
    return [[float(x), float(y)] for x, y in poly.exterior.coords]


def _crs_member(name: str) -> dict[str, Any]:
    return {"type": "name", "properties": {"name": name}}


def item_json(acq: Acquisition, catalog_url: str) -> dict[str, Any]:
    """The full STAC item of ``acq`` as the deployment's Catalog serves it."""
    tile = acq.tile
    fp = tile.footprint  # shapely's box(): counter-clockwise exterior
    to_utm = _to_utm(tile.epsg)
    xs, ys = to_utm.transform([c[0] for c in _ring(fp)], [c[1] for c in _ring(fp)])
    proj_bbox = [
        math.floor(min(xs) / 60) * 60.0,
        math.floor(min(ys) / 60) * 60.0,
        math.ceil(max(xs) / 60) * 60.0,
        math.ceil(max(ys) / 60) * 60.0,
    ]
    cdse = acq.deployment == "cdse"
    geometry: dict[str, Any] = {"type": "MultiPolygon", "crs": _crs_member("urn:ogc:def:crs:OGC::CRS84"),
                                "coordinates": [[_ring(fp)]]}
    proj_geometry: dict[str, Any] = {
        "type": "MultiPolygon",
        "crs": _crs_member(f"urn:ogc:def:crs:EPSG::{tile.epsg}"),
        "coordinates": [[[[float(x), float(y)] for x, y in zip(xs, ys, strict=False)]]],
    }
    day = acq.datetime
    if cdse:
        folder = "L2A_N0500" if acq.baseline == "0500" else "L2A"
        href = f"s3://EODATA/Sentinel-2/MSI/{folder}/{day:%Y/%m/%d}/{acq.id}"
    else:
        z, band, sq = tile.id[1:3].lstrip("0"), tile.id[3], tile.id[4:]
        href = f"s3://sentinel-s2-l2a/tiles/{z}/{band}/{sq}/{day.year}/{day.month}/{day.day}/{int(acq.reprocessed)}/"
    root = catalog_url.rstrip("/") + "/"
    coll_url = f"{root}collections/{COLLECTION}"
    links: list[dict[str, Any]]
    if cdse:
        links = [
            {"href": root, "rel": "root", "type": "application/json"},
            {"href": f"{coll_url}/items/{acq.id}", "rel": "self", "type": "application/geo+json"},
            {"href": coll_url, "rel": "parent", "type": "application/json"},
            {"href": coll_url, "rel": "collection", "type": "application/json"},
        ]
    else:  # the commercial items still link to the dead Open Access Hub
        uuid = hashlib.md5(acq.id.encode()).hexdigest()
        uuid = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
        links = [
            {"href": f"{coll_url}/items/{acq.id}", "rel": "self", "type": "application/json"},
            {"href": coll_url, "rel": "parent"},
            {"href": f"https://scihub.copernicus.eu/dhus/odata/v1/Products('{uuid}')/$value",
             "rel": "derived_from", "title": "scihub download"},
        ]
    item: dict[str, Any] = {
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
        ],
        "id": acq.id,
        "type": "Feature",
        "geometry": geometry,
        "bbox": [float(v) for v in fp.bounds],
        "properties": {
            "datetime": acq.datetime_str,
            "platform": "sentinel-2a" if acq.sat == "S2A" else "sentinel-2b",
            "instruments": ["msi"],
            "constellation": "sentinel-2",
            "gsd": 10,
            "eo:cloud_cover": acq.cloud_cover,
            "proj:epsg": tile.epsg,
            "proj:bbox": proj_bbox,
            "proj:geometry": proj_geometry,
        },
        "assets": {"data": {"href": href, "title": "s3", "type": "inode/directory"}},
    }
    if cdse:
        item["collection"] = COLLECTION
    item["links"] = links
    return item
