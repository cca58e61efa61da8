"""A small HTTP file server with byte ranges, a per-request byte log and fault switches.

It serves the files of one folder on 127.0.0.1, the way an object store serves COGs:
``GET``/``HEAD`` with ``Accept-Ranges: bytes``, single ``Range: bytes=a-b`` requests answered
with ``206`` and ``Content-Range``, and a log of every request with the body bytes sent, so a
test or a benchmark can tell how much went over the wire. Faults can be switched on per file:
a forced status (404, 503, ...) or a body cut short after N bytes.

Standard library only. Example::

    with CogServer(Path("rasters/S2A_29RKH_20200219_0_L2A")) as cogs:
        url = cogs.url_for("B04.tif")  # http://127.0.0.1:PORT/B04.tif
        ...
        print(cogs.bytes_served("B04.tif"))
"""

from __future__ import annotations

import mimetypes
import re
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .loopback import LoopbackServer, QuietHandler

__all__ = ["CogServer", "Fault", "RequestRecord"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server answered it; ``body_bytes`` is what was actually written."""

    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass(frozen=True)
class Fault:
    """A fault for one file: answer ``status`` instead, or cut the body after ``truncate_at`` bytes.

    ``truncate_at`` keeps the honest ``Content-Length`` header and closes the connection early,
    as a dropped connection mid-download looks to the client.
    """

    status: int | None = None
    truncate_at: int | None = None
    delay: float = 0.0


class _Handler(QuietHandler):
    server_version = "stacfetch-cogserver/1"

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        """Answer a HEAD request."""
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        """Answer a GET request."""
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        owner: CogServer = self.server.owner
        name = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        fault = owner.faults.get(name)
        if fault and fault.delay:
            time.sleep(fault.delay)
        path = owner.resolve(name)
        if fault and fault.status is not None:
            self._error(fault.status, name, rng)
            return
        if path is None:
            self._error(HTTPStatus.NOT_FOUND, name, rng)
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, HTTPStatus.OK
        if rng is not None:
            parsed = _parse_range(rng, size)
            if parsed is None:
                # Unsatisfiable or not a single byte range we understand.
                m = _RANGE.match(rng.strip())
                if m is None:  # multi-range or other unit: RFC 9110 lets us send the whole file
                    parsed = (0, size - 1)
                else:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    owner.record(RequestRecord(self.command, name, rng, 416, 0))
                    return
            else:
                status = HTTPStatus.PARTIAL_CONTENT
            start, end = parsed
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", mimetypes.guess_type(name)[0] or "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        self.send_header("Last-Modified", formatdate(path.stat().st_mtime, usegmt=True))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        limit = length
        if body and fault and fault.truncate_at is not None:
            limit = min(length, fault.truncate_at)
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        sent = 0
        if body:
            with path.open("rb") as fh:
                fh.seek(start)
                while sent < limit:
                    chunk = fh.read(min(_CHUNK, limit - sent))
                    if not chunk:
                        break
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
                        break
                    sent += len(chunk)
        owner.record(RequestRecord(self.command, name, rng, int(status), sent))

    def _error(self, status: int, name: str, rng: str | None) -> None:
        payload = f"{int(status)} {HTTPStatus(status).phrase}: {name}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.server.owner.record(RequestRecord(self.command, name, rng, int(status), 0))


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` → inclusive ``(start, end)``; None if unusable."""
    m = _RANGE.match(value.strip())
    if m is None or size == 0:
        return None
    first, last = m.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last n bytes
        n = int(last)
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or end < start:
        return None
    return start, end


class CogServer(LoopbackServer):
    """Serve the files under ``root`` on ``host:port`` (port 0: a free one) from a thread."""

    what = "CogServer"

    def __init__(self, root: Path | str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"not a folder: {self.root}")
        super().__init__(_Handler, host=host, port=port)
        self.faults: dict[str, Fault] = {}
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()

    # -- addresses (start, stop, port and url come from LoopbackServer) --------------------
    def url_for(self, name: str) -> str:
        """URL of a file under the root."""
        return f"{self.url}/{name.lstrip('/')}"

    def resolve(self, name: str) -> Path | None:
        """The file for a request path, or None if absent or outside the root."""
        if not name:
            return None
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    # -- faults ----------------------------------------------------------------------------
    def fail(self, name: str, status: int = 404) -> None:
        """Answer every request for ``name`` with ``status`` (404 by default)."""
        self.faults[name] = Fault(status=status)

    def truncate(self, name: str, after: int) -> None:
        """Send only the first ``after`` body bytes of every response for ``name``, then hang up."""
        self.faults[name] = Fault(truncate_at=after)

    def clear_faults(self) -> None:
        """Switch every fault off."""
        self.faults.clear()

    # -- the log ---------------------------------------------------------------------------
    def record(self, rec: RequestRecord) -> None:
        """Append one request to the log (called by the handler)."""
        with self._lock:
            self._log.append(rec)

    @property
    def log(self) -> list[RequestRecord]:
        """A copy of every request answered since start or the last ``reset_log``."""
        with self._lock:
            return list(self._log)

    def reset_log(self) -> None:
        """Forget the requests logged so far."""
        with self._lock:
            self._log.clear()

    def bytes_served(self, name: str | None = None) -> int:
        """Body bytes sent in total, or for one file."""
        return sum(r.body_bytes for r in self.log if name is None or r.path == name)

    def requests_for(self, name: str) -> list[RequestRecord]:
        """The logged requests for one file."""
        return [r for r in self.log if r.path == name]
