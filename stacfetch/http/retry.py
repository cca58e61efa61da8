"""How a request is retried: the policy, ``Retry-After`` in milliseconds, transient errors."""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import datetime, timezone

import requests
from requests.exceptions import ChunkedEncodingError, ReadTimeout
from requests.exceptions import ConnectionError as RequestsConnectionError

__all__ = [
    "NOT_RETRIED_5XX",
    "TRANSIENT_ERRORS",
    "RetryPolicy",
    "is_name_resolution_failure",
    "is_retried_status",
    "parse_retry_after",
    "replayable",
]

TRANSIENT_ERRORS = (RequestsConnectionError, ChunkedEncodingError, ReadTimeout)
NOT_RETRIED_5XX = (501, 505)  # "not implemented", "version not supported": retrying cannot help
_NAME_RESOLUTION_MARKERS = (
    "NameResolutionError",
    "Name or service not known",
    "nodename nor servname",
    "getaddrinfo failed",
    "Temporary failure in name resolution",
    "No address associated",
)


@dataclass(frozen=True)
class RetryPolicy:
    """How :meth:`ServiceSession.send` retries.

    429: wait ``Retry-After`` milliseconds (+0–``rate_limit_jitter`` of it), never more than
    the server asked; no header → ``default_retry_after`` s doubling per header-less 429;
    a wait above ``max_retry_after``, more than ``max_headerless_rate_limits`` 429s without the
    header, a 429 saying one request costs more than the whole budget, or more than
    ``max_rate_limit_retries`` 429s in a row if set (by default a run keeps going while the
    service asks for waits within budget) → :class:`RateLimitError`. 5xx / connection reset / chunked-body errors / read timeouts:
    up to ``max_attempts`` tries, sleeping ``backoff_initial`` doubling to ``backoff_max``
    with "equal jitter" (between half and all of the step). Other 4xx: never retried.
    No answer within the read timeout: ``max_timeouts`` tries in all (a silent service is
    not asked six times). A request (all its tries, waits and its body) is given up after
    ``deadline_factor`` read timeouts.
    """

    max_attempts: int = 6
    max_timeouts: int = 2
    deadline_factor: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_rate_limit_retries: int | None = None
    max_headerless_rate_limits: int = 6  # 429s without Retry-After in a row (5 s .. 120 s waits)
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



def is_retried_status(status: int) -> bool:
    """A 5xx worth another try (not 501/505)."""
    return status >= 500 and status not in NOT_RETRIED_5XX


def is_name_resolution_failure(exc: BaseException) -> bool:
    """True when the host name does not resolve: retrying will not make it resolve."""
    text = repr(exc)
    return any(marker in text for marker in _NAME_RESOLUTION_MARKERS)


def replayable(request: requests.PreparedRequest) -> bool:
    """True when the request's body can be sent again (none, bytes/str, or a seekable file)."""
    body = request.body
    if body is None or isinstance(body, (bytes, str)):
        return True
    return getattr(request, "_body_position", None) is not None and hasattr(body, "seek")
