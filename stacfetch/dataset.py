"""Downloaded GeoTIFFs as one lazy ``xarray.Dataset``: ``stacfetch.open_dataset(...)``.

    ds = stacfetch.open_dataset("out")                 # or a GetResult, catalog.json, an area folder
    ndvi = (ds.B08 - ds.B04) / (ds.B08 + ds.B04)
    ndvi.where(ds.SCL.isin([4, 5, 6, 11])).mean(("x", "y")).compute()

One variable per band with dims ``(time, y, x)``; ``time`` is each acquisition's UTC datetime;
``x``/``y`` are pixel centres in the files' CRS (``ds.rio.crs``). Reflectance-like bands are
float32 physical values (stored value x scale + offset, from each file's band metadata) with
NaN where the file's mask says no data; SCL and dataMask keep their integer classes (0 where
masked). Nothing is read until ``.compute()``/``.values``: each dask chunk is one windowed,
masked read of every selected band of one file. Needs the ``stacfetch[xarray]`` extra.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from rasterio.windows import Window

from .bands import BANDS, COMMON_NAMES, center_wavelength_um, parse_bands
from .errors import InvalidOptionError, MissingExtraError

try:  # the optional extra stacfetch[xarray]; open_dataset says how to install it when missing
    import dask.array as da
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    da = xr = None  # type: ignore[assignment]
    _MISSING: str | None = exc.name or str(exc)
else:
    _MISSING = None

__all__ = ["DEFAULT_CHUNK", "Scene", "area_files", "open_dataset", "read_scenes", "require_extra"]

DEFAULT_CHUNK = 1024  # pixels a side of one dask chunk (a multiple of the files' 512 blocks)
INTEGER_KINDS = ("classification", "mask")  # kept as integer classes, not scaled
EXTRA_HINT = "pip install 'stacfetch[xarray]'"


def require_extra(feature: str = "open_dataset") -> None:
    """Raise MissingExtraError naming the extra when xarray, rioxarray or dask is missing."""
    if _MISSING is not None:
        raise MissingExtraError(
            f"{feature} needs xarray, rioxarray and dask ({_MISSING} is not installed)",
            hint=f"install the extra: {EXTRA_HINT}",
        )


@dataclass(frozen=True)
class Scene:
    """One downloaded acquisition, from its GeoTIFF header (no pixels read)."""

    path: Path
    datetime: datetime  # UTC
    platform: str
    item_ids: tuple[str, ...]
    cloud_cover: float | None
    bands: tuple[str, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    crs: Any
    transform: Any
    width: int
    height: int
    tags: dict[str, str]

    @property
    def grid_key(self) -> tuple[Any, ...]:
        return (self.crs.to_wkt(), tuple(self.transform)[:6], self.width, self.height, self.bands)


# --- which files ------------------------------------------------------------------------
def _is_result(source: Any) -> bool:
    return hasattr(source, "paths") and hasattr(source, "outcomes")


def _area_folders(folder: Path) -> list[Path]:
    return sorted({p.parent for p in folder.rglob("*.tif") if p.is_file()})


def _manifest_files(catalog: Path) -> list[Path]:
    """The GeoTIFFs a manifest's items point at (every ``data`` asset, each file once)."""
    try:
        root = pystac.Catalog.from_file(str(catalog))
        items = list(root.get_items(recursive=True))
    except Exception as exc:
        raise InvalidOptionError(f"cannot read the manifest {catalog}: {exc}",
                                 hint="give the output folder instead; its files are found without it") from None
    files: dict[Path, None] = {}
    for item in items:
        for asset in item.assets.values():
            href = asset.get_absolute_href() or asset.href
            if "data" in (asset.roles or []) and href.lower().endswith((".tif", ".tiff")):
                files[Path(href).resolve()] = None
    return list(files)


def _one_area(files: Sequence[Path], where: Path) -> list[Path]:
    """``files`` when they share one folder; otherwise an error listing the area folders."""
    areas = sorted({p.parent for p in files})
    if len(areas) > 1:
        try:
            shown = [str(a.relative_to(where.parent if where.is_file() else where)) for a in areas]
        except ValueError:
            shown = [str(a) for a in areas]
        raise InvalidOptionError(
            f"{where} holds {len(areas)} area folders; open one at a time",
            hint="give one of them as the source:\n    " + "\n    ".join(shown),
        )
    return sorted(files)


def area_files(source: Any) -> list[Path]:
    """The GeoTIFFs of one area: from a GetResult, an output or area folder, a catalog.json, a .tif
    or a list of .tif paths."""
    if _is_result(source):
        if getattr(source, "dry_run", False):
            raise InvalidOptionError("a dry run downloaded nothing to open",
                                     hint="run get without --dry-run first")
        files = [Path(p).resolve() for p in source.paths]
        if not files:
            raise InvalidOptionError("this run has no complete files to open",
                                     hint="see result.summary() for what failed or was skipped")
        return _one_area(files, files[0].parent)
    if isinstance(source, (list, tuple)) and source and all(isinstance(p, (str, Path)) for p in source):
        files = [Path(p).expanduser().resolve() for p in source]
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise InvalidOptionError(f"{missing[0]} does not exist", hint="give existing GeoTIFFs")
        return _one_area(files, files[0].parent)
    if not isinstance(source, (str, Path)):
        raise InvalidOptionError(
            f"cannot open {type(source).__name__} as a dataset",
            hint="give a GetResult, an output folder, an area folder or a manifest catalog.json",
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidOptionError(f"{path} does not exist",
                                 hint="give the --out folder of a stacfetch get run")
    if path.is_file():
        if path.suffix.lower() == ".json":
            files = _manifest_files(path)
            if not files:
                raise InvalidOptionError(f"the manifest {path} lists no GeoTIFF")
            return _one_area(files, path)
        if path.suffix.lower() in (".tif", ".tiff"):
            return [path.resolve()]
        raise InvalidOptionError(f"{path} is neither a folder, a GeoTIFF nor a catalog.json")
    here = sorted(p.resolve() for p in path.glob("*.tif") if p.is_file())
    if here:
        return here
    areas = _area_folders(path)
    if not areas:
        raise InvalidOptionError(f"no GeoTIFFs (*.tif) under {path}",
                                 hint="give the --out folder of a stacfetch get run")
    return _one_area([p.resolve() for a in areas for p in a.glob("*.tif") if p.is_file()], path)


# --- what the headers say -------------------------------------------------------------------
def _parse_time(text: str | None, path: Path) -> datetime:
    if not text:
        raise InvalidOptionError(f"{path.name} has no ACQUISITION_DATETIME tag: not a stacfetch GeoTIFF",
                                 hint="open a folder written by stacfetch get")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidOptionError(f"{path.name}: unreadable ACQUISITION_DATETIME {text!r}") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_scene(path: Path) -> Scene:
    """One file's facts from its header and tags (no pixel is read)."""
    try:
        with rasterio.open(path) as src:
            tags = src.tags()
            names = tuple(d or f"band{i}" for i, d in enumerate(src.descriptions, start=1))
            scene = Scene(
                path=Path(path), datetime=_parse_time(tags.get("ACQUISITION_DATETIME"), Path(path)),
                platform=tags.get("PLATFORM", ""),
                item_ids=tuple(i for i in tags.get("ITEM_IDS", "").split(",") if i),
                cloud_cover=_float_or_none(tags.get("CLOUD_COVER")),
                bands=names,
                scales=tuple(1.0 if s is None else float(s) for s in src.scales),
                offsets=tuple(0.0 if o is None else float(o) for o in src.offsets),
                crs=src.crs, transform=src.transform, width=src.width, height=src.height, tags=tags,
            )
    except rasterio.errors.RasterioIOError as exc:
        raise InvalidOptionError(f"cannot read {path}: {exc}") from None
    return scene


def read_scenes(paths: Sequence[Path]) -> list[Scene]:
    """Every file's facts, in time order; all must share one grid and band set."""
    scenes = sorted((read_scene(p) for p in paths), key=lambda s: (s.datetime, s.path.name))
    first = scenes[0]
    for scene in scenes[1:]:
        if scene.grid_key != first.grid_key:
            raise InvalidOptionError(
                f"{scene.path.name} does not share the grid or bands of {first.path.name}",
                hint="files of one area folder share them; open each area folder on its own",
            )
    return scenes


# --- lazy pixels ----------------------------------------------------------------------------
class WindowReader:
    """Array-like ``(band, y, x)`` float32 view of one GeoTIFF for ``dask.array.from_array``.

    Each ``[...]`` is one windowed read of the selected bands (``masked=True``: the file's
    nodata value or its internal mask band), scaled to physical values, NaN where masked.
    """

    ndim = 3
    dtype = np.dtype("float32")

    def __init__(self, path: Path, indexes: Sequence[int], scales: Sequence[float],
                 offsets: Sequence[float], height: int, width: int, *, mask: bool = True) -> None:
        self.path = str(path)
        self.indexes = list(indexes)
        self.scales = np.asarray(scales, dtype="float64")
        self.offsets = np.asarray(offsets, dtype="float64")
        self.shape = (len(self.indexes), int(height), int(width))
        self.mask = mask

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        bands, rows, cols = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        picked = list(range(*bands))
        out = np.empty((len(picked), len(range(*rows)), len(range(*cols))), dtype=self.dtype)
        if out.size == 0:
            return out
        window = Window(cols[0], rows[0], out.shape[2], out.shape[1])
        with rasterio.open(self.path) as src:
            data = src.read([self.indexes[b] for b in picked], window=window, masked=self.mask)
        for i, b in enumerate(picked):
            band = np.ma.getdata(data[i]).astype("float64") * self.scales[b] + self.offsets[b]
            out[i] = band
            if self.mask:
                out[i][np.ma.getmaskarray(data[i])] = np.nan
        return out


def _token(scene: Scene, indexes: Sequence[int], mask: bool) -> str:
    stat = scene.path.stat()
    text = json.dumps([str(scene.path), stat.st_size, stat.st_mtime_ns, list(indexes), mask])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _chunk_sizes(chunks: Any) -> tuple[int, int]:
    """``(y, x)`` chunk sides from None, an int or a mapping with ``x``/``y``."""
    if chunks is None:
        return DEFAULT_CHUNK, DEFAULT_CHUNK
    if isinstance(chunks, int) and not isinstance(chunks, bool):
        ys = xs = chunks
    elif isinstance(chunks, dict) and set(chunks) <= {"x", "y", "time", "band"}:
        ys, xs = chunks.get("y", DEFAULT_CHUNK), chunks.get("x", DEFAULT_CHUNK)
    else:
        raise InvalidOptionError(f"chunks={chunks!r} is not understood",
                                 hint='give pixels a side, e.g. chunks=1024 or chunks={"x": 1024, "y": 512}')
    for side in (ys, xs):
        if not isinstance(side, int) or isinstance(side, bool) or side < 1:
            raise InvalidOptionError(f"chunks={chunks!r}: a chunk side must be a whole number of pixels >= 1")
    return ys, xs


def _select(available: tuple[str, ...], bands: Any) -> list[str]:
    if bands is None:
        return list(available)
    wanted = list(parse_bands(bands))
    missing = [b for b in wanted if b not in available]
    if missing:
        raise InvalidOptionError(f"band {', '.join(missing)} is not in these files",
                                 hint="the files hold: " + ",".join(available))
    return wanted


def _band_attrs(name: str, scale: float, offset: float, integer: bool) -> dict[str, Any]:
    info = BANDS.get(name)
    attrs: dict[str, Any] = {"long_name": name}
    if info is not None:
        attrs["description"] = info.description
        if info.kind == "reflectance":
            attrs["units"] = "1"
            attrs["common_name"] = COMMON_NAMES.get(name, "")
            attrs["center_wavelength_um"] = center_wavelength_um(name)
        if info.kind == "classification":
            attrs["flag_meaning"] = "Sentinel-2 scene classification; 0 = no data"
    if not integer:
        attrs["stored_scale"], attrs["stored_offset"] = scale, offset
    return attrs


def open_dataset(source: Any, *, bands: Any = None, chunks: Any = None, mask: bool = True) -> Any:
    """Open one area's GeoTIFFs as a lazy ``xarray.Dataset`` (see the module docstring).

    ``source``: a ``GetResult``, an output folder (with one area folder), an area folder, a
    manifest ``catalog.json``, one ``.tif`` or a list of them (of one area). ``bands``: names or a preset (default: every
    band of the files). ``chunks``: pixels a side of a dask chunk (int or ``{"x", "y"}``).
    ``mask=False``: no NaN/0 for masked pixels, only the scaled stored values.
    """
    require_extra("open_dataset")
    scenes = read_scenes(area_files(source))
    first = scenes[0]
    names = _select(first.bands, bands)
    indexes = [first.bands.index(n) + 1 for n in names]
    scales = [first.scales[i - 1] for i in indexes]
    offsets = [first.offsets[i - 1] for i in indexes]
    cy, cx = _chunk_sizes(chunks)
    layers = []
    for scene in scenes:
        reader = WindowReader(scene.path, indexes, [scene.scales[i - 1] for i in indexes],
                              [scene.offsets[i - 1] for i in indexes], scene.height, scene.width,
                              mask=mask)
        layers.append(da.from_array(
            reader, chunks=(len(indexes), cy, cx), name=f"stacfetch-read-{_token(scene, indexes, mask)}",
            lock=False, asarray=False, fancy=False, inline_array=True,
            meta=np.empty((0, 0, 0), dtype="float32"),
        ))
    cube = da.stack(layers, axis=0)  # (time, band, y, x)
    t = first.transform
    if t.b != 0 or t.d != 0:
        raise InvalidOptionError(f"{first.path.name} has a rotated grid; open it with rioxarray instead")
    xs = t.c + (np.arange(first.width) + 0.5) * t.a
    ys = t.f + (np.arange(first.height) + 0.5) * t.e
    times = np.array([s.datetime.replace(tzinfo=None) for s in scenes], dtype="datetime64[ns]")
    variables = {}
    for i, name in enumerate(names):
        integer = BANDS.get(name) is not None and BANDS[name].kind in INTEGER_KINDS
        layer = cube[:, i]
        if integer:
            layer = da.where(da.isnan(layer), 0, layer).astype("uint8")
        variables[name] = xr.DataArray(layer, dims=("time", "y", "x"),
                                       attrs=_band_attrs(name, scales[i], offsets[i], integer))
    ds = xr.Dataset(
        variables,
        coords={
            "time": ("time", times, {"long_name": "acquisition time", "timezone": "UTC"}),
            "y": ("y", ys), "x": ("x", xs),
            "platform": ("time", [s.platform for s in scenes]),
            "cloud_cover": ("time", np.array([np.nan if s.cloud_cover is None else s.cloud_cover
                                              for s in scenes], dtype="float64"),
                            {"long_name": "scene cloud cover of the source items", "units": "%"}),
            "item_ids": ("time", [",".join(s.item_ids) for s in scenes]),
            "file": ("time", [s.path.name for s in scenes]),
        },
        attrs={
            "title": f"stacfetch {first.tags.get('COLLECTION', 'sentinel-2-l2a')} {','.join(names)}",
            "source_folder": str(first.path.parent),
            "collection": first.tags.get("COLLECTION", ""),
            "provider": first.tags.get("PROVIDER", ""),
            "synthetic": str(first.tags.get("SYNTHETIC") == "true").lower(),
            "band_descriptions": ", ".join(f"{n}: {BANDS[n].description}" if n in BANDS else n
                                           for n in names),
            "item_ids": "; ".join(",".join(s.item_ids) for s in scenes),
            "cloud_cover_per_time": ", ".join("" if s.cloud_cover is None else f"{s.cloud_cover:g}"
                                              for s in scenes),
        },
    )
    ds = ds.rio.write_crs(first.crs).rio.write_transform(first.transform)
    for name in names:
        integer = ds[name].dtype.kind == "u"
        ds[name] = ds[name].rio.write_nodata(0 if integer else np.nan, encoded=False)
    return ds
