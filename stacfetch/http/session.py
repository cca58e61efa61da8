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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import SSLError, Timeout
from urllib3.exceptions import ReadTimeoutError

from .. import __version__
from ..config import DEFAULT_TIMEOUT_SECONDS, Settings
from ..errors import (
    ConfigError,
    DeadlineError,
    NetworkError,
    RateLimitError,
    ServiceError,
    ShutDownHubError,
)
from .body import (
    DEFAULT_BODY_LIMIT,
    ERROR_BODY_LIMIT,
    Deadline,
    body_limit,
    current_limit,
    discard_body,
    read_body,
    read_whole,
)
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
    "DEFAULT_BODY_LIMIT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMEOUT_SECONDS",
    "USER_AGENT",
    "ServiceSession",
    "body_limit",
    "read_body",
    "timeout_pair",
    "open_public_session",
    "open_service",
    "open_session",
]

USER_AGENT = f"stacfetch/{__version__}"
CONNECT_TIMEOUT = 10.0  # at most, for the connection itself
DEFAULT_TIMEOUT: tuple[float, float] = (CONNECT_TIMEOUT, DEFAULT_TIMEOUT_SECONDS)  # (connect, read)
WAITING_NOTICE = 10.0  # a line on stderr when a response has not started after this long
TimeoutValue = tuple[float, float] | float


def timeout_pair(seconds: float) -> tuple[float, float]:
    """``(connect, read)`` for ``--timeout SECONDS``: the read timeout is how long a response
    may take to start arriving (and any pause in it); connecting takes at most 10 s of it."""
    return (min(CONNECT_TIMEOUT, seconds), seconds)


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
    timeouts: int = 0  # attempts that got no answer in time
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
        timeout: TimeoutValue | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.limiter = limiter
        self.retry_policy = retry
        self.default_timeout = timeout if timeout is not None else timeout_pair(
            float(getattr(settings, "timeout", DEFAULT_TIMEOUT_SECONDS)))
        self._waits = _WaitNotices()
        self.auth = auth  # type: ignore[assignment]
        self.token_source = token_source
        self.redirect_guard = redirect_guard
        self.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(
            pool_connections=max(1, pool_size), pool_maxsize=max(1, pool_size), max_retries=0
        )
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        watch = getattr(limiter, "watch", None)  # a limiter hears every answer (PU spent)
        if watch is not None:
            watch(self)

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
            "pu_per_minute": getattr(snapshot, "pu_per_minute", None),
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
        if target:  # requests reads a redirect's body whole before following it: never read it
            discard_body(resp)
        if target and self.redirect_guard is not None:
            self.redirect_guard(resp.url, requests.compat.urljoin(resp.url, target))
        return target

    # -- the send loop ----------------------------------------------------------------------
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send ``request`` under the policy: refuse, authorise, pace, retry, decode refusals.

        Bounded: each attempt waits at most the read timeout for its answer to start (a line
        is logged while it waits), a request gives up after ``max_timeouts`` such silences
        and after ``deadline_factor`` read timeouts in all (its body too: a streamed response
        carries that :class:`~.body.Deadline` for :func:`read_body`), a body is read with the
        :func:`body_limit` in force, an error's body (4xx/5xx, streamed or not) is cut at
        ``ERROR_BODY_LIMIT``, and a redirect's body is never read (see :mod:`.body`).
        """
        url = request.url or ""
        check_destination(url)
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        read_timeout = _read_timeout(kwargs["timeout"])
        state = _Attempts(url=url, method=request.method or "", replayable=replayable(request))
        deadline = Deadline.after(read_timeout * self.retry_policy.deadline_factor)
        limit = current_limit()
        while True:
            attempt = _fresh_copy(request)
            self.limiter.acquire()
            sent_at = time.monotonic()
            if deadline.passed():  # between tries: after 429s, say so
                raise self._timeout_error(url, read_timeout, state, total=True, between_tries=True)
            token = self._authorize(attempt)
            try:
                with self._waits.waiting(url, read_timeout):
                    response = super().send(attempt, **{**kwargs, "stream": True})
                deadline.attach(response)  # a streamed body read later keeps to it
                if response.status_code >= 400:  # streamed or not: an error's words, cut
                    read_whole(response, (ERROR_BODY_LIMIT, "an error"), deadline, cut=True)
                elif not kwargs.get("stream"):
                    read_whole(response, limit, deadline)
            except SSLError as exc:
                raise self._network_error(url, exc, tls=True) from None
            except DeadlineError:
                raise self._timeout_error(url, read_timeout, state, total=True) from None
            except TRANSIENT_ERRORS as exc:
                self._after_broken_connection(exc, state, read_timeout)
                continue
            if self._retry_after_status(response, state, sent_at=sent_at, token=token):
                continue
            _refuse_dead_hub(url, response)
            return response

    def _authorize(self, request: requests.PreparedRequest) -> str | None:
        """Apply credentials to one attempt; return the bearer token sent, if any."""
        authorize = getattr(self.auth, "authorize", None)
        return authorize(request) if authorize is not None else None

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

    def _after_broken_connection(self, exc: BaseException, state: _Attempts, read_timeout: float) -> None:
        """A reset, a cut body, a read timeout: back off and retry, or raise NetworkError."""
        policy = self.retry_policy
        if _is_timeout(exc):
            state.timeouts += 1
            if not state.replayable or state.timeouts >= policy.max_timeouts:
                raise self._timeout_error(state.url, read_timeout, state) from None
            delay = policy.backoff(state.timeouts)
            log.warning("%s did not answer within %g s; retry %d/%d in %.1f s",
                        strip_query(state.url), read_timeout, state.timeouts,
                        policy.max_timeouts - 1, delay)
            self.limiter.backoff(delay, "timeout")
            return
        state.failures += 1
        if not state.replayable or state.failures >= policy.max_attempts or is_name_resolution_failure(exc):
            raise self._network_error(state.url, exc, attempts=state.failures) from None
        delay = policy.backoff(state.failures)
        log.warning("%s %s failed (%s); retry %d/%d in %.1f s", state.method, strip_query(state.url),
                    type(exc).__name__, state.failures, policy.max_attempts - 1, delay)
        self.limiter.backoff(delay, "connection")

    def _timeout_error(self, url: str, read_timeout: float, state: _Attempts, *,
                       total: bool = False, between_tries: bool = False) -> ServiceError:
        """The service did not answer in time (``total``: the request's whole deadline passed);
        a deadline passed ``between_tries`` after 429s: rate limited (RateLimitError)."""
        host = urlsplit(url).hostname or url
        tries = state.timeouts + state.failures + state.rate_limited
        if total and between_tries and state.rate_limited:
            limit = read_timeout * self.retry_policy.deadline_factor
            return RateLimitError(
                f"{host} still rate limited the request to {strip_query(url)} after "
                f"{state.rate_limited} retries (HTTP 429): it took more than {limit:g} s in all and was given up",
                hint="lower the number of workers or try again later (monthly quotas reset on the 1st); "
                "to wait longer, give --timeout SECONDS (in Python: timeout=)",
                status=429, url=strip_query(url),
            )
        if total:
            limit = read_timeout * self.retry_policy.deadline_factor
            text = (f"{host} did not answer within {read_timeout:g} s: the request to {strip_query(url)} "
                    f"took more than {limit:g} s in all and was given up")
        else:
            text = (f"{host} did not answer within {read_timeout:g} s"
                    + (f" ({tries} attempts)" if tries > 1 else "") + f": {strip_query(url)}")
        return NetworkError(
            text,
            hint="the service may be overloaded or down: try again later; to wait longer, give "
            "--timeout SECONDS (in Python: timeout=)",
            url=strip_query(url),
        )

    def _wait_for_rate_limit(self, response: requests.Response, state: _Attempts, sent_at: float) -> None:
        """A 429: every worker waits what the service asked (+ jitter), or RateLimitError."""
        policy = self.retry_policy
        state.rate_limited += 1
        asked = parse_retry_after(response.headers.get("Retry-After"))
        too_long = asked is not None and asked > policy.max_retry_after
        if asked is None:  # no usable header: our default, doubling, capped
            asked = min(policy.default_retry_after * 2**state.headerless_429, policy.max_retry_after)
            state.headerless_429 += 1
        too_many = (policy.max_rate_limit_retries is not None
                    and state.rate_limited > policy.max_rate_limit_retries
                    or state.headerless_429 > policy.max_headerless_rate_limits)
        if _over_capacity(response):
            raise ServiceError.from_response(
                response, hint="one request costs more processing units than your budget holds; "
                "give your account's PU per minute with --pu-limit (pu_limit=) so that stacfetch "
                "requests smaller tiles")
        if too_many or too_long or not state.replayable:
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


def _over_capacity(response: requests.Response) -> bool:
    """A 429 no wait can cure: the request alone costs more than the whole budget."""
    try:
        return "RATE_LIMIT_TOKEN_COUNT_EXCEEDS_CAPACITY" in response.text[:2000]
    except (requests.RequestException, UnicodeError):
        return False


def _fresh_copy(request: requests.PreparedRequest) -> requests.PreparedRequest:
    attempt = request.copy()
    if getattr(request, "_body_position", None) is not None:
        requests.utils.rewind_body(attempt)
    return attempt


def _read_timeout(timeout: TimeoutValue) -> float:
    return float(timeout[1] if isinstance(timeout, tuple) else timeout)


def _is_timeout(exc: BaseException) -> bool:
    """A connect or read timeout, also when requests wrapped urllib3's in a ConnectionError."""
    if isinstance(exc, Timeout):
        return True
    inner = exc.args[0] if exc.args else None
    text = repr(inner)
    return isinstance(inner, ReadTimeoutError) or "ReadTimeoutError" in text or "ConnectTimeoutError" in text


class _WaitNotices:
    """Logs one line per attempt whose answer has not started after ``WAITING_NOTICE`` s (or
    half its timeout, if shorter), so that a silent service is visible while it is waited
    for. One daemon thread per session, started on first need, ending when idle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[float, float, str]] = {}  # id -> (notice at, timeout, url)
        self._thread: threading.Thread | None = None
        self._next = 0

    @contextlib.contextmanager
    def waiting(self, url: str, read_timeout: float) -> Iterator[None]:
        notice_at = time.monotonic() + min(WAITING_NOTICE, read_timeout / 2)
        with self._lock:
            self._next += 1
            key = self._next
            self._pending[key] = (notice_at, read_timeout, url)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="stacfetch-wait", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def _watch(self) -> None:
        idle_since = time.monotonic()
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self._lock:
                due = [(k, v) for k, v in self._pending.items() if v[0] <= now]
                for key, (_, read_timeout, url) in due:
                    self._pending[key] = (float("inf"), read_timeout, url)
                if self._pending:
                    idle_since = now
                elif now - idle_since > 5.0:
                    self._thread = None
                    return
            for _, (_, read_timeout, url) in due:
                log.warning("still waiting for %s to answer (giving up after %g s without an answer)",
                            strip_query(url), read_timeout)


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
    timeout: TimeoutValue | None = None,
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
    timeout: TimeoutValue | None = None,
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
    settings: Settings, *, limiter: RateLimiter, retry: RetryPolicy, timeout: TimeoutValue | None
) -> ClientCredentialsToken | ReadyToken:
    if settings.client_id and settings.client_secret:
        # the token endpoint (the identity service) has its own limit: its requests count
        # against none of the API's budgets, and its 429s pause only token fetches
        uncounted = getattr(limiter, "uncounted", None)
        token_limiter = uncounted() if uncounted is not None else limiter
        token_session = ServiceSession(
            settings, limiter=token_limiter, retry=retry,  # type: ignore[arg-type]
            redirect_guard=refuse_foreign_redirect, pool_size=2, timeout=timeout,
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
