"""Credentials on requests: OAuth2 client-credentials tokens, a ready token, STAC headers.

An authoriser is a ``requests`` auth object (so pystac-client's ``prepare_request()`` path
carries it too) that the session's send loop also calls on every attempt:
``authorize(request)`` returns the bearer token it put on, if any; ``unauthorized(response,
sent, refreshed)`` decides after a 401 whether to retry (after invalidating the token) or
raises the error that explains it.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from oauthlib.oauth2 import BackendApplicationClient
from oauthlib.oauth2.rfc6749.errors import OAuth2Error
from requests.auth import AuthBase

from ..config import PROVIDERS, Settings, deployment_of
from ..errors import (
    AuthError,
    ConfigError,
    ServiceError,
    StacfetchError,
    TokenExpiredError,
    decode_error_body,
)
from .redact import MaskedValue, redact, redacting_logger, register_secret
from .urls import check_destination, is_loopback_host, origin, same_origin, strip_query

log = redacting_logger(__name__)

__all__ = [
    "ASSUMED_TOKEN_LIFETIME",
    "REFRESH_BEFORE_EXPIRY",
    "BearerAuth",
    "ClientCredentialsToken",
    "HeaderAuth",
    "ReadyToken",
    "deployment_hint",
    "jwt_claims",
    "refuse_foreign_redirect",
]

REFRESH_BEFORE_EXPIRY = 120.0  # seconds, as sentinelhub-py
ASSUMED_TOKEN_LIFETIME = 300.0  # when the token response says nothing about expiry
_TOKEN_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
}
_REFUSED_CODES = ("invalid_client", "unauthorized_client", "oauth_error")


class _Poster(Protocol):
    def post(self, url: str, data: Any = ..., **kwargs: Any) -> requests.Response: ...


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


def refuse_foreign_redirect(source: str, target: str) -> None:
    """The token session's redirect guard: a 307/308 elsewhere would re-send the secret."""
    if not same_origin(source, target):
        raise AuthError(
            f"the token endpoint {strip_query(source)} redirected to {urlsplit(target).hostname}; "
            "stacfetch does not send client credentials to another host",
            hint="check SH_TOKEN_URL: it must be the token endpoint itself",
        )


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
        register_secret(token)

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
    """OAuth2 client-credentials tokens, fetched with oauthlib (body and parsing) over our session, kept fresh.

    Refreshes ``REFRESH_BEFORE_EXPIRY`` (120 s) before expiry, or at half-life for tokens
    shorter than 240 s. Thread-safe: one fetch at a time; waiting threads reuse its result.
    """

    can_refresh = True

    def __init__(self, settings: Settings, *, session: _Poster) -> None:
        """``session``: what POSTs to the token endpoint (a session without authoriser, with
        the run's limiter and retries, refusing redirects to another origin)."""
        if not (settings.token_url and settings.client_id and settings.client_secret):
            raise ConfigError(
                "client credentials need SH_TOKEN_URL, SH_CLIENT_ID and SH_CLIENT_SECRET",
                hint="set SH_CLIENT_ID and SH_CLIENT_SECRET (or SH_ACCESS_TOKEN)",
            )
        self._settings = settings
        self._token_url = settings.token_url
        self._client_id = settings.client_id
        self._secret = settings.client_secret
        self._session = session
        self._client = BackendApplicationClient(client_id=settings.client_id)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self.fetches = 0
        self.last_status: int | None = None  # of the token endpoint's last answer
        register_secret(settings.client_secret)

    def close(self) -> None:
        """Close the token endpoint's session."""
        close = getattr(self._session, "close", None)
        if close is not None:
            close()

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
        """POST the client credentials (the body and the parsing are oauthlib's)."""
        url = self._token_url
        assert url is not None
        check_destination(url)
        body = self._client.prepare_request_body(
            include_client_id=True, client_id=self._client_id, client_secret=self._secret
        )
        started = time.monotonic()
        response = self._session.post(url, data=body, headers=_TOKEN_HEADERS)
        self.last_status = response.status_code
        self._token_error(response)
        try:
            token = self._client.parse_request_body_response(response.text)
        except OAuth2Error as exc:  # a 200 without a usable token
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
        register_secret(access)
        lifetime = _lifetime(token, access)
        margin = min(REFRESH_BEFORE_EXPIRY, lifetime / 2)
        self._token = access
        self._expires_at = started + lifetime
        self._refresh_at = started + lifetime - margin
        self.fetches += 1
        log.debug(
            "fetched an access_token for client id %s from %s (valid %.0f s, refresh after %.0f s)",
            self._client_id,
            url,
            lifetime,
            lifetime - margin,
        )

    def _token_error(self, response: requests.Response) -> None:
        """Turn a token-endpoint error (HTTP 400 and up) into our AuthError."""
        status = response.status_code
        if status < 400:
            return
        code, text = decode_error_body(response)
        text = redact(text or response.reason or f"HTTP {status}", (self._secret,))
        url = self._token_url
        if status in (400, 401) and (
            status == 401
            or (code or "").lower() in _REFUSED_CODES
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
    re-applied by the session's send loop on every attempt (a fresh token after a refresh).
    A redirect to another origin gets no header from us (requests already strips it).
    """

    def __init__(self, source: ClientCredentialsToken | ReadyToken, allowed_urls: Iterable[str]):
        self.source = source
        self.allowed = {origin(u) for u in allowed_urls if u}

    def __repr__(self) -> str:
        hosts = sorted(f"{s}://{h}:{p}" for s, h, p in self.allowed)
        return f"BearerAuth(source={self.source!r}, hosts={hosts})"

    def allows(self, url: str) -> bool:
        return origin(url) in self.allowed

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self.authorize(request)
        return request

    def authorize(self, request: requests.PreparedRequest) -> str | None:
        """Put the current token on ``request`` if it goes to an allowed origin; return it."""
        if not (request.url and self.allows(request.url)):
            return None
        token = self.source.get()
        request.headers["Authorization"] = MaskedValue(f"Bearer {token}")
        return token

    def unauthorized(self, response: requests.Response, sent: str, refreshed: bool) -> bool:
        """A 401 to a request that carried ``sent``: True to retry once with a fresh token."""
        source = self.source
        if source.can_refresh and not refreshed:
            log.info(
                "HTTP 401 from %s; fetching a fresh token and retrying once",
                strip_query(response.url),
            )
            source.invalidate(sent)
            return True
        raise source.refused(response)


class HeaderAuth(AuthBase):
    """Adds fixed headers (``STACFETCH_STAC_TOKEN``/``STACFETCH_STAC_HEADERS``) to requests for
    one origin (scheme, host, port) only, never to other hosts."""

    def __init__(self, headers: Mapping[str, str], url: str) -> None:
        self.headers = dict(headers)
        self.origin = origin(url)

    def __repr__(self) -> str:
        scheme, host, port = self.origin
        return f"HeaderAuth(names={sorted(self.headers)}, host={scheme}://{host}:{port})"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self.authorize(request)
        return request

    def authorize(self, request: requests.PreparedRequest) -> str | None:
        if self.headers and request.url and origin(request.url) == self.origin:
            request.headers.update({k: MaskedValue(v) for k, v in self.headers.items()})
        return None

    def unauthorized(self, response: requests.Response, sent: str, refreshed: bool) -> bool:
        return False
