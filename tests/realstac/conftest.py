"""Fixtures for tests against a REAL STAC API server and a Range-capable COG server.

``real_stac`` (session): stac-fastapi-pgstac on a throwaway PostgreSQL+PostGIS cluster, loaded
with every real ``sentinel-2-l2a`` item from ``shared/data`` (the rasters' item with its band
hrefs pointed at ``cog_server``). ``cog_server`` (session): ``shared/data/rasters/<scene>``
over HTTP with byte ranges and a byte log.

Missing prerequisites (PostgreSQL/PostGIS binaries, ``shared/data``) skip these tests locally,
with a hint, but FAIL them when ``CI`` is set: in CI a missing server is a broken build.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from stacfetch.testing.cogserver import CogServer

from .pgstac import (
    RASTER_SCENE,
    PgStacServer,
    default_shared_dir,
    default_venv_dir,
    ensure_venv,
    missing_prerequisites,
    shared_sentinel2_items,
    venv_ready,
)

HOW_TO_ENABLE = (
    "to enable: run `bash .ci/run`, or `apt-get install postgresql postgis` "
    "(and set STACFETCH_SHARED_DIR if shared/ is not at ../shared)"
)

_STARTUP: dict[str, float] = {}


def in_ci() -> bool:
    """True when the CI variable is set to anything but an explicit no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip locally; fail in CI, where a missing real server must never pass silently."""
    if in_ci():
        pytest.fail(f"real STAC server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"real STAC server unavailable: {reason}; {HOW_TO_ENABLE}")


@dataclass
class RealStac:
    """The running real servers and what was loaded into them."""

    url: str
    server: PgStacServer
    cogs: CogServer
    items: list[dict[str, Any]]
    startup_seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def ids(self) -> set[str]:
        """Every loaded item id."""
        return {i["id"] for i in self.items}


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``$STACFETCH_SHARED_DIR`` or ``<repo>/../shared``, with its data present."""
    shared = default_shared_dir(Path(__file__).resolve().parents[2])
    if not (shared / "data" / "rasters" / RASTER_SCENE).is_dir():
        unavailable(f"shared test data not found under {shared}/data")
    return shared


@pytest.fixture(scope="session")
def cog_server(shared_dir: Path) -> Iterator[CogServer]:
    """The rasters folder over HTTP with byte ranges, for the whole session."""
    with CogServer(shared_dir / "data" / "rasters" / RASTER_SCENE) as server:
        yield server


@pytest.fixture
def fresh_cog_server(shared_dir: Path) -> Iterator[CogServer]:
    """A private COG server for one test (faults and the log don't leak to other tests)."""
    with CogServer(shared_dir / "data" / "rasters" / RASTER_SCENE) as server:
        yield server


@pytest.fixture(scope="session")
def real_stac(shared_dir: Path, cog_server: CogServer) -> Iterator[RealStac]:
    """stac-fastapi-pgstac with the real items, on 127.0.0.1; stopped at session end."""
    missing = missing_prerequisites(shared_dir)
    if missing:
        unavailable("; ".join(missing))
    venv = default_venv_dir()
    if not venv_ready(venv):
        # One-time cost (~25 s from PyPI); .ci/run does this before the tests.
        try:
            ensure_venv(venv)
        except Exception as exc:  # noqa: BLE001 - reported as skip/fail with the cause
            unavailable(f"could not create the STAC server venv {venv}: {exc}")
    collections, items = shared_sentinel2_items(shared_dir, cog_server.url)
    t = time.perf_counter()
    server = PgStacServer(collections, items, venv=venv)
    server.start()  # errors here are real failures, locally and in CI
    started = time.perf_counter() - t
    _STARTUP.update(server.timings, fixture=started)
    try:
        yield RealStac(server.url, server, cog_server, items, started, dict(server.timings))
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line with the real server's startup time, when it ran."""
    if _STARTUP:
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in _STARTUP.items())
        terminalreporter.write_line(f"real STAC server startup: {parts}")
