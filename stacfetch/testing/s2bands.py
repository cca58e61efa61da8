"""Sentinel-2 L2A bands as the Process API knows them: names, the units it accepts, its messages.

This is the *service's* table, kept apart from the client's :mod:`stacfetch.bands` on purpose:
the emulator must not share the client's understanding. Sources: sentinelhub-py
``data_collections_bands.py`` (``Bands.SENTINEL2_L2A``, ``MetaBands.SENTINEL2_L2A``: units in
order, the first is the default) and the CDSE S2L2A page ("Units"). ``CLP``/``CLM`` (s2cloudless
cloud probability and mask) are listed by sentinelhub-py, not by the CDSE page; the emulator
serves them on both deployments.

The message for a band asked in units it does not have is the service's own, e.g.
``Invalid script! Band 'CLM' of collection 'S2L1C' requested in unsupported units
'REFLECTANCE'! Supported units for this band: [DN].`` (sentinel-hub/custom-scripts#261).
"""

from __future__ import annotations

from dataclasses import dataclass

COLLECTION_NAME = "S2L2A"  # how the renderer names the collection in its messages


@dataclass(frozen=True)
class ServiceBand:
    """One input band: its units (default first) and what kind of values it holds."""

    name: str
    units: tuple[str, ...]
    kind: str  # optical | aot | scl | percent | clp | clm | angle | mask

    @property
    def default_unit(self) -> str:
        return self.units[0]


_OPTICAL = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
_ANGLES = ("sunAzimuthAngles", "sunZenithAngles", "viewAzimuthMean", "viewZenithMean")

S2L2A: dict[str, ServiceBand] = {
    **{n: ServiceBand(n, ("REFLECTANCE", "DN"), "optical") for n in _OPTICAL},
    "AOT": ServiceBand("AOT", ("OPTICAL_DEPTH", "DN"), "aot"),
    "SCL": ServiceBand("SCL", ("DN",), "scl"),
    "SNW": ServiceBand("SNW", ("PERCENT",), "percent"),
    "CLD": ServiceBand("CLD", ("PERCENT",), "percent"),
    "CLP": ServiceBand("CLP", ("DN",), "clp"),
    "CLM": ServiceBand("CLM", ("DN",), "clm"),
    **{n: ServiceBand(n, ("DEGREES",), "angle") for n in _ANGLES},
    "dataMask": ServiceBand("dataMask", ("DN",), "mask"),
}
OPTICAL = _OPTICAL
# bands whose water pixels are dark enough to reach reflectance 0 (NIR and SWIR)
DARK_OVER_WATER = ("B08", "B8A", "B09", "B11", "B12")
BAND_NUMBER = {name: i + 1 for i, name in enumerate(S2L2A)}


class UnitsError(ValueError):
    """A band was asked in units it does not have (the message is the service's)."""


def units_message(band: str, unit: str) -> str:
    supported = ", ".join(S2L2A[band].units)
    return (f"Invalid script! Band '{band}' of collection '{COLLECTION_NAME}' requested in "
            f"unsupported units '{unit}'! Supported units for this band: [{supported}].")


def check_units(band: str, unit: str | None) -> str:
    """The units a band is read in (its default when ``unit`` is None); UnitsError otherwise."""
    info = S2L2A[band]
    if unit is None:
        return info.default_unit
    if not isinstance(unit, str) or unit not in info.units:
        raise UnitsError(units_message(band, str(unit)))
    return unit


def has_offset(baseline: str) -> bool:
    """Processing baseline 04.00 and later store L2A DNs with BOA_ADD_OFFSET = -1000.

    ``baseline`` as in the item id (``"0400"``) or dotted (``"04.00"``).
    """
    digits = baseline.replace(".", "")
    return digits.isdigit() and int(digits) >= 400


BOA_ADD_OFFSET = -1000  # DN; reflectance = (DN + BOA_ADD_OFFSET) / 10000 for baseline >= 04.00
