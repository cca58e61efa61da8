"""The manifest: a self-contained STAC Catalog of the GeoTIFFs written.

``catalog.json`` + ``items/<id>.json`` in the area (or output) folder: one Item per GeoTIFF
with the file as asset ``data`` carrying ``file:checksum`` (SHA-256 multihash, ``1220`` +
hex digest) and ``file:size``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pystac
from pystac.layout import CustomLayoutStrategy
from pystac.stac_io import DefaultStacIO

from .. import __version__
from ..plan import Grid, Job, sanitize
from ..raster.files import atomic_write_text, sha256_file, sidecar_path
from ..raster.tags import iso

__all__ = ["MANIFEST_NAME", "ManifestRecord", "record_for", "write_manifest"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "catalog.json"
_FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
_PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_EO_EXT = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"


@dataclass(frozen=True)
class ManifestRecord:
    """One written GeoTIFF as the manifest lists it."""

    destination: Path
    item_ids: tuple[str, ...]
    datetime: datetime
    start: datetime
    end: datetime
    platform: str
    cloud_cover: float | None
    sha256: str
    size: int
    bands: tuple[str, ...]
    dtype: str
    grid: Grid
    synthetic: bool = False


def record_for(
    job: Job,
    *,
    path: Path | None = None,
    sha256: str | None = None,
    size: int | None = None,
    synthetic: bool = False,
) -> ManifestRecord:
    """The manifest record of a committed job (hashes the file unless ``sha256`` is given)."""
    acq = job.acquisition
    path = Path(path or job.destination)
    return ManifestRecord(
        destination=path,
        item_ids=acq.item_ids,
        datetime=acq.datetime,
        start=acq.start,
        end=acq.end,
        platform=acq.platform,
        cloud_cover=acq.cloud_cover,
        sha256=sha256 or sha256_file(path),
        size=path.stat().st_size if size is None else int(size),
        bands=job.bands,
        dtype=job.dtype,
        grid=job.grid,
        synthetic=synthetic,
    )


def _record_from_mapping(entry: Mapping[str, Any]) -> ManifestRecord:
    return record_for(
        entry["job"],
        path=entry.get("path"),
        sha256=entry.get("sha256"),
        size=entry.get("size"),
        synthetic=bool(entry.get("synthetic", False)),
    )


def _multihash_sha256(hexdigest: str) -> str:
    return "1220" + hexdigest


class _AtomicStacIO(DefaultStacIO):
    """pystac IO that writes every file through a temporary file and a rename."""

    def write_text_to_href(self, href: str, txt: str) -> None:
        path = Path(href)
        try:
            if path.read_text(encoding="utf-8") == txt:
                return  # unchanged (an entry of an earlier run): no rewrite, no fsync
        except (OSError, UnicodeDecodeError):
            pass
        atomic_write_text(path, txt)


def _platform_name(code: str) -> str:
    return "+".join(f"sentinel-2{p[-1].lower()}" if re.fullmatch(r"S2[A-D]", p) else p for p in code.split("-"))


def _item_for(record: ManifestRecord, root: Path) -> pystac.Item:
    rel = record.destination.resolve().relative_to(root)
    item_id = rel.with_suffix("").as_posix()
    grid = record.grid
    footprint = grid.footprint_4326()
    props: dict[str, Any] = {
        "start_datetime": iso(record.start),
        "end_datetime": iso(record.end),
        "platform": _platform_name(record.platform),
        "constellation": "sentinel-2",
        "stacfetch:item_ids": list(record.item_ids),
        "stacfetch:bands": list(record.bands),
        "stacfetch:dtype": record.dtype,
        "proj:code": grid.crs,
        "proj:shape": [grid.height, grid.width],
        "proj:transform": list(grid.transform)[:6],
        "proj:bbox": list(grid.bounds),
    }
    if record.cloud_cover is not None:
        props["eo:cloud_cover"] = record.cloud_cover
    if record.synthetic:
        props["stacfetch:synthetic"] = True
    item = pystac.Item(
        id=item_id,
        geometry=footprint.__geo_interface__,
        bbox=list(footprint.bounds),
        datetime=record.datetime,
        properties=props,
        stac_extensions=[_FILE_EXT, _PROJ_EXT, _EO_EXT],
    )
    item.add_asset(
        "data",
        pystac.Asset(
            href=str(record.destination.resolve()),
            media_type=pystac.MediaType.GEOTIFF,
            roles=["data"],
            title=", ".join(record.bands),
            extra_fields={"file:checksum": _multihash_sha256(record.sha256), "file:size": record.size},
        ),
    )
    side = sidecar_path(record.destination.resolve())
    if side.exists():
        item.add_asset(
            "source-items",
            pystac.Asset(href=str(side), media_type=pystac.MediaType.GEOJSON, roles=["metadata"]),
        )
    return item


def _existing_items(catalog_path: Path) -> dict[str, pystac.Item]:
    """Items of an earlier manifest whose files still exist with the recorded size."""
    if not catalog_path.is_file():
        return {}
    try:
        catalog = pystac.Catalog.from_file(str(catalog_path))
        old = list(catalog.get_items())
    except Exception as exc:  # a damaged manifest is rebuilt from this run's records
        log.warning("ignoring unreadable manifest %s: %s", catalog_path, exc)
        return {}
    kept: dict[str, pystac.Item] = {}
    for item in old:
        asset = item.assets.get("data")
        if asset is None:
            continue
        path = Path(asset.get_absolute_href() or "")
        if not path.is_file() or path.stat().st_size != asset.extra_fields.get("file:size"):
            log.info("manifest: dropping %s (file missing or changed)", item.id)
            continue
        fresh = pystac.Item.from_dict(item.to_dict(include_self_link=False, transform_hrefs=False))
        fresh.clear_links()
        for key, a in item.assets.items():
            fresh.assets[key].href = a.get_absolute_href() or a.href
        kept[item.id] = fresh
    return kept


def write_manifest(
    root: Path, records: Iterable[ManifestRecord | Mapping[str, Any]], *, title: str | None = None
) -> Path:
    """Write or update ``<root>/catalog.json``; returns its path.

    ``root`` is the area folder or the whole output folder (item ids are the files' paths
    relative to it, without ``.tif``). A record is a ``ManifestRecord`` or a mapping
    ``{"job": Job, "path": Path, "sha256": hex, "size": int}`` (``path``, ``sha256`` and
    ``size`` optional: taken from the job and the file).

    Earlier entries are kept when their file still exists with the recorded size; entries
    for the same file are replaced; every record must point at an existing file inside
    ``root``. Each file is written atomically, the catalog last. Not safe for two
    concurrent writers of the same ``root``.
    """
    root = Path(root).resolve()
    catalog_path = root / MANIFEST_NAME
    items = _existing_items(catalog_path)
    for entry in records:
        record = entry if isinstance(entry, ManifestRecord) else _record_from_mapping(entry)
        dest = record.destination.resolve()
        if root not in dest.parents:
            raise ValueError(f"manifest record {dest} is not inside {root}")
        if not dest.is_file():
            raise FileNotFoundError(f"manifest record points at a missing file: {dest}")
        item = _item_for(record, root)
        items[item.id] = item
    catalog = pystac.Catalog(
        id=sanitize("stacfetch-" + root.name),
        description=title or f"GeoTIFFs written by stacfetch {__version__} in {root.name}",
        title=title,
    )
    for item_id in sorted(items):
        catalog.add_item(items[item_id])

    def item_href(item: pystac.Item, parent_dir: str) -> str:
        return str(root / "items" / (sanitize(item.id.replace("/", "__"), 200) + ".json"))

    catalog.normalize_hrefs(str(root), strategy=CustomLayoutStrategy(item_func=item_href))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=_AtomicStacIO())
    # Item files no longer listed (their GeoTIFF vanished) are removed after the catalog.
    listed = {Path(it.get_self_href() or "").name for it in catalog.get_items()}
    items_dir = root / "items"
    if items_dir.is_dir():
        for stale in items_dir.glob("*.json"):
            if stale.name not in listed:
                stale.unlink(missing_ok=True)
    return catalog_path
