"""stacfetch: Sentinel-2 L2A scenes for a place and a time window, as georeferenced GeoTIFFs."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "get", "search"]


def __getattr__(name: str) -> Any:
    # Heavy imports (rasterio, pystac-client) stay lazy so `stacfetch --help` is fast.
    if name in ("search", "get"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'stacfetch' has no attribute {name!r}")
