"""Writing GeoTIFFs: profiles as data, the part file, output formats and resume, tags, overviews.

``profiles`` (creation options and GDAL settings as data), ``part`` (``PartFile``: stitch,
validate, commit atomically), ``formats`` (format of a file, copy into a format, the one
completeness check), ``tags`` (the one tags implementation), ``files`` (the files next to
an output and their atomic writes), ``overviews`` (pyramids in bounded memory).
"""

from __future__ import annotations

from .files import (
    cog_part_path,
    destination_lock,
    file_identity,
    part_path,
    run_tag,
    sha256_file,
    sidecar_path,
    tile_spool_path,
)
from .formats import (
    complete_format,
    convert_format,
    discard_partial,
    file_format,
    intact,
    is_complete,
    verified_format,
)
from .part import PartFile, TileData
from .profiles import (
    BLOCK,
    COG_BLOCK,
    FORMATS,
    GDAL_OPTIONS,
    PROFILES,
    check_format,
    creation_options,
    gdal_options,
    profile_for,
)
from .tags import COMPLETE_TAG, band_scale_offset, tags_for

__all__ = [
    "BLOCK",
    "COG_BLOCK",
    "COMPLETE_TAG",
    "FORMATS",
    "GDAL_OPTIONS",
    "PROFILES",
    "PartFile",
    "TileData",
    "band_scale_offset",
    "check_format",
    "cog_part_path",
    "complete_format",
    "convert_format",
    "creation_options",
    "destination_lock",
    "discard_partial",
    "file_format",
    "file_identity",
    "gdal_options",
    "intact",
    "is_complete",
    "part_path",
    "profile_for",
    "run_tag",
    "sha256_file",
    "sidecar_path",
    "tags_for",
    "tile_spool_path",
    "verified_format",
]
