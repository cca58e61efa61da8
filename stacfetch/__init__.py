"""stacfetch: Sentinel-2 L2A scenes for a place and a time window, as georeferenced GeoTIFFs."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "get", "manifest_items", "open_dataset", "search", "stats"]

# public name -> the module that defines it
_LAZY = {"search": "api", "get": "api", "open_dataset": "dataset", "stats": "indices",
         "manifest_items": "stac.manifest"}


def __getattr__(name: str) -> Any:
    # Heavy imports (rasterio, pystac-client, xarray) stay lazy so `stacfetch --help` is fast.
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'stacfetch' has no attribute {name!r}")
