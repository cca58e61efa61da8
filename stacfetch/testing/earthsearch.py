"""The emulator's world as Earth Search v1 publishes Sentinel-2 L2A: a STAC API plus COG assets.

For comparing providers: the same place and date must give the same values from the Process
API (``sentinelhub``/``cdse``) and from the archive's COGs (``earth-search``). This serves, on
127.0.0.1, items shaped like ``data/items/earth-search-v1_sentinel-2-l2a.json`` for the
acquisitions of one emulator tile, and for each item small COGs (a square chip around a chosen
point, not the whole 110 km tile) holding what the archive holds: :func:`pixels.archive_dn` —
baseline 04.00 and later with the +1000 offset, announced as ``raster:bands`` ``offset -0.1``,
``scale 0.0001`` and ``nodata 0`` as Earth Search does. Only 10 m bands are offered
(``B02 B03 B04 B08``), sampled at the pixel centres of a 10 m grid aligned to multiples of 10 m,
so a Process API output on the same grid sees exactly the same pixels.

    with EarthSearch(tmp_path, (34.5, 31.5), date(2022, 3, 1), date(2022, 3, 31)) as es:
        settings = Settings(provider="stac", base_url=None, token_url=None, stac_url=es.url)

The STAC API: ``GET /`` (landing, conforms to item-search), ``/conformance``,
``/collections/sentinel-2-l2a``, ``GET|POST /search`` (``collections``, ``bbox``/``intersects``,
``datetime``; one page, every match). Items are newest first.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from shapely.geometry import box, mapping, shape
from shapely.ops import transform as shp_transform

from . import grid, pixels
from .cogserver import CogServer
from .loopback import LoopbackServer, QuietHandler
from .s2bands import has_offset

COLLECTION = "sentinel-2-l2a"
ASSETS = {"B02": ("blue", 0.49), "B03": ("green", 0.56), "B04": ("red", 0.665), "B08": ("nir", 0.842)}
RESOLUTION = 10.0
_UTC = timezone.utc

__all__ = ["EarthSearch"]


def _item_id(acq: grid.Acquisition) -> str:
    tile = acq.tile.id[1:]
    return f"{acq.sat}_{tile}_{acq.datetime:%Y%m%d}_{int(acq.reprocessed)}_L2A"


class EarthSearch(LoopbackServer):
    """Items and COG chips of the tile containing ``point``; a context manager."""

    what = "EarthSearch"

    def __init__(self, folder: Path, point: tuple[float, float], start: date, end: date, *,
                 size_m: float = 6000.0, include_reprocessed: bool = False) -> None:
        super().__init__(_Handler)
        self.folder = Path(folder)
        lon, lat = point
        tile = grid.Tile(math.floor(lon), math.floor(lat))
        self.epsg = tile.epsg
        to_utm = Transformer.from_crs(4326, self.epsg, always_xy=True)
        x, y = to_utm.transform(lon, lat)
        half = size_m / 2
        self.left = math.floor((x - half) / RESOLUTION) * RESOLUTION
        self.top = math.ceil((y + half) / RESOLUTION) * RESOLUTION
        self.size = int(round(size_m / RESOLUTION))
        self.transform = from_origin(self.left, self.top, RESOLUTION, RESOLUTION)
        t0 = datetime.combine(start, datetime.min.time(), _UTC)
        t1 = datetime.combine(end, datetime.max.time(), _UTC)
        self.acquisitions = [a for a in grid.acquisitions(tile, t0, t1, "sentinelhub")
                             if include_reprocessed or not a.reprocessed]
        self.acquisitions.sort(key=lambda a: a.sort_key)
        chip = box(self.left, self.top - self.size * RESOLUTION, self.left + self.size * RESOLUTION, self.top)
        to_lonlat = Transformer.from_crs(self.epsg, 4326, always_xy=True).transform
        self.footprint = shp_transform(to_lonlat, chip)
        self.chip_utm = chip
        self._cogs: CogServer | None = None
        self._write_cogs()

    # COGs ------------------------------------------------------------------------------
    def _write_cogs(self) -> None:
        xs, ys = pixels.pixel_centers(self.transform, self.size, self.size)
        for acq in self.acquisitions:
            day = pixels.day_number(acq.datetime.date())
            folder = self.folder / _item_id(acq)
            folder.mkdir(parents=True, exist_ok=True)
            for band in ASSETS:
                data = pixels.archive_dn(band, day, xs, ys, 1.0, acq.cloud_cover, acq.baseline)
                profile = {"driver": "COG", "width": self.size, "height": self.size, "count": 1,
                           "dtype": "uint16", "crs": f"EPSG:{self.epsg}", "transform": self.transform,
                           "nodata": 0, "blocksize": 256, "compress": "deflate"}
                with rasterio.open(folder / f"{band}.tif", "w", **profile) as dst:
                    dst.write(np.asarray(data, dtype="uint16"), 1)

    # STAC documents ------------------------------------------------------------------------
    def item(self, acq: grid.Acquisition) -> dict[str, Any]:
        item_id = _item_id(acq)
        assert self._cogs is not None
        offset = -0.1 if has_offset(acq.baseline) else 0.0
        assets = {}
        for band, (key, wavelength) in ASSETS.items():
            assets[key] = {
                "href": self._cogs.url_for(f"{item_id}/{band}.tif"),
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "title": f"{key} - 10m",
                "eo:bands": [{"name": band, "common_name": key, "center_wavelength": wavelength}],
                "gsd": 10,
                "proj:shape": [self.size, self.size],
                "proj:transform": list(self.transform)[:6],
                "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 10,
                                  "scale": 0.0001, "offset": offset}],
                "roles": ["data", "reflectance"],
            }
        tile = acq.tile.id[1:]
        root = self.url + "/"
        return {
            "type": "Feature",
            "stac_version": "1.0.0",
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
            "id": item_id,
            "geometry": mapping(self.footprint),
            "bbox": list(self.footprint.bounds),
            "properties": {
                "datetime": acq.datetime.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "platform": "sentinel-2a" if acq.sat == "S2A" else "sentinel-2b",
                "constellation": "sentinel-2",
                "instruments": ["msi"],
                "eo:cloud_cover": acq.cloud_cover,
                "proj:epsg": self.epsg,
                "mgrs:utm_zone": int(tile[:2]),
                "mgrs:latitude_band": tile[2],
                "mgrs:grid_square": tile[3:],
                "s2:processing_baseline": f"{acq.baseline[:2]}.{acq.baseline[2:]}",
                "s2:product_uri": acq.id + ".SAFE",
                "earthsearch:boa_offset_applied": has_offset(acq.baseline),
            },
            "links": [{"rel": "self", "href": f"{root}collections/{COLLECTION}/items/{item_id}"},
                      {"rel": "parent", "href": f"{root}collections/{COLLECTION}"},
                      {"rel": "collection", "href": f"{root}collections/{COLLECTION}"},
                      {"rel": "root", "href": root}],
            "assets": assets,
            "collection": COLLECTION,
        }

    def search(self, params: dict[str, Any]) -> dict[str, Any]:
        area = None
        if params.get("bbox"):
            bb = params["bbox"]
            bb = [float(v) for v in (bb.split(",") if isinstance(bb, str) else bb)]
            area = box(*bb[:4])
        elif params.get("intersects"):
            value = params["intersects"]
            area = shape(json.loads(value) if isinstance(value, str) else value)
        start, end = datetime.min.replace(tzinfo=_UTC), datetime.max.replace(tzinfo=_UTC)
        if params.get("datetime"):
            a, _, b = str(params["datetime"]).partition("/")
            if a not in ("", ".."):
                start = datetime.fromisoformat(a.replace("Z", "+00:00"))
            if b not in ("", ".."):
                end = datetime.fromisoformat(b.replace("Z", "+00:00"))
            elif not _:
                end = start
        features = [self.item(a) for a in self.acquisitions
                    if start <= a.datetime <= end and (area is None or area.intersects(self.footprint))]
        return {"type": "FeatureCollection", "features": features,
                "links": [{"rel": "root", "href": self.url + "/"}],
                "numberReturned": len(features)}

    def landing(self) -> dict[str, Any]:
        root = self.url + "/"
        return {"type": "Catalog", "id": "earth-search-aws", "stac_version": "1.0.0",
                "description": "emulated Earth Search v1", "conformsTo": [
                    "https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson"],
                "links": [{"rel": "self", "href": root, "type": "application/json"},
                          {"rel": "root", "href": root, "type": "application/json"},
                          {"rel": "search", "href": root + "search", "type": "application/geo+json",
                           "method": "GET"},
                          {"rel": "search", "href": root + "search", "type": "application/geo+json",
                           "method": "POST"},
                          {"rel": "data", "href": root + "collections", "type": "application/json"}]}

    def collection(self) -> dict[str, Any]:
        root = self.url + "/"
        return {"type": "Collection", "id": COLLECTION, "stac_version": "1.0.0",
                "description": "emulated", "license": "proprietary",
                "extent": {"spatial": {"bbox": [list(self.footprint.bounds)]},
                           "temporal": {"interval": [[None, None]]}},
                "links": [{"rel": "self", "href": f"{root}collections/{COLLECTION}"},
                          {"rel": "root", "href": root}]}

    # servers -----------------------------------------------------------------------------
    def start(self) -> EarthSearch:
        """Start the COG server, then the STAC API; returns self."""
        if self._cogs is None:
            self._cogs = CogServer(self.folder).start()
        return super().start()

    def stop(self) -> None:
        """Stop the STAC API, then the COG server."""
        super().stop()
        if self._cogs is not None:
            self._cogs.stop()
            self._cogs = None


class _Handler(QuietHandler):
    def _handle(self) -> None:
        es: EarthSearch = self.server.owner
        split = urlsplit(self.path)
        raw = self.read_body()
        path = split.path.rstrip("/")
        if path == "":
            self.send_json(200, es.landing())
        elif path == "/conformance":
            self.send_json(200, {"conformsTo": es.landing()["conformsTo"]})
        elif path == f"/collections/{COLLECTION}":
            self.send_json(200, es.collection())
        elif path == "/search":
            params: dict[str, Any] = json.loads(raw) if raw else dict(parse_qsl(split.query))
            self.send_json(200, es.search(params), "application/geo+json")
        else:
            self.send_json(404, {"code": "NotFound", "description": f"no {path}"})

    do_GET = do_POST = _handle  # noqa: N815
