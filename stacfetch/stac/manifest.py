"""The manifest: a self-contained STAC Catalog of the GeoTIFFs written.

``catalog.json`` + ``items/<id>.json`` in the area (or output) folder: one Item per GeoTIFF
with the file as asset ``data`` carrying ``file:checksum`` (SHA-256 multihash, ``1220`` +
hex digest) and ``file:size``.

Several runs may write into one folder at once: each update (read, merge, write) holds the
lock ``.catalog.json.lock`` in the folder. A damaged ``catalog.json`` or item file costs no
entry: the entries are rebuilt from the GeoTIFFs and their sidecars on disk. The clean-up
removes only item files an earlier manifest listed (never a user's own file), and nothing is
written or removed through an ``items`` folder that links out of the folder.

Other tools load it as they load a STAC API's items: the ``data`` asset describes every band
(``eo:bands``: name, common name, centre wavelength; ``raster:bands``: data type, nodata,
scale, offset, resolution), the item carries the projection (``proj:code`` and, for readers
that know only the older field, ``proj:epsg``; ``proj:shape``, ``proj:transform``), and ids
have no ``/``. odc-stac finds each band by its ``eo:bands`` name; :func:`manifest_items` gives
one area's items as plain dicts with absolute hrefs and one asset per band (GDAL's
``vrt://file.tif?bands=N``, one band of the file) for tools that read one band per asset::

    odc.stac.load(pystac.Catalog.from_file("out/catalog.json").get_items(), bands=["B04", "B08"])
    stackstac.stack(stacfetch.manifest_items("out"), assets=["B04", "B08"])
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pystac
import rasterio
from filelock import FileLock
from pystac.layout import CustomLayoutStrategy
from pystac.stac_io import DefaultStacIO

from .. import __version__
from ..bands import BANDS, COMMON_NAMES, center_wavelength_um
from ..errors import InvalidOptionError
from ..plan import Acquisition, Grid, Job, sanitize
from ..raster.files import (
    atomic_write_text,
    file_identity,
    recorded_file,
    sha256_and_size,
    sha256_file,
    sidecar_path,
)
from ..raster.tags import COMPLETE_TAG, iso

__all__ = ["MANIFEST_NAME", "ManifestRecord", "add_to_manifest", "band_metadata", "manifest_items",
           "record_for", "record_from_file", "write_manifest"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "catalog.json"
LOCK_NAME = ".catalog.json.lock"  # held while a run reads, merges and writes the manifest
LOCK_TIMEOUT = 600.0  # seconds to wait for another run's manifest update
ITEMS_DIR = "items"
_FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
_PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_EO_EXT = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
_RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"


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
    # (inode, size, mtime_ns) of the file when sha256/size were taken (files.file_identity);
    # the manifest re-hashes a file whose identity changed since (replaced by another run)
    identity: tuple[int, int, int] | None = None


def record_for(
    job: Job,
    *,
    path: Path | None = None,
    sha256: str | None = None,
    size: int | None = None,
    synthetic: bool = False,
    identity: tuple[int, int, int] | None = None,
) -> ManifestRecord:
    """The manifest record of a committed job (hashes the file unless ``sha256`` is given)."""
    acq = job.acquisition
    path = Path(path or job.destination)
    if sha256 is None:  # checksum and size of one version of the file
        sha256, size = sha256_and_size(path)
    return ManifestRecord(
        destination=path,
        item_ids=acq.item_ids,
        datetime=acq.datetime,
        start=acq.start,
        end=acq.end,
        platform=acq.platform,
        cloud_cover=acq.cloud_cover,
        sha256=sha256,
        size=path.stat().st_size if size is None else int(size),
        bands=job.bands,
        dtype=job.dtype,
        grid=job.grid,
        synthetic=synthetic,
        identity=identity,
    )


def _record_from_mapping(entry: Mapping[str, Any]) -> ManifestRecord:
    return record_for(
        entry["job"],
        path=entry.get("path"),
        sha256=entry.get("sha256"),
        size=entry.get("size"),
        synthetic=bool(entry.get("synthetic", False)),
        identity=entry.get("identity"),
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


def _item_id(relative: Path) -> str:
    """The item id of a file: its path relative to the root, without ``.tif``, ``__`` for ``/``."""
    return relative.with_suffix("").as_posix().replace("/", "__")


def _file_stem(item_id: str) -> str:
    """The name (without ``.json``) of an item's file."""
    return sanitize(item_id.replace("/", "__"), 200)


def band_metadata(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(eo:bands, raster:bands)`` of a GeoTIFF, from its header (names, types, masks, scaling)."""
    with rasterio.open(path) as src:
        names = [d or f"band{i}" for i, d in enumerate(src.descriptions, start=1)]
        dtypes, nodata = src.dtypes, src.nodata
        scales, offsets, resolution = src.scales, src.offsets, float(abs(src.res[0]))
    eo_bands, raster_bands = [], []
    for i, name in enumerate(names):
        eo: dict[str, Any] = {"name": name}
        if name in BANDS:
            eo["description"] = BANDS[name].description
        if name in COMMON_NAMES:
            eo["common_name"] = COMMON_NAMES[name]
            eo["center_wavelength"] = center_wavelength_um(name)
        raster: dict[str, Any] = {"data_type": dtypes[i], "spatial_resolution": resolution,
                                  "scale": float(scales[i]), "offset": float(offsets[i])}
        if nodata is not None:  # else: the file's internal mask band says where data is
            raster["nodata"] = float(nodata) if dtypes[i].startswith("float") else int(nodata)
        eo_bands.append(eo)
        raster_bands.append(raster)
    return eo_bands, raster_bands


def _describe_bands(item: pystac.Item) -> None:
    """The band, raster and projection fields other STAC tools need (header read once per file)."""
    code = str(item.properties.get("proj:code") or "")
    if code.upper().startswith("EPSG:") and code[5:].isdigit():
        item.properties["proj:epsg"] = int(code[5:])  # readers that predate proj:code (stackstac)
    if _RASTER_EXT not in item.stac_extensions:
        item.stac_extensions.append(_RASTER_EXT)
    data = item.assets["data"]
    if data.extra_fields.get("eo:bands") and data.extra_fields.get("raster:bands"):
        return  # an unchanged entry of an earlier run: already described
    eo_bands, raster_bands = band_metadata(Path(data.get_absolute_href() or data.href))
    data.extra_fields["eo:bands"] = eo_bands
    data.extra_fields["raster:bands"] = raster_bands


def _item_for(record: ManifestRecord, root: Path) -> pystac.Item:
    rel = record.destination.resolve().relative_to(root)
    item_id = _item_id(rel)
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


def record_from_file(path: Path) -> ManifestRecord | None:
    """The record of a finished stacfetch GeoTIFF, rebuilt from the file and its sidecar.

    None when ``path`` is not one (no completion tag, no readable sidecar). The checksum is
    the one the sidecar recorded when it matches the file's size, else the file is hashed.
    """
    path = Path(path)
    try:
        sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        items = [pystac.Item.from_dict(f) for f in sidecar.get("features", [])]
        with rasterio.open(path) as src:
            tags = src.tags()
            if tags.get(COMPLETE_TAG) != "1" or not items or src.crs is None:
                return None
            epsg = src.crs.to_epsg()
            grid = Grid(crs=f"EPSG:{epsg}" if epsg else src.crs.to_string(), transform=src.transform,
                        width=src.width, height=src.height, resolution=src.transform.a)
            bands, dtype = tuple(str(d) for d in src.descriptions), src.dtypes[0]
        acq = Acquisition.from_items(items)
    except Exception as exc:  # not a stacfetch file, or one we cannot read: no record
        log.debug("no manifest record from %s: %s", path, exc)
        return None
    recorded = recorded_file(path)
    size = path.stat().st_size
    sha = recorded[0] if recorded is not None and recorded[1] == size else sha256_file(path)
    return ManifestRecord(
        destination=path, item_ids=acq.item_ids, datetime=acq.datetime, start=acq.start,
        end=acq.end, platform=acq.platform, cloud_cover=acq.cloud_cover, sha256=sha, size=size,
        bands=bands, dtype=dtype, grid=grid, synthetic=tags.get("SYNTHETIC") == "true",
    )


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _items_dir(root: Path) -> Path:
    """``<root>/items``; OSError when it is a link, or resolves, out of ``root``."""
    items = root / ITEMS_DIR
    if items.is_symlink() and not _inside(items.resolve(), root):
        raise OSError(f"{items} links to {items.resolve()}, outside {root}; stacfetch writes and "
                      "removes no manifest files through it (make it a real folder)")
    return items


def _existing_items(root: Path) -> tuple[dict[str, pystac.Item], set[Path], bool]:
    """An earlier manifest's items whose files still exist with the recorded size.

    Returns ``(items, item_files, damaged)``: ``item_files`` are the item files it listed
    (inside ``root/items``: the only ones the clean-up may remove); ``damaged`` when the
    catalog or an item could not be read (its entries are then rebuilt from the files).
    """
    catalog_path = root / MANIFEST_NAME
    if not catalog_path.is_file():
        return {}, set(), False
    try:
        links = json.loads(catalog_path.read_text(encoding="utf-8")).get("links", [])
        hrefs = [str(link["href"]) for link in links if link.get("rel") == "item"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("the manifest %s is unreadable (%s); rebuilding it from the files", catalog_path, exc)
        return {}, set(), True
    kept: dict[str, pystac.Item] = {}
    files: set[Path] = set()
    damaged = False
    items_dir = (root / ITEMS_DIR).resolve()
    for href in hrefs:
        item_path = (root / href).resolve()
        if not _inside(item_path, items_dir):
            continue  # not a file this manifest writes: neither read nor ever removed
        files.add(item_path)
        try:
            item = pystac.Item.from_file(str(item_path))
        except Exception as exc:
            log.warning("manifest item %s is unreadable (%s); rebuilding it from the file", item_path.name, exc)
            damaged = True
            continue
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
        fresh.id = fresh.id.replace("/", "__")  # an older manifest's ids: still one entry per file
        kept[fresh.id] = fresh
    return kept, files, damaged


def _rebuilt(root: Path, items: dict[str, pystac.Item]) -> list[ManifestRecord]:
    """Records of the finished GeoTIFFs under ``root`` that ``items`` does not list."""
    listed = {Path(a.href).resolve() for it in items.values() if (a := it.assets.get("data"))}
    records = []
    for path in sorted(root.rglob("*.tif")):
        if path.resolve() in listed or not sidecar_path(path).is_file():
            continue
        record = record_from_file(path)
        if record is not None and _inside(path.resolve(), root):
            records.append(record)
    if records:
        log.warning("manifest: %d entries rebuilt from the files and their sidecars", len(records))
    return records


def write_manifest(
    root: Path, records: Iterable[ManifestRecord | Mapping[str, Any]], *, title: str | None = None,
    skip_bad: bool = False,
) -> Path:
    """Write or update ``<root>/catalog.json``; returns its path.

    ``root`` is the area folder or the whole output folder (item ids are the files' paths
    relative to it, without ``.tif``). A record is a ``ManifestRecord`` or a mapping
    ``{"job": Job, "path": Path, "sha256": hex, "size": int}`` (``path``, ``sha256`` and
    ``size`` optional: taken from the job and the file).

    Earlier entries are kept when their file still exists with the recorded size; entries
    for the same file are replaced; every record must point at an existing file inside
    ``root`` (ValueError / FileNotFoundError; with ``skip_bad`` such a record is logged and
    left out, the others are written). Records are hashed under the lock, and a record whose
    file was replaced since its ``identity`` was taken is hashed again, so checksum and size
    are those of the file on disk. Each file is written atomically, the catalog last, all
    under the folder's manifest lock (safe for several runs at once, threads or processes).
    """
    root = Path(root).resolve()
    items_dir = _items_dir(root)
    with FileLock(str(root / LOCK_NAME), timeout=LOCK_TIMEOUT):
        return _write_locked(root, items_dir, records, title, skip_bad=skip_bad)


def add_to_manifest(root: Path, entry: ManifestRecord | Mapping[str, Any], *,
                    title: str | None = None) -> Path:
    """Add (or replace) one file's entry in ``<root>/catalog.json`` now; returns its path.

    A run adds each file as it completes, so a run killed later leaves the manifest of what
    it had done. Cheap whatever the size of the manifest: it writes that item's file and the
    catalog's item links, and reads no other item (``write_manifest`` at the end of the run
    still merges, drops what vanished and cleans up). Without a readable catalog yet, it is
    ``write_manifest`` itself (it rebuilds a damaged one from the files). Same lock, same
    atomic writes, same item as ``write_manifest`` writes.
    """
    root = Path(root).resolve()
    items_dir = _items_dir(root)
    with FileLock(str(root / LOCK_NAME), timeout=LOCK_TIMEOUT):
        catalog_path = root / MANIFEST_NAME
        try:
            doc = json.loads(catalog_path.read_text(encoding="utf-8"))
            links = doc["links"]
            if not isinstance(links, list) or not all(isinstance(link, dict) for link in links):
                raise TypeError("links is not a list of links")
        except (OSError, ValueError, TypeError, KeyError):  # none yet, or damaged: the full write
            return _write_locked(root, items_dir, [entry], title)
        record = _checked(root, entry)
        item = _item_for(record, root)
        _describe_bands(item)
        catalog = _new_catalog(root, title)
        catalog.add_item(item)
        _place(catalog, root, items_dir)
        item_path = Path(item.get_self_href() or "")
        io = _AtomicStacIO()
        io.write_text_to_href(str(item_path), io.json_dumps(item.to_dict(include_self_link=False)))
        href = "./" + item_path.relative_to(root).as_posix()
        if not any(link.get("rel") == "item" and link.get("href") == href for link in links):
            links.append({"rel": "item", "href": href, "type": pystac.MediaType.GEOJSON})
            atomic_write_text(catalog_path, io.json_dumps(doc))
    return catalog_path


def _new_catalog(root: Path, title: str | None) -> pystac.Catalog:
    return pystac.Catalog(
        id=sanitize("stacfetch-" + root.name),
        description=title or f"GeoTIFFs written by stacfetch {__version__} in {root.name}",
        title=title,
    )


def _place(catalog: pystac.Catalog, root: Path, items_dir: Path) -> None:
    """The manifest's layout: ``<root>/catalog.json``, ``<root>/items/<id>.json``, relative hrefs."""
    def item_href(item: pystac.Item, parent_dir: str) -> str:
        return str(items_dir / (_file_stem(item.id) + ".json"))

    catalog.normalize_hrefs(str(root), strategy=CustomLayoutStrategy(item_func=item_href))
    catalog.make_all_asset_hrefs_relative()
    catalog.catalog_type = pystac.CatalogType.SELF_CONTAINED


def _checked(root: Path, entry: ManifestRecord | Mapping[str, Any]) -> ManifestRecord:
    """The record of ``entry`` for the file as it is now (under the manifest lock)."""
    if isinstance(entry, Mapping):
        path = Path(entry.get("path") or entry["job"].destination).resolve()
    else:
        path = entry.destination.resolve()
    if root not in path.parents:
        raise ValueError(f"manifest record {path} is not inside {root}")
    if not path.is_file():
        raise FileNotFoundError(f"manifest record points at a missing file: {path}")
    record = entry if isinstance(entry, ManifestRecord) else _record_from_mapping(entry)
    if record.identity is not None and file_identity(path) != tuple(record.identity):
        log.info("manifest: %s was replaced since it was checked; hashing it again", path.name)
        digest, size = sha256_and_size(path)
        record = replace(record, sha256=digest, size=size, identity=None)
    return record


def _write_locked(root: Path, items_dir: Path, entries: Iterable[ManifestRecord | Mapping[str, Any]],
                  title: str | None, *, skip_bad: bool = False) -> Path:
    catalog_path = root / MANIFEST_NAME
    items, old_files, damaged = _existing_items(root)
    records: list[ManifestRecord] = []
    for entry in entries:
        try:
            records.append(_checked(root, entry))
        except (ValueError, OSError) as exc:
            if not skip_bad:
                raise
            log.warning("manifest: left out a record (%s)", exc)
    if damaged:
        records = _rebuilt(root, items) + records
    for record in records:
        item = _item_for(record, root)
        items[item.id] = item
    catalog = _new_catalog(root, title)
    for item_id in sorted(items):
        _describe_bands(items[item_id])
        catalog.add_item(items[item_id])
    _place(catalog, root, items_dir)
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=_AtomicStacIO())
    # item files the earlier manifest listed and this one does not (their GeoTIFF vanished)
    # are removed after the catalog; nothing else in items/ is ours to remove
    listed = {Path(it.get_self_href() or "").resolve() for it in catalog.get_items()}
    for stale in old_files - listed:
        if _inside(stale, items_dir.resolve()) and stale.suffix == ".json":
            stale.unlink(missing_ok=True)
    return catalog_path


# --- reading it back ------------------------------------------------------------------------
def _locate(source: Any) -> tuple[Path, Path | None]:
    """``(catalog.json, area folder or None)`` of a GetResult, a catalog, an output or area folder."""
    if hasattr(source, "manifest") and hasattr(source, "paths"):  # a GetResult
        if source.manifest is None or not source.paths:
            raise InvalidOptionError("this run wrote no manifest (nothing complete)",
                                     hint="see result.summary()")
        return Path(source.manifest), Path(source.paths[0]).resolve().parent
    path = Path(source).expanduser().resolve()
    if path.is_file():
        return path, None
    for folder in (path, *path.parents):
        if (folder / MANIFEST_NAME).is_file():
            return folder / MANIFEST_NAME, (None if folder == path else path)
    raise InvalidOptionError(f"no {MANIFEST_NAME} in {path} or above it",
                             hint="give the --out folder of a stacfetch get run")


def _band_assets(item: dict[str, Any]) -> None:
    """One asset per band (key = band name): that band of the file, ``vrt://<file>?bands=N``."""
    data = item["assets"]["data"]
    for index, (eo, raster) in enumerate(zip(data.get("eo:bands") or [], data.get("raster:bands") or [],
                                             strict=False), start=1):
        item["assets"].setdefault(eo["name"], {
            "href": f"vrt://{data['href']}?bands={index}", "roles": ["data"],
            "title": f"{eo['name']}: band {index} of {Path(data['href']).name}",
            "eo:bands": [eo], "raster:bands": [raster],
        })


_REBUILD_HINT = ("run the same `stacfetch get` again: a damaged manifest is rebuilt from the "
                 "GeoTIFFs and their sidecars")


def _read_item(item_path: Path) -> dict[str, Any]:
    """One manifest item with absolute hrefs and its band assets (KeyError etc. when damaged)."""
    item = json.loads(item_path.read_text(encoding="utf-8"))
    if not isinstance(item, dict) or not isinstance(item.get("assets"), dict) \
            or not isinstance(item.get("properties"), dict) or "id" not in item:
        raise ValueError("not a STAC item (id, properties and assets)")
    if "data" not in item["assets"]:
        raise KeyError("no 'data' asset (the GeoTIFF)")
    for key, asset in item["assets"].items():
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            raise KeyError(f"asset {key!r} has no href")
        if "://" not in asset["href"]:
            asset["href"] = str((item_path.parent / asset["href"]).resolve())
    for entry in item.get("links", []):
        if "://" not in entry.get("href", ""):
            entry["href"] = str((item_path.parent / entry["href"]).resolve())
    _band_assets(item)
    return item


def manifest_items(source: Any) -> list[dict[str, Any]]:
    """One area's manifest items as plain STAC dicts with absolute hrefs, in time order.

    ``source``: a ``GetResult``, the output folder (or its ``catalog.json``) when it holds one
    area, or an area folder. The JSON is returned as written (pystac would migrate
    ``proj:epsg`` away, which stackstac still needs), plus one asset per band named after it:
    GDAL's ``vrt://<file>?bands=N``, a one-band view of the file for tools that read one band
    per asset. Several areas and none named: an error listing them.
    """
    catalog_path, area = _locate(source)
    try:
        catalog = json.loads(catalog_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidOptionError(f"cannot read the manifest {catalog_path}: {exc}") from None
    links = catalog.get("links") if isinstance(catalog, dict) else None
    if not isinstance(links, list):
        raise InvalidOptionError(f"the manifest {catalog_path} is not a STAC catalog (no list of links)",
                                 hint=_REBUILD_HINT)
    by_area: dict[Path, list[dict[str, Any]]] = {}
    for link in links:
        if not isinstance(link, dict) or link.get("rel") != "item":
            continue
        if not isinstance(link.get("href"), str):
            raise InvalidOptionError(f"the manifest {catalog_path} has an item link without an href: "
                                     f"{json.dumps(link)[:120]}", hint=_REBUILD_HINT)
        item_path = (catalog_path.parent / link["href"]).resolve()
        try:
            item = _read_item(item_path)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidOptionError(f"cannot read manifest item {item_path}: {exc}",
                                     hint=_REBUILD_HINT) from None
        folder = Path(item["assets"]["data"]["href"]).parent
        by_area.setdefault(folder, []).append(item)
    if area is not None:
        chosen = by_area.get(area, [])
    elif len(by_area) > 1:
        raise InvalidOptionError(
            f"{catalog_path} lists {len(by_area)} area folders; tools stack one grid at a time",
            hint="give one of them:\n    " + "\n    ".join(str(a) for a in sorted(by_area)),
        )
    else:
        chosen = next(iter(by_area.values()), [])
    return sorted(chosen, key=lambda it: (it["properties"].get("datetime") or "", it["id"]))
