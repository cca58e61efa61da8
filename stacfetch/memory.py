"""Handing freed memory back to the operating system (glibc on Linux; a no-op elsewhere).

Stitching a large mosaic frees tens of MB in many pieces (decoded strips, GDAL's blocks and
I/O buffers, in several threads' heaps); glibc keeps most of them mapped, so the process's
resident size stays ~50 MB above what it uses and the next phase (the overview pyramid, the
COG copy) peaks on top of that. :func:`release_free_memory` returns them (``malloc_trim``);
it changes no setting and is safe to call from any thread at any time.
:func:`return_large_buffers_to_the_os` changes glibc's behaviour for the whole process, so
only the process owner (the CLI) calls it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["WORKING_MEMORY", "MemoryBudget", "release_free_memory", "return_large_buffers_to_the_os"]


@functools.cache
def _libc() -> Any:
    """glibc, or None (not Linux, or no C library found)."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def release_free_memory() -> None:
    """Give the memory this process has freed back to the OS (``malloc_trim(0)``): a few ms."""
    libc = _libc()
    with contextlib.suppress(AttributeError):  # not glibc (musl has no malloc_trim)
        if libc is not None:
            libc.malloc_trim(0)


def return_large_buffers_to_the_os() -> None:
    """Make glibc hand buffers over 1 MiB straight back to the OS when freed (Linux only).

    Without this, glibc's adaptive threshold keeps every worker thread's tile-sized buffers
    in per-thread heaps, which shows up as a much higher peak RSS for large areas. It changes
    the whole process, so the library never calls it: the CLI (the process owner) does, and so
    may any program that runs large downloads.
    """
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


class MemoryBudget:
    """At most ``limit`` bytes of working memory handed out at once in this process.

    ``with budget.hold(n):`` waits until ``n`` more bytes fit; a hold larger than the whole
    budget waits until nothing else is held, then runs alone. Holds must not nest (a thread
    holding bytes never waits for more), and a hold wraps only local work (decoding a response
    already received, writing our own file), never a network wait: so the wait ends when the
    others' local work does, and needs no timeout of its own.
    Stitching a large mosaic and copying it into a COG take their decoded strips and buffers
    from :data:`WORKING_MEMORY`, so peak memory no longer grows with the number of workers.
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.held = 0
        self.peak = 0  # the most held at once (for tests and benchmarks)
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` (at most the whole budget) for the block."""
        n = max(0, min(int(nbytes), self.limit))
        with self._changed:
            self._changed.wait_for(lambda: self.held == 0 or self.held + n <= self.limit)
            self.held += n
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            with self._changed:
                self.held -= n
                self._changed.notify_all()


# One decoded strip at a time (a 1667-px tile's is 23 MB, a 2500-px tile's 35 MB): a second
# one in parallel cost ~25 MB of peak for no time on the 50 km job (the strips are I/O and
# memcpy; the compression has GDAL's threads). A large COG copy (~100 MB of GDAL's buffers)
# takes it all and runs alone.
WORKING_MEMORY = MemoryBudget(40 * 1024 * 1024)
