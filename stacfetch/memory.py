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
from typing import Any

__all__ = ["release_free_memory", "return_large_buffers_to_the_os"]


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
