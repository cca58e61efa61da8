"""Where pixels come from: one :class:`PixelSource` per backend, chosen once from the provider.

``settings.source`` names it: ``"process"`` (Sentinel Hub's Process API renders each tile:
:class:`~stacfetch.sources.process.ProcessSource`) or ``"assets"`` (windowed reads of the COG
assets a STAC API publishes: :class:`~stacfetch.sources.assets.AssetSource`). A source opens a
:class:`TileReader` per job; the run writes what it returns into the job's part file. (Models:
stac-asset's one client per backend, odc-stac's reader protocol.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..config import SOURCES, Settings
from ..plan import Job, Tile
from .assets import AssetSource
from .process import ProcessSource

__all__ = ["SOURCES", "AssetSource", "PixelSource", "ProcessSource", "TileReader", "source_for"]


class TileReader(Protocol):
    """The pixels of one job's tiles, from one backend."""

    reads: int  # requests (or asset windows) read so far

    def read_tile(self, tile: Tile) -> np.ndarray | bytes | Path:
        """One tile: a ``(bands, height, width)`` array, GeoTIFF bytes or a file holding them."""
        ...

    def tags(self) -> dict[str, str]:
        """Dataset tags describing how the pixels were obtained."""
        ...

    def scaling(self) -> list[tuple[float, float]] | None:
        """Per band ``(scale, offset)`` of the written values, or None."""
        ...


class PixelSource(Protocol):
    """A backend: its name (``settings.source``) and a reader per job."""

    name: str
    concurrent_tiles: bool  # may one job's tiles be read from several threads at once

    def open(self, job: Job, session: Any) -> TileReader: ...


def source_for(settings: Settings) -> PixelSource:
    """The pixel source of ``settings.source`` (``"process"`` or ``"assets"``)."""
    if settings.source == "assets":
        return AssetSource(settings)
    if settings.source == "process":
        return ProcessSource(settings)
    raise ValueError(f"unknown pixel source {settings.source!r} (expected one of {', '.join(SOURCES)})")
