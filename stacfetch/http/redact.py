"""Secrets never reach logs or errors: a registry of known secrets and the redaction of text.

The library registers every secret it meets (client secret, tokens) with
:func:`register_secret`, masks them in its error texts with :func:`redact`, and puts a
:class:`RedactingFilter` on its own loggers. It changes no process-wide logging state: the
process owner (the CLI) may call :func:`install_redaction` to cover every logger, including
third-party ones (urllib3 logs at DEBUG). :func:`strip_query` removes URL query strings
(signed URLs, SAS tokens) from text shown to users.

This module is a leaf (standard library only, no stacfetch import), so that
:mod:`stacfetch.errors` can import it at the top although the rest of the HTTP layer
imports the errors.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = [
    "REDACTING_FILTER",
    "MaskedValue",
    "RedactingFilter",
    "install_redaction",
    "known_secrets",
    "redact",
    "redacting_logger",
    "register_secret",
    "strip_query",
]

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
# a URL's query and fragment end at whitespace, a quote, ")" or a list separator ("," ";")
_QUERY = re.compile(r"(?i)\b((?:https?|s3|gs)://[^\s?#'\"]*)[?#][^\s'\"),;]*")
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def strip_query(text: str) -> str:
    """``text`` with the query string (and fragment) of every URL in it removed."""
    return _QUERY.sub(r"\1", text)


def register_secret(*values: str | None) -> None:
    """Remember ``values`` (empty ones are ignored) so that :func:`redact` masks them.

    A value shorter than 4 characters is remembered but cannot be masked (it would mangle
    ordinary text): a warning says so, once per value, without showing it.
    """
    with _SECRETS_LOCK:
        new = {v for v in values if v and v not in _SECRETS}
        _SECRETS.update(new)
    for value in new:
        if len(value) < _MIN_SECRET_LEN:
            logging.getLogger(__name__).warning(
                "a secret of %d characters is too short to be masked in logs and errors; "
                "use a longer secret or token", len(value))


def known_secrets() -> tuple[str, ...]:
    """Every secret registered so far."""
    with _SECRETS_LOCK:
        return tuple(_SECRETS)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with ``secrets`` (also URL-encoded) and token-like patterns masked.

    ``secrets`` None: the registered ones (:func:`known_secrets`).
    """
    if not text:
        return text
    values = {s for s in (known_secrets() if secrets is None else secrets) if s and len(s) >= _MIN_SECRET_LEN}
    for secret in sorted(values, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
            if form in text:
                text = text.replace(form, _MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class MaskedValue(str):
    """A secret header value whose ``repr`` is masked: a library that logs request headers
    (pystac-client does at DEBUG: ``Headers: {...}``) shows ``***``; the value sent is intact."""

    __slots__ = ()

    def __repr__(self) -> str:
        value = str(self)
        masked = redact(value, ())  # "Bearer ***"
        return repr(masked if masked != value else _MASK)


class RedactingFilter(logging.Filter):
    """Rewrites a log record so that no registered secret or token pattern survives.

    It never drops a record; it replaces ``msg``/``args`` with the redacted rendering and
    pre-renders a redacted traceback into ``exc_text``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_stacfetch_redacted", False):
            return True
        secrets = known_secrets()
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


REDACTING_FILTER = RedactingFilter()


def redacting_logger(name: str) -> logging.Logger:
    """The logger ``name`` (one of stacfetch's own) with the redacting filter on it."""
    logger = logging.getLogger(name)
    if REDACTING_FILTER not in logger.filters:
        logger.addFilter(REDACTING_FILTER)
    return logger


_FACTORY_LOCK = threading.Lock()


def install_redaction(secrets: Iterable[str | None] = ()) -> RedactingFilter:
    """For the process owner (the CLI), never called by the library: redact every record.

    Registers ``secrets`` and wraps the process's log-record factory, so records of every
    logger at every level are redacted when they are created (urllib3 and oauthlib log at
    DEBUG), whatever handlers exist now or are added later; the filter also goes on the root
    logger's current handlers. Idempotent.
    """
    register_secret(*secrets)
    with _FACTORY_LOCK:
        current = logging.getLogRecordFactory()
        if not getattr(current, "_stacfetch_redacting", False):

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = current(*args, **kwargs)
                REDACTING_FILTER.filter(record)
                return record

            factory._stacfetch_redacting = True  # type: ignore[attr-defined]
            logging.setLogRecordFactory(factory)
        for handler in logging.getLogger().handlers:
            if REDACTING_FILTER not in handler.filters:
                handler.addFilter(REDACTING_FILTER)
    return REDACTING_FILTER
