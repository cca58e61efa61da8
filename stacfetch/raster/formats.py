"""Output formats and resume: which format a file is, copying into a format, completeness.

A file is complete only when it carries ``STACFETCH_COMPLETE=1``, matches the expected grid,
bands and dtype, and has its sidecar (``complete_format``), and is still the file that was
written (``intact``: the sidecar's checksum and size). ``verified_format`` is both, the one
check resume uses everywhere (``is_complete`` is it as a yes/no).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.windows import Window

from ..memory import WORKING_MEMORY
from ..plan import Grid
from . import overviews
from .files import (
    cog_part_path,
    file_identity,
    fsync_dir,
    fsync_file,
    record_file,
    recorded_file,
    sha256_file,
    sidecar_path,
)
from .profiles import COG_BLOCK, IO_ENV, check_format, creation_options
from .tags import COMPLETE_TAG

__all__ = [
    "check_copy",
    "close_transform",
    "complete_format",
    "convert_format",
    "copy_as",
    "discard_cog_part",
    "discard_partial",
    "file_format",
    "format_of",
    "intact",
    "is_complete",
    "same_crs",
    "verified_format",
]

log = logging.getLogger(__name__)

#: one run's memo of file digests: ``(path, inode, size, mtime_ns) -> SHA-256``
Digests = dict[tuple[str, int, int, int], str]


LARGE_COPY_PIXELS = 100_000_000  # samples above which a COG copy uses LARGE_COPY_THREADS
SMALL_COPY_PIXELS = 16_000_000  # samples up to which a copy is single-threaded (jobs run in parallel)
# Threads of a large COG: halving its overview windows (~25 MB each) and compressing its
# blocks (~16 MB more with 2). After the last response the cores are idle, and this copy is
# what a large download waits for; more than 2 cost memory (a buffer per thread) for little.
LARGE_COPY_THREADS = min(2, os.cpu_count() or 1)


# --- formats ----------------------------------------------------------------------------
def file_format(path: Path) -> str | None:
    """``"cog"`` (Cloud-Optimized), ``"gtiff"`` (compressed) or ``"raw"`` (uncompressed); None if no GeoTIFF."""
    try:
        with rasterio.Env(**IO_ENV), rasterio.open(path) as src:
            return format_of(src)
    except Exception:
        return None


def format_of(src: Any) -> str | None:
    """The output format of an open dataset (see ``file_format``)."""
    if src.driver != "GTiff":
        return None
    structure = src.tags(ns="IMAGE_STRUCTURE")
    if structure.get("LAYOUT") == "COG":
        return "cog"
    return "gtiff" if structure.get("COMPRESSION") else "raw"


def copy_as(source: Path | str, target: Path, fmt: str, bands: Sequence[str], dtype: str,
            *, pixels: int | None = None, size: tuple[int, int] | None = None,
            compress: str | None = None) -> None:
    """Copy a GeoTIFF (a path or a ``/vsimem/`` name) into ``fmt``; GDAL streams it block by block.

    The COG driver first writes overviews to ``<target>.ovr.tmp`` next to the target; a COG
    gets the levels of ``overviews.level_count`` (none for small files). ``pixels`` (samples
    of the source) and ``size`` (its width, height) save opening it once more; ``compress``:
    see ``profiles.COMPRESSIONS`` (None: deflate).
    """
    options = creation_options(fmt, bands, dtype, compress=compress)
    if pixels is None or (fmt == "cog" and size is None):
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), rasterio.open(source) as src:
            pixels, size = src.width * src.height * src.count, (src.width, src.height)
    levels = overviews.level_count(*size, COG_BLOCK) if fmt == "cog" and size is not None else 0
    if fmt == "cog":  # the levels of overviews.level_count, for GDAL's builder too
        options.update({"overview_count": levels} if levels else {"overviews": "NONE"})
    if pixels <= SMALL_COPY_PIXELS:
        # small files: threads cost more than they save while other jobs use the cores
        options["num_threads"] = "1"
    elif fmt == "cog" and pixels > LARGE_COPY_PIXELS:  # its buffers grow with the threads
        options["num_threads"] = str(LARGE_COPY_THREADS)
    # GDAL_CACHEMAX is never changed here: GDAL has one block cache for the process, and
    # shrinking it flushes the dirty blocks of datasets other threads are writing. With
    # 4 copies of 2001 x 2001 x 4 at once that corrupted the heap ("malloc(): invalid size",
    # SIGSEGV) in 2 of 6 runs, none of 8 without it. The run's cache is set once (run.execute).
    large = pixels > SMALL_COPY_PIXELS
    # a large copy's buffers (~100 MB for a 5001 x 5001 x 12 COG) are the process's working
    # memory: it runs alone, not beside other large copies or stitched strips (memory.py)
    budget = WORKING_MEMORY.hold(WORKING_MEMORY.limit) if large else contextlib.nullcontext()
    with budget, rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        # our own pyramid (it carries the no-data mask too): GDAL's needs the mosaic in its cache
        if fmt == "cog" and large and levels:
            average = options["overview_resampling"] == "AVERAGE"
            with overviews.pyramid(str(source), Path(target), COG_BLOCK, average=average,
                                   threads=LARGE_COPY_THREADS) as vrt:
                rasterio.shutil.copy(vrt, str(target), **{**options, "overviews": "FORCE_USE_EXISTING"})
        else:
            rasterio.shutil.copy(str(source), str(target), **options)
        check_copy(target, pixels)


def check_copy(target: Path, pixels: int) -> None:
    """Raise OSError unless ``target`` is tagged complete and its last block lies in the file.

    GDAL's copy and in-place tag updates only log their write errors. (A full disk or a
    file-size limit made ``rasterio.shutil.copy`` return normally with "_tiffWriteProc: File
    too large" on stderr and a file missing its last tiles.) The last block is written last,
    so its offset and size, read from the TIFF directory, show a cut without decoding it
    (decoding the last row cost 15 ms a file).
    """
    try:
        with rasterio.open(target) as out:
            if out.width * out.height * out.count != pixels:
                raise OSError(f"{out.width} x {out.height} x {out.count} samples, expected {pixels}")
            if out.tags().get(COMPLETE_TAG) != "1":
                raise OSError(f"{target.name} lost its tags while being written (disk full?)")
            rows, cols = out.block_shapes[0]
            last = f"{-(-out.width // cols) - 1}_{-(-out.height // rows) - 1}"
            offset = out.get_tag_item(f"BLOCK_OFFSET_{last}", "TIFF", bidx=out.count)
            size = out.get_tag_item(f"BLOCK_SIZE_{last}", "TIFF", bidx=out.count)
            if offset is None or size is None:  # not told: decode the last row instead
                out.read(window=Window(0, out.height - 1, out.width, 1))
            elif not (int(offset) > 0 and int(size) > 0
                      and int(offset) + int(size) <= os.path.getsize(target)):
                raise OSError(f"{target.name} is cut short: its last block is missing (disk full?)")
    except OSError:
        raise
    except Exception as exc:
        raise OSError(f"the copy written to {target.name} is incomplete (disk full?): {exc}") from exc


def convert_format(dest: Path, fmt: str, bands: Sequence[str], dtype: str, *,
                   compress: str | None = None) -> Path:
    """Rewrite a complete file in place as ``fmt`` (atomically: a temporary copy, then rename)."""
    fmt = check_format(fmt)
    dest = Path(dest)
    tmp = cog_part_path(dest)
    try:
        copy_as(dest, tmp, fmt, bands, dtype, compress=compress)
        fsync_file(tmp)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        if sidecar_path(dest).is_file():
            record_file(dest)  # the sidecar's checksum is the new file's
    finally:
        discard_cog_part(dest)
    return dest


# --- leftovers of an interrupted run ----------------------------------------------------
def discard_cog_part(dest: Path, tag: str | None = None) -> bool:
    """Remove ``dest``'s ``.cog.part`` (of run ``tag``) and its overview temporaries. True if any."""
    tmp = cog_part_path(dest, tag)
    removed = overviews.discard(tmp)
    for leftover in (tmp, tmp.with_name(tmp.name + ".ovr.tmp"), tmp.with_name(tmp.name + ".msk.ovr.tmp")):
        if leftover.exists():
            leftover.unlink(missing_ok=True)
            removed = True
    return removed


def discard_partial(dest: Path, tag: str | None = None) -> bool:
    """Remove the leftovers of unfinished writes of ``dest``. True if any was removed.

    ``.part``, ``.cog.part`` (and its overview temporaries) and spooled tiles: with ``tag``
    only those of that run; without, those of every run — call it so only while holding the
    destination's lock (``files.destination_lock``), when no other run can be writing them.
    Never the file itself, its sidecar or its lock.
    """
    dest = Path(dest)
    prefix = f"{dest.name}.{tag}." if tag else f"{dest.name}."
    removed = False
    for leftover in dest.parent.glob(glob.escape(prefix) + "*"):
        rest = leftover.name[len(dest.name):]
        if rest.endswith(".part") or ".part." in rest:
            leftover.unlink(missing_ok=True)
            removed = True
    return removed


# --- completeness (resume) --------------------------------------------------------------
def close_transform(a: Any, b: Any, tolerance: float) -> bool:
    """Whether two affine transforms agree to ``tolerance`` in every coefficient."""
    return all(abs(x - y) <= tolerance for x, y in zip(tuple(a)[:6], tuple(b)[:6], strict=True))


def same_crs(a: CRS, b: CRS) -> bool:
    """Equal CRSs, or two with the same EPSG code."""
    if a == b:
        return True
    ea, eb = a.to_epsg(), b.to_epsg()
    return ea is not None and ea == eb


def complete_format(
    dest: Path, grid: Grid, bands: Sequence[str], dtype: str, *, deep: bool = False
) -> str | None:
    """The format (``cog``/``gtiff``/``raw``) of ``dest`` if it is complete, else None: THE check.

    Checks size, CRS, transform, band count and names, dtype, the completion tag and the
    sidecar. ``deep`` also decodes every block (slow; catches damaged pixel data).
    """
    dest = Path(dest)
    if not dest.is_file() or not sidecar_path(dest).is_file():
        return None
    try:
        with rasterio.Env(**IO_ENV), rasterio.open(dest) as src:
            ok = (
                src.driver == "GTiff"
                and (src.width, src.height) == (grid.width, grid.height)
                and src.count == len(bands)
                and all(d == np.dtype(dtype).name for d in src.dtypes)
                and src.crs is not None
                and same_crs(src.crs, CRS.from_user_input(grid.crs))
                and close_transform(src.transform, grid.transform, 1e-6 * grid.resolution)
                and tuple(src.descriptions) == tuple(bands)
                and src.tags().get(COMPLETE_TAG) == "1"
            )
            if ok and deep:
                for _, window in src.block_windows(1):
                    src.read(window=window)
            return format_of(src) if ok else None
    except Exception:  # unreadable in any way: not complete
        log.debug("%s is not a complete file", dest, exc_info=True)
        return None


def verified_format(
    dest: Path, grid: Grid, bands: Sequence[str], dtype: str, *, deep: bool = False,
    digests: Digests | None = None,
) -> tuple[str | None, str | None, bool]:
    """Resume's one check: ``(format, sha256, damaged)`` of ``dest``.

    ``format`` is set when ``complete_format`` finds it complete AND ``intact`` confirms it is
    still the file that was written (``sha256`` then its digest, when the sidecar recorded
    one); ``damaged`` when it looked complete but was not intact (cut short, changed). The
    budget, the disk check and screening (``api``) and the run (``run``) all decide with it;
    ``digests``: the run's memo (see ``_digest``).
    """
    found = complete_format(dest, grid, bands, dtype, deep=deep)
    if found is None:
        return None, None, False
    ok, digest = intact(Path(dest), digests)
    return (found, digest, False) if ok else (None, None, True)


def is_complete(
    dest: Path,
    grid: Grid,
    bands: Sequence[str],
    dtype: str,
    *,
    deep: bool = False,
    fmt: str | None = None,
    digests: Digests | None = None,
) -> bool:
    """True when ``dest`` is a finished, intact stacfetch file for exactly this grid, bands and dtype.

    ``verified_format`` as a yes/no: every output format is accepted unless ``fmt``
    ("cog", "gtiff" or "raw") names one.
    """
    found = verified_format(dest, grid, bands, dtype, deep=deep, digests=digests)[0]
    return found is not None and (fmt is None or found == check_format(fmt))


def _digest(path: Path, digests: Digests | None) -> str:
    """SHA-256 of ``path``; with a run's ``digests``, a file unchanged since that run hashed it
    (the plan's budget and screening, then the job) is not read again."""
    if digests is None:
        return sha256_file(path)
    key = (str(path.resolve()), *file_identity(path))
    known = digests.get(key)
    if known is None:
        known = sha256_file(path)
        if (str(path.resolve()), *file_identity(path)) == key:  # not replaced while it was read
            digests[key] = known
    return known


def intact(dest: Path, digests: Digests | None = None) -> tuple[bool, str | None]:
    """Whether a complete-looking ``dest`` is still the file that was written; its SHA-256.

    Checked against the SHA-256 and size its sidecar recorded at commit (the digest is
    returned when it matches, so the manifest need not hash the file again); a file written
    without them passes when its last block lies in the file (``check_copy``). A file cut
    short after it was written (a copy or a disk that lost its tail) passes the header and
    tag checks of ``complete_format``, never this one.
    """
    dest = Path(dest)
    recorded = recorded_file(dest)
    try:
        if recorded is not None:
            digest, size = recorded
            if os.path.getsize(dest) != size:
                return False, None
            actual = _digest(dest, digests)
            return (True, actual) if actual == digest else (False, None)
        with rasterio.Env(**IO_ENV), rasterio.open(dest) as src:
            samples = src.width * src.height * src.count
        check_copy(dest, samples)
        return True, None
    except Exception:  # unreadable in any way: not intact
        log.debug("%s is not intact", dest, exc_info=True)
        return False, None
