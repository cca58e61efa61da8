"""An offline Sentinel Hub emulator (token, Catalog, Process API) for tests and sandboxes.

``from stacfetch.testing import Emulator, Faults`` loads the server lazily, so importing
``stacfetch.testing.pixels`` stays light.

:mod:`.hostile`, :mod:`.quota`, :mod:`.replay` and :mod:`.earthsearch` are test and benchmark
infrastructure (hostile servers, recorded real responses), not part of the user-facing API;
they live here because ``tests/`` and ``benchmarks/`` both import them.
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
