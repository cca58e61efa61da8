"""Bounded bodies and waits on 127.0.0.1 (review items 1-4, 7, 15, 16).

A small loopback server answers one hostile way per path: a redirect whose body is a gzip
bomb, a body trickled a byte at a time, error bodies that are gzip bombs or carry a huge
message, a 429 forever; and a COG server that stays silent. Each case goes through the real session (real sockets) and must end
within seconds with bounded memory (``tracemalloc``: Python's own allocations, where a body
held whole would show). Sizes are small (``BOMB`` decoded) so that a failing run stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stacfetch.config import Settings
from stacfetch.errors import NetworkError, RateLimitError, ServiceError
from stacfetch.http import RetryPolicy, body_limit, open_public_session
from stacfetch.sources.process import fetch_tile
from stacfetch.testing.hostile import gzip_bomb
from stacfetch.testing.loopback import LoopbackServer, QuietHandler

pytestmark = pytest.mark.timeout(60)

BOMB = 64 << 20  # decoded bytes of a bomb: 64 MiB (about 64 KB on the wire)
MAX_HELD = 8 << 20  # what a request may allocate at its peak while refusing it
TRICKLE_BYTES = 60  # one byte every TRICKLE_STEP s: the whole body takes 6 s
TRICKLE_STEP = 0.1
QUICK = RetryPolicy(backoff_initial=0.05, backoff_max=0.1, deadline_factor=2.0)


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.0"  # bodies end at close

    def _go(self) -> None:
        self.read_body()
        path = self.path.split("?", 1)[0]
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            getattr(self, "_" + path.strip("/").replace("-", "_"))()

    do_GET = do_POST = _go  # noqa: N815

    def _head(self, status: int, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()

    def _bomb(self, status: int, content_type: str, *extra: tuple[str, str]) -> None:
        self._head(status, ("Content-Type", content_type), ("Content-Encoding", "gzip"), *extra)
        for chunk in gzip_bomb(b'{"error": {"message": "', b" ", BOMB, b'"}}'):
            self.wfile.write(chunk)

    def _ok(self) -> None:
        self.send_json(200, {"ok": True})

    def _redirect_bomb(self) -> None:
        self._bomb(302, "text/html", ("Location", "/ok"))

    def _trickle(self) -> None:
        self._head(200, ("Content-Type", "image/tiff"), ("Content-Length", str(TRICKLE_BYTES)))
        for _ in range(TRICKLE_BYTES):
            self.wfile.write(b"I")
            self.wfile.flush()
            time.sleep(TRICKLE_STEP)

    def _error_bomb(self) -> None:
        self._bomb(400, "application/json")

    def _failing_bomb(self) -> None:
        self._bomb(503, "application/json")

    def _long_message(self) -> None:
        self.send_json(400, {"error": {"status": 400, "message": "no " * 200_000}})

    def _always_429(self) -> None:
        self._head(429, ("Retry-After", "300"), ("Content-Length", "0"))


class _Server(LoopbackServer):
    what = "the bounded-bodies server"

    def __init__(self) -> None:
        super().__init__(_Handler)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    with _Server() as srv:
        yield srv


def session_for(server: _Server, timeout: float = 1.0, **options: Any) -> Any:
    settings = Settings(provider="earth-search", base_url=None, token_url=None,
                        stac_url=server.url + "/", timeout=timeout)
    return open_public_session(settings, retry=options.pop("retry", QUICK), redact_logs=False, **options)


def peak_bytes(call: Any) -> tuple[int, Any]:
    """``(peak bytes allocated, what call raised or returned)``."""
    tracemalloc.start()
    try:
        try:
            outcome: Any = call()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome = exc
        return tracemalloc.get_traced_memory()[1], outcome
    finally:
        tracemalloc.stop()


# --- item 1: a redirect's body -----------------------------------------------------------
def test_a_redirect_whose_body_is_a_gzip_bomb_is_not_inflated(server: _Server) -> None:
    with session_for(server) as session, body_limit(1 << 20, "a test page"):
        peak, outcome = peak_bytes(lambda: session.get(server.url + "/redirect-bomb"))
    assert not isinstance(outcome, Exception), outcome
    assert outcome.json() == {"ok": True}
    assert peak < MAX_HELD, f"{peak:,} bytes allocated for a redirect"


# --- item 2: a trickled body and the request's deadline --------------------------------------
def test_a_trickled_body_ends_at_the_requests_deadline(server: _Server) -> None:
    started = time.monotonic()
    with session_for(server) as session, pytest.raises(NetworkError) as caught:
        session.get(server.url + "/trickle")
    elapsed = time.monotonic() - started
    assert elapsed < 4.5, f"{elapsed:.1f} s for a 2 s deadline"
    assert re.search(r"2 s in all", str(caught.value)), caught.value


# --- item 3: a spooled tile and the request's deadline ---------------------------------------
def test_a_trickled_spooled_tile_ends_at_the_requests_deadline(server: _Server, tmp_path: Path) -> None:
    started = time.monotonic()
    with session_for(server) as session, pytest.raises(NetworkError) as caught:
        fetch_tile(session, server.url + "/trickle", {}, spool=tmp_path / "tile.tif", max_bytes=1 << 20)
    elapsed = time.monotonic() - started
    assert elapsed < 4.5, f"{elapsed:.1f} s for a 2 s deadline"
    assert "2 s" in str(caught.value), caught.value
    assert not (tmp_path / "tile.tif").exists()


# --- item 4: error bodies of streamed requests ---------------------------------------------
def test_a_streamed_tiles_error_body_is_read_within_a_cap(server: _Server, tmp_path: Path) -> None:
    with session_for(server) as session:
        peak, outcome = peak_bytes(lambda: fetch_tile(session, server.url + "/error-bomb", {},
                                                       spool=tmp_path / "t.tif", max_bytes=BOMB * 2))
    assert isinstance(outcome, ServiceError) and outcome.status == 400, outcome
    assert peak < MAX_HELD, f"{peak:,} bytes allocated for an error body"


def test_a_final_5xx_of_a_streamed_request_is_read_within_a_cap(server: _Server) -> None:
    with session_for(server, max_attempts=1) as session:
        peak, outcome = peak_bytes(lambda: session.get(server.url + "/failing-bomb", stream=True))
    assert isinstance(outcome, ServiceError) and outcome.status == 503, outcome
    assert peak < MAX_HELD, f"{peak:,} bytes allocated for an error body"


# --- item 15: a JSON error message is shortened ---------------------------------------------
def test_a_huge_json_error_message_is_shortened(server: _Server) -> None:
    with session_for(server) as session:
        response = session.get(server.url + "/long-message")
        error = ServiceError.from_response(response)
    assert error.status == 400
    assert len(error.message) < 600, f"{len(error.message):,} characters"
    assert "no no no" in error.message
    json.dumps({"error": str(error)})  # still a plain string


# --- item 16: a deadline passed while rate limited says so -----------------------------------
def test_a_deadline_passed_while_rate_limited_says_rate_limited(server: _Server) -> None:
    with session_for(server) as session, pytest.raises(RateLimitError) as caught:
        session.get(server.url + "/always-429")
    text = str(caught.value)
    assert "rate limited" in text, text
    assert "did not answer" not in text, text


# --- item 7: COG reads keep to --timeout ------------------------------------------------------
def test_a_silent_cog_server_ends_a_read_within_the_timeout(tmp_path: Path) -> None:
    import numpy as np
    import pystac
    import rasterio

    from stacfetch.errors import DownloadError
    from stacfetch.plan import Grid, Job, cut_tiles, group_acquisitions
    from stacfetch.sources.assets import CogReader
    from stacfetch.testing.cogserver import CogServer, Fault

    transform = rasterio.Affine(100, 0, 200_000, 0, -100, 2_800_000)
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint16",
               "crs": "EPSG:32629", "transform": transform, "nodata": 0}
    with rasterio.open(tmp_path / "b04.tif", "w", **profile) as dst:
        dst.write(np.full((1, 64, 64), 1234, dtype="uint16"))
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "S2A_29RKH_20200219_0_L2A",
            "geometry": {"type": "Polygon", "coordinates": [[[-12, 25], [-11, 25], [-11, 26], [-12, 26], [-12, 25]]]},
            "bbox": [-12, 25, -11, 26], "links": [],
            "properties": {"datetime": "2020-02-19T11:34:25Z", "s2:mgrs_tile": "29RKH", "platform": "sentinel-2a"},
            "assets": {"red": {"href": "", "type": "image/tiff; application=geotiff; profile=cloud-optimized"}}}
    grid = Grid(crs="EPSG:32629", transform=transform, width=64, height=64, resolution=100.0)
    with CogServer(tmp_path) as cogs:
        item["assets"]["red"]["href"] = cogs.url_for("b04.tif")
        cogs.faults["b04.tif"] = Fault(delay=20.0)  # silent for 20 s, every request
        acq = group_acquisitions([pystac.Item.from_dict(item)])
        job = Job(acq[0], grid, tuple(cut_tiles(grid, 64)), ("B04",), "uint16", tmp_path / "out.tif")
        settings = Settings(provider="stac", base_url=None, token_url=None, stac_url=cogs.url, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(DownloadError) as caught:
            CogReader(job, settings).read_tile(job.tiles[0])
        elapsed = time.monotonic() - started
    assert elapsed < 12, f"{elapsed:.1f} s for --timeout 1"
    assert "b04.tif" in str(caught.value), caught.value
