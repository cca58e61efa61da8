"""The ``assets`` pixel source: the Cloud-Optimized GeoTIFF assets a STAC API publishes.

The Process API source (``sources/process.py``) asks Sentinel Hub to render each tile; this module reads
the archived pixels themselves: for every tile of a :class:`~stacfetch.plan.Job` and every band,
only the part of each band asset that covers the tile is read over HTTP byte ranges
(GDAL ``/vsicurl/``; nothing is downloaded whole), warped onto the tile's grid with
:class:`rasterio.vrt.WarpedVRT`, and returned as a ``(bands, height, width)`` array for
:meth:`stacfetch.raster.PartFile.write_tile`. Grid, tiling, resume, atomic writing, concurrency
and the manifest are the shared ones of ``run.py``; only how pixels are fetched differs.

Band -> asset key (:func:`band_asset_keys`), first rule that matches, among raster (GeoTIFF)
assets only (``*-jp2`` and other non-TIFF assets are skipped):

1. the asset key is the band name (``B02``, ``SCL``: Planetary Computer, Earth Search v0);
2. a single-band asset whose ``eo:bands[0].name`` is the band name (newer Earth Search v1
   items name the ``nir08`` asset's band ``B8A``);
3. a single-band asset whose ``eo:bands[0].center_wavelength`` is within 0.015 um of the
   band's (Earth Search v1 ``blue`` = 0.49 um -> B02; neighbours are >= 0.023 um apart);
4. the table :data:`KNOWN_ASSET_KEYS` (Earth Search v1 ``scl``/``aot``/``wvp`` carry no
   ``eo:bands``; CDSE's ``B02_10m`` ...).

It works on an item's ``assets`` and equally on a collection's ``item_assets``.

Resampling (:func:`resampling_for`), by the asset's real pixel size (read from the file, not
from the item's metadata):

* classification and mask bands (SCL, dataMask): always **nearest** (classes are never mixed);
* other bands at the output resolution: **nearest** (a copy of the archived pixels; on a grid
  that shares pixel edges with the asset, exactly those values);
* coarser assets than the output (20 m/60 m bands at 10 m): **bilinear**;
* finer assets than the output (10 m bands at 60 m): **average**.

Overviews are not used: output pixels always come from the full-resolution data.

Mosaic: an acquisition's *primary* items (one per MGRS tile, see ``plan.Acquisition``) are read in
their order (datetime, then id); for each band, a pixel takes the value of the **first item with
valid data** there (asset value != nodata, 0 for Sentinel-2); items whose footprint misses the tile
are not opened; once every pixel of a tile is filled the remaining items are skipped.

Values are **harmonised** by default, as the Process API's ``harmonizeValues`` does, so the same
place and date gives the same uint16 DN from every provider: the archive's DNs of processing
baseline 04.00+ carry +1000 (``raster:bands`` ``offset -0.1``; without ``raster:bands``, the
baseline from the item says so), which is taken off and negatives clamped to 0 — the band's
offset is then 0 and ``value * scale + offset`` is reflectance. With ``harmonize`` false
(``--no-harmonize``) the archived DNs are kept and the STAC offset is written as the band's
offset. ``float32`` output is ``DN * scale + offset`` per item (reflectance; clamped at 0 when
harmonising). No data (the asset's nodata, outside the items, outside a polygon area) is the
last band of each tile array: the part file's mask. The STAC scale/offset, asset keys and
resampling of each band go into the file's tags.

GDAL reads with ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` (no sidecar probing),
``CPL_VSIL_CURL_ALLOWED_EXTENSIONS=.tif,.tiff``, ``GDAL_HTTP_MAX_RETRY``/``GDAL_HTTP_RETRY_DELAY``
(429/5xx retried by GDAL), HTTP timeouts from ``--timeout`` (:func:`gdal_timeouts`) and, for assets on the STAC API's own origin only,
``GDAL_HTTP_HEADERS`` with ``STACFETCH_STAC_TOKEN``/``STACFETCH_STAC_HEADERS``. Plain ``http://``
asset URLs are refused except on loopback. URLs in messages and logs never carry query strings.

Planetary Computer: blob-storage hrefs (``*.blob.core.windows.net``) are signed with an
anonymous SAS token from ``https://planetarycomputer.microsoft.com/api/sas/v1/token/{collection}``
(cached per collection until 5 minutes before ``msft:expiry``), appended as the query string.
This follows the documented endpoint but is **untested against the real service** (the test
machine has no network); the unit tests use a stub session.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
import pystac
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from shapely.geometry import box, mapping, shape

from ..bands import BANDS
from ..config import Settings
from ..errors import DownloadError, InsecureTransportError, ServiceError
from ..http.redact import register_secret
from ..http.retry import RetryPolicy
from ..http.session import CONNECT_TIMEOUT, USER_AGENT
from ..http.urls import is_loopback_host, same_origin, strip_query
from ..plan import Job, Tile
from ..stac.items import scene_facts
from .process import area_in

__all__ = [
    "AssetSource",
    "CENTER_WAVELENGTH_UM",
    "GDAL_OPTIONS",
    "KNOWN_ASSET_KEYS",
    "CogReader",
    "PlanetaryComputerSigner",
    "band_asset_keys",
    "forget_remote",
    "gdal_timeouts",
    "resampling_for",
]

log = logging.getLogger(__name__)

#: Sentinel-2 MSI band centres in micrometres, as the Earth Search and Planetary Computer
#: STAC documents give them (used by rule 3 of the band mapping).
CENTER_WAVELENGTH_UM: dict[str, float] = {
    "B01": 0.443, "B02": 0.490, "B03": 0.560, "B04": 0.665, "B05": 0.704, "B06": 0.740,
    "B07": 0.783, "B08": 0.842, "B8A": 0.865, "B09": 0.945, "B11": 1.610, "B12": 2.190,
}
WAVELENGTH_TOLERANCE_UM = 0.015

#: Asset keys by convention, when the assets themselves do not say (rule 4).
KNOWN_ASSET_KEYS: dict[str, tuple[str, ...]] = {
    # Earth Search v1 (sentinel-2-l2a, sentinel-2-c1-l2a), then CDSE STAC (B02_10m ...)
    "B01": ("coastal", "B01_60m", "B01_20m"),
    "B02": ("blue", "B02_10m", "B02_20m", "B02_60m"),
    "B03": ("green", "B03_10m", "B03_20m", "B03_60m"),
    "B04": ("red", "B04_10m", "B04_20m", "B04_60m"),
    "B05": ("rededge1", "B05_20m", "B05_60m"),
    "B06": ("rededge2", "B06_20m", "B06_60m"),
    "B07": ("rededge3", "B07_20m", "B07_60m"),
    "B08": ("nir", "B08_10m"),
    "B8A": ("nir08", "B8A_20m", "B8A_60m"),
    "B09": ("nir09", "B09_60m"),
    "B11": ("swir16", "B11_20m", "B11_60m"),
    "B12": ("swir22", "B12_20m", "B12_60m"),
    "AOT": ("aot", "AOT_10m", "AOT_20m", "AOT_60m"),
    "SCL": ("scl", "SCL_20m", "SCL_60m"),
    "WVP": ("wvp", "WVP_10m", "WVP_20m", "WVP_60m"),
    "SNW": ("snow", "SNW_20m"),
    "CLD": ("cloud", "CLD_20m"),
}

#: GDAL configuration for every remote read (headers are added per asset, see module docstring).
GDAL_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "FALSE",
}


def gdal_timeouts(seconds: float, deadline_factor: float = RetryPolicy.deadline_factor) -> dict[str, str]:
    """GDAL's HTTP timeouts for ``--timeout SECONDS``, as the session keeps them: connecting
    takes at most 10 s of it, a read that receives nothing (under 1 byte/s) for ``seconds`` is
    given up, and one request in all after ``deadline_factor`` times ``seconds``.

    Not bounded here: GDAL's own retries (``GDAL_HTTP_MAX_RETRY``) each get these limits again,
    and a window may take several range requests.
    """
    whole = max(1, round(seconds))
    return {
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, round(min(CONNECT_TIMEOUT, seconds)))),
        "GDAL_HTTP_LOW_SPEED_TIME": str(whole),
        "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
        "GDAL_HTTP_TIMEOUT": str(max(whole, round(seconds * deadline_factor))),
    }

# -----------------------------------------------------------------------------------------
# Band -> asset
# -----------------------------------------------------------------------------------------
def _asset_dict(asset: Any) -> dict[str, Any]:
    if isinstance(asset, pystac.Asset):
        return asset.to_dict()
    return dict(asset)


def _is_raster(key: str, asset: Mapping[str, Any]) -> bool:
    media = str(asset.get("type") or "").lower()
    href = str(asset.get("href") or "").split("?", 1)[0].lower()
    if "jp2" in media or key.lower().endswith("-jp2") or href.endswith(".jp2"):
        return False
    if media:
        return "tiff" in media
    return href.endswith((".tif", ".tiff")) or not href


def _single_band(asset: Mapping[str, Any]) -> Mapping[str, Any] | None:
    bands = asset.get("eo:bands") or asset.get("bands")
    if isinstance(bands, list) and len(bands) == 1 and isinstance(bands[0], Mapping):
        return bands[0]
    return None


def band_asset_keys(assets: Mapping[str, Any], bands: Sequence[str]) -> dict[str, str]:
    """``{band: asset key}`` for L2A band names, by the rules in the module docstring.

    ``assets``: an item's assets (dicts or ``pystac.Asset``) or a collection's ``item_assets``.
    Raises :class:`~stacfetch.errors.DownloadError` naming the band and the assets offered.
    """
    rasters = {k: _asset_dict(a) for k, a in assets.items() if _is_raster(k, _asset_dict(a))}
    lower = {k.lower(): k for k in rasters}
    out: dict[str, str] = {}
    for band in bands:
        key = lower.get(band.lower())
        if key is None:
            for k, a in rasters.items():
                eo = _single_band(a)
                if eo is not None and str(eo.get("name", "")).upper() == band.upper():
                    key = k
                    break
        if key is None and band in CENTER_WAVELENGTH_UM:
            best: tuple[float, str] | None = None
            for k, a in rasters.items():
                eo = _single_band(a)
                wl = eo.get("center_wavelength") if eo is not None else None
                if isinstance(wl, (int, float)) and not isinstance(wl, bool):
                    diff = abs(float(wl) - CENTER_WAVELENGTH_UM[band])
                    if diff <= WAVELENGTH_TOLERANCE_UM and (best is None or diff < best[0]):
                        best = (diff, k)
            key = best[1] if best else None
        if key is None:
            key = next((lower[c.lower()] for c in KNOWN_ASSET_KEYS.get(band, ()) if c.lower() in lower), None)
        if key is None:
            offered = ", ".join(sorted(rasters)) or "none"
            raise DownloadError(
                f"no GeoTIFF asset for band {band} (raster assets: {offered})",
                hint="choose bands this STAC API publishes as COGs (--bands)",
            )
        out[band] = key
    return out


# -----------------------------------------------------------------------------------------
# Resampling
# -----------------------------------------------------------------------------------------
def resampling_for(band: str, source_res: float, target_res: float) -> Resampling:
    """Nearest for classes/masks and equal resolutions; bilinear up, average down (see module)."""
    info = BANDS.get(band)
    if info is not None and info.kind in ("classification", "mask"):
        return Resampling.nearest
    ratio = target_res / source_res if source_res > 0 else 1.0
    if math.isclose(ratio, 1.0, rel_tol=1e-6):
        return Resampling.nearest
    return Resampling.average if ratio > 1 else Resampling.bilinear


def _metres(res: float, crs: Any) -> float:
    """A pixel size in metres (degrees converted at the equator: only used to compare sizes)."""
    return res * 111_320.0 if crs is not None and crs.is_geographic else res


# -----------------------------------------------------------------------------------------
# Planetary Computer SAS signing
# -----------------------------------------------------------------------------------------
class PlanetaryComputerSigner:
    """Append an anonymous SAS token to Planetary Computer blob-storage hrefs.

    Tokens come from ``token_url.format(collection=...)`` through ``session`` (our retrying
    session) and are cached until ``refresh_before`` seconds before ``msft:expiry``. Untested
    against the real service here (no network); see the module docstring.
    """

    TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token/{collection}"

    def __init__(self, session: Any, *, token_url: str = TOKEN_URL, refresh_before: float = 300.0) -> None:
        self.session = session
        self.token_url = token_url
        self.refresh_before = refresh_before
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def needs_signing(href: str) -> bool:
        """True for ``https://<account>.blob.core.windows.net/...`` hrefs not already signed."""
        parts = urlsplit(href)
        host = (parts.hostname or "").lower()
        return host.endswith(".blob.core.windows.net") and "sig=" not in parts.query

    def token(self, collection: str) -> str:
        """The SAS token (a query string) for ``collection``, fetched or cached."""
        with self._lock:
            cached = self._tokens.get(collection)
            if cached and cached[1] - self.refresh_before > time.time():
                return cached[0]
            url = self.token_url.format(collection=collection)
            response = self.session.get(url, headers={"Accept": "application/json"})
            if response.status_code != 200:
                raise ServiceError.from_response(
                    response, hint="the Planetary Computer SAS token endpoint refused; try again later"
                )
            try:
                body = response.json()
                token = str(body["token"]).lstrip("?")
                expiry = _parse_expiry(body.get("msft:expiry"))
            except (ValueError, KeyError, TypeError) as exc:
                raise ServiceError(
                    f"the SAS token endpoint {url} answered without a token ({exc})", url=url
                ) from None
            register_secret(token)
            self._tokens[collection] = (token, expiry)
            return token

    def sign(self, href: str, collection: str) -> str:
        """``href`` with the collection's SAS token as its query (unchanged if not blob storage)."""
        if not self.needs_signing(href):
            return href
        token = self.token(collection)
        return f"{href}{'&' if '?' in href else '?'}{token}"


def _parse_expiry(value: Any) -> float:
    if not value:
        return time.time() + 600.0
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


# -----------------------------------------------------------------------------------------
# Reading
# -----------------------------------------------------------------------------------------
def _http_href(asset: Mapping[str, Any]) -> str | None:
    """The asset's http(s) href, or an http(s) ``alternate`` (CDSE), or None."""
    href = str(asset.get("href") or "")
    if href.startswith(("http://", "https://")):
        return href
    alternates = asset.get("alternate")
    if isinstance(alternates, Mapping):
        for alt in alternates.values():
            alt_href = str(alt.get("href") or "") if isinstance(alt, Mapping) else ""
            if alt_href.startswith(("http://", "https://")):
                return alt_href
    return None


_GDAL_LIB: Any = None


def forget_remote(path: str) -> None:
    """Drop GDAL's in-process ``/vsicurl/`` cache for ``path`` (best effort).

    GDAL remembers a file's size, fetched blocks *and a failed open (404)* per URL for the
    life of the process; without this a transient error would stick in a long-lived process,
    and a changed file would be served from memory. Called after every asset read.
    """
    global _GDAL_LIB
    if _GDAL_LIB is None:
        here = os.path.dirname(rasterio.__file__)
        candidates = sorted(glob.glob(os.path.join(here, "..", "rasterio.libs", "libgdal*.so*")))
        candidates += sorted(glob.glob(os.path.join(here, ".dylibs", "libgdal*.dylib")))
        found = ctypes.util.find_library("gdal")
        candidates += [found] if found else []
        _GDAL_LIB = False
        for candidate in candidates:
            try:
                lib = ctypes.CDLL(candidate)
                lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
                _GDAL_LIB = lib
                break
            except (OSError, AttributeError):
                continue
        if not _GDAL_LIB:
            log.debug("GDAL's VSICurlPartialClearCache not found; /vsicurl/ cache not cleared")
    if _GDAL_LIB:
        _GDAL_LIB.VSICurlPartialClearCache(path.encode())


def _raster_meta(asset: Mapping[str, Any]) -> tuple[float, float, float | None]:
    """``(scale, offset, nodata)`` from the asset's ``raster:bands`` (1, 0, None when absent)."""
    rb = asset.get("raster:bands") or asset.get("bands")
    first = rb[0] if isinstance(rb, list) and rb and isinstance(rb[0], Mapping) else {}
    scale = first.get("scale", first.get("raster:scale", 1.0))
    offset = first.get("offset", first.get("raster:offset", 0.0))
    nodata = first.get("nodata", first.get("raster:nodata"))
    return (float(scale) if isinstance(scale, (int, float)) else 1.0,
            float(offset) if isinstance(offset, (int, float)) else 0.0,
            float(nodata) if isinstance(nodata, (int, float)) else None)


def _error_text(exc: BaseException) -> str:
    """GDAL's message and its deepest cause (the informative one), without URL queries."""
    parts = [str(exc)]
    cause: BaseException | None = exc
    seen = {id(exc)}
    deepest = None
    while cause is not None:
        cause = cause.__cause__ or cause.__context__
        if cause is None or id(cause) in seen:
            break
        seen.add(id(cause))
        deepest = cause
    if deepest is not None:
        args = getattr(deepest, "args", ())
        parts.append(str(args[-1]) if args else str(deepest))
    text = "; ".join(p for p in dict.fromkeys(parts) if p and "See previous exception" not in p)
    text = text.replace(" - Failure writing output to destination, passed 23 returned 0", "")
    short = re.search(r"got (\d+) bytes, expected (\d+)", text)
    if short:
        text = (f"truncated response: got {short.group(1)} of the {short.group(2)} bytes of a "
                f"data block ({text})")
    elif "Failed to read directory" in text or "not recognized as" in text:
        text = f"the file's header is unreadable (truncated response or not a GeoTIFF): {text}"
    return strip_query(" ".join(text.split()))[:400]


class CogReader:
    """Read one job's tiles from its items' COG assets (one reader per job; thread-confined).

    Resolves every primary item's band assets up front (a missing band fails the job before any
    pixel is read). ``reads`` counts the asset windows read; :meth:`tags` and :meth:`scaling`
    describe the result for ``PartFile.commit``.
    """

    def __init__(self, job: Job, settings: Settings, session: Any = None) -> None:
        self.job = job
        self.settings = settings
        self.items = list(job.acquisition.primary_items)
        self.reads = 0
        signer = PlanetaryComputerSigner(session) if settings.signing == "planetary-computer" else None
        self._signer = signer
        self._assets: list[dict[str, tuple[str, dict[str, Any]]]] = []  # per item: band -> (key, asset)
        for item in self.items:
            keys = _with_item(item, lambda it=item: band_asset_keys(it.assets, job.bands))
            self._assets.append({b: (k, item.assets[k].to_dict()) for b, k in keys.items()})
        self._footprints = [_footprint(it) for it in self.items]
        self._resampling: dict[str, Resampling] = {}

    # -- public ---------------------------------------------------------------------------
    def read_tile(self, tile: Tile) -> np.ndarray:
        """The tile's ``(bands + 1, height, width)`` array in the job's dtype; the last band is
        the data mask (1 data, 0 no data: nodata in any band, or outside a polygon area)."""
        job = self.job
        out = np.zeros((len(job.bands) + 1, tile.height, tile.width), dtype=job.dtype)
        area = _tile_4326(job.grid.crs, tile.bounds)
        candidates = [i for i, fp in enumerate(self._footprints) if fp is None or fp.intersects(area)]
        data_mask = np.ones((tile.height, tile.width), dtype=bool)
        for b, band in enumerate(job.bands):
            have = np.zeros((tile.height, tile.width), dtype=bool)
            for i in candidates:
                key, asset = self._assets[i][band]
                data, valid = self._read(self.items[i], band, key, asset, tile)
                take = valid & ~have
                if take.any():
                    out[b][take] = data[take]
                    have |= take
                if have.all():
                    break
            data_mask &= have
        if job.geometry is not None:
            data_mask &= self._inside(tile)
        out[:-1, ~data_mask] = 0
        out[-1] = data_mask
        return out

    def _inside(self, tile: Tile) -> np.ndarray:
        """True where the pixel centre lies inside the job's polygon."""
        polygon = area_in(self.job.geometry, self.job.grid.crs)
        return geometry_mask([mapping(polygon)], out_shape=(tile.height, tile.width),
                             transform=self.job.grid.window_transform(tile.window), invert=True)

    def _shift(self, index: int, band: str) -> int:
        """DN taken off to harmonise ``band`` of item ``index``: 1000 for baseline 04.00+, else 0."""
        if BANDS[band].kind != "reflectance":
            return 0
        asset = self._assets[index][band][1]
        scale, offset, _ = _raster_meta(asset)
        rb = asset.get("raster:bands") or asset.get("bands")
        declared = isinstance(rb, list) and rb and isinstance(rb[0], Mapping) and "offset" in rb[0]
        if declared:
            return int(round(-offset / scale)) if scale else 0
        return 1000 if scene_facts(self.items[index]).baseline >= 400 else 0

    def scaling(self) -> list[tuple[float, float]]:
        """Per band ``(scale, offset)`` of the written values (from the first primary item);
        harmonised DNs have offset 0."""
        if np.dtype(self.job.dtype).kind == "f":
            return [(1.0, 0.0)] * len(self.job.bands)
        first = self._assets[0]
        pairs = []
        for b in self.job.bands:
            scale, offset, _ = _raster_meta(first[b][1])
            if not self.job.harmonize and offset == 0 and self._shift(0, b):
                offset = -self._shift(0, b) * scale  # the baseline says what raster:bands does not
            pairs.append((scale, 0.0 if self.job.harmonize else offset))
        return pairs

    def tags(self) -> dict[str, str]:
        """Dataset tags: fetch kind, asset key / scale / offset / resampling per band."""
        first = self._assets[0]
        meta = [_raster_meta(first[b][1]) for b in self.job.bands]
        tags = {
            "FETCH": "cog",
            "STAC_API": strip_query(self.settings.stac_url or ""),
            "ASSET_KEYS": ",".join(first[b][0] for b in self.job.bands),
            "STAC_SCALES": ",".join(f"{m[0]:g}" for m in meta),
            "STAC_OFFSETS": ",".join(f"{m[1]:g}" for m in meta),
            "VALUES": "reflectance (DN * scale + offset)" if np.dtype(self.job.dtype).kind == "f"
            else ("harmonised digital numbers (physical value = DN * scale + offset)" if self.job.harmonize
                  else "archived digital numbers (physical value = DN * scale + offset)"),
            "HARMONIZED": "true" if self.job.harmonize else "false",
            "MOSAIC_ORDER": ",".join(it.id for it in self.items),
        }
        if self._resampling:
            tags["RESAMPLING"] = ",".join(
                f"{b}:{self._resampling[b].name}" for b in self.job.bands if b in self._resampling)
        differing = {b for b in self.job.bands
                     if len({_raster_meta(a[b][1])[:2] for a in self._assets}) > 1}
        if differing and np.dtype(self.job.dtype).kind != "f":
            log.warning("%s: items differ in scale/offset for %s; tags give the first item's",
                        self.job.acquisition.key, ",".join(sorted(differing)))
        return tags

    # -- internals ------------------------------------------------------------------------
    def _href(self, item: pystac.Item, key: str, asset: Mapping[str, Any]) -> str:
        href = _http_href(asset)
        if href is None:
            raise DownloadError(
                f"asset {key!r} of item {item.id} is not on HTTP(S) ({strip_query(str(asset.get('href')))}); "
                "stacfetch reads COGs over HTTP(S) only",
                hint="use a STAC API whose assets have https:// hrefs (e.g. --provider earth-search)",
            )
        parts = urlsplit(href)
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise InsecureTransportError(
                f"asset {key!r} of item {item.id} is at a plain-HTTP URL ({strip_query(href)})",
                hint="stacfetch reads plain http:// only from loopback hosts",
            )
        if self._signer is not None:
            href = self._signer.sign(href, item.collection_id or self.job.acquisition.items[0].collection_id or "")
        return href

    def _env(self, href: str) -> dict[str, str]:
        options = dict(GDAL_OPTIONS, GDAL_HTTP_USERAGENT=USER_AGENT,
                       **gdal_timeouts(self.settings.timeout))
        stac_url = self.settings.stac_url or ""
        if self.settings.stac_headers and stac_url and same_origin(href, stac_url):
            options["GDAL_HTTP_HEADERS"] = "\r\n".join(f"{k}: {v}" for k, v in self.settings.stac_headers.items())
        return options

    def _read(
        self, item: pystac.Item, band: str, key: str, asset: Mapping[str, Any], tile: Tile
    ) -> tuple[np.ndarray, np.ndarray]:
        """One asset's window warped onto ``tile``: ``(values in the job's dtype, valid mask)``."""
        job = self.job
        href = self._href(item, key, asset)
        scale, offset, meta_nodata = _raster_meta(asset)
        where = f"asset {key!r} ({band}) of item {item.id} at {strip_query(href)}"
        self.reads += 1
        path = f"/vsicurl/{href}"
        try:
            with rasterio.Env(**self._env(href)), rasterio.open(path) as src:
                nodata = src.nodata if src.nodata is not None else (meta_nodata if meta_nodata is not None else 0)
                source_res = _metres(abs(src.res[0]), src.crs)
                resampling = resampling_for(band, source_res, _metres(job.grid.resolution, _crs(job.grid.crs)))
                self._resampling.setdefault(band, resampling)
                with WarpedVRT(
                    src, crs=job.grid.crs, transform=job.grid.window_transform(tile.window),
                    width=tile.width, height=tile.height, resampling=resampling,
                    src_nodata=nodata, nodata=nodata,
                ) as vrt:
                    raw = vrt.read(1)
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise DownloadError(f"reading {where} failed: {_error_text(exc)}") from None
        finally:
            forget_remote(path)
        valid = raw != nodata
        index = self.items.index(item)
        if np.dtype(job.dtype).kind == "f":
            physical = raw.astype("float64") * scale + offset
            if not job.harmonize and offset == 0 and self._shift(index, band):
                physical -= self._shift(index, band) * scale
            if job.harmonize and BANDS[band].kind == "reflectance":
                physical = np.maximum(physical, 0)
            values = np.where(valid, physical, 0).astype(job.dtype)
        else:
            info = np.iinfo(job.dtype)
            if raw.dtype.kind == "f" or int(raw.max(initial=0)) > info.max or int(raw.min(initial=0)) < info.min:
                raise DownloadError(f"{where}: values do not fit {job.dtype} (asset type {raw.dtype})",
                                    hint="use --dtype float32")
            shift = self._shift(index, band) if job.harmonize else 0
            if shift:
                values = np.maximum(raw.astype("int64") - shift, 0).astype(job.dtype)
            else:
                values = raw.astype(job.dtype)
        log.debug("read %s: %dx%d px, %s", where, tile.width, tile.height, resampling.name)
        return values, valid


def _with_item(item: pystac.Item, fn: Any) -> Any:
    try:
        return fn()
    except DownloadError as exc:
        raise DownloadError(f"item {item.id}: {exc.message}", hint=exc.hint) from None


def _crs(value: str) -> Any:
    return CRS.from_user_input(value)


def _footprint(item: pystac.Item) -> Any:
    try:
        if item.geometry:
            return shape(item.geometry)
        if item.bbox:
            return box(*item.bbox[:2], *item.bbox[-2:])
    except (ValueError, TypeError, AttributeError):
        pass
    return None


def _tile_4326(crs: str, bounds: tuple[float, float, float, float]) -> Any:
    if _crs(crs).to_epsg() == 4326:
        return box(*bounds)
    return box(*transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21))


@dataclass(frozen=True)
class AssetSource:
    """A STAC API's COG assets (earth-search, planetary-computer, stac): one CogReader per job.

    A reader is thread-confined, so a job's tiles are read one after another.
    """

    settings: Settings
    name: ClassVar[str] = "assets"
    concurrent_tiles: ClassVar[bool] = False

    def open(self, job: Job, session: Any) -> CogReader:
        return CogReader(job, self.settings, session)
