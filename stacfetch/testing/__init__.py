"""An offline Sentinel Hub emulator (token, Catalog, Process API) for tests and sandboxes.

``from stacfetch.testing import Emulator, Faults`` loads the server lazily, so importing
``stacfetch.testing.pixels`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Emulator", "Faults", "RequestLog"]


def __getattr__(name: str) -> Any:
    if name in ("Emulator", "RequestLog"):
        from . import emulator

        return getattr(emulator, name)
    if name == "Faults":
        from .faults import Faults

        return Faults
    raise AttributeError(name)
