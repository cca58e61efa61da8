"""The files next to an output GeoTIFF, and the atomic ways they are written.

``<dest>.part`` (being stitched), ``<dest>.cog.part`` (the copy into the output format),
``<dest>.<tile>.tile.part`` (one large response spooled to disk) and ``<dest>.json`` (the
sidecar: the source STAC items). All live in the destination folder, so ``os.replace``
onto ``dest`` is atomic.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = [
    "atomic_write_text",
    "cog_part_path",
    "fsync_dir",
    "fsync_file",
    "part_path",
    "sha256_file",
    "sidecar_path",
    "tile_spool_path",
]


def part_path(dest: Path) -> Path:
    """``<dest>.part``: same folder, so ``os.replace`` onto ``dest`` is atomic."""
    return dest.with_name(dest.name + ".part")


def cog_part_path(dest: Path) -> Path:
    """``<dest>.cog.part``: the Cloud-Optimized copy being made from ``<dest>.part``."""
    return dest.with_name(dest.name + ".cog.part")


def tile_spool_path(dest: Path, tile_name: str) -> Path:
    """``<dest>.<tile>.tile.part``: one large response streamed to disk before it is written."""
    return dest.with_name(f"{dest.name}.{tile_name}.tile.part")


def sidecar_path(dest: Path) -> Path:
    """``<dest>.json``: the source STAC items of the file."""
    return dest.with_name(dest.name + ".json")


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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
