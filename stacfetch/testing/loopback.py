"""What the loopback test servers share: a threaded HTTP server on 127.0.0.1 and a quiet handler.

:class:`LoopbackServer` binds a :class:`~http.server.ThreadingHTTPServer` (port 0: a free one),
serves it from a daemon thread and stops it again; it is a context manager. Its handler reaches
it as ``self.server.owner``. :class:`QuietHandler` logs nothing, reads a request's body and
sends a whole answer (bytes or JSON) with its ``Content-Length``. Standard library only::

    class _Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_json(200, {"hello": self.server.owner.greeting})

    class Hello(LoopbackServer):
        def __init__(self) -> None:
            super().__init__(_Handler)
            self.greeting = "world"

    with Hello() as hello:
        print(hello.url)  # http://127.0.0.1:PORT
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar

__all__ = ["LoopbackHTTPServer", "LoopbackServer", "QuietHandler"]

_S = TypeVar("_S", bound="LoopbackServer")


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server whose ``owner`` is the :class:`LoopbackServer` running it.

    ``url`` stays valid while the owner stops, for the requests still being answered.
    """

    daemon_threads = True
    owner: Any
    url: str


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that stays quiet and sends whole answers (HTTP/1.1, keep-alive)."""

    protocol_version = "HTTP/1.1"
    server: LoopbackHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Stay quiet: the servers keep their own request logs."""

    def read_body(self) -> bytes:
        """The request's body (``Content-Length`` bytes; empty without one)."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_body(self, status: int, data: bytes, content_type: str) -> None:
        """Answer ``status`` with ``data`` as the whole body."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status: int, doc: Any, content_type: str = "application/json") -> None:
        """Answer ``status`` with ``doc`` as JSON."""
        self.send_body(status, json.dumps(doc).encode(), content_type)


class LoopbackServer:
    """Serves ``handler`` on ``host:port`` from a daemon thread; ``start``/``stop`` or ``with``."""

    what: ClassVar[str] = "the server"  # as error messages name it: "<what> is not running"

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.host = host
        self._handler = handler
        self._bind_port = port
        self._server: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _running(self) -> LoopbackHTTPServer:
        if self._server is None:
            raise RuntimeError(f"{self.what} is not running")
        return self._server

    @property
    def port(self) -> int:
        """The bound port (while running)."""
        return int(self._running().server_address[1])

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:40123`` (while running)."""
        return self._running().url

    def start(self: _S) -> _S:
        """Bind and serve in a daemon thread (nothing if already running); returns self."""
        if self._server is not None:
            return self
        server = LoopbackHTTPServer((self.host, self._bind_port), self._handler)
        server.owner = self
        server.url = f"http://{self.host}:{server.server_address[1]}"
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice or from another thread."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
