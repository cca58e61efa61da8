"""stacfetch's HTTP layer: the one session, its retries, rate limiter, tokens, URL policy
and redaction. Public names are re-exported here, imported on first use (so that ``config``,
which uses :mod:`.urls`, does not load requests and oauthlib)."""

from __future__ import annotations

import importlib
from typing import Any

# the leaf (standard library only), imported eagerly so that the name ``redact`` is the
# function, not the submodule of the same name. Nothing else may be imported eagerly here:
# stacfetch.errors imports .redact, so importing this package must not import the errors.
from .redact import (
    RedactingFilter,
    install_redaction,
    known_secrets,
    redact,
    register_secret,
    strip_query,
)

_EXPORTS = {
    "DEFAULT_TIMEOUT": "session",
    "body_limit": "body",
    "read_body": "body",
    "timeout_pair": "session",
    "USER_AGENT": "session",
    "ServiceSession": "session",
    "open_public_session": "session",
    "open_service": "session",
    "open_session": "session",
    "RetryPolicy": "retry",
    "parse_retry_after": "retry",
    "LimitMemory": "ratelimit",
    "LimiterStats": "ratelimit",
    "RateLimiter": "ratelimit",
    "BearerAuth": "tokens",
    "ClientCredentialsToken": "tokens",
    "HeaderAuth": "tokens",
    "ReadyToken": "tokens",
    "deployment_hint": "tokens",
    "jwt_claims": "tokens",
    "check_destination": "urls",
    "is_loopback_host": "urls",
    "origin": "urls",
    "same_origin": "urls",
}
__all__ = [
    "BearerAuth",
    "ClientCredentialsToken",
    "DEFAULT_TIMEOUT",
    "HeaderAuth",
    "LimitMemory",
    "LimiterStats",
    "RateLimiter",
    "ReadyToken",
    "RedactingFilter",
    "RetryPolicy",
    "ServiceSession",
    "USER_AGENT",
    "body_limit",
    "check_destination",
    "deployment_hint",
    "install_redaction",
    "is_loopback_host",
    "jwt_claims",
    "known_secrets",
    "open_public_session",
    "open_service",
    "open_session",
    "origin",
    "parse_retry_after",
    "read_body",
    "redact",
    "register_secret",
    "same_origin",
    "strip_query",
    "timeout_pair",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stacfetch.http' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return __all__
