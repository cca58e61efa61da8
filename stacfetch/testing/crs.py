"""The CRSs the Process API accepts in ``input.bounds.properties.crs`` (reference §3.2).

From the "CRS support" page (CDSE documentation ``APIs/SentinelHub/Process/Crs.qmd``, same as
docs.sentinel-hub.com/api/latest/api/process/crs): the URL must start with
``http://www.opengis.net/def/crs/``; WGS 84 (CRS84 and EPSG:4326), EPSG:3857, the WGS 84 UTM
zones 32601-32660 and 32701-32760, and a list of national systems.
"""

from __future__ import annotations

import re

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
DOC_URL = "https://docs.sentinel-hub.com/api/latest/api/process/crs/"
NATIONAL = {
    2154: "RGF93 / Lambert-93", 2180: "ETRS89 / Poland CS92",
    2193: "NZGD2000 / New Zealand Transverse Mercator 2000", 3003: "Monte Mario / Italy zone 1",
    3004: "Monte Mario / Italy zone 2", 3005: "NAD83 / BC Albers", 3006: "SWEREF99 TM",
    3031: "WGS84 / Antarctic Polar Stereographic", 3035: "ETRS89 / LAEA Europe",
    3161: "NAD83 / Ontario MNR Lambert", 3346: "LKS94 / Lithuania TM",
    3413: "NSIDC Sea Ice Polar Stereographic North", 3416: "ETRS89 / Austria Lambert",
    3578: "NAD83 / Yukon Albers", 3580: "NAD83 / NWT Lambert", 3765: "HTRS96 / TM",
    3794: "D96 / TM", 3844: "Pulkovo 1942(58) / Stereo70", 3912: "D48 / GK",
    3995: "WGS 84 / Arctic Polar Stereographic", 4026: "MOLDREF99 / Moldova TM",
    5514: "S-JTSK / Krovak East North", 28992: "Amersfoort / RD New", 32184: "NAD83 / MTM zone 4",
}
_EPSG_URL = re.compile(r"^http://www\.opengis\.net/def/crs/EPSG/0/(\d+)$")


def supported_epsg(code: int) -> bool:
    return (code in (4326, 3857) or 32601 <= code <= 32660 or 32701 <= code <= 32760
            or code in NATIONAL)


def parse_crs_url(url: str) -> int | None:
    """EPSG code of a supported CRS URL (4326 for CRS84); None when the service refuses it."""
    if url == CRS84:
        return 4326
    m = _EPSG_URL.match(str(url))
    if not m:
        return None
    code = int(m.group(1))
    return code if supported_epsg(code) else None
