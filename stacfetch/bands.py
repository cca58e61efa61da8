"""Sentinel-2 L2A bands: names, presets, native resolutions, data types and the units the
Process API accepts for each.

Units (sentinelhub-py ``data_collections_bands.py``; CDSE S2L2A "Units"): spectral bands
``REFLECTANCE`` or ``DN`` (DN = 10000 x reflectance); ``AOT`` ``OPTICAL_DEPTH`` or ``DN``
(AOT = DN / 1000); ``SCL``, ``CLP``, ``CLM`` and ``dataMask`` only ``DN``; ``CLD`` and ``SNW`` only
``PERCENT``. Asking a band in another unit is a 400 from the service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidOptionError


@dataclass(frozen=True)
class Band:
    name: str
    description: str
    native_resolution: float  # metres
    kind: str  # "reflectance" | "classification" | "mask" | "aot" | "percent"

    @property
    def units(self) -> tuple[str, ...]:
        """The Process API units of this band, the float (physical) one first."""
        return _UNITS[self.kind]

    def request_units(self, dtype: str) -> str:
        """The units to ask for: the physical unit for float32 output, DN (or the only unit) else."""
        units = self.units
        if dtype == "float32" or "DN" not in units:
            return units[0]
        return "DN"


_UNITS = {"reflectance": ("REFLECTANCE", "DN"), "aot": ("OPTICAL_DEPTH", "DN"),
          "classification": ("DN",), "mask": ("DN",), "percent": ("PERCENT",)}


_BANDS = [
    Band("B01", "coastal aerosol 442.7 nm", 60, "reflectance"),
    Band("B02", "blue 492.4 nm", 10, "reflectance"),
    Band("B03", "green 559.8 nm", 10, "reflectance"),
    Band("B04", "red 664.6 nm", 10, "reflectance"),
    Band("B05", "red edge 704.1 nm", 20, "reflectance"),
    Band("B06", "red edge 740.5 nm", 20, "reflectance"),
    Band("B07", "red edge 782.8 nm", 20, "reflectance"),
    Band("B08", "NIR 832.8 nm", 10, "reflectance"),
    Band("B8A", "narrow NIR 864.7 nm", 20, "reflectance"),
    Band("B09", "water vapour 945.1 nm", 60, "reflectance"),
    Band("B11", "SWIR 1613.7 nm", 20, "reflectance"),
    Band("B12", "SWIR 2202.4 nm", 20, "reflectance"),
    Band("AOT", "aerosol optical thickness", 10, "aot"),
    Band("SCL", "scene classification", 20, "classification"),
    Band("SNW", "snow probability", 20, "percent"),
    Band("CLD", "cloud probability", 20, "percent"),
    Band("CLP", "cloud probability (s2cloudless, 0-255)", 160, "classification"),
    Band("CLM", "cloud mask (s2cloudless: 0 clear, 1 cloud, 255 no data)", 160, "classification"),
    Band("dataMask", "1 = data, 0 = no data", 10, "mask"),
]
BANDS: dict[str, Band] = {b.name: b for b in _BANDS}
SPECTRAL = tuple(b.name for b in _BANDS if b.kind == "reflectance")
PRESETS: dict[str, tuple[str, ...]] = {
    "truecolor": ("B04", "B03", "B02"),
    "all": SPECTRAL,
    "all+scl": SPECTRAL + ("SCL",),
}
DTYPES = ("uint16", "float32")
_ALIASES = {name.upper(): name for name in BANDS} | {"B1": "B01", "B2": "B02", "B3": "B03",
            "B4": "B04", "B5": "B05", "B6": "B06", "B7": "B07", "B8": "B08", "B9": "B09"}
SCL_CLEAR = (4, 5, 6, 11)


def parse_bands(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Turn ``"B04,B03"``, ``"truecolor"`` or a list of names into a tuple of canonical names.

    Raises InvalidOptionError naming the unknown band and the accepted names.
    """
    if value is None:
        return PRESETS["all"]
    parts = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in parts:
        if not isinstance(raw, str):
            raise InvalidOptionError(f"band names must be strings, got {raw!r}")
        token = raw.strip()
        if not token:
            continue
        if token.lower() in PRESETS:
            out.extend(PRESETS[token.lower()])
            continue
        name = _ALIASES.get(token.upper())
        if name is None:
            if token.upper() == "B10":
                raise InvalidOptionError(
                    "band B10 does not exist in Sentinel-2 Level-2A (it is a cirrus band of L1C only)",
                    hint="drop B10; use --bands all for the 12 L2A spectral bands",
                )
            raise InvalidOptionError(
                f"unknown band {token!r}",
                hint="use names such as B02,B03,B04,B8A,SCL or a preset: "
                + ", ".join(PRESETS) + "; known bands: " + ",".join(BANDS),
            )
        out.append(name)
    if not out:
        raise InvalidOptionError("no bands given", hint="e.g. --bands B04,B03,B02 or --bands all")
    seen: set[str] = set()
    dupes = [b for b in out if b in seen or seen.add(b)]  # type: ignore[func-returns-value]
    if dupes:
        raise InvalidOptionError(
            f"band {dupes[0]} is listed twice", hint="list each band once, in the order you want"
        )
    return tuple(out)


def output_dtype(bands: tuple[str, ...], dtype: str) -> str:
    """The GeoTIFF data type for these bands: SCL/dataMask alone stay uint8."""
    only_classes = all(BANDS[b].kind in ("classification", "mask") for b in bands)
    if dtype == "uint8" and only_classes:
        return "uint8"
    if dtype not in DTYPES:
        raise InvalidOptionError(f"unsupported --dtype {dtype!r}", hint="use uint16 or float32")
    if only_classes:
        return "uint8"
    return dtype


# STAC ``eo`` common names of the spectral bands (the manifest's eo:bands, xarray attributes).
COMMON_NAMES: dict[str, str] = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge",
    "B06": "rededge", "B07": "rededge", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B11": "swir16", "B12": "swir22",
}


def center_wavelength_um(name: str) -> float | None:
    """Centre wavelength in micrometres (from the band's description), None for non-spectral bands."""
    band = BANDS.get(name)
    if band is None or band.kind != "reflectance":
        return None
    nanometres = float(band.description.rsplit(" ", 2)[-2])
    return round(nanometres / 1000.0, 5)
