"""A hostile loopback server in front of the emulator, and a watchdog that measures a client.

:class:`Hostile` listens on 127.0.0.1 and forwards every request to an
:class:`~stacfetch.testing.emulator.Emulator`, except those of the endpoint made hostile:

==========  ==================================================================================
token       ``silent``: reads the request, never answers
catalog     (the ``/search`` endpoint) ``silent``; ``html`` (a 200 HTML page);
            ``endless-same`` (the same page and the same ``next`` token forever);
            ``endless-new`` (a new ``next`` token and new item ids on every page, forever);
            ``huge-page`` (100,000 features when 100 were asked); ``huge-json`` (200 MB of
            JSON); ``gzip-bomb`` (about 2 MB of gzip that decodes to 2 GiB of JSON whitespace)
process     ``silent``; ``gzip-bomb`` (2 MB of gzip decoding to 2 GiB of zeros);
            ``echo-token-403`` (a 403 whose message repeats the bearer token it was sent)
==========  ==================================================================================

Tokens are opaque aliases (``opaque-<hex>``, not JWT-shaped, so that only the client's
registry of secrets can redact them); the server swaps them for the emulator's tokens when it
forwards. Big bodies are generated while they are sent, never held whole. Every loop is
bounded: the server stops by itself after ``lifetime`` seconds or ``max_requests`` requests,
and a silent answer waits at most until then.

:func:`watch` runs a command and measures it: exit code, seconds, peak RSS (``ru_maxrss``),
the moment a given text first reached stderr; it kills the command past a time or memory bound.
Peak memory is the process's own high-water mark (``VmHWM``, Linux), read every 50 ms.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .emulator import CATALOG_PREFIX, Emulator
from .loopback import LoopbackServer, QuietHandler

__all__ = ["CATALOG_MODES", "PROCESS_MODES", "TOKEN_MODES", "Hostile", "Watched", "gzip_bomb", "watch"]

TOKEN_MODES = ("silent",)
CATALOG_MODES = ("silent", "html", "endless-same", "endless-new", "huge-page", "huge-json", "gzip-bomb")
PROCESS_MODES = ("silent", "gzip-bomb", "echo-token-403")

MIB = 1 << 20
HUGE_PAGE_FEATURES = 100_000
HUGE_JSON_BYTES = 200 * 1000 * 1000
BOMB_BYTES = 2 << 30  # 2 GiB decoded


def gzip_bomb(prefix: bytes, filler: bytes, size: int, suffix: bytes = b"") -> Iterator[bytes]:
    """Yield a gzip stream of ``prefix + filler * n + suffix`` (about ``size`` bytes decoded).

    ``filler`` is one byte value repeated to 1 MiB; each MiB is compressed once (after a full
    flush deflate emits the same bytes for the same input), so the server spends almost
    nothing and never holds more than 1 MiB decoded. The trailer's CRC is computed on the way.
    """
    block = filler[:1] * MIB
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip header: no name, no mtime
    head = raw.compress(prefix) + raw.flush(zlib.Z_FULL_FLUSH)
    crc, total = zlib.crc32(prefix), len(prefix)
    yield head
    first = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    second = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    repeat = second if first == second else None
    yield first
    yield second
    crc, total = zlib.crc32(block, zlib.crc32(block, crc)), total + 2 * MIB
    for _ in range(max(0, size // MIB - 2)):
        yield repeat if repeat is not None else raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
        crc, total = zlib.crc32(block, crc), total + MIB
    yield raw.compress(suffix) + raw.flush(zlib.Z_FINISH)
    crc, total = zlib.crc32(suffix, crc), total + len(suffix)
    yield struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF)


class Hostile(LoopbackServer):
    """A hostile loopback front for an emulator (see the module docstring); a context manager.

    ``hostile.url`` / ``hostile.token_url`` replace the emulator's; ``hostile.requests`` counts
    requests by kind (``token``, ``catalog``, ``search``, ``process``); ``hostile.tokens``
    are the opaque tokens it issued.
    """

    what = "the hostile server"

    def __init__(
        self,
        upstream: Emulator,
        *,
        token: str | None = None,
        catalog: str | None = None,
        process: str | None = None,
        lifetime: float = 180.0,
        max_requests: int = 20_000,
        huge_features: int = HUGE_PAGE_FEATURES,
        huge_bytes: int = HUGE_JSON_BYTES,
        bomb_bytes: int = BOMB_BYTES,
    ) -> None:
        for value, modes, name in ((token, TOKEN_MODES, "token"), (catalog, CATALOG_MODES, "catalog"),
                                   (process, PROCESS_MODES, "process")):
            if value is not None and value not in modes:
                raise ValueError(f"{name} mode must be one of {', '.join(modes)}, got {value!r}")
        super().__init__(_Handler)
        self.upstream = upstream
        self.modes = {"token": token, "catalog": catalog, "process": process}
        self.lifetime = lifetime
        self.max_requests = max_requests
        self.huge_features = huge_features
        self.huge_bytes = huge_bytes
        self.bomb_bytes = bomb_bytes
        self.requests: Counter[str] = Counter()
        self.bytes_sent = 0
        self.tokens: dict[str, str] = {}  # opaque alias -> emulator token
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._template: dict[str, Any] | None = None

    # lifecycle ---------------------------------------------------------------------------
    @property
    def token_url(self) -> str:
        return self.url + self.upstream.token_path

    def start(self) -> Hostile:
        """Serve, and stop by itself after ``lifetime`` seconds; returns self."""
        super().start()
        if self._timer is None:
            self._timer = threading.Timer(self.lifetime, self.stop)
            self._timer.daemon = True
            self._timer.start()
        return self

    def stop(self) -> None:
        """Release every silent answer, then stop serving."""
        self.stopping.set()
        timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        super().stop()

    # helpers for the handler -------------------------------------------------------------
    def kind_of(self, path: str) -> str:
        kind = self.upstream.kind_of(path)
        if kind == "catalog" and path.rstrip("/").endswith("/search"):
            return "search"
        return kind

    def mode_for(self, kind: str) -> str | None:
        if kind == "catalog":  # the landing page, conformance, collections: forwarded
            return None
        return self.modes["catalog"] if kind == "search" else self.modes.get(kind)

    def count(self, kind: str) -> bool:
        """Count a request; False once ``max_requests`` were served (the server stops)."""
        with self._lock:
            self.requests[kind] += 1
            over = sum(self.requests.values()) > self.max_requests
        if over:
            threading.Thread(target=self.stop, daemon=True).start()
        return not over

    def alias(self, real: str) -> str:
        fake = "opaque-" + secrets.token_hex(20)
        with self._lock:
            self.tokens[fake] = real
        return fake

    def real_token(self, fake: str) -> str:
        with self._lock:
            return self.tokens.get(fake, fake)

    def template_page(self, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """The emulator's first page for this search (cached), links pointing at us."""
        with self._lock:
            if self._template is not None:
                return self._template
        status, _, payload = self.forward("POST", CATALOG_PREFIX + "/search", body, headers)
        page = json.loads(payload) if status == 200 else {"type": "FeatureCollection", "features": []}
        with self._lock:
            self._template = page
        return page

    def forward(self, method: str, path: str, body: bytes,
                headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send one request to the emulator; return its status, headers and body (URLs ours)."""
        out = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length",
                                                                      "accept-encoding", "connection")}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            out["authorization"] = "Bearer " + self.real_token(auth.split(" ", 1)[1].strip())
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=out)
            response = conn.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date")]
            status = response.status
        finally:
            conn.close()
        if payload[:1] in (b"{", b"["):
            payload = payload.replace(self.upstream.url.encode(), self.url.encode())
        return status, kept, payload


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.0"  # one request per connection; bodies end at close

    @property
    def hostile(self) -> Hostile:
        owner: Hostile = self.server.owner
        return owner

    def _handle(self) -> None:
        h = self.hostile
        path = urlsplit(self.path).path
        body = self.read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        kind = h.kind_of(path)
        if not h.count(kind):
            return self._plain(503, "text/plain", b"the hostile server has served enough")
        mode = h.mode_for(kind)
        try:
            if mode == "silent":
                h.stopping.wait(h.lifetime)  # holds the connection, never answers
                return None
            if kind == "token":
                return self._token(body, headers)
            if mode is None:
                status, kept, payload = h.forward(self.command, self.path, body, headers)
                return self._send(status, kept, [payload], len(payload))
            return getattr(self, "_" + mode.replace("-", "_"))(body, headers)
        except (BrokenPipeError, ConnectionResetError):
            return None

    do_GET = do_POST = _handle  # noqa: N815

    # answers -----------------------------------------------------------------------------
    def _send(self, status: int, headers: Sequence[tuple[str, str]], chunks: Any,
              length: int | None = None) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        for chunk in chunks:
            if self.hostile.stopping.is_set():
                break
            self.wfile.write(chunk)
            self.hostile.bytes_sent += len(chunk)
        self.wfile.flush()

    def _plain(self, status: int, content_type: str, payload: bytes) -> None:
        self._send(status, [("Content-Type", content_type)], [payload], len(payload))

    def _json(self, doc: Any, status: int = 200, content_type: str = "application/geo+json") -> None:
        self._plain(status, content_type, json.dumps(doc).encode())

    def _token(self, body: bytes, headers: dict[str, str]) -> None:
        status, kept, payload = self.hostile.forward(self.command, self.path, body, headers)
        if status == 200:
            doc = json.loads(payload)
            doc["access_token"] = self.hostile.alias(doc["access_token"])
            payload = json.dumps(doc).encode()
        self._send(status, kept, [payload], len(payload))

    def _html(self, body: bytes, headers: dict[str, str]) -> None:
        page = b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>back soon</body></html>"
        self._plain(200, "text/html; charset=utf-8", page)

    def _page(self, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        page = dict(self.hostile.template_page(body, headers))
        page["links"] = [link for link in page.get("links", []) if link.get("rel") != "next"]
        return page

    def _next_link(self, token: int) -> dict[str, Any]:
        return {"href": self.hostile.url + CATALOG_PREFIX + "/search", "rel": "next",
                "type": "application/geo+json", "method": "POST", "body": {"next": token}}

    def _endless_same(self, body: bytes, headers: dict[str, str]) -> None:
        page = self._page(body, headers)
        page["links"] = [*page["links"], self._next_link(100)]
        self._json(page)

    def _endless_new(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            token = int(json.loads(body or b"{}").get("next") or 0)
        except (ValueError, AttributeError):
            token = 0
        page = self._page(body, headers)
        features = []
        for feature in page.get("features", [])[:1]:
            feature = json.loads(json.dumps(feature))
            feature["id"] = f"{feature['id']}-p{token}"
            features.append(feature)
        page["features"] = features
        page["links"] = [*page["links"], self._next_link(token + 1)]
        self._json(page)

    def _huge_page(self, body: bytes, headers: dict[str, str]) -> None:
        page = self._page(body, headers)
        template = (page.get("features") or [None])[0]
        if template is None:
            return self._json(page)
        head = json.dumps({"type": "FeatureCollection", "links": page["links"]})[:-1].encode() + b', "features": ['
        one = json.dumps({**template, "id": "@@ID@@"}).encode()
        before, after = one.split(b"@@ID@@")
        count = self.hostile.huge_features

        def chunks() -> Iterator[bytes]:
            yield head
            batch: list[bytes] = []
            for i in range(count):
                batch.append(before + f"{template['id']}-{i}".encode() + after)
                if len(batch) == 200 or i == count - 1:
                    yield (b"," if i >= 200 else b"") + b",".join(batch)
                    batch = []
            yield b"]}"

        self._send(200, [("Content-Type", "application/geo+json")], chunks())
        return None

    def _huge_json(self, body: bytes, headers: dict[str, str]) -> None:
        page = self._page(body, headers)
        features = page.get("features", [])[:1]
        head = json.dumps({**page, "features": features})[:-1].encode() + b', "padding": "'
        tail = b'"}'
        pad = max(0, self.hostile.huge_bytes - len(head) - len(tail))

        def chunks() -> Iterator[bytes]:
            yield head
            block = b"x" * MIB
            for _ in range(pad // MIB):
                yield block
            yield b"x" * (pad % MIB)
            yield tail

        self._send(200, [("Content-Type", "application/geo+json")], chunks(), len(head) + pad + len(tail))

    def _gzip_bomb(self, body: bytes, headers: dict[str, str]) -> None:
        if self.hostile.kind_of(urlsplit(self.path).path) == "process":
            chunks = gzip_bomb(b"", b"\x00", self.hostile.bomb_bytes)
            kind = "image/tiff"
        else:
            chunks = gzip_bomb(b'{"type": "FeatureCollection", "features": []', b" ",
                               self.hostile.bomb_bytes, b"}")
            kind = "application/geo+json"
        self._send(200, [("Content-Type", kind), ("Content-Encoding", "gzip")], chunks)

    def _echo_token_403(self, body: bytes, headers: dict[str, str]) -> None:
        token = headers.get("authorization", "").split(" ", 1)[-1]
        self._json({"error": {"status": 403, "reason": "Forbidden", "code": "COMMON_INSUFFICIENT_PERMISSIONS",
                              "message": f"Token {token} has no access to this collection"}},
                   status=403, content_type="application/json")


# -------------------------------------------------------------------------------- watchdog
@dataclass
class Watched:
    """What :func:`watch` saw of one command."""

    code: int | None  # None when killed by the watchdog
    seconds: float
    peak_mb: float  # peak resident memory (VmHWM of the process, read every 50 ms)
    stdout: str
    stderr: str
    killed: str | None = None  # why the watchdog killed it
    marks: dict[str, float] = field(default_factory=dict)  # text -> seconds until first on stderr
    limits: str = ""  # /proc/<pid>/limits read while it ran (after ``limits_after`` s)

    def describe(self) -> str:
        return (f"exit {self.code} after {self.seconds:.1f} s, peak {self.peak_mb:.0f} MB"
                + (f", killed: {self.killed}" if self.killed else "")
                + f"\nstderr (last 1500 chars):\n{self.stderr[-1500:]}")


def _memory_mb(pid: int) -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of a running process in MB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/status").read_text()
        found = {k: int(v) / 1024 for k, v in re.findall(r"(VmRSS|VmHWM):\s+(\d+) kB", text)}
        return found.get("VmRSS", 0.0), found.get("VmHWM", 0.0)
    return 0.0, 0.0


def watch(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    seconds: float = 60.0,
    max_mb: float = 1500.0,
    marks: Sequence[str] = (),
    limits_after: float | None = None,
    preexec: Any = None,
    folder: Path | None = None,
) -> Watched:
    """Run ``command``; kill it past ``seconds`` or ``max_mb`` of resident memory.

    ``marks``: texts (regular expressions) whose first appearance on stderr is timed.
    ``limits_after``: read ``/proc/<pid>/limits`` that many seconds after the start.
    """
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.monotonic()
            proc = subprocess.Popen(list(command), stdout=out, stderr=err, env=env, cwd=cwd,
                                    preexec_fn=preexec, start_new_session=True)
            seen: dict[str, float] = {}
            killed = None
            limits = ""
            status = None
            peak = 0.0
            while True:
                # not ru_maxrss: after fork and exec Linux reports at least the parent's (the
                # test process's) resident size; VmHWM belongs to the new program alone
                rss, hwm = _memory_mb(proc.pid)
                peak = max(peak, hwm)
                pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                now = time.monotonic() - started
                if limits_after is not None and not limits and now >= limits_after:
                    with contextlib.suppress(OSError):
                        limits = Path(f"/proc/{proc.pid}/limits").read_text()
                if marks:
                    text = err_path.read_text(errors="replace")
                    for mark in marks:
                        if mark not in seen and re.search(mark, text):
                            seen[mark] = now
                if killed is None and now > seconds:
                    killed = f"still running after {seconds:.0f} s"
                elif killed is None and rss > max_mb:
                    killed = f"resident memory above {max_mb:.0f} MB"
                if killed is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
        stderr = err_path.read_text(errors="replace")
        for mark in marks:
            if mark not in seen and re.search(mark, stderr):
                seen[mark] = elapsed
        return Watched(
            code=None if killed else proc.returncode,
            seconds=elapsed,
            peak_mb=peak,
            stdout=out_path.read_text(errors="replace"),
            stderr=stderr,
            killed=killed,
            marks=seen,
            limits=limits,
        )

