"""A local Sentinel Hub emulator: OAuth2 token, Catalog (STAC) and Process API over real HTTP.

Usage::

    from stacfetch.testing.emulator import Emulator, Faults

    with Emulator(deployment="cdse", faults=Faults(rate_429=0.1)) as emu:
        emu.url          # http://127.0.0.1:PORT  (SH_BASE_URL)
        emu.token_url    # emu.url + /auth/realms/CDSE/protocol/openid-connect/token
        emu.faults.fail_next = [503]
        emu.log.count(kind="process", status=200)

Endpoints (see ``/work/shared/reference/sentinelhub-api.md``):

* ``POST <token_url>`` — client credentials in the form body (or HTTP Basic). JWT-looking
  HS256 tokens signed per deployment: a token of one deployment is refused by the other (401
  ``COMMON_UNAUTHORIZED``), expired tokens too.
* ``/api/v1/catalog/1.0.0/`` — landing page and ``/conformance`` (public), ``/collections``,
  ``/collections/{id}``, ``/collections/{id}/items[/{itemId}]``, ``/queryables`` and
  ``GET|POST /search`` (bearer token required). See :mod:`.stac` and :mod:`.grid`.
* ``POST /api/v1/process`` — see :mod:`.render` and :mod:`.evalscript` for the accepted subset.
  A 200 comes with ``Transfer-Encoding: chunked`` (no Content-Length), as the real Process API
  streams its rasters, and ``x-processingunits-spent`` from :mod:`.units`.

The account (:class:`~stacfetch.testing.quota.Account`, ``emu.account``) adds up the PU charged
and refuses requests with 403 once a monthly quota set on it is used up.

Faults (:class:`~stacfetch.testing.faults.Faults`) can be switched at any time on ``emu.faults``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from ..config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from . import grid, stac
from . import render as render_mod
from .faults import Decision, Faults
from .quota import Account
from .responses import ApiError, catalog_error, fault_error, sh_error, unauthorized

log = logging.getLogger(__name__)

CATALOG_PREFIX = "/api/v1/catalog/1.0.0"
PROCESS_PATH = "/api/v1/process"
REALMS = {"sentinelhub": "main", "cdse": "CDSE"}
_GEOJSON = "application/geo+json"
_JSON = "application/json"

__all__ = ["Emulator", "Faults", "RequestLog", "RequestRecord"]


# ------------------------------------------------------------------------------ request log
@dataclass
class RequestRecord:
    """One request as the emulator saw and answered it."""

    method: str
    path: str
    query: str
    kind: str  # token | catalog | process | other
    status: int  # 0 when the connection was reset without an answer
    body: Any  # parsed JSON, or the token form with client_secret redacted, or None
    headers: dict[str, str]  # Authorization redacted
    bytes_sent: int  # body bytes actually written
    duration: float  # seconds
    fault: str | None = None  # which injected fault answered, if any
    started: float = field(default=0.0)  # time.time()


class RequestLog:
    """Thread-safe list of RequestRecord, with counting helpers."""

    def __init__(self) -> None:
        self._items: list[RequestRecord] = []
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._items.append(record)

    def records(self, kind: str | None = None, status: int | None = None,
                method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """Records matching every given criterion (``path``: exact or prefix ending in '*')."""
        with self._lock:
            items = list(self._items)
        out = []
        for r in items:
            if kind is not None and r.kind != kind:
                continue
            if status is not None and r.status != status:
                continue
            if method is not None and r.method != method.upper():
                continue
            if path is not None and not (r.path.startswith(path[:-1]) if path.endswith("*") else r.path == path):
                continue
            out.append(r)
        return out

    def count(self, kind: str | None = None, status: int | None = None,
              method: str | None = None, path: str | None = None) -> int:
        return len(self.records(kind, status, method, path))

    def last(self, kind: str | None = None) -> RequestRecord | None:
        found = self.records(kind)
        return found[-1] if found else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def settle(self, interval: float = 0.05) -> RequestLog:
        """Wait until no new request has been logged for ``interval`` seconds; return self.

        Requests still in flight (e.g. left by a killed client) reach the log a moment later.
        """
        count = -1
        while count != len(self):
            count = len(self)
            time.sleep(interval)
        return self

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[RequestRecord]:
        with self._lock:
            return iter(list(self._items))

    def __getitem__(self, index: int) -> RequestRecord:
        with self._lock:
            return self._items[index]


# ----------------------------------------------------------------------------------- tokens
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(deployment: str) -> bytes:
    return hashlib.sha256(f"stacfetch-emulator-{deployment}".encode()).digest()


def _sign(deployment: str, signing_input: str) -> str:
    return _b64(hmac.new(_key(deployment), signing_input.encode(), hashlib.sha256).digest())


# ---------------------------------------------------------------------------------- emulator
@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length


def _json_answer(status: int, doc: Any, content_type: str = _JSON,
                 headers: dict[str, str] | None = None) -> _Answer:
    return _Answer(status, json.dumps(doc).encode(), content_type, headers or {})


class Emulator:
    """The emulator; a context manager that serves on 127.0.0.1 (a free port by default)."""

    def __init__(
        self,
        *,
        port: int = 0,
        deployment: str = "sentinelhub",
        clients: dict[str, str] | None = None,
        token_lifetime: float = 3600.0,
        faults: Faults | None = None,
        seed: int = 0,
        account: Account | None = None,
    ) -> None:
        if deployment not in REALMS:
            raise ValueError(f"deployment must be one of {', '.join(REALMS)}, got {deployment!r}")
        self.deployment = deployment
        self.realm = REALMS[deployment]
        self.clients = dict(clients) if clients is not None else {SANDBOX_CLIENT_ID: SANDBOX_CLIENT_SECRET}
        self.token_lifetime = token_lifetime
        self.faults = faults if faults is not None else Faults()
        self.faults.reseed(seed)
        self.seed = seed
        self.account = account if account is not None else Account()
        self.log = RequestLog()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._searcher = stac.Searcher(deployment)

    # lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() or use it as a context manager")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_path(self) -> str:
        return f"/auth/realms/{self.realm}/protocol/openid-connect/token"

    @property
    def token_url(self) -> str:
        return self.url + self.token_path

    @property
    def catalog_url(self) -> str:
        return self.url + CATALOG_PREFIX + "/"

    @property
    def process_url(self) -> str:
        return self.url + PROCESS_PATH

    def start(self) -> Emulator:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"emulator-{self.deployment}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._conn_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<Emulator {self.deployment} {where}>"

    # helpers for tests -------------------------------------------------------------------
    def issue_token(self, client_id: str = SANDBOX_CLIENT_ID, lifetime: float | None = None) -> str:
        """Mint an access token in-process (same as the token endpoint would)."""
        return self._mint(client_id, self._lifetime() if lifetime is None else lifetime)[0]

    def items_for(
        self, bbox: Sequence[float] | BaseGeometry, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """Full items the Catalog holds for ``bbox`` (lon/lat, or a geometry) in ``[start, end]``.

        Same order as search pages (newest first, then id). Naive datetimes are taken as UTC.
        """
        geom = bbox if isinstance(bbox, BaseGeometry) else box(*bbox)
        start, end = (d if d.tzinfo else d.replace(tzinfo=timezone.utc) for d in (start, end))
        root = self.catalog_url if self._server is not None else f"http://127.0.0.1:0{CATALOG_PREFIX}/"
        return [grid.item_json(a, root) for a in grid.search(geom, start, end, self.deployment)]

    def render(self, body: dict[str, Any], *, accept: str | None = None) -> render_mod.Rendered:
        """Render a Process API body in-process (the endpoint's code path); raises ApiError."""
        return render_mod.render(body, accept=accept, deployment=self.deployment)

    def units_of(self, kind: str, body: Any, accept: str | None = None) -> float | None:
        """Processing units a request costs, when a PU limit is set (None: not a valid Process body)."""
        if kind != "process" or self.faults.pu_limit_per_minute is None:
            return None
        try:
            return render_mod.processing_units(render_mod.parse_request(body, accept))
        except ApiError:
            return None

    # tokens ------------------------------------------------------------------------------
    def _lifetime(self) -> float:
        override = self.faults.token_lifetime
        return float(self.token_lifetime if override is None else override)

    def _mint(self, client_id: str, lifetime: float) -> tuple[str, float]:
        now = time.time()
        base = self.url if self._server is not None else "http://127.0.0.1"
        header = {"alg": "HS256", "typ": "JWT", "kid": f"emulator-{self.deployment}"}
        payload = {
            "exp": round(now + lifetime, 3),
            "iat": int(now),
            "jti": str(uuid.uuid4()),
            "iss": f"{base}/auth/realms/{self.realm}",
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)),
            "typ": "Bearer",
            "azp": client_id,
            "scope": "email profile",
            "clientId": client_id,
        }
        signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
        return signing_input + "." + _sign(self.deployment, signing_input), lifetime

    def verify_token(self, token: str) -> dict[str, Any] | None:
        """The token's claims if this deployment issued it and it is still valid, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = _sign(self.deployment, parts[0] + "." + parts[1])
        if not hmac.compare_digest(expected, parts[2]):
            return None
        try:
            claims = json.loads(_unb64(parts[1]))
        except ValueError:
            return None
        if not str(claims.get("iss", "")).endswith(f"/auth/realms/{self.realm}"):
            return None
        if float(claims.get("exp", 0)) <= time.time():
            return None
        if claims.get("azp") not in self.clients:
            return None
        return claims

    def _token_endpoint(self, method: str, headers: dict[str, str], raw: bytes) -> _Answer:
        if method != "POST":
            return _json_answer(405, {"error": "invalid_request", "error_description": "HTTP method not allowed"})
        form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:].strip()).decode().partition(":")
                client_id, secret = unquote(user), unquote(pw)
            except (ValueError, UnicodeDecodeError):
                pass
        grant = form.get("grant_type")
        if not grant:
            return _json_answer(400, {"error": "invalid_request", "error_description": "Missing form parameter: grant_type"})
        if grant != "client_credentials":
            return _json_answer(400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"})
        if not client_id or self.clients.get(client_id) != secret:
            return _json_answer(401, {"error": "invalid_client",
                                      "error_description": "Invalid client or Invalid client credentials"})
        lifetime = self._lifetime()
        token, _ = self._mint(client_id, lifetime)
        expires_in: float | int = int(lifetime) if float(lifetime).is_integer() else lifetime
        return _json_answer(200, {
            "access_token": token,
            "expires_in": expires_in,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "email profile",
        }, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _require_token(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or self.verify_token(auth[7:].strip()) is None:
            raise unauthorized()

    # routing -----------------------------------------------------------------------------
    def kind_of(self, path: str) -> str:
        if path == self.token_path:
            return "token"
        if path == CATALOG_PREFIX or path.startswith(CATALOG_PREFIX + "/"):
            return "catalog"
        if path.rstrip("/") == PROCESS_PATH:
            return "process"
        return "other"

    def _route(self, method: str, path: str, query: str, headers: dict[str, str], raw: bytes,
               body: Any) -> _Answer:
        kind = self.kind_of(path)
        if kind == "token":
            return self._token_endpoint(method, headers, raw)
        if kind == "catalog":
            return self._catalog(method, path[len(CATALOG_PREFIX):], query, headers, body, raw)
        if kind == "process":
            if method != "POST":
                raise sh_error(405, f"Method {method} is not allowed", "COMMON_METHOD_NOT_ALLOWED")
            self._require_token(headers)
            self.account.admit("process")
            if body is None:
                raise sh_error(400, "The request body must be JSON", "COMMON_BAD_PAYLOAD")
            result = self.render(body, accept=headers.get("accept"))
            self.account.charge(result.processing_units)
            pu = repr(float(result.processing_units))
            return _Answer(200, result.content, result.media_type, {"x-processingunits-spent": pu},
                           chunked=True)
        raise sh_error(404, f"No such endpoint: {path}", "COMMON_NOT_FOUND")

    def _catalog(self, method: str, sub: str, query: str, headers: dict[str, str], body: Any,
                 raw: bytes) -> _Answer:
        root = self.catalog_url
        sub = sub or "/"
        if sub in ("/", "/conformance") and "authorization" in headers:
            self._require_token(headers)  # public, but a presented token must be valid
        if sub == "/":
            return _json_answer(200, stac.landing_page(self.deployment, root))
        if sub == "/conformance":
            return _json_answer(200, {"conformsTo": stac.conformance(self.deployment)})
        self._require_token(headers)
        self.account.admit("catalog")
        parts = [p for p in sub.split("/") if p]
        if parts == ["search"]:
            if method == "POST":
                if raw and body is None:
                    raise catalog_error(400, "The request body is not valid JSON")
                params = stac.parse_search(body or {}, self.deployment)
            elif method == "GET":
                params = stac.parse_search(dict(parse_qsl(query, keep_blank_values=True)),
                                           self.deployment, from_query=True)
            else:
                raise catalog_error(405, f"Method {method} is not allowed")
            page = stac.search_page(self._searcher, params, root, method=method, query=query)
            return _json_answer(200, page, _GEOJSON)
        if method != "GET":
            raise catalog_error(405, f"Method {method} is not allowed")
        if parts == ["collections"]:
            return _json_answer(200, stac.collections(self.deployment, root))
        if parts == ["queryables"] or (len(parts) == 3 and parts[0] == "collections" and parts[2] == "queryables"):
            return _json_answer(200, stac.queryables(root), "application/schema+json")
        if len(parts) == 2 and parts[0] == "collections":
            return _json_answer(200, stac.collection(self.deployment, root, parts[1]))
        if len(parts) == 3 and parts[0] == "collections" and parts[2] == "items":
            stac.collection(self.deployment, root, parts[1])  # 404 if unknown
            q = dict(parse_qsl(query, keep_blank_values=True))
            q["collections"] = parts[1]
            params = stac.parse_search(q, self.deployment, from_query=True)
            page = stac.search_page(self._searcher, params, root, method="GET", query=query)
            return _json_answer(200, page, _GEOJSON)
        if len(parts) == 4 and parts[0] == "collections" and parts[2] == "items":
            stac.collection(self.deployment, root, parts[1])
            acq = grid.find(parts[3], self.deployment) if parts[1] == grid.COLLECTION else None
            if acq is None:
                raise catalog_error(404, "Item not found.")
            return _json_answer(200, grid.item_json(acq, root), _GEOJSON)
        raise catalog_error(404, f"No such catalog endpoint: {sub}")

    # one request, start to finish ----------------------------------------------------------
    def _answer(self, method: str, path: str, query: str, headers: dict[str, str], raw: bytes,
                body: Any, decision: Decision) -> _Answer:
        try:
            if decision.redirect:
                target = decision.redirect.rstrip("/") + path + (f"?{query}" if query else "")
                return _Answer(307, b"", headers={"Location": target})
            if decision.status is not None:
                raise fault_error(decision.status, decision.retry_after_ms or self.faults.retry_after_ms,
                                  decision.code)
            return self._route(method, path, query, headers, raw, body)
        except ApiError as err:
            return _json_answer(err.status, err.body, headers=err.headers)
        except Exception:  # a bug in the emulator: answer like the service's 500
            log.error("emulator error on %s %s\n%s", method, path, traceback.format_exc())
            err = sh_error(500, "Internal emulator error (see the emulator's log)", "COMMON_EXCEPTION")
            return _json_answer(500, err.body)


_REDACT = ("authorization", "cookie", "proxy-authorization")
_CHUNK = 64 * 1024  # chunk size of chunked answers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stacfetch-emulator/1"
    timeout = 60  # idle keep-alive connections are closed after this many seconds

    @property
    def emu(self) -> Emulator:
        return self.server.emulator  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        with self.emu._conn_lock:
            self.emu._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.emu._conn_lock:
            self.emu._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length)) if int(length) > 0 else b""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _handle(self) -> None:
        started, t0 = time.time(), time.monotonic()
        emu = self.emu
        split = urlsplit(self.path)
        path, query = split.path, split.query
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = self._read_body()
        kind = emu.kind_of(path)
        body: Any = None
        logged_body: Any = None
        if raw and kind != "token":
            try:
                body = json.loads(raw)
                logged_body = body
            except ValueError:
                body = None
        elif raw:
            form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            logged_body = {k: ("***" if k == "client_secret" else v) for k, v in form.items()}
        shown = {k: ("***" if k in _REDACT else v) for k, v in self.headers.items()}
        if "Authorization" in self.headers:
            scheme = self.headers["Authorization"].split(" ", 1)[0]
            shown["Authorization"] = f"{scheme} ***"

        decision = emu.faults.decide(kind, units=emu.units_of(kind, body, headers.get("accept")))
        if decision.delay_s > 0:
            time.sleep(decision.delay_s)
        # The record is logged before the answer leaves, so a client that has its response
        # always finds it in the log; bytes and duration are completed after sending.
        record = RequestRecord(
            method=self.command, path=path, query=query, kind=kind, status=0,
            body=logged_body, headers=shown, bytes_sent=0, duration=0.0,
            fault=decision.label, started=started,
        )
        if decision.reset:
            record.duration = time.monotonic() - t0
            emu.log.append(record)
            self._shut()
            return
        answer = emu._answer(self.command, path, query, headers, raw, body, decision)
        payload = answer.body
        if decision.truncate and answer.status == 200:
            payload = payload[:emu.faults.truncation_point(len(payload))]
        record.status = answer.status
        record.bytes_sent = len(payload) // 2 if decision.drop else len(payload)
        record.duration = time.monotonic() - t0
        emu.log.append(record)
        sent = self._send(answer, payload, drop=decision.drop)
        record.bytes_sent = sent
        record.duration = time.monotonic() - t0

    def _send(self, answer: _Answer, payload: bytes, *, drop: bool) -> int:
        """Write the response; with ``drop`` write half the body and cut the connection."""
        chunked = answer.chunked and self.command != "HEAD"
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(payload)))
            for k, v in answer.headers.items():
                self.send_header(k, v)
            if drop:
                self.send_header("Connection", "keep-alive")
            self.end_headers()
            if self.command == "HEAD":
                return 0
            body = payload[: len(payload) // 2] if drop else payload
            if chunked:
                for start in range(0, len(body), _CHUNK):
                    piece = body[start:start + _CHUNK]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                if not drop:
                    self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(body)
            self.wfile.flush()
            if drop:
                self._shut()
            return len(body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
            return 0

    def _shut(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle  # noqa: N815
