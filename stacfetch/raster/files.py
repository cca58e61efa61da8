"""The files next to an output GeoTIFF, and the atomic ways they are written.

``<dest>.<run>.part`` (being stitched), ``<dest>.<run>.cog.part`` (the copy into the output
format), ``<dest>.<run>.<tile>.tile.part`` (one large response spooled to disk) and
``<dest>.json`` (the sidecar: the source STAC items and the file's checksum). All live in the
destination folder, so ``os.replace`` onto ``dest`` is atomic. ``<run>`` (:func:`run_tag`)
is unique per run, so that two runs writing into one folder never touch each other's
temporaries; without it (``tag=None``) the names are ``<dest>.part`` etc.
``.<dest>.lock`` is the destination's lock (:func:`destination_lock`): one writer at a time.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

# errors that mean "this folder may not be written" (read-only media): the lock is skipped
UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
SIDECAR_FILE_KEY = "stacfetch:file"  # in the sidecar: {"sha256": hex, "size": bytes} of the file

__all__ = [
    "SIDECAR_FILE_KEY",
    "atomic_write_text",
    "cog_part_path",
    "destination_lock",
    "file_identity",
    "fsync_dir",
    "fsync_file",
    "part_path",
    "record_file",
    "recorded_file",
    "run_tag",
    "sha256_and_size",
    "sha256_file",
    "sidecar_path",
    "tile_spool_path",
]


def run_tag() -> str:
    """A tag unique to one run (process id and random hex) for its temporary file names."""
    return f"{os.getpid()}-{secrets.token_hex(3)}"


def _tagged(dest: Path, tag: str | None, suffix: str) -> Path:
    return dest.with_name(f"{dest.name}.{tag}.{suffix}" if tag else f"{dest.name}.{suffix}")


def part_path(dest: Path, tag: str | None = None) -> Path:
    """``<dest>.<tag>.part``: same folder, so ``os.replace`` onto ``dest`` is atomic."""
    return _tagged(dest, tag, "part")


def cog_part_path(dest: Path, tag: str | None = None) -> Path:
    """``<dest>.<tag>.cog.part``: the Cloud-Optimized copy being made from the ``.part``."""
    return _tagged(dest, tag, "cog.part")


def tile_spool_path(dest: Path, tile_name: str, tag: str | None = None) -> Path:
    """``<dest>.<tag>.<tile>.tile.part``: one large response streamed to disk before it is written."""
    return _tagged(dest, tag, f"{tile_name}.tile.part")


def _lock_path(dest: Path) -> Path:
    """``.<dest>.lock``: the destination's lock file (hidden, next to it)."""
    return dest.with_name(f".{dest.name}.lock")


@contextmanager
def destination_lock(dest: Path, stop: threading.Event | None = None,
                     on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold ``dest``'s lock (across processes and threads) for the block: one writer at a time.

    Waits for another writer (another run fetching the same acquisition) to finish, calling
    ``on_wait()`` once when it has to wait; gives up with ``InterruptedError`` when ``stop``
    is set meanwhile. Where no lock file may be made (a read-only folder: EROFS, EACCES,
    EPERM) the block runs unlocked, logged; any other failure (EMFILE, ENOSPC, a network
    file system's lock error) raises: mutual exclusion is never dropped silently.
    """
    lock = FileLock(str(_lock_path(dest)))
    waited = False
    locked = False
    while not locked:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=0.5)
            locked = True
        except Timeout:
            if stop is not None and stop.is_set():
                raise InterruptedError(f"stopped while waiting for {dest.name}") from None
            if not waited and on_wait is not None:
                on_wait()
            waited = True
        except OSError as exc:
            if exc.errno not in UNWRITABLE:
                raise
            # no lock file in a folder we cannot write to (complete files on read-only media
            # are still checked and skipped); writing the file there fails on its own
            log.info("%s: no lock file can be made in %s (%s); going on unlocked",
                     dest.name, dest.parent, exc.strerror or exc)
            break
    if not locked:
        yield  # outside the handler: an error in the block is not "during handling" of ours
        return
    try:
        yield
    finally:
        lock.release()


def sidecar_path(dest: Path) -> Path:
    """``<dest>.json``: the source STAC items of the file."""
    return dest.with_name(dest.name + ".json")


def recorded_file(dest: Path) -> tuple[str, int] | None:
    """``(sha256, size)`` of ``dest`` as recorded in its sidecar when it was written, or None
    (no sidecar, an unreadable one, or one written before checksums were recorded)."""
    try:
        entry = json.loads(sidecar_path(dest).read_text(encoding="utf-8")).get(SIDECAR_FILE_KEY)
        return str(entry["sha256"]), int(entry["size"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def record_file(dest: Path) -> str:
    """Hash ``dest`` and record its SHA-256 and size in its sidecar (after it was rewritten in
    place, e.g. converted to another format); returns the digest."""
    digest = sha256_file(dest)
    side = sidecar_path(dest)
    doc = json.loads(side.read_text(encoding="utf-8"))
    doc[SIDECAR_FILE_KEY] = {"sha256": digest, "size": dest.stat().st_size}
    atomic_write_text(side, json.dumps(doc, indent=1))
    return digest


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk (before a rename makes it visible)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name[:50] + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_identity(path: Path) -> tuple[int, int, int]:
    """``(inode, size, mtime_ns)`` of ``path``: changes when the file is replaced or rewritten."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def sha256_and_size(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """Hex SHA-256 and size of one version of ``path`` (hashed and sized through one open file,
    so a rename onto ``path`` meanwhile cannot mix two versions)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
        return h.hexdigest(), os.fstat(fh.fileno()).st_size


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
