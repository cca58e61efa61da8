"""The one authenticated HTTP session every stacfetch request goes through.

``open_session(settings)`` returns a :class:`ServiceSession` (a ``requests.Session``) that

* adds ``Authorization: Bearer <token>`` to every *prepared* request through ``session.auth``
  (so pystac-client's ``prepare_request()`` + ``send()`` path carries it too), only for the
  configured API and token hosts;
* fetches tokens with OAuth2 client credentials (requests-oauthlib), refreshing them 120 s
  before expiry (half-life for short tokens), one refresh at a time across threads, and
  once more after an unexpected 401; or uses a ready ``SH_ACCESS_TOKEN`` that cannot be
  refreshed;
* refuses plain HTTP to anything but loopback and the dead Copernicus Open Access Hub,
  before any connection is made;
* retries inside :meth:`ServiceSession.send`: 429 waits what ``Retry-After`` says in
  **milliseconds** (this service's unit), 5xx and broken connections back off
  exponentially, other 4xx are returned untouched;
* shares one :class:`RateLimiter` between every worker thread and session of a run.

Secrets never reach logs: :func:`install_redaction` redacts known secrets and bearer/
``access_token=``/``client_secret=`` patterns on every log record, at every level.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import email.utils
import json
import logging
import math
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import requests
from oauthlib.oauth2 import BackendApplicationClient
from oauthlib.oauth2.rfc6749.errors import OAuth2Error
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from requests.exceptions import ChunkedEncodingError, ReadTimeout, SSLError
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests_oauthlib import OAuth2Session

from . import __version__
from .config import (
    OLD_HUB_HINT,
    OLD_HUB_MESSAGE,
    PROVIDERS,
    Settings,
    deployment_of,
    is_loopback_host,
    old_hub_host,
)
from .errors import (
    AuthError,
    ConfigError,
    InsecureTransportError,
    NetworkError,
    ServiceError,
    ShutDownHubError,
    StacfetchError,
    TokenExpiredError,
    decode_error_body,
)

log = logging.getLogger(__name__)

USER_AGENT = f"stacfetch/{__version__}"
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 120.0)  # (connect, read) seconds
REFRESH_BEFORE_EXPIRY = 120.0  # seconds, as sentinelhub-py
ASSUMED_TOKEN_LIFETIME = 300.0  # when the token response says nothing about expiry

__all__ = [
    "DEFAULT_TIMEOUT",
    "USER_AGENT",
    "BearerAuth",
    "ClientCredentialsToken",
    "LimiterStats",
    "PublicSession",
    "RateLimiter",
    "ReadyToken",
    "RedactingFilter",
    "RetryPolicy",
    "ServiceSession",
    "install_redaction",
    "open_public_session",
    "open_session",
    "redact",
]


# =========================================================================================
# Redaction
# =========================================================================================
_MASK = "***"
_MIN_SECRET_LEN = 4  # shorter values would mangle ordinary text; patterns still catch them
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer <token>, in headers, dict reprs and prose
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1" + _MASK),
    # access_token=..., "access_token": "...", 'client_secret': '...', form bodies, JSON
    (
        re.compile(
            r"(?i)((?:access_token|refresh_token|id_token|client_secret|password)"
            r"[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,;}\]]+"
        ),
        r"\1" + _MASK,
    ),
    # anything that looks like a JWT
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), _MASK),
]
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with ``secrets`` (also URL-encoded) and token-like patterns masked."""
    if not text:
        return text
    values = {s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}
    for secret in sorted(values, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
            if form in text:
                text = text.replace(form, _MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _known_secrets() -> tuple[str, ...]:
    with _SECRETS_LOCK:
        return tuple(_SECRETS)


def _register_secret(*values: str | None) -> None:
    with _SECRETS_LOCK:
        _SECRETS.update(v for v in values if v)


class RedactingFilter(logging.Filter):
    """Rewrites a log record so that no registered secret or token pattern survives.

    It never drops a record; it replaces ``msg``/``args`` with the redacted rendering and
    pre-renders a redacted traceback into ``exc_text``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_stacfetch_redacted", False):
            return True
        secrets = _known_secrets()
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug; leave it alone
            message = None
        if message is not None:
            clean = redact(message, secrets)
            if clean != message:
                record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), secrets)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        record._stacfetch_redacted = True
        return True


_FILTER = RedactingFilter()
_FACTORY_LOCK = threading.Lock()


def install_redaction(secrets: Iterable[str | None] = ()) -> RedactingFilter:
    """Register ``secrets`` and make sure every log record is redacted.

    Records are redacted when they are *created* (a wrapper around the log-record factory),
    so every logger at every level is covered — urllib3, requests_oauthlib and oauthlib log
    headers and bodies at DEBUG — whatever handlers exist now or are added later. The same
    filter is also attached to the root logger's current handlers. Idempotent.
    """
    _register_secret(*secrets)
    with _FACTORY_LOCK:
        current = logging.getLogRecordFactory()
        if not getattr(current, "_stacfetch_redacting", False):

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = current(*args, **kwargs)
                _FILTER.filter(record)
                return record

            factory._stacfetch_redacting = True  # type: ignore[attr-defined]
            logging.setLogRecordFactory(factory)
        for handler in logging.getLogger().handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    return _FILTER


# =========================================================================================
# Rate limiter
# =========================================================================================
@dataclass(frozen=True)
class LimiterStats:
    """A snapshot of what a :class:`RateLimiter` saw."""

    requests: int
    retries: dict[str, int]
    slept_seconds: float
    requests_per_minute: float | None

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())


WINDOW_SECONDS = 60.0
WINDOW_MARGIN = 0.25  # seconds added to each window for the arrival jitter of requests
LEARN_WINDOW_WAIT = 0.1  # a 429 asking to wait this share of a window or more teaches a limit
WINDOW_RECOVERY_PERIODS = 5  # a learnt window is relaxed (x1.25) after 5 quiet recovery periods


class RateLimiter:
    """One per run, shared by every worker thread and session.

    * **Shared pause**: a 429 anywhere moves a shared "not before" time forward by what the
      server asked; every thread's next request waits for it.
    * **Pacing**: with ``requests_per_minute`` (e.g. 300 on the CDSE free tier) at most that
      many requests leave in any trailing minute (a sliding window, the stricter reading of
      the service's per-minute policy), so the run stays under the limit instead of bouncing
      off it, without idling while the budget allows a burst.
    * **Adaptive**: with no configured rate, a 429 (once five or more requests were seen, so
      one early 429 does not throttle a whole run) teaches two limits:
      - a window, when the 429 asks to wait 6 s or more (a spent per-minute budget, not a
        passing overload): 95 % of the sends in the trailing minute, which is what the limit
        let through (CDSE's 300/min: the run then paces like ``--rate-limit 300``); a 429
        while the window is nearly full lowers it by ``adaptive_factor``; five
        ``recovery_seconds`` without a 429 raise it by 25 % (a passing overload must not slow
        the rest of a run, but overshooting a per-minute budget costs a long pause) until
        it is dropped;
      - a pace of ``adaptive_factor`` × the rate observed over the last minute (at least
        ``min_requests_per_minute``), for limits counted over shorter periods; a further 429
        lowers it again; each ``recovery_seconds`` without a 429 raises it by 50 % until it
        no longer matters and is dropped.
    * **Counters**: requests, retries by reason (``429``, ``5xx``, ``connection``,
      ``401-refresh``), total seconds slept.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        *,
        burst: float = 1.0,
        adaptive: bool = True,
        adaptive_factor: float = 0.8,
        min_requests_per_minute: float = 6.0,
        recovery_seconds: float = 60.0,
        window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        self._lock = threading.Lock()
        self._configured = requests_per_minute
        self._adaptive_rpm: float | None = None
        self._adaptive = adaptive
        self._factor = adaptive_factor
        self._min_rpm = min_requests_per_minute
        self._recovery = recovery_seconds
        self._burst = max(1.0, burst)
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._not_before = 0.0
        self._last_429 = -math.inf
        self._recent: deque[float] = deque()
        self._sent: deque[float] = deque()  # send times within the last window
        self._learned_window: int | None = None  # sends per window learnt from a 429
        self._window_checked = -math.inf  # when the learnt window was last set or relaxed
        self._window = float(window_seconds)
        self._requests = 0
        self._retries: Counter[str] = Counter()
        self._slept = 0.0

    # -- state ----------------------------------------------------------------------------
    @property
    def requests_per_minute(self) -> float | None:
        """The pace in force now: the configured one, else the adaptive one, else None."""
        with self._lock:
            return self._rate_locked(time.monotonic())

    def stats(self) -> LimiterStats:
        with self._lock:
            return LimiterStats(
                requests=self._requests,
                retries=dict(self._retries),
                slept_seconds=round(self._slept, 3),
                requests_per_minute=self._rate_locked(time.monotonic()),
            )

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"RateLimiter(requests_per_minute={s.requests_per_minute}, requests={s.requests}, "
            f"retries={s.retries}, slept_seconds={s.slept_seconds})"
        )

    def _rate_locked(self, now: float) -> float | None:
        if self._configured is not None:
            return self._configured
        quiet = self._recovery * WINDOW_RECOVERY_PERIODS
        if self._learned_window is not None and now - self._window_checked >= quiet:
            # slowly: overshooting a per-minute budget costs a pause of up to a minute
            periods = int((now - self._window_checked) // quiet)
            self._learned_window = int(self._learned_window * 1.25**periods) + 1
            self._window_checked += periods * quiet
            if self._learned_window > 100 * max(len(self._sent), 1):
                self._learned_window = None
        if self._adaptive_rpm is not None and now - self._last_429 >= self._recovery:
            # one quiet period: speed up by half, and forget the pace once it is irrelevant
            periods = int((now - self._last_429) // self._recovery)
            self._adaptive_rpm *= 1.5**periods
            self._last_429 += periods * self._recovery
            if self._adaptive_rpm > 100 * max(self._observed_rpm_locked(now), self._min_rpm):
                self._adaptive_rpm = None
        return self._adaptive_rpm

    def _observed_rpm_locked(self, now: float) -> float:
        while self._recent and now - self._recent[0] > 60.0:
            self._recent.popleft()
        if not self._recent:
            return 0.0
        span = max(1.0, now - self._recent[0])
        return len(self._recent) * 60.0 / span

    # -- use ------------------------------------------------------------------------------
    def acquire(self) -> float:
        """Block until a request may be sent; count it; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                wait = max(0.0, self._not_before - now)
                rate = self._rate_locked(now)
                span = self._window + WINDOW_MARGIN
                while self._sent and now - self._sent[0] >= span:
                    self._sent.popleft()
                limit = self._window_limit_locked()
                if limit is not None and len(self._sent) >= limit:
                    # a known or learnt limit (e.g. 300/min): at most that many sends in any
                    # trailing minute, as the service counts; a burst up to it is allowed
                    wait = max(wait, self._sent[0] + span - now)
                if self._configured is None and rate is not None:
                    per_second = rate / 60.0
                    self._tokens = min(
                        self._burst, self._tokens + (now - self._refilled) * per_second
                    )
                    self._refilled = now
                    if self._tokens < 1.0:
                        wait = max(wait, (1.0 - self._tokens) / per_second)
                else:
                    self._refilled = now
                if wait <= 0.0:
                    self._sent.append(now)
                    if self._configured is None and rate is not None:
                        self._tokens -= 1.0
                    self._requests += 1
                    self._recent.append(now)
                    if len(self._recent) > 10_000:
                        self._recent.popleft()
                    return waited
                self._slept += wait
            time.sleep(wait)
            waited += wait

    def _window_limit_locked(self) -> int | None:
        if self._configured is not None:
            return max(1, int(self._configured * self._window / 60.0))
        return self._learned_window

    @property
    def window_limit(self) -> int | None:
        """Sends allowed in any trailing window: configured, learnt from a 429, or None."""
        with self._lock:
            self._rate_locked(time.monotonic())  # applies a quiet period's recovery
            return self._window_limit_locked()

    def pause(self, seconds: float, *, sent_at: float | None = None, asked: float | None = None) -> None:
        """A 429: nobody sends before ``now + seconds``; adapt the pace if none is set.

        ``sent_at`` (``time.monotonic()`` when the refused request left): a request sent
        before the learnt window was last set does not lower it again (the 429s of the
        other requests already in flight say nothing new). ``asked``: the wait the service
        asked for, without jitter; a shared pause that already covers it is not extended (the
        429s of a burst would otherwise stack their jitter: +5 s on a 52 s wait).
        """
        with self._lock:
            now = time.monotonic()
            if self._not_before < now + max(0.0, seconds if asked is None else asked):
                self._not_before = now + max(0.0, seconds)
            self._retries["429"] += 1
            observed = self._observed_rpm_locked(now)
            if self._configured is None and self._adaptive and len(self._recent) >= 5:
                base = observed if self._adaptive_rpm is None else min(observed, self._adaptive_rpm)
                self._adaptive_rpm = max(self._min_rpm, base * self._factor)
                in_window = sum(1 for t in self._sent if now - t < self._window)
                floor = max(1, int(self._min_rpm * self._window / 60.0))
                if self._learned_window is None:
                    # only a long wait says "your budget for this window is spent": a short
                    # one is a token bucket or a passing overload, which the pace handles
                    if seconds >= LEARN_WINDOW_WAIT * self._window:
                        self._learned_window = max(floor, int(in_window * 0.95))
                        self._window_checked = now
                elif in_window >= 0.9 * self._learned_window and (
                    sent_at is None or sent_at >= self._window_checked
                ):  # full and still refused, under the current limit
                    self._learned_window = max(floor, int(min(in_window, self._learned_window) * self._factor))
                    self._window_checked = now
                log.info("rate limited: at most %d requests per %.0f s, paced to %.0f per minute",
                         self._learned_window, self._window, self._adaptive_rpm)
            self._last_429 = now
            self._tokens = min(self._tokens, 1.0)

    def backoff(self, seconds: float, reason: str) -> None:
        """Sleep ``seconds`` for one request's retry (not shared); count it under ``reason``."""
        with self._lock:
            self._retries[reason] += 1
            self._slept += max(0.0, seconds)
        if seconds > 0:
            time.sleep(seconds)

    def count_retry(self, reason: str) -> None:
        with self._lock:
            self._retries[reason] += 1


# =========================================================================================
# Retry policy
# =========================================================================================
@dataclass(frozen=True)
class RetryPolicy:
    """How :meth:`ServiceSession.send` retries.

    429: wait ``Retry-After`` milliseconds (+0–``rate_limit_jitter`` of it), never more than
    the server asked; no header → ``default_retry_after`` s doubling per header-less 429;
    a wait above ``max_retry_after`` or more than ``max_rate_limit_retries`` 429s in a row →
    :class:`RateLimitError`. 5xx / connection reset / chunked-body errors / read timeouts:
    up to ``max_attempts`` tries, sleeping ``backoff_initial`` doubling to ``backoff_max``
    with "equal jitter" (between half and all of the step). Other 4xx: never retried.
    """

    max_attempts: int = 6
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_rate_limit_retries: int = 10
    default_retry_after: float = 5.0
    max_retry_after: float = 120.0
    rate_limit_jitter: float = 0.1

    def backoff(self, failures: int) -> float:
        """Seconds to sleep after the ``failures``-th transient failure (1-based)."""
        step = min(self.backoff_max, self.backoff_initial * 2 ** (failures - 1))
        return step / 2 + random.uniform(0, step / 2)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in **seconds**; this service sends milliseconds (``3398`` = 3.398 s).

    An HTTP-date is understood too. None when absent or unreadable.
    """
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text) / 1000.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


# =========================================================================================
# Destinations: loopback-only HTTP, the dead Open Access Hub
# =========================================================================================
def check_destination(url: str) -> None:
    """Refuse, before any connection, a URL on the dead hub or plain HTTP off loopback."""
    host = old_hub_host(url)
    if host:
        raise ShutDownHubError(OLD_HUB_MESSAGE.format(host=host), hint=OLD_HUB_HINT, url=url)
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InsecureTransportError(
            f"refusing to send a request over plain HTTP to {parts.hostname}: credentials and "
            "tokens would travel unencrypted",
            hint="use https://, or a loopback address (127.0.0.1, localhost) for a local emulator",
        )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


_LOOPBACK_HTTP_OK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "stacfetch_loopback_http_ok", default=False
)


def _install_loopback_transport_check() -> None:
    """Let requests-oauthlib accept ``http://`` token URLs on loopback, for our calls only.

    requests-oauthlib refuses non-https token URLs unless OAUTHLIB_INSECURE_TRANSPORT is set
    in the environment — a process-wide switch that would relax the check for every other
    OAuth user in the process, for every host. Instead we wrap the module's
    ``is_secure_transport`` once: it keeps the original answer, and additionally says yes
    only (a) inside stacfetch's own ``fetch_token`` call (a context variable, so other threads
    and other code are unaffected) and (b) for an ``http`` URL whose host is loopback.
    """
    import requests_oauthlib.oauth2_session as module

    current = module.is_secure_transport
    if getattr(current, "_stacfetch", False):
        return

    def is_secure_transport(uri: str) -> bool:
        if current(uri):
            return True
        if not _LOOPBACK_HTTP_OK.get():
            return False
        parts = urlsplit(uri)
        return parts.scheme == "http" and is_loopback_host(parts.hostname)

    is_secure_transport._stacfetch = True  # type: ignore[attr-defined]
    module.is_secure_transport = is_secure_transport


@contextlib.contextmanager
def _loopback_http_allowed() -> Iterator[None]:
    _install_loopback_transport_check()
    reset = _LOOPBACK_HTTP_OK.set(True)
    try:
        yield
    finally:
        _LOOPBACK_HTTP_OK.reset(reset)


# =========================================================================================
# Hints
# =========================================================================================
def deployment_hint(settings: Settings) -> str:
    """Say which deployment the credentials meet and the usual mix-up."""
    family = deployment_of(settings.token_url)
    if family:
        where = f"the token URL {settings.token_url} belongs to {PROVIDERS[family].title}"
    elif is_loopback_host(urlsplit(settings.token_url or "").hostname):
        where = (
            f"the token URL {settings.token_url} is a local emulator "
            f"(STACFETCH_PROVIDER={settings.provider})"
        )
    else:
        where = (
            f"the token URL {settings.token_url} is a custom endpoint "
            f"(STACFETCH_PROVIDER={settings.provider})"
        )
    sh, cdse = PROVIDERS["sentinelhub"], PROVIDERS["cdse"]
    return (
        f"check SH_CLIENT_ID and SH_CLIENT_SECRET; {where}. The most common mistake is an OAuth "
        "client (or token) from the other deployment: credentials are deployment-specific, a "
        "Sentinel Hub client does not work on CDSE and a CDSE client does not work on Sentinel "
        "Hub. Set STACFETCH_PROVIDER to where the client was created (sentinelhub: "
        f"{sh.clients_page}; cdse: {cdse.clients_page})"
    )


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


# =========================================================================================
# Tokens
# =========================================================================================
def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, without checking its signature; None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


class ReadyToken:
    """A ready ``SH_ACCESS_TOKEN``: used as is, cannot be refreshed."""

    can_refresh = False

    def __init__(self, token: str, settings: Settings) -> None:
        self._token = token
        self._settings = settings
        claims = jwt_claims(token) or {}
        exp = claims.get("exp")
        self.expires_at: float | None = float(exp) if isinstance(exp, (int, float)) else None
        _register_secret(token)

    def __repr__(self) -> str:
        return f"ReadyToken(expires_at={self.expires_at})"

    def get(self) -> str:
        if self.expires_at is not None and time.time() >= self.expires_at:
            when = datetime.fromtimestamp(self.expires_at, timezone.utc)
            raise TokenExpiredError(
                f"SH_ACCESS_TOKEN expired at {when:%Y-%m-%d %H:%M:%S} UTC and a ready token "
                "cannot be refreshed",
                hint="use client credentials (SH_CLIENT_ID and SH_CLIENT_SECRET) so stacfetch "
                "can fetch new tokens itself, or set a fresh SH_ACCESS_TOKEN",
            )
        return self._token

    def invalidate(self, token: str) -> None:  # nothing to refresh
        return None

    def refused(self, response: requests.Response) -> StacfetchError:
        base = ServiceError.from_response(response)
        return TokenExpiredError(
            f"SH_ACCESS_TOKEN was refused ({base.message}): it has expired or belongs to "
            "another deployment, and a ready token cannot be refreshed",
            hint="use client credentials (SH_CLIENT_ID and SH_CLIENT_SECRET) or a fresh "
            "SH_ACCESS_TOKEN; " + deployment_hint(self._settings),
        )


class ClientCredentialsToken:
    """OAuth2 client-credentials tokens, fetched with requests-oauthlib and kept fresh.

    Refreshes ``REFRESH_BEFORE_EXPIRY`` (120 s) before expiry, or at half-life for tokens
    shorter than 240 s. Thread-safe: one fetch at a time; waiting threads reuse its result.
    """

    can_refresh = True

    def __init__(
        self,
        settings: Settings,
        *,
        limiter: RateLimiter,
        retry: RetryPolicy,
        timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
    ) -> None:
        if not (settings.token_url and settings.client_id and settings.client_secret):
            raise ConfigError(
                "client credentials need SH_TOKEN_URL, SH_CLIENT_ID and SH_CLIENT_SECRET",
                hint="set SH_CLIENT_ID and SH_CLIENT_SECRET (or SH_ACCESS_TOKEN)",
            )
        self._settings = settings
        self._token_url = settings.token_url
        self._client_id = settings.client_id
        self._secret = settings.client_secret
        self._limiter = limiter
        self._retry = retry
        self._timeout = timeout
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._session: _TokenSession | None = None
        self.fetches = 0
        _register_secret(settings.client_secret)

    def __repr__(self) -> str:
        return (
            f"ClientCredentialsToken(token_url={self._token_url!r}, client_id={self._client_id!r})"
        )

    @property
    def expires_in(self) -> float | None:
        """Seconds until the current token expires (None before the first fetch)."""
        if self._token is None:
            return None
        return self._expires_at - time.monotonic()

    def get(self) -> str:
        token = self._token
        if token is not None and time.monotonic() < self._refresh_at:
            return token
        with self._lock:
            if self._token is None or time.monotonic() >= self._refresh_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still current (after a 401), so the next get() fetches."""
        with self._lock:
            if self._token == token:
                self._token = None

    def refused(self, response: requests.Response) -> StacfetchError:
        base = ServiceError.from_response(response)
        return AuthError(
            f"{base.message} (also with a freshly fetched token for client id {self._client_id!r})",
            hint=deployment_hint(self._settings),
        )

    def _fetch(self) -> None:
        url = self._token_url
        assert url is not None
        check_destination(url)
        if self._session is None:
            self._session = _TokenSession(
                client=BackendApplicationClient(client_id=self._client_id),
                limiter=self._limiter,
                retry=self._retry,
                timeout=self._timeout,
                settings=self._settings,
                on_error=self._token_error,
            )
        started = time.monotonic()
        try:
            with _loopback_http_allowed():
                token = self._session.fetch_token(
                    url,
                    client_id=self._client_id,
                    client_secret=self._secret,
                    include_client_id=True,
                    timeout=self._timeout,
                )
        except StacfetchError:
            raise
        except OAuth2Error as exc:  # a 200 without a usable token, or an error oauthlib saw first
            detail = redact(f"{exc.error}: {exc.description or ''}".strip(": "), (self._secret,))
            raise AuthError(
                f"the token endpoint {url} did not issue a token for client id "
                f"{self._client_id!r}: {detail}",
                hint=deployment_hint(self._settings),
            ) from None
        access = token.get("access_token")
        if not access:
            raise AuthError(
                f"the token endpoint {url} answered without an access_token",
                hint=deployment_hint(self._settings),
            )
        _register_secret(access)
        lifetime = _lifetime(token, access)
        margin = min(REFRESH_BEFORE_EXPIRY, lifetime / 2)
        self._token = access
        self._expires_at = started + lifetime
        self._refresh_at = started + lifetime - margin
        self.fetches += 1
        log.debug(
            "fetched an access token for client id %s from %s (valid %.0f s, refresh after %.0f s)",
            self._client_id,
            url,
            lifetime,
            lifetime - margin,
        )

    def _token_error(self, response: requests.Response) -> None:
        """Compliance hook: turn a token-endpoint error into our AuthError."""
        status = response.status_code
        if status < 400:
            return
        code, text = decode_error_body(response)
        text = redact(text or response.reason or f"HTTP {status}", (self._secret,))
        url = self._token_url
        if status in (400, 401) and (
            status == 401
            or (code or "").lower() in ("invalid_client", "unauthorized_client", "oauth_error")
        ):
            raise AuthError(
                f"the token endpoint {url} refused client id {self._client_id!r}: {text}",
                hint=deployment_hint(self._settings),
            )
        raise AuthError(
            f"the token endpoint {url} answered HTTP {status}: {text}"
            + (f" [{code}]" if code else ""),
            hint=deployment_hint(self._settings),
        )


def _lifetime(token: dict[str, Any], access: str) -> float:
    expires_in = token.get("expires_in")
    try:
        if expires_in is not None and float(expires_in) > 0:
            return float(expires_in)
    except (TypeError, ValueError):
        pass
    exp = (jwt_claims(access) or {}).get("exp")
    if isinstance(exp, (int, float)) and exp > time.time():
        return float(exp) - time.time()
    return ASSUMED_TOKEN_LIFETIME


class BearerAuth(AuthBase):
    """Adds ``Authorization: Bearer <token>`` to requests for the allowed origins only.

    Used as ``session.auth`` so it runs inside ``prepare_request()`` (pystac-client) and is
    re-applied by :meth:`ServiceSession.send` on every attempt (fresh token after a refresh).
    A redirect to another origin gets no header from us (requests already strips it).
    """

    def __init__(self, source: ClientCredentialsToken | ReadyToken, allowed_urls: Iterable[str]):
        self.source = source
        self.allowed = {_origin(u) for u in allowed_urls if u}

    def __repr__(self) -> str:
        hosts = sorted(f"{s}://{h}:{p}" for s, h, p in self.allowed)
        return f"BearerAuth(source={self.source!r}, hosts={hosts})"

    def allows(self, url: str) -> bool:
        return _origin(url) in self.allowed

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if request.url and self.allows(request.url):
            request.headers["Authorization"] = f"Bearer {self.source.get()}"
        return request


# =========================================================================================
# Sessions
# =========================================================================================
_TRANSIENT_ERRORS = (RequestsConnectionError, ChunkedEncodingError, ReadTimeout)
_NOT_RETRIED_5XX = (501, 505)


def _read_body(response: requests.Response) -> None:
    """Read a whole body in one call (requests reads 10 KiB at a time: ~2x the CPU for a
    large GeoTIFF), raising requests' own exceptions so that the retry loop sees them."""
    from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError
    from urllib3.exceptions import SSLError as Urllib3SSLError

    try:
        response._content = response.raw.read(decode_content=True) or b""  # noqa: SLF001
    except ProtocolError as exc:  # a connection cut mid-body, or a short body
        raise ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except ReadTimeoutError as exc:
        raise RequestsConnectionError(exc) from exc
    except Urllib3SSLError as exc:
        raise SSLError(exc) from exc
    finally:
        response._content_consumed = True  # noqa: SLF001
        response.raw.release_conn()


def _is_name_resolution_failure(exc: BaseException) -> bool:
    text = repr(exc)
    return any(
        marker in text
        for marker in (
            "NameResolutionError",
            "Name or service not known",
            "nodename nor servname",
            "getaddrinfo failed",
            "Temporary failure in name resolution",
            "No address associated",
        )
    )


def _replayable(request: requests.PreparedRequest) -> bool:
    body = request.body
    if body is None or isinstance(body, (bytes, str)):
        return True
    return getattr(request, "_body_position", None) is not None and hasattr(body, "seek")


class _PolicySendMixin:
    """The retry/refusal loop shared by the API session and the token session."""

    limiter: RateLimiter
    retry_policy: RetryPolicy
    default_timeout: tuple[float, float] | float
    settings: Settings | None

    def _authorize(self, request: requests.PreparedRequest) -> str | None:
        """Apply credentials to one attempt; return the bearer token sent, if any."""
        return None

    def _unauthorized(self, response: requests.Response, sent: str, refreshed: bool) -> bool:
        """A 401 to a request that carried our token: True to retry, or raise."""
        return False

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = request.url or ""
        check_destination(url)
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        policy, limiter = self.retry_policy, self.limiter
        replayable = _replayable(request)
        failures = rate_limited = headerless_429 = 0
        refreshed = False
        while True:
            attempt = request.copy()
            if getattr(request, "_body_position", None) is not None:
                requests.utils.rewind_body(attempt)
            limiter.acquire()
            sent_at = time.monotonic()
            sent = self._authorize(attempt)
            try:
                response = super().send(attempt, **{**kwargs, "stream": True})  # type: ignore[misc]
                if not kwargs.get("stream"):
                    _read_body(response)
            except SSLError as exc:
                raise self._network_error(url, exc, tls=True) from None
            except _TRANSIENT_ERRORS as exc:
                failures += 1
                if (
                    not replayable
                    or failures >= policy.max_attempts
                    or _is_name_resolution_failure(exc)
                ):
                    raise self._network_error(url, exc, attempts=failures) from None
                delay = policy.backoff(failures)
                log.warning(
                    "%s %s failed (%s); retry %d/%d in %.1f s",
                    request.method,
                    _short(url),
                    type(exc).__name__,
                    failures,
                    policy.max_attempts - 1,
                    delay,
                )
                limiter.backoff(delay, "connection")
                continue

            status = response.status_code
            if status == 429:
                rate_limited += 1
                asked = parse_retry_after(response.headers.get("Retry-After"))
                too_long = asked is not None and asked > policy.max_retry_after
                if asked is None:  # no usable header: our default, doubling, capped
                    asked = min(
                        policy.default_retry_after * 2**headerless_429, policy.max_retry_after
                    )
                    headerless_429 += 1
                if rate_limited > policy.max_rate_limit_retries or too_long or not replayable:
                    why = (
                        f"the service asked to wait {asked:.1f} s, more than the "
                        f"{policy.max_retry_after:.0f} s stacfetch waits at once"
                        if too_long
                        else f"still rate limited after {rate_limited - 1} retries"
                    )
                    raise ServiceError.from_response(
                        response,
                        hint=f"{why}; lower the number of workers or try again later "
                        "(monthly quotas reset on the 1st)",
                    )
                wait = asked * (1 + random.uniform(0, policy.rate_limit_jitter))
                log.warning(
                    "rate limited (HTTP 429) on %s; the service asked to wait %.3f s, "
                    "waiting %.3f s (all workers)",
                    _short(url),
                    asked,
                    wait,
                )
                response.close()
                limiter.pause(wait, sent_at=sent_at, asked=asked)
                continue
            if status >= 500 and status not in _NOT_RETRIED_5XX:
                failures += 1
                if failures >= policy.max_attempts or not replayable:
                    raise ServiceError.from_response(
                        response,
                        hint=f"the service failed {failures} times in a row; it may be down "
                        "or overloaded, try again later",
                    )
                delay = policy.backoff(failures)
                log.warning(
                    "HTTP %d from %s; retry %d/%d in %.1f s",
                    status,
                    _short(url),
                    failures,
                    policy.max_attempts - 1,
                    delay,
                )
                response.close()
                limiter.backoff(delay, "5xx")
                continue
            if (
                status == 401
                and sent is not None
                and self._unauthorized(response, sent, refreshed)
                and replayable
            ):
                refreshed = True
                response.close()
                limiter.count_retry("401-refresh")
                continue
            if status == 200 and "/dhus" in urlsplit(url).path and _is_html(response):
                host = urlsplit(url).hostname or url
                raise ShutDownHubError(
                    OLD_HUB_MESSAGE.format(host=host) + " (it answered with an HTML page)",
                    hint=OLD_HUB_HINT,
                    status=200,
                    url=url,
                )
            return response

    def _network_error(
        self, url: str, exc: BaseException, *, attempts: int = 1, tls: bool = False
    ) -> NetworkError:
        host = urlsplit(url).hostname or url
        variable = _settings_var_for(self.settings, host.lower())
        reason = _short_reason(exc)
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
            f"could not reach {host}{tries}: {reason}", hint=hint, url=url.split("?", 1)[0]
        )


def _short(url: str) -> str:
    return url.split("?", 1)[0]


def _short_reason(exc: BaseException) -> str:
    inner: Any = exc.args[0] if exc.args else exc
    reason = getattr(inner, "reason", None) or inner
    text = redact(str(reason), _known_secrets())
    text = re.sub(r"<urllib3\.[^>]*>:?\s*", "", text)
    return " ".join(text.split())[:240] or type(exc).__name__


def _is_html(response: requests.Response) -> bool:
    return "html" in response.headers.get("Content-Type", "").lower()


def _mount(session: requests.Session, pool_size: int) -> None:
    adapter = HTTPAdapter(
        pool_connections=max(1, pool_size), pool_maxsize=max(1, pool_size), max_retries=0
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)


class _TokenSession(_PolicySendMixin, OAuth2Session):
    """requests-oauthlib session for the token endpoint, with our checks and retries."""

    def __init__(
        self,
        *,
        client: BackendApplicationClient,
        limiter: RateLimiter,
        retry: RetryPolicy,
        timeout: tuple[float, float] | float,
        settings: Settings,
        on_error: Callable[[requests.Response], None],
    ) -> None:
        super().__init__(client=client)
        self.limiter = limiter
        self.retry_policy = retry
        self.default_timeout = timeout
        self.settings = settings
        self.headers["User-Agent"] = USER_AGENT
        _mount(self, 2)

        def hook(response: requests.Response) -> requests.Response:
            on_error(response)
            return response

        self.register_compliance_hook("access_token_response", hook)

    def __repr__(self) -> str:
        return "<stacfetch token session>"

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """Refuse a redirect to another origin: a 307/308 would re-send the client secret."""
        target = super().get_redirect_target(resp)
        if target:
            where = requests.compat.urljoin(resp.url, target)
            if _origin(where) != _origin(resp.url):
                raise AuthError(
                    f"the token endpoint {_short(resp.url)} redirected to "
                    f"{urlsplit(where).hostname}; stacfetch does not send client credentials "
                    "to another host",
                    hint="check SH_TOKEN_URL: it must be the token endpoint itself",
                )
        return target


class _RetryingSession(_PolicySendMixin, requests.Session):
    """What every stacfetch session shares: settings, limiter, retry policy, pool, User-Agent."""

    def __init__(
        self,
        settings: Settings,
        *,
        limiter: RateLimiter,
        retry: RetryPolicy,
        pool_size: int = 10,
        timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.limiter = limiter
        self.retry_policy = retry
        self.default_timeout = timeout
        self.headers["User-Agent"] = USER_AGENT
        _mount(self, pool_size)

    def stats(self) -> dict[str, Any]:
        """Counters: requests, retries by reason, seconds slept (shared limiter), token fetches."""
        snapshot = self.limiter.stats()
        return {
            "requests": snapshot.requests,
            "retries": dict(snapshot.retries),
            "slept_seconds": snapshot.slept_seconds,
            "requests_per_minute": snapshot.requests_per_minute,
            "token_fetches": getattr(getattr(self, "token_source", None), "fetches", 0),
        }


class ServiceSession(_RetryingSession):
    """The authenticated session for the Catalog and Process APIs (see module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        token_source: ClientCredentialsToken | ReadyToken,
        **options: Any,
    ) -> None:
        super().__init__(settings, **options)
        self.token_source = token_source
        self.auth = BearerAuth(token_source, [settings.base_url or "", settings.token_url or ""])

    def __repr__(self) -> str:
        return (
            f"<ServiceSession provider={self.settings.provider} base_url={self.settings.base_url} "
            f"client_id={self.settings.client_id}>"
        )

    def _authorize(self, request: requests.PreparedRequest) -> str | None:
        auth = self.auth
        if isinstance(auth, BearerAuth) and request.url and auth.allows(request.url):
            token = auth.source.get()
            request.headers["Authorization"] = f"Bearer {token}"
            return token
        return None

    def _unauthorized(self, response: requests.Response, sent: str, refreshed: bool) -> bool:
        source = self.token_source
        if source.can_refresh and not refreshed:
            log.info(
                "HTTP 401 from %s; fetching a fresh token and retrying once", _short(response.url)
            )
            source.invalidate(sent)
            return True
        raise source.refused(response)


class PublicSession(_RetryingSession):
    """The session for STAC APIs without OAuth (the ``cog`` providers): same retries, limiter,
    loopback-only plain HTTP and redaction as :class:`ServiceSession`, no token.

    ``settings.stac_headers`` (``STACFETCH_STAC_TOKEN``/``STACFETCH_STAC_HEADERS``) are added
    only to requests for the STAC API's own origin (scheme, host, port), never to other hosts.
    """

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(settings, **options)
        self._origin = _origin(settings.stac_url or "")

    def __repr__(self) -> str:
        return f"<PublicSession provider={self.settings.provider} stac_url={self.settings.stac_url}>"

    def _authorize(self, request: requests.PreparedRequest) -> str | None:
        if self.settings.stac_headers and request.url and _origin(request.url) == self._origin:
            request.headers.update(self.settings.stac_headers)
        return None


def open_public_session(
    settings: Settings,
    *,
    limiter: RateLimiter | None = None,
    max_attempts: int = 6,
    retry: RetryPolicy | None = None,
    pool_size: int = 10,
    timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
    redact_logs: bool = True,
) -> PublicSession:
    """The retrying session without OAuth for a ``cog`` provider's STAC API."""
    if not settings.stac_url:
        raise ConfigError("no STAC API URL is set", hint="set STACFETCH_STAC_URL")
    check_destination(settings.stac_url)
    if redact_logs:
        install_redaction(settings.secrets)
    policy = replace(retry or RetryPolicy(), max_attempts=max(1, max_attempts))
    return PublicSession(settings, limiter=limiter or RateLimiter(), retry=policy,
                         pool_size=pool_size, timeout=timeout)


def open_session(
    settings: Settings,
    *,
    limiter: RateLimiter | None = None,
    max_attempts: int = 6,
    retry: RetryPolicy | None = None,
    pool_size: int = 10,
    timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
    redact_logs: bool = True,
) -> ServiceSession:
    """The authenticated, retrying session for ``settings``.

    ``limiter``: share one :class:`RateLimiter` between all sessions/threads of a run (a new
    unpaced one if None). ``max_attempts`` overrides ``retry.max_attempts``. ``pool_size``:
    connections kept per host — at least the number of worker threads. Nothing is sent
    until the first request (the token is fetched lazily). For a ``cog`` provider (no OAuth)
    this is :func:`open_public_session`.
    """
    if settings.source == "assets":
        return open_public_session(  # type: ignore[return-value]
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
        install_redaction(settings.secrets)
    limiter = limiter or RateLimiter()
    policy = replace(retry or RetryPolicy(), max_attempts=max(1, max_attempts))
    source: ClientCredentialsToken | ReadyToken
    if settings.client_id and settings.client_secret:
        source = ClientCredentialsToken(settings, limiter=limiter, retry=policy, timeout=timeout)
    elif settings.access_token:
        source = ReadyToken(settings.access_token, settings)
    else:
        raise ConfigError(
            "no credentials: SH_CLIENT_ID/SH_CLIENT_SECRET or SH_ACCESS_TOKEN is needed",
            hint="create an OAuth client for your deployment and set SH_CLIENT_ID and SH_CLIENT_SECRET",
        )
    return ServiceSession(
        settings,
        token_source=source,
        limiter=limiter,
        retry=policy,
        pool_size=pool_size,
        timeout=timeout,
    )
