"""One exception hierarchy for stacfetch; each class carries its CLI exit code.

Exit codes (README.md "Exit codes" lists the same): 0 ok, 1 internal error (a bug), 2 bad
input/usage, 3 auth/config, 4 service/network, 5 some acquisitions failed (others were
written), 6 every acquisition failed (none was written), 130 interrupted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

# a leaf (standard library only): the rest of the HTTP layer imports this module
from .http.redact import redact, strip_query

EXIT_OK = 0
EXIT_INTERNAL = 1  # an unexpected exception: a bug (the CLI says "internal error")
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_SERVICE = 4
EXIT_PARTIAL = 5
EXIT_NOTHING_WRITTEN = 6  # acquisitions failed and none is complete: no file to use
EXIT_INTERRUPTED = 130
MAX_ERROR_WORDS = 300  # characters of a server's error message kept (bodies can be megabytes)


class StacfetchError(Exception):
    """Base class of every error stacfetch raises on purpose.

    ``message`` says what was wrong; ``hint`` says what to do about it.
    """

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # an error's words may quote a server that echoed the bearer token, and they reach
        # summaries, JSON and tracebacks: mask every registered secret once, here
        message, hint = redact(message), (None if hint is None else redact(hint))
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


# --- bad input (exit 2) ---------------------------------------------------------------
class UsageError(StacfetchError):
    """The user's input cannot be used as given."""

    exit_code = EXIT_USAGE


class InvalidLocationError(UsageError):
    """Coordinates, rings or GeoJSON that do not describe a usable area."""


class AreaTooLargeError(InvalidLocationError):
    """A valid area above the size limit (never a decimal-comma typo: its hint says split it)."""


class InvalidDateError(UsageError):
    """A date or date range that cannot be used."""


class InvalidOptionError(UsageError):
    """Any other option with a bad value (bands, resolution, CRS, paths ...)."""


class BudgetError(UsageError):
    """A plan that does not fit: above ``--max-pu``, or larger than the free disk space."""


class MissingExtraError(UsageError):
    """A feature needs an optional extra that is not installed (e.g. ``stacfetch[xarray]``)."""


# --- configuration and authentication (exit 3) ------------------------------------------
class ConfigError(StacfetchError):
    """Missing or contradictory settings."""

    exit_code = EXIT_AUTH


class AuthError(StacfetchError):
    """Credentials were refused or a token could not be obtained."""

    exit_code = EXIT_AUTH


class TokenExpiredError(AuthError):
    """A ready access token (SH_ACCESS_TOKEN) has expired and cannot be refreshed."""


class InsecureTransportError(ConfigError):
    """Credentials would be sent over plain HTTP to a non-loopback host."""


# --- service and network (exit 4) -------------------------------------------------------
class ServiceError(StacfetchError):
    """The service answered with an error, or could not be reached."""

    exit_code = EXIT_SERVICE

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        code: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.url = url

    @classmethod
    def from_response(cls, response: Any, *, hint: str | None = None) -> ServiceError:
        """Build an error from a ``requests.Response``, keeping the server's own words.

        Understands the Sentinel Hub body ``{"error": {status, reason, message, code}}``,
        the Catalog's ``{"code", "description"}``, OAuth's ``{"error", "error_description"}``
        and plain text.
        """
        status = getattr(response, "status_code", None)
        url = strip_query(getattr(response, "url", "") or "")
        code, text = decode_error_body(response)
        reason = getattr(response, "reason", "") or ""
        words = text or reason or "no error message in the response"
        message = f"HTTP {status} from {url}: {words}" + (f" [{code}]" if code else "")
        klass: type[ServiceError] = cls
        if status == 429 and cls is ServiceError:
            klass = RateLimitError
        if status == 403 and cls is ServiceError and _QUOTA_WORDS.search(words):
            return QuotaExhaustedError.from_words(message, status=status, code=code, url=url)
        return klass(message, hint=hint, status=status, code=code, url=url)


class RateLimitError(ServiceError):
    """HTTP 429 persisted after every allowed retry."""


_QUOTA_WORDS = re.compile(r"quota|monthly|limits", re.IGNORECASE)


class QuotaExhaustedError(ServiceError):
    """403: the account's monthly quota (requests or processing units) is used up.

    Sentinel Hub's monthly quotas reset on the 1st of every month (CDSE ``Quotas.qmd``); the
    run stops at once (every further request would be refused too) and keeps what it wrote.
    """

    @classmethod
    def from_words(cls, service_message: str, *, status: int | None, code: str | None,
                   url: str | None, now: datetime | None = None) -> QuotaExhaustedError:
        reset = next_monthly_reset(now)
        return cls(
            "the account's monthly quota is used up (requests or processing units): "
            f"{service_message}; monthly quotas reset on the 1st of each month, next reset "
            f"{reset:%Y-%m-%d %H:%M} UTC",
            hint="files already written are kept: run the same command again after the reset "
            "(complete files are skipped), or raise the account's quota (top-up, higher plan)",
            status=status, code=code, url=url)


def next_monthly_reset(now: datetime | None = None) -> datetime:
    """The next 1st of a month, 00:00 UTC, after ``now``."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=timezone.utc)


class NetworkError(ServiceError):
    """A host could not be reached (DNS, refused, reset, timeout)."""


class DeadlineError(NetworkError):
    """A request (its tries, waits and body) took longer than it may in all."""


class ShutDownHubError(NetworkError):
    """The configuration points at the Copernicus Open Access Hub, shut down in October 2023."""


class InvalidResponseError(ServiceError):
    """A response that does not match what was asked (size, bands, CRS, truncated body)."""


class ResponseTooLargeError(ServiceError):
    """A response larger than what was asked can be (decoded): a broken or hostile server."""


class DownloadError(ServiceError):
    """One acquisition could not be downloaded; other acquisitions may have succeeded."""


class Interrupted(StacfetchError):
    """The run was interrupted (Ctrl-C); what finished is kept."""

    exit_code = EXIT_INTERRUPTED


def closest(value: Any, choices: Iterable[str]) -> str | None:
    """The valid choice nearest to a mistyped ``value`` (difflib), for "did you mean" hints."""
    options = list(choices)
    text = str(value).strip().lower()
    found = difflib.get_close_matches(text, options, n=1, cutoff=0.6)
    if not found:  # a prefix ("planetary" -> "planetary-computer")
        found = [o for o in options if text and o.startswith(text)][:1]
    return found[0] if found else None


def decode_error_body(response: Any) -> tuple[str | None, str]:
    """Return ``(code, message)`` from an error response body, whatever its shape."""
    try:
        body = response.json()
    except Exception:  # not JSON: XML ServiceException or text
        text = (getattr(response, "text", "") or "").strip()
        return None, _short(text)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            message = inner.get("message") or inner.get("description") or inner.get("reason") or ""
            code = inner.get("code")
            return (_short(code) if code else None), _short(message)
        if isinstance(inner, str):  # OAuth: {"error": "invalid_client", "error_description": ...}
            return _short(inner), _short(body.get("error_description") or inner)
        if "description" in body:
            code = body.get("code")
            return (_short(code) if code else None), _short(body["description"])
    return None, _short(body)


def _short(value: Any) -> str:
    """An error's words as shown: one line, at most ``MAX_ERROR_WORDS`` characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_ERROR_WORDS else text[: MAX_ERROR_WORDS - 3] + "..."


