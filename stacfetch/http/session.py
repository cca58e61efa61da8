"""The one session every stacfetch request goes through.

:func:`open_session` returns a :class:`ServiceSession` (a ``requests.Session``) that

* puts credentials on every *prepared* request through a pluggable ``session.auth``
  (:mod:`.tokens`): OAuth2 bearer tokens for the configured API and token hosts, or a STAC
  API's own headers for its origin, or nothing (the token endpoint's session);
* refuses plain HTTP to anything but loopback, and the dead Copernicus Open Access Hub,
  before any connection is made (:mod:`.urls`);
* retries inside :meth:`ServiceSession.send`: 429 waits what ``Retry-After`` says in
  **milliseconds**, 5xx and broken connections back off exponentially, a 401 fetches a fresh
  token once, other 4xx are returned untouched (:mod:`.retry`);
* shares one :class:`RateLimiter` between every worker thread and session of a run.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError, ContentDecodingError, SSLError
from requests.exceptions import ConnectionError as RequestsConnectionError
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import SSLError as Urllib3SSLError

from .. import __version__
from ..config import Settings
from ..errors import ConfigError, NetworkError, ServiceError, ShutDownHubError
from .ratelimit import RateLimiter
from .redact import redact, redacting_logger, register_secret
from .retry import (
    TRANSIENT_ERRORS,
    RetryPolicy,
    is_name_resolution_failure,
    is_retried_status,
    parse_retry_after,
    replayable,
)
from .tokens import (
    BearerAuth,
    ClientCredentialsToken,
    HeaderAuth,
    ReadyToken,
    refuse_foreign_redirect,
)
from .urls import OLD_HUB_HINT, OLD_HUB_MESSAGE, check_destination, strip_query

log = redacting_logger(__name__)

__all__ = [
    "DEFAULT_TIMEOUT",
    "USER_AGENT",
    "ServiceSession",
    "open_public_session",
    "open_service",
    "open_session",
]

USER_AGENT = f"stacfetch/{__version__}"
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 120.0)  # (connect, read) seconds
Timeout = tuple[float, float] | float


class Authorizer(Protocol):
    """What :class:`ServiceSession` asks of its ``auth`` (see :mod:`.tokens`)."""

    def authorize(self, request: requests.PreparedRequest) -> str | None: ...

    def unauthorized(self, response: requests.Response, sent: str, refreshed: bool) -> bool: ...


@dataclass
class _Attempts:
    """What one :meth:`ServiceSession.send` has seen so far."""

    url: str
    method: str
    replayable: bool
    failures: int = 0  # 5xx and broken connections
    rate_limited: int = 0  # 429s
    headerless_429: int = 0  # 429s without a usable Retry-After
    refreshed: bool = False  # a fresh token was fetched after a 401


class ServiceSession(requests.Session):
    """The session: pool, timeouts, User-Agent, limiter, retries and a pluggable ``auth``.

    ``redirect_guard(source, target)`` may refuse a redirect by raising (the token
    endpoint's session refuses one to another origin: it would re-send the client secret).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        limiter: RateLimiter,
        retry: RetryPolicy,
        auth: Authorizer | None = None,
        token_source: ClientCredentialsToken | ReadyToken | None = None,
        redirect_guard: Callable[[str, str], None] | None = None,
        pool_size: int = 10,
        timeout: Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.limiter = limiter
        self.retry_policy = retry
        self.default_timeout = timeout
        self.auth = auth  # type: ignore[assignment]
        self.token_source = token_source
        self.redirect_guard = redirect_guard
        self.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(
            pool_connections=max(1, pool_size), pool_maxsize=max(1, pool_size), max_retries=0
        )
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def __repr__(self) -> str:
        s = self.settings
        if self.token_source is None:
            return f"<ServiceSession provider={s.provider} url={s.stac_url or s.token_url}>"
        return f"<ServiceSession provider={s.provider} base_url={s.base_url} client_id={s.client_id}>"

    def stats(self) -> dict[str, Any]:
        """Counters: requests, retries by reason, seconds slept (shared limiter), token fetches."""
        snapshot = self.limiter.stats()
        return {
            "requests": snapshot.requests,
            "retries": dict(snapshot.retries),
            "slept_seconds": snapshot.slept_seconds,
            "requests_per_minute": snapshot.requests_per_minute,
            "token_fetches": getattr(self.token_source, "fetches", 0),
        }

    def close(self) -> None:
        """Close the pool, and the token endpoint's session if there is one."""
        super().close()
        close = getattr(self.token_source, "close", None)
        if close is not None:
            close()

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target and self.redirect_guard is not None:
            self.redirect_guard(resp.url, requests.compat.urljoin(resp.url, target))
        return target

    # -- the send loop ----------------------------------------------------------------------
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send ``request`` under the policy: refuse, authorise, pace, retry, decode refusals."""
        url = request.url or ""
        check_destination(url)
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        state = _Attempts(url=url, method=request.method or "", replayable=replayable(request))
        while True:
            attempt = _fresh_copy(request)
            self.limiter.acquire()
            sent_at = time.monotonic()
            token = self._authorize(attempt)
            try:
                response = self._transmit(attempt, kwargs)
            except SSLError as exc:
                raise self._network_error(url, exc, tls=True) from None
            except TRANSIENT_ERRORS as exc:
                self._after_broken_connection(exc, state)
                continue
            if self._retry_after_status(response, state, sent_at=sent_at, token=token):
                continue
            _refuse_dead_hub(url, response)
            return response

    def _authorize(self, request: requests.PreparedRequest) -> str | None:
        """Apply credentials to one attempt; return the bearer token sent, if any."""
        authorize = getattr(self.auth, "authorize", None)
        return authorize(request) if authorize is not None else None

    def _transmit(self, attempt: requests.PreparedRequest, kwargs: dict[str, Any]) -> requests.Response:
        response = super().send(attempt, **{**kwargs, "stream": True})
        if not kwargs.get("stream"):
            _read_body(response)
        return response

    def _retry_after_status(
        self, response: requests.Response, state: _Attempts, *, sent_at: float, token: str | None
    ) -> bool:
        """True when ``response`` was dealt with (closed, waited for) and is to be retried."""
        status = response.status_code
        if status == 429:
            self._wait_for_rate_limit(response, state, sent_at)
            return True
        if is_retried_status(status):
            self._back_off_server_error(response, state)
            return True
        if status == 401 and token is not None:
            return self._refresh_after_401(response, state, token)
        return False

    def _after_broken_connection(self, exc: BaseException, state: _Attempts) -> None:
        """A reset, a cut body, a read timeout: back off and retry, or raise NetworkError."""
        policy = self.retry_policy
        state.failures += 1
        if not state.replayable or state.failures >= policy.max_attempts or is_name_resolution_failure(exc):
            raise self._network_error(state.url, exc, attempts=state.failures) from None
        delay = policy.backoff(state.failures)
        log.warning("%s %s failed (%s); retry %d/%d in %.1f s", state.method, strip_query(state.url),
                    type(exc).__name__, state.failures, policy.max_attempts - 1, delay)
        self.limiter.backoff(delay, "connection")

    def _wait_for_rate_limit(self, response: requests.Response, state: _Attempts, sent_at: float) -> None:
        """A 429: every worker waits what the service asked (+ jitter), or RateLimitError."""
        policy = self.retry_policy
        state.rate_limited += 1
        asked = parse_retry_after(response.headers.get("Retry-After"))
        too_long = asked is not None and asked > policy.max_retry_after
        if asked is None:  # no usable header: our default, doubling, capped
            asked = min(policy.default_retry_after * 2**state.headerless_429, policy.max_retry_after)
            state.headerless_429 += 1
        if state.rate_limited > policy.max_rate_limit_retries or too_long or not state.replayable:
            why = (
                f"the service asked to wait {asked:.1f} s, more than the "
                f"{policy.max_retry_after:.0f} s stacfetch waits at once"
                if too_long
                else f"still rate limited after {state.rate_limited - 1} retries"
            )
            raise ServiceError.from_response(
                response,
                hint=f"{why}; lower the number of workers or try again later "
                "(monthly quotas reset on the 1st)",
            )
        wait = asked * (1 + random.uniform(0, policy.rate_limit_jitter))
        log.warning("rate limited (HTTP 429) on %s; the service asked to wait %.3f s, "
                    "waiting %.3f s (all workers)", strip_query(state.url), asked, wait)
        response.close()
        self.limiter.pause(wait, sent_at=sent_at, asked=asked)

    def _back_off_server_error(self, response: requests.Response, state: _Attempts) -> None:
        """A retried 5xx: back off and retry, or ServiceError after ``max_attempts``."""
        policy = self.retry_policy
        state.failures += 1
        if state.failures >= policy.max_attempts or not state.replayable:
            raise ServiceError.from_response(
                response,
                hint=f"the service failed {state.failures} times in a row; it may be down "
                "or overloaded, try again later",
            )
        delay = policy.backoff(state.failures)
        log.warning("HTTP %d from %s; retry %d/%d in %.1f s", response.status_code,
                    strip_query(state.url), state.failures, policy.max_attempts - 1, delay)
        response.close()
        self.limiter.backoff(delay, "5xx")

    def _refresh_after_401(self, response: requests.Response, state: _Attempts, token: str) -> bool:
        """A 401 to our token: retry once with a fresh one, or raise what the authoriser says."""
        if not (self.auth.unauthorized(response, token, state.refreshed) and state.replayable):  # type: ignore[union-attr]
            return False
        state.refreshed = True
        response.close()
        self.limiter.count_retry("401-refresh")
        return True

    def _network_error(self, url: str, exc: BaseException, *, attempts: int = 1, tls: bool = False) -> NetworkError:
        host = urlsplit(url).hostname or url
        variable = _settings_var_for(self.settings, host.lower())
        if tls:
            hint = (
                f"the TLS connection to {host} failed; check the URL in {variable} and, behind a "
                "corporate proxy, REQUESTS_CA_BUNDLE"
            )
        else:
            hint = (
                f"check your network connection and proxy settings (HTTPS_PROXY), and the URL in "
                f"{variable}"
            )
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return NetworkError(
            f"could not reach {host}{tries}: {_short_reason(exc)}", hint=hint, url=strip_query(url)
        )


def _fresh_copy(request: requests.PreparedRequest) -> requests.PreparedRequest:
    attempt = request.copy()
    if getattr(request, "_body_position", None) is not None:
        requests.utils.rewind_body(attempt)
    return attempt


def _read_body(response: requests.Response) -> None:
    """Read a whole body in one call (requests reads 10 KiB at a time: ~2x the CPU for a
    large GeoTIFF), raising requests' own exceptions so that the retry loop sees them."""
    try:
        response._content = response.raw.read(decode_content=True) or b""  # noqa: SLF001
    except ProtocolError as exc:  # a connection cut mid-body, or a short body
        raise ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        raise ContentDecodingError(exc) from exc
    except ReadTimeoutError as exc:
        raise RequestsConnectionError(exc) from exc
    except Urllib3SSLError as exc:
        raise SSLError(exc) from exc
    finally:
        response._content_consumed = True  # noqa: SLF001
        response.raw.release_conn()


def _refuse_dead_hub(url: str, response: requests.Response) -> None:
    """The old hub's ``/dhus`` answering 200 with an HTML page is its shutdown notice."""
    if response.status_code == 200 and "/dhus" in urlsplit(url).path and _is_html(response):
        host = urlsplit(url).hostname or url
        raise ShutDownHubError(
            OLD_HUB_MESSAGE.format(host=host) + " (it answered with an HTML page)",
            hint=OLD_HUB_HINT,
            status=200,
            url=url,
        )


def _is_html(response: requests.Response) -> bool:
    return "html" in response.headers.get("Content-Type", "").lower()


def _short_reason(exc: BaseException) -> str:
    inner: Any = exc.args[0] if exc.args else exc
    reason = getattr(inner, "reason", None) or inner
    text = redact(str(reason))
    text = re.sub(r"<urllib3\.[^>]*>:?\s*", "", text)
    return " ".join(text.split())[:240] or type(exc).__name__


def _settings_var_for(settings: Settings | None, host: str) -> str:
    if settings is None:
        return "the service URL"
    if settings.source == "assets":
        return "STACFETCH_STAC_URL"
    names = []
    if (urlsplit(settings.base_url or "").hostname or "").lower() == host:
        names.append("SH_BASE_URL")
    if (urlsplit(settings.token_url or "").hostname or "").lower() == host:
        names.append("SH_TOKEN_URL")
    return "/".join(names) or "SH_BASE_URL/SH_TOKEN_URL"


# -- opening ----------------------------------------------------------------------------------
def open_public_session(
    settings: Settings,
    *,
    limiter: RateLimiter | None = None,
    max_attempts: int = 6,
    retry: RetryPolicy | None = None,
    pool_size: int = 10,
    timeout: Timeout = DEFAULT_TIMEOUT,
    redact_logs: bool = True,
) -> ServiceSession:
    """The retrying session without OAuth for a ``cog`` provider's STAC API.

    ``settings.stac_headers`` go only to the STAC API's own origin.
    """
    if not settings.stac_url:
        raise ConfigError("no STAC API URL is set", hint="set STACFETCH_STAC_URL")
    check_destination(settings.stac_url)
    if redact_logs:
        register_secret(*settings.secrets)
    return ServiceSession(
        settings, limiter=limiter or RateLimiter(), retry=_policy(retry, max_attempts),
        auth=HeaderAuth(settings.stac_headers or {}, settings.stac_url),
        pool_size=pool_size, timeout=timeout,
    )


def open_session(
    settings: Settings,
    *,
    limiter: RateLimiter | None = None,
    max_attempts: int = 6,
    retry: RetryPolicy | None = None,
    pool_size: int = 10,
    timeout: Timeout = DEFAULT_TIMEOUT,
    redact_logs: bool = True,
) -> ServiceSession:
    """The authenticated, retrying session for ``settings``.

    ``limiter``: share one :class:`RateLimiter` between all sessions/threads of a run (a new
    unpaced one if None). ``max_attempts`` overrides ``retry.max_attempts``. ``pool_size``:
    connections kept per host — at least the number of worker threads. Nothing is sent
    until the first request (the token is fetched lazily). For a ``cog`` provider (no OAuth)
    this is :func:`open_public_session`. ``redact_logs``: register the settings' secrets so
    that stacfetch's errors and loggers mask them.
    """
    if settings.source == "assets":
        return open_public_session(
            settings, limiter=limiter, max_attempts=max_attempts, retry=retry,
            pool_size=pool_size, timeout=timeout, redact_logs=redact_logs,
        )
    if not settings.base_url or not settings.token_url:
        raise ConfigError(
            "no service URL is set"
            + (" (the sandbox emulator is not running)" if settings.is_sandbox else ""),
            hint="set STACFETCH_PROVIDER, or SH_BASE_URL and SH_TOKEN_URL",
        )
    for url in (settings.base_url, settings.token_url):
        check_destination(url)
    if redact_logs:
        register_secret(*settings.secrets)
    limiter = limiter or RateLimiter()
    policy = _policy(retry, max_attempts)
    source = _token_source(settings, limiter=limiter, retry=policy, timeout=timeout)
    return ServiceSession(
        settings, limiter=limiter, retry=policy, token_source=source,
        auth=BearerAuth(source, [settings.base_url, settings.token_url]),
        pool_size=pool_size, timeout=timeout,
    )


def _policy(retry: RetryPolicy | None, max_attempts: int) -> RetryPolicy:
    return replace(retry or RetryPolicy(), max_attempts=max(1, max_attempts))


def _token_source(
    settings: Settings, *, limiter: RateLimiter, retry: RetryPolicy, timeout: Timeout
) -> ClientCredentialsToken | ReadyToken:
    if settings.client_id and settings.client_secret:
        token_session = ServiceSession(
            settings, limiter=limiter, retry=retry, redirect_guard=refuse_foreign_redirect,
            pool_size=2, timeout=timeout,
        )
        return ClientCredentialsToken(settings, session=token_session)
    if settings.access_token:
        return ReadyToken(settings.access_token, settings)
    raise ConfigError(
        "no credentials: SH_CLIENT_ID/SH_CLIENT_SECRET or SH_ACCESS_TOKEN is needed",
        hint="create an OAuth client for your deployment and set SH_CLIENT_ID and SH_CLIENT_SECRET",
    )


@contextlib.contextmanager
def open_service(settings: Settings) -> Iterator[Settings]:
    """Yield settings with service URLs; for the sandbox, run the emulator for the block."""
    if not settings.is_sandbox:
        yield settings
        return
    # imported here: the emulator (numpy, the synthetic scenes) is needed by the sandbox only
    from ..testing.emulator import Emulator

    with Emulator() as emulator:
        log.info("sandbox: emulator running at %s (synthetic data)", emulator.url)
        yield settings.with_urls(emulator.url, emulator.token_url)
