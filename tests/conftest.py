"""Shared fixtures. Append new fixtures below; keep this file small."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stacfetch.testing.emulator import Emulator


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A started Sentinel Hub emulator (sentinelhub deployment) on a free 127.0.0.1 port."""
    with Emulator() as emu:
        yield emu


@pytest.fixture(scope="session")
def shared_emulator() -> Iterator[Emulator]:
    """One emulator for the whole session: do not change its faults; read its log with care."""
    with Emulator() as emu:
        yield emu


@pytest.fixture(autouse=True)
def _own_cache_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits learnt in a test are remembered in a folder of that test, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
