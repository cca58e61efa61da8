"""The authenticated session, over real HTTP against the emulator (no mocked HTTP layer)."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from stacfetch.config import Settings
from stacfetch.errors import (
    EXIT_AUTH,
    AuthError,
    InsecureTransportError,
    NetworkError,
    RateLimitError,
    ServiceError,
    ShutDownHubError,
    TokenExpiredError,
)
from stacfetch.http import (
    USER_AGENT,
    RateLimiter,
    RetryPolicy,
    install_redaction,
    open_session,
    parse_retry_after,
    redact,
)
from stacfetch.testing.emulator import Emulator, Faults

CLIENT_ID = "stacfetch-test-client"
SECRET = "s3cr3t-Value/with+odd=chars"
CDSE_ID = "cdse-test-client"
CDSE_SECRET = "cdse-s3cr3t-value-0123"
FAST = RetryPolicy(backoff_initial=0.05, backoff_max=0.2)


def settings_for(
    emu: Any,
    *,
    client_id: str | None = CLIENT_ID,
    secret: str | None = SECRET,
    token: str | None = None,
    provider: str = "sentinelhub",
) -> Settings:
    return Settings(
        provider=provider,
        base_url=emu.url,
        token_url=emu.token_url,
        client_id=client_id,
        client_secret=secret,
        access_token=token,
    )


def settle(emu: Any) -> Any:
    """The emulator's log once requests still in flight have reached it."""
    return emu.log.settle()


@pytest.fixture
def emu() -> Iterator[Any]:
    with Emulator(deployment="sentinelhub", clients={CLIENT_ID: SECRET}) as server:
        yield server


def landing(emu: Any) -> str:
    """A catalog endpoint that needs a token (the landing page itself is public)."""
    return emu.url + "/api/v1/catalog/1.0.0/collections"


def search_url(emu: Any) -> str:
    return emu.url + "/api/v1/catalog/1.0.0/search"


SEARCH_BODY = {
    "collections": ["sentinel-2-l2a"],
    "datetime": "2022-06-01T00:00:00Z/2022-06-30T23:59:59Z",
    "bbox": [13.3, 52.4, 13.5, 52.6],
    "limit": 5,
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail the test if anything resolves or connects to a non-loopback address."""
    attempts: list[Any] = []
    real_getaddrinfo = socket.getaddrinfo
    real_create = socket.create_connection

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", "::1"):
            attempts.append(host)
            raise AssertionError(f"a name lookup for {host} was attempted")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded_create(address: Any, *args: Any, **kwargs: Any) -> Any:
        if address[0] not in ("127.0.0.1", "localhost", "::1"):
            attempts.append(address)
            raise AssertionError(f"a connection to {address} was attempted")
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", guarded_create)
    return attempts


# --------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------
def test_token_fetched_once_with_credentials_in_body(emu: Any) -> None:
    with open_session(settings_for(emu)) as session:
        for _ in range(3):
            assert session.get(landing(emu)).status_code == 200
        assert session.stats()["token_fetches"] == 1
    assert settle(emu).count(kind="token") == 1
    token_request = [e for e in settle(emu) if e.kind == "token"][0]
    assert token_request.method == "POST"
    assert token_request.status == 200
    catalog_requests = [e for e in settle(emu) if e.kind == "catalog"]
    assert all(e.headers.get("User-Agent") == USER_AGENT for e in catalog_requests)
    assert all("Authorization" in e.headers for e in catalog_requests)


def test_refresh_before_expiry_during_a_long_search(emu: Any) -> None:
    """A 2 s token, 0.25 s per request, 12 paged requests: refreshed mid-way, nothing fails."""
    emu.faults.token_lifetime = 2
    emu.faults.latency_ms = 250
    body = dict(SEARCH_BODY, limit=1, datetime="2022-01-01T00:00:00Z/2022-12-31T23:59:59Z")
    with open_session(settings_for(emu)) as session:
        for page in range(12):
            response = session.post(
                search_url(emu), json=dict(body, **({"next": page} if page else {}))
            )
            assert response.status_code == 200
        stats = session.stats()
    assert settle(emu).count(kind="token") >= 2
    assert settle(emu).count(kind="catalog", status=401) == 0
    assert stats["retries"].get("401-refresh", 0) == 0


def test_unexpected_401_refreshes_once(emu: Any) -> None:
    emu.faults.fail_next = [401]
    with open_session(settings_for(emu)) as session:
        assert session.get(landing(emu)).status_code == 200
        assert session.stats()["retries"] == {"401-refresh": 1}
    assert settle(emu).count(kind="token") == 2


def test_token_endpoint_5xx_is_retried(emu: Any) -> None:
    emu.faults.only_kinds = {"token"}
    emu.faults.fail_next = [503, Faults.RESET]
    with open_session(settings_for(emu), retry=FAST) as session:
        assert session.get(landing(emu)).status_code == 200
        assert session.stats()["retries"] == {"5xx": 1, "connection": 1}
    assert settle(emu).count(kind="token") == 3


def test_persistent_401_is_an_auth_error_with_the_servers_words(emu: Any) -> None:
    emu.faults.fail_next = [401, 401, 401]
    with open_session(settings_for(emu)) as session, pytest.raises(AuthError) as info:
        session.get(landing(emu))
    err = info.value
    assert err.exit_code == EXIT_AUTH
    assert "You are not authorized" in str(err)
    assert "SH_CLIENT_ID" in err.hint and "STACFETCH_PROVIDER" in err.hint
    assert settle(emu).count(kind="catalog", status=401) == 2  # the original and one retry


def test_wrong_secret_is_a_clear_auth_error(emu: Any) -> None:
    settings = settings_for(emu, secret="not-the-right-secret")
    with open_session(settings) as session, pytest.raises(AuthError) as info:
        session.get(landing(emu))
    err = info.value
    assert err.exit_code == EXIT_AUTH
    assert f"refused client id {CLIENT_ID!r}" in err.message
    assert emu.token_url in err.message
    assert "Invalid client" in err.message
    assert "SH_CLIENT_ID" in err.hint and "SH_CLIENT_SECRET" in err.hint
    assert "deployment-specific" in err.hint and "STACFETCH_PROVIDER" in err.hint
    assert settle(emu).count(kind="catalog") == 0  # no API call with no token
    assert "not-the-right-secret" not in str(err)


def test_cdse_client_against_sentinelhub_gets_the_deployment_hint() -> None:
    with (
        Emulator(deployment="cdse", clients={CDSE_ID: CDSE_SECRET}) as cdse,
        Emulator(deployment="sentinelhub", clients={CLIENT_ID: SECRET}) as sh,
    ):
        # CDSE client credentials at the Sentinel Hub token endpoint
        session = open_session(settings_for(sh, client_id=CDSE_ID, secret=CDSE_SECRET))
        with session, pytest.raises(AuthError) as info:
            session.get(landing(sh))
        assert "deployment-specific" in info.value.hint
        assert "CDSE" in info.value.hint

        # a CDSE token sent to the Sentinel Hub API
        token = requests.post(
            cdse.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": CDSE_ID,
                "client_secret": CDSE_SECRET,
            },
            timeout=10,
        ).json()["access_token"]
        session = open_session(settings_for(sh, client_id=None, secret=None, token=token))
        with session, pytest.raises(AuthError) as info:
            session.get(landing(sh))
        assert isinstance(info.value, TokenExpiredError)
        assert "You are not authorized" in str(info.value)
        assert "deployment-specific" in info.value.hint
        assert token not in str(info.value)


def _jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_expired_ready_token_fails_before_any_request(emu: Any) -> None:
    token = _jwt({"exp": int(time.time()) - 60, "azp": "someone"})
    session = open_session(settings_for(emu, client_id=None, secret=None, token=token))
    with session, pytest.raises(TokenExpiredError) as info:
        session.get(landing(emu))
    assert "expired" in info.value.message
    assert "SH_CLIENT_ID" in info.value.hint and "fresh SH_ACCESS_TOKEN" in info.value.hint
    assert len(settle(emu)) == 0


def test_ready_token_is_sent_as_is() -> None:
    with Emulator(deployment="sentinelhub", clients={CLIENT_ID: SECRET}) as sh:
        token = requests.post(
            sh.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
            },
            timeout=10,
        ).json()["access_token"]
        with open_session(settings_for(sh, client_id=None, secret=None, token=token)) as session:
            assert session.get(landing(sh)).status_code == 200
        assert settle(sh).count(kind="token") == 1  # only the test's own


# --------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [
        pytest.param([429], 1.5, 1.7, id="one-429"),
        pytest.param([429, 429], 3.0, 3.35, id="two-429s"),
    ],
)
def test_429_waits_retry_after_milliseconds(
    emu: Any, failures: list[int], low: float, high: float
) -> None:
    """Retry-After 1500 (ms) means 1.5 s: never read as 1500 s, never longer than asked (+10 %)."""
    emu.faults.retry_after_ms = 1500
    with open_session(settings_for(emu)) as session:
        session.get(landing(emu))  # token and connection first
        emu.faults.fail_next = list(failures)
        started = time.monotonic()
        response = session.get(landing(emu))
        elapsed = time.monotonic() - started
        stats = session.stats()
    assert response.status_code == 200
    assert stats["retries"] == {"429": len(failures)}
    assert low <= stats["slept_seconds"] <= high
    assert low <= elapsed < high + 0.5
    assert settle(emu).count(kind="catalog", status=429) == len(failures)


def test_429_without_usable_wait_gives_up_with_the_servers_message(emu: Any) -> None:
    emu.faults.retry_after_ms = 600_000  # ten minutes: above the 120 s stacfetch waits at once
    emu.faults.fail_next = [429]
    with open_session(settings_for(emu)) as session, pytest.raises(RateLimitError) as info:
        session.get(landing(emu))
    assert "You have exceeded your rate limit" in str(info.value)
    assert info.value.status == 429
    assert "600.0 s" in info.value.hint


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(500, id="500"),
        pytest.param(503, id="503"),
        pytest.param(Faults.DROP, id="dropped-mid-body"),
        pytest.param(Faults.RESET, id="reset-before-answer"),
    ],
)
def test_transient_failures_are_retried(emu: Any, fault: int) -> None:
    with open_session(settings_for(emu), retry=FAST) as session:
        session.get(landing(emu))
        emu.faults.fail_next = [fault, fault]
        response = session.post(search_url(emu), json=SEARCH_BODY)
        stats = session.stats()
    assert response.status_code == 200
    reason = "5xx" if fault >= 500 else "connection"
    assert stats["retries"] == {reason: 2}
    searches = [e for e in settle(emu) if e.kind == "catalog" and e.method == "POST"]
    assert len(searches) == 3
    assert searches[-1].body == SEARCH_BODY  # the body was sent again, whole


def test_file_like_body_is_rewound_on_retry(emu: Any) -> None:
    payload = json.dumps(SEARCH_BODY).encode()
    with open_session(settings_for(emu), retry=FAST) as session:
        session.get(landing(emu))
        emu.faults.fail_next = [503]
        response = session.post(
            search_url(emu), data=io.BytesIO(payload), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200
    posts = [e for e in settle(emu) if e.kind == "catalog" and e.method == "POST"]
    assert [p.body for p in posts] == [SEARCH_BODY, SEARCH_BODY]


def test_attempts_exhausted_is_a_service_error_with_the_servers_words(emu: Any) -> None:
    with open_session(settings_for(emu), retry=FAST, max_attempts=3) as session:
        session.get(landing(emu))
        emu.faults.fail_next = [503, 503, 503, 503]
        with pytest.raises(ServiceError) as info:
            session.post(search_url(emu), json=SEARCH_BODY)
    err = info.value
    assert err.status == 503
    assert "HTTP 503" in err.message
    assert "Service temporarily unavailable" in err.message  # the emulator's own words
    assert settle(emu).count(kind="catalog", status=503) == 3


def test_other_4xx_are_not_retried(emu: Any) -> None:
    with open_session(settings_for(emu), retry=FAST) as session:
        response = session.post(
            search_url(emu), json={"collections": ["sentinel-2-l2a"], "limit": "x"}
        )
        assert 400 <= response.status_code < 500
        assert session.stats()["retries"] == {}
    assert settle(emu).count(kind="catalog") == 1


def test_connection_refused_names_the_host_and_what_to_check() -> None:
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        provider="sentinelhub",
        base_url=base,
        token_url=base + "/token",
        client_id=CLIENT_ID,
        client_secret=SECRET,
    )
    with (
        open_session(settings, retry=FAST, max_attempts=2) as session,
        pytest.raises(NetworkError) as info,
    ):
        session.get(base + "/api/v1/catalog/1.0.0/")
    err = info.value
    assert "127.0.0.1" in err.message and "after 2 attempts" in err.message
    assert "SH_TOKEN_URL" in err.hint and "proxy" in err.hint
    assert session.stats()["retries"] == {"connection": 1}


# --------------------------------------------------------------------------------------
# Shared rate limiter
# --------------------------------------------------------------------------------------
def test_one_429_slows_every_thread(emu: Any) -> None:
    emu.faults.latency_ms = 40
    emu.faults.retry_after_ms = 1000
    limiter = RateLimiter(adaptive=False)
    settings = settings_for(emu)
    with (
        open_session(settings, limiter=limiter) as first,
        open_session(settings, limiter=limiter) as second,
    ):
        first.get(landing(emu))
        second.get(landing(emu))
        emu.faults.fail_next = [429]
        barrier = threading.Barrier(2)
        elapsed: dict[str, float] = {}

        def work(name: str, session: Any) -> None:
            barrier.wait()
            started = time.monotonic()
            for _ in range(8):
                assert session.get(landing(emu)).status_code == 200
            elapsed[name] = time.monotonic() - started

        threads = [
            threading.Thread(target=work, args=("first", first)),
            threading.Thread(target=work, args=("second", second)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # without the 429 each thread needs ~8 x 40 ms; with it, both wait out the 1 s pause
    assert elapsed["first"] >= 1.0 and elapsed["second"] >= 1.0
    stats = limiter.stats()
    assert stats.retries == {"429": 1}
    assert stats.slept_seconds >= 1.5  # both threads slept most of the second


def test_pacing_to_a_known_rate_avoids_429s(emu: Any) -> None:
    emu.faults.rate_limit_per_minute = 120
    limiter = RateLimiter(requests_per_minute=120)
    with open_session(settings_for(emu), limiter=limiter) as session:
        for _ in range(6):
            assert session.get(landing(emu)).status_code == 200
    assert settle(emu).count(status=429) == 0
    # six searches counted; the token request is the identity service's, no API budget counts it
    assert limiter.stats().requests == 6 and len(emu.log) == 7


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        pytest.param("3398", 3.398, id="milliseconds"),
        pytest.param("1500", 1.5, id="1500ms"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(None, None, id="missing"),
        pytest.param("soon", None, id="garbage"),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


# --------------------------------------------------------------------------------------
# Where credentials may go
# --------------------------------------------------------------------------------------
def test_plain_http_to_a_remote_host_is_refused_before_connecting(no_network: list[Any]) -> None:
    remote = Settings(
        provider="sentinelhub",
        base_url="http://services.stacfetch-test.invalid",
        token_url="http://services.stacfetch-test.invalid/token",
        client_id=CLIENT_ID,
        client_secret=SECRET,
    )
    with pytest.raises(InsecureTransportError):
        open_session(remote)


def test_plain_http_request_from_a_session_is_refused(emu: Any, no_network: list[Any]) -> None:
    with open_session(settings_for(emu)) as session, pytest.raises(InsecureTransportError) as info:
        session.get("http://data.stacfetch-test.invalid/file.tif")
    assert "plain HTTP" in info.value.message
    assert no_network == []
    assert len(settle(emu)) == 0  # no token was fetched for it either


@pytest.mark.parametrize("host", ["scihub.copernicus.eu", "apihub.copernicus.eu"])
def test_open_access_hub_is_refused_without_connecting(
    emu: Any, no_network: list[Any], host: str
) -> None:
    with open_session(settings_for(emu)) as session, pytest.raises(ShutDownHubError) as info:
        session.get(f"https://{host}/dhus/search?q=*")
    assert "October 2023" in info.value.message
    assert "cdse" in info.value.hint
    dead = Settings(
        provider="sentinelhub",
        base_url=f"https://{host}/apihub",
        token_url=emu.token_url,
        client_id=CLIENT_ID,
        client_secret=SECRET,
    )
    with pytest.raises(ShutDownHubError):
        open_session(dead)
    assert no_network == []


class _Recorder(BaseHTTPRequestHandler):
    """A loopback server that records headers; /redirect sends the client elsewhere."""

    seen: list[dict[str, str]] = []
    target = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append({"path": self.path, **dict(self.headers)})
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", type(self).target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/busy") and len(type(self).seen) == 1:
            body = b'{"error": {"status": 429, "message": "You have exceeded your rate limit"}}'
            self.send_response(429)  # and no Retry-After header
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/dhus"):
            body = b"<html><body>Copernicus Sentinel Data is now available on the Copernicus Data Space Ecosystem</body></html>"
            content_type = "text/html"
        else:
            body, content_type = b"{}", "application/json"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def recorders() -> Iterator[Any]:
    """Start loopback recording servers on demand: ``url, handler = recorders()``."""
    servers: list[ThreadingHTTPServer] = []

    def start() -> tuple[str, Any]:
        handler = type("Recorder", (_Recorder,), {"seen": [], "target": ""})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_token_goes_only_to_the_configured_hosts(emu: Any, recorders: Any) -> None:
    other, handler = recorders()
    with open_session(settings_for(emu)) as session:
        assert session.get(other + "/elsewhere").status_code == 200
        assert settle(emu).count(kind="token") == 0  # no token fetched for a foreign host
        assert session.get(landing(emu)).status_code == 200
        assert session.get(other + "/elsewhere").status_code == 200
    assert len(handler.seen) == 2
    assert all("Authorization" not in seen for seen in handler.seen)


def test_redirect_away_from_the_api_host_drops_the_token(emu: Any, recorders: Any) -> None:
    api, api_handler = recorders()  # plays the configured API host; redirects elsewhere
    elsewhere, elsewhere_handler = recorders()
    settings = Settings(
        provider="sentinelhub",
        base_url=api,
        token_url=emu.token_url,
        client_id=CLIENT_ID,
        client_secret=SECRET,
    )
    api_handler.target = elsewhere + "/landed"
    with open_session(settings) as session:
        response = session.get(api + "/redirect")
    assert response.status_code == 200 and response.history
    assert api_handler.seen[0]["Authorization"].startswith("Bearer ")
    assert [s["path"] for s in elsewhere_handler.seen] == ["/landed"]
    assert "Authorization" not in elsewhere_handler.seen[0]


def test_html_page_from_a_dhus_url_is_the_dead_hub(emu: Any, recorders: Any) -> None:
    other, _ = recorders()
    with open_session(settings_for(emu)) as session, pytest.raises(ShutDownHubError):
        session.get(other + "/dhus/search?q=*")


def test_429_without_retry_after_waits_the_documented_default(recorders: Any) -> None:
    other, handler = recorders()
    settings = Settings(
        provider="sentinelhub",
        base_url=other,
        token_url=other + "/token",
        client_id=CLIENT_ID,
        client_secret=SECRET,
    )
    policy = RetryPolicy(default_retry_after=0.3)
    with open_session(settings, retry=policy, redact_logs=False) as session:
        session.auth = None  # the recorder has no token endpoint; this is about the wait
        started = time.monotonic()
        assert session.get(other + "/busy").status_code == 200
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.0
    assert len(handler.seen) == 2


def test_loopback_http_allowance_is_not_global(emu: Any) -> None:
    import requests_oauthlib.oauth2_session as module

    with open_session(settings_for(emu)) as session:
        session.get(landing(emu))
    assert "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ
    assert module.is_secure_transport("http://127.0.0.1:8000/token") is False
    assert module.is_secure_transport("https://example.com/token") is True


# --------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------
def test_secrets_never_reach_logs_errors_or_reprs(
    emu: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu.faults.fail_next = [401, 503]
    with open_session(settings_for(emu), retry=FAST) as session:
        session.get(landing(emu))
        session.post(search_url(emu), json=SEARCH_BODY)
        token = session.token_source.get()
        texts = [
            repr(session),
            repr(session.auth),
            repr(session.token_source),
            str(session.stats()),
        ]
        emu.faults.fail_next = [401, 401]
        with pytest.raises(AuthError) as info:
            session.get(landing(emu))
        texts.append(str(info.value))
    wrong = settings_for(emu, secret="wrong-" + SECRET)
    with open_session(wrong) as session, pytest.raises(AuthError) as info:
        session.get(landing(emu))
    texts.append(str(info.value))
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "Obtained token" in logged or "access_token" in logged  # DEBUG output was captured
    for secret in (SECRET, token, "wrong-" + SECRET):
        assert secret not in logged
        assert all(secret not in text for text in texts)


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        pytest.param(
            "Authorization: Bearer abc.def-ghi", (), "Authorization: Bearer ***", id="bearer"
        ),
        pytest.param(
            "{'access_token': 'xyz123', 'x': 1}", (), "{'access_token': '***', 'x': 1}", id="dict"
        ),
        pytest.param('{"access_token":"xyz123"}', (), '{"access_token":"***"}', id="json"),
        pytest.param("a=1&client_secret=p%2Fq&b=2", (), "a=1&client_secret=***&b=2", id="form"),
        pytest.param(
            "failed with hunter22 inside", ("hunter22",), "failed with *** inside", id="known"
        ),
        pytest.param("enc s%2Fx%2By here", ("s/x+y",), "enc *** here", id="url-encoded"),
        pytest.param("nothing to hide", ("hunter22",), "nothing to hide", id="clean"),
    ],
)
def test_redact(text: str, secrets: tuple[str, ...], expected: str) -> None:
    assert redact(text, secrets) == expected


@pytest.fixture
def restored_record_factory() -> Iterator[None]:
    """install_redaction is the process owner's (the CLI's) call: undo it after the test."""
    factory = logging.getLogRecordFactory()
    handlers = {h: list(h.filters) for h in logging.getLogger().handlers}
    yield
    logging.setLogRecordFactory(factory)
    for handler, filters in handlers.items():
        handler.filters[:] = filters


@pytest.mark.usefixtures("restored_record_factory")
def test_redaction_covers_loggers_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    install_redaction(["a-very-secret-value"])
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3.connectionpool").debug("body %s", "a-very-secret-value")
    logging.getLogger("requests_oauthlib.oauth2_session").debug(
        "Request body was %s", "client_secret=other-thing&grant_type=client_credentials"
    )
    assert "a-very-secret-value" not in caplog.text
    assert "other-thing" not in caplog.text
    assert "client_secret=***" in caplog.text
