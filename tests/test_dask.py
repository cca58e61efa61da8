"""``get(..., executor=<Dask client>)`` on a real LocalCluster of two worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stacfetch.api import get_query
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Settings
from stacfetch.query import build_query
from stacfetch.testing.emulator import Emulator
from stacfetch.testing.faults import Faults

distributed = pytest.importorskip("distributed")

ARGS = ([10.0, 45.0], "2021-01-01", "2021-03-31")  # 36 acquisitions of 1 km


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


def settings_for(emu: Emulator, out: Path) -> Settings:
    return Settings(provider="sentinelhub", base_url=emu.url, token_url=emu.token_url,
                    client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET, output_dir=out)


def tif_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tif"))}


@pytest.mark.parametrize("how", ["client", "get_executor"])
def test_a_cluster_run_shares_one_budget_and_one_token(client: Any, tmp_path: Path, how: str) -> None:
    query = build_query(*ARGS, size=1000, bands="B02,B03,B04")
    faults = Faults(rate_limit_per_minute=600, rate_limit_burst=5, latency_ms=10)
    with Emulator(faults=faults) as emu:
        threads = get_query(query, settings=settings_for(emu, tmp_path / "threads"),
                            requests_per_minute=600)
        emu.log.clear()
        emu.faults.reset_window()
        executor = client if how == "client" else client.get_executor()
        result = get_query(query, settings=settings_for(emu, tmp_path / "dask"),
                           requests_per_minute=600, executor=executor)
        log = emu.log.settle()
    assert len(result.written) == len(threads.written) >= 30 and not result.failed
    assert tif_files(tmp_path / "dask") == tif_files(tmp_path / "threads")  # byte for byte
    api = log.count(kind="process") + log.count(kind="catalog")
    assert log.count(status=429) < 0.05 * api  # one budget for both worker processes
    assert log.count(kind="token") == 1  # one token for the run
    assert result.manifest is not None and len(list((tmp_path / "dask").rglob("catalog.json"))) == 1
    # the shared limiter paced every Process request (and any the client sent meanwhile)
    assert log.count(kind="process") <= result.stats["cluster"]["requests"] <= api
