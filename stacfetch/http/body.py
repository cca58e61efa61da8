"""Reading a response's body within bounds: its size (decoded) and the request's deadline.

* :func:`body_limit` sets, for a block, how many decoded bytes a body may hold; more raises
  :class:`ResponseTooLargeError` while it arrives (a gzip bomb is never inflated beyond it);
* every read returns what one socket read brought (``read1``), so that a body trickled a byte
  at a time is checked against the request's :class:`Deadline` after each of them (a read
  waits at most the read timeout, so a deadline is overshot by one read timeout at most);
* an error's body (4xx/5xx) is cut at :data:`ERROR_BODY_LIMIT`: its words are in its first
  bytes, and a 429 or 503 must stay what it is, not become "too large";
* a redirect's body is never read (:func:`discard_body`): its connection is closed instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

import requests
from requests.exceptions import ChunkedEncodingError, ContentDecodingError, SSLError
from requests.exceptions import ConnectionError as RequestsConnectionError
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import SSLError as Urllib3SSLError

from ..errors import DeadlineError, ResponseTooLargeError
from .urls import strip_query

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "ERROR_BODY_LIMIT",
    "Deadline",
    "body_limit",
    "current_limit",
    "discard_body",
    "read_body",
    "read_whole",
]

DEFAULT_BODY_LIMIT = 128 * 1024 * 1024  # decoded bytes of a body nobody set a limit for
ERROR_BODY_LIMIT = 1 << 20  # decoded bytes kept of an error's body; the rest is not read
READ_CHUNK = 1 << 20  # the most decoded bytes read at a time (urllib3 bounds its decompression to it)
_DEADLINE_ATTRIBUTE = "stacfetch_deadline"

_BODY_LIMIT: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "stacfetch_body_limit", default=None
)


@contextlib.contextmanager
def body_limit(max_bytes: int | None, what: str) -> Iterator[None]:
    """Within the block, a response body (decoded) may hold at most ``max_bytes``: more raises
    :class:`ResponseTooLargeError` while it is read, before it is held whole. ``what`` names
    it in the message ("a Catalog page"). None: the default limit."""
    token = _BODY_LIMIT.set(None if max_bytes is None else (int(max_bytes), what))
    try:
        yield
    finally:
        _BODY_LIMIT.reset(token)


def current_limit(what: str = "a response") -> tuple[int, str]:
    """``(max bytes, what)`` of the :func:`body_limit` in force (the default outside one)."""
    return _BODY_LIMIT.get() or (DEFAULT_BODY_LIMIT, what)


@dataclass(frozen=True)
class Deadline:
    """When a request (its tries, waits and body) must be done: ``at`` (``time.monotonic()``),
    ``seconds`` after it started."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def passed(self) -> bool:
        return time.monotonic() > self.at

    def attach(self, response: requests.Response) -> None:
        """Let a later :func:`read_body` of a streamed ``response`` keep to this deadline."""
        setattr(response, _DEADLINE_ATTRIBUTE, self)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 10_000_000 else f"{n / 1e6:.1f} MB"


def _host(response: requests.Response) -> str:
    return urlsplit(response.url or "").hostname or "the service"


def read_body(response: requests.Response, *, limit: int | None = None, what: str = "a response",
              into: IO[bytes] | None = None, deadline: Deadline | None = None,
              cut: bool = False) -> bytes:
    """Read ``response``'s body, decoded, as it arrives; ``into``: write it there (returns b"").

    ``limit``: the most decoded bytes accepted (:class:`ResponseTooLargeError` as soon as it is
    passed); None: the :func:`body_limit` in force. ``cut``: keep the first ``limit`` bytes
    instead, and close the connection on the rest. ``deadline``: the request's (None: the one
    the session attached to ``response``); :class:`DeadlineError` once it passes.
    urllib3's errors become requests' own, so that the session's retry loop sees them.
    """
    if limit is None:
        limit, what = current_limit(what)
    if deadline is None:
        deadline = getattr(response, _DEADLINE_ATTRIBUTE, None)
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = response.raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            total += len(chunk)
            if total > limit and cut:
                chunks.append(chunk[: len(chunk) - (total - limit)])
                response.raw.close()  # the rest is never read: the connection cannot be reused
                break
            if total > limit:
                raise ResponseTooLargeError(
                    f"the answer from {_host(response)} is larger than the {_megabytes(limit)} "
                    f"stacfetch accepts for {what} (more than {total:,} bytes decoded); stopped reading it",
                    hint="a server answering this much is broken or hostile; check the URL settings "
                    "(SH_BASE_URL, STACFETCH_STAC_URL) and try again later",
                    status=response.status_code, url=strip_query(response.url or ""),
                )
            if deadline is not None and deadline.passed():
                raise DeadlineError(
                    f"the answer from {_host(response)} was still arriving after the {deadline.seconds:g} s "
                    f"a request may take in all: {strip_query(response.url or '')}; stopped reading it",
                    hint="the service or the network is very slow: try again later; to wait longer, "
                    "give --timeout SECONDS (in Python: timeout=)",
                    url=strip_query(response.url or ""),
                )
            if into is not None:
                into.write(chunk)
            else:
                chunks.append(chunk)
    except ProtocolError as exc:  # a connection cut mid-body, or a short body
        raise ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        raise ContentDecodingError(exc) from exc
    except ReadTimeoutError as exc:
        raise RequestsConnectionError(exc) from exc
    except Urllib3SSLError as exc:
        raise SSLError(exc) from exc
    return b"".join(chunks)


def read_whole(response: requests.Response, limit: tuple[int, str], deadline: Deadline, *,
               cut: bool = False) -> None:
    """Read a whole body into ``response.content`` (1 MiB at a time at most, not requests'
    10 KiB: half the CPU for a large GeoTIFF), within ``limit`` and ``deadline``."""
    try:
        max_bytes, what = limit
        response._content = read_body(response, limit=max_bytes, what=what,  # noqa: SLF001
                                      deadline=deadline, cut=cut)
    except BaseException:
        response.close()
        raise
    finally:
        response._content_consumed = True  # noqa: SLF001
        response.raw.release_conn()


def discard_body(response: requests.Response) -> None:
    """Never read ``response``'s body (a redirect's): close its connection, content empty."""
    if response._content is False:  # noqa: SLF001 - not read yet
        response._content = b""  # noqa: SLF001
        response._content_consumed = True  # noqa: SLF001
        response.close()
