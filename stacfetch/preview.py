"""Pictures of results: a quicklook PNG per GeoTIFF, a contact sheet per area, a search timeline.

* :func:`quicklook` — true colour (B04, B03, B02) with one 2-98 percentile stretch shared by
  the three bands (so colours keep their balance), nodata transparent; an SCL-only file is
  drawn in the SCL class colours; any other band set as grey from its first band.
* :func:`contact_sheet` — every acquisition of an area folder side by side, in time order,
  labelled with date, platform, scene cloud cover and (when the file has SCL) the clear share
  over the area, with a green/amber/red bar: which days are usable, at a glance.
* :func:`timeline` — scenes of a search over time against their cloud cover.

Drawn with Pillow only; reading uses the files' overviews, so even large COGs are quick.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import MaskFlags, Resampling

from .stac.items import scene_facts

__all__ = ["QUICKLOOK_SIDE", "PngPath", "PngPaths", "contact_sheet", "quicklook", "quicklook_path",
           "read_picture", "timeline"]

QUICKLOOK_SIDE = 512
CONTACT_SHEET_NAME = "contact-sheet.png"
RGB = ("B04", "B03", "B02")
BACKGROUND = (32, 34, 38)
TEXT = (235, 235, 235)
MUTED = (160, 165, 172)
GOOD, FAIR, BAD = (46, 160, 67), (219, 160, 30), (200, 55, 45)
# SCL class colours as the Sentinel-2 L2A documentation draws them.
SCL_COLOURS = {
    0: (0, 0, 0), 1: (255, 0, 0), 2: (47, 47, 47), 3: (100, 50, 0), 4: (0, 160, 0),
    5: (255, 230, 90), 6: (0, 0, 255), 7: (128, 128, 128), 8: (192, 192, 192),
    9: (255, 255, 255), 10: (100, 200, 255), 11: (255, 150, 255),
}
SCL_CLEAR = (4, 5, 6, 11)
SCL_CLOUD = (3, 8, 9, 10)  # cloud shadow, cloud medium/high probability, thin cirrus
CLOUD_TINT = (235, 40, 60)


class PngPath(type(Path())):  # type: ignore[misc]  # PosixPath or WindowsPath
    """The path of a PNG stacfetch wrote; in a notebook it shows as the picture itself."""

    def _repr_png_(self) -> bytes:
        return self.read_bytes()


class PngPaths(list):  # type: ignore[type-arg]
    """A list of PNG paths; in a notebook every picture shows inline above its file name."""

    def _repr_html_(self) -> str:
        figures = []
        for path in self:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            figures.append(f'<figure style="margin:4px 0"><img src="data:image/png;base64,{data}" '
                           f'style="max-width:100%"/><figcaption><code>{html.escape(str(path))}</code>'
                           "</figcaption></figure>")
        return "".join(figures) or "<i>no pictures</i>"


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def quicklook_path(tif: Path) -> Path:
    """``<name>.png`` next to ``<name>.tif``."""
    return Path(tif).with_suffix(".png")


@dataclass
class Picture:
    """A GeoTIFF drawn small: RGBA pixels and what the labels need."""

    rgba: np.ndarray  # (h, w, 4) uint8
    when: datetime | None
    platform: str
    cloud_cover: float | None
    clear: float | None  # % clear pixels by SCL, when the file has SCL
    synthetic: bool
    bands: tuple[str, ...]
    cloud_mask: np.ndarray | None = None  # SCL cloud, shadow and cirrus pixels, when known

    def tinted(self) -> np.ndarray:
        """The RGBA pixels with SCL cloud/shadow/cirrus tinted red (for the contact sheet)."""
        if self.cloud_mask is None or not self.cloud_mask.any():
            return self.rgba
        out = self.rgba.copy()
        rgb = out[..., :3].astype(np.float32)
        rgb[self.cloud_mask] = rgb[self.cloud_mask] * 0.45 + np.array(CLOUD_TINT, np.float32) * 0.55
        out[..., :3] = np.round(rgb).astype(np.uint8)
        return out


def _out_shape(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = max(width, height) / max_side
    if scale <= 1:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


def stretch(values: np.ndarray, valid: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Bands ``(n, h, w)`` to uint8 with one percentile stretch over the valid pixels of all bands."""
    if not valid.any():
        return np.zeros(values.shape, dtype=np.uint8)
    sample = values[:, valid].astype(np.float64)
    lo, hi = np.percentile(sample, [low, high])
    if not hi > lo:
        hi = lo + 1.0
    scaled = (values.astype(np.float64) - lo) / (hi - lo) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def read_picture(path: Path, max_side: int = QUICKLOOK_SIDE) -> Picture:
    """Read ``path`` at most ``max_side`` pixels a side and draw it (see the module docstring)."""
    with rasterio.open(path) as src:
        names = tuple(d or f"band{i}" for i, d in enumerate(src.descriptions, start=1))
        h, w = _out_shape(src.width, src.height, max_side)
        tags = src.tags()
        nodata = src.nodata
        # stacfetch's files mark no data with a per-dataset mask band (valid zeros stay valid)
        masked = MaskFlags.per_dataset in src.mask_flag_enums[0]
        known = (src.read_masks(1, out_shape=(h, w), resampling=Resampling.nearest) > 0) if masked else None
        scl = None
        if "SCL" in names:
            scl = src.read(names.index("SCL") + 1, out_shape=(h, w), resampling=Resampling.nearest)
        if all(b in names for b in RGB):
            idx = [names.index(b) + 1 for b in RGB]
            data = src.read(idx, out_shape=(3, h, w), resampling=Resampling.average)
            valid = known if known is not None else ~np.all(data == (nodata if nodata is not None else 0), axis=0)
            rgb = stretch(data, valid)
        elif scl is not None and len(names) == 1:
            valid = (scl != 0) if known is None else known
            lut = np.zeros((256, 3), dtype=np.uint8)
            for cls, colour in SCL_COLOURS.items():
                lut[cls] = colour
            rgb = np.moveaxis(lut[scl], -1, 0)
        else:
            data = src.read(1, out_shape=(h, w), resampling=Resampling.average)
            valid = known if known is not None else data != (nodata if nodata is not None else 0)
            grey = stretch(data[np.newaxis], valid)[0]
            rgb = np.stack([grey, grey, grey])
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    rgba = np.dstack([np.moveaxis(rgb, 0, -1), alpha])
    cloud_mask = None if scl is None else np.isin(scl, SCL_CLOUD)
    clear = None
    if scl is not None:
        counted = (scl != 0) if known is None else (scl != 0) & known
        if counted.any():
            clear = float(np.isin(scl, SCL_CLEAR)[counted].mean() * 100)
    when = None
    stamp = tags.get("ACQUISITION_DATETIME")
    if stamp:
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            when = None
    try:
        cloud = float(tags["CLOUD_COVER"]) if tags.get("CLOUD_COVER") else None
    except ValueError:
        cloud = None
    return Picture(rgba, when, tags.get("PLATFORM", ""), cloud, clear,
                   tags.get("SYNTHETIC") == "true", names, cloud_mask)


def quicklook(tif: Path, dest: Path | None = None, *, max_side: int = QUICKLOOK_SIDE) -> PngPath:
    """Write a small PNG of ``tif`` (default ``<name>.png`` next to it); returns its path.

    The path (a ``PngPath``) shows as the picture in a notebook.
    """
    picture = read_picture(Path(tif), max_side)
    dest = Path(dest) if dest is not None else quicklook_path(Path(tif))
    tmp = dest.with_name(dest.name + ".tmp")
    Image.fromarray(picture.rgba, "RGBA").save(tmp, format="PNG", optimize=True)
    tmp.replace(dest)
    return PngPath(dest)


# --- contact sheet ------------------------------------------------------------------------
def _verdict(clear: float | None, cloud: float | None) -> tuple[int, int, int]:
    score = clear if clear is not None else (None if cloud is None else 100 - cloud)
    if score is None:
        return MUTED
    return GOOD if score >= 80 else FAIR if score >= 50 else BAD


def _area_folders(folder: Path) -> list[Path]:
    tifs = [p for p in Path(folder).rglob("*.tif") if p.is_file()]
    return sorted({p.parent for p in tifs})


def _checkerboard(w: int, h: int, cell: int = 8) -> Any:
    yy, xx = np.mgrid[0:h, 0:w]
    board = ((yy // cell + xx // cell) % 2).astype(bool)
    pixels = np.where(board[..., None], np.uint8(58), np.uint8(46)).repeat(3, axis=2)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def contact_sheet(
    folder: Path, dest: Path | None = None, *, thumb: int = 220, columns: int | None = None
) -> PngPaths:
    """One contact sheet PNG per area folder under ``folder``; returns their paths.

    The list (a ``PngPaths``) shows every sheet inline in a notebook.

    ``dest`` is used when there is exactly one area (default ``<area>/contact-sheet.png``).
    Nodata shows as a checkerboard.
    """
    areas = _area_folders(Path(folder))
    if not areas:
        raise FileNotFoundError(f"no GeoTIFFs (*.tif) under {folder}")
    written = []
    title_font, label_font, small_font = _font(18), _font(14), _font(12)
    for area in areas:
        pictures = []
        for tif in sorted(area.glob("*.tif")):
            try:
                pictures.append((tif, read_picture(tif, thumb)))
            except Exception as exc:  # a damaged file gets a note, not a crash
                pictures.append((tif, exc))
        pictures.sort(key=lambda tp: (getattr(tp[1], "when", None) or datetime.max.replace(tzinfo=timezone.utc),
                                      tp[0].name))
        n = len(pictures)
        cols = columns or max(1, min(n, 6 if n > 12 else 5 if n > 4 else n))
        rows = math.ceil(n / cols)
        pad, label_h, header_h = 12, 58, 62
        cell_w, cell_h = thumb + pad, thumb + label_h + pad
        width = max(cols * cell_w + pad, 520)
        height = header_h + rows * cell_h + pad
        sheet = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(sheet)
        first = next((p for _, p in pictures if isinstance(p, Picture)), None)
        synthetic = any(isinstance(p, Picture) and p.synthetic for _, p in pictures)
        bands = ",".join(first.bands) if first else ""
        draw.text((pad, 10), f"{area.name}", font=title_font, fill=TEXT)
        usable = sum(1 for _, p in pictures if isinstance(p, Picture) and _verdict(p.clear, p.cloud_cover) == GOOD)
        tinted = any(isinstance(p, Picture) and p.cloud_mask is not None for _, p in pictures)
        subtitle = (f"{n} acquisition(s), {usable} mostly clear · bands {bands}"
                    + (" · red: SCL cloud/shadow/cirrus" if tinted else "")
                    + (" · SYNTHETIC (sandbox emulator)" if synthetic else ""))
        draw.text((pad, 36), subtitle, font=small_font, fill=MUTED)
        for i, (tif, pic) in enumerate(pictures):
            x = pad + (i % cols) * cell_w
            y = header_h + (i // cols) * cell_h
            if not isinstance(pic, Picture):
                draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], outline=BAD)
                draw.text((x + 6, y + 6), f"unreadable:\n{tif.name}", font=small_font, fill=BAD)
                continue
            img = Image.fromarray(pic.tinted(), "RGBA")
            ox, oy = x + (thumb - img.width) // 2, y + (thumb - img.height) // 2
            sheet.paste(_checkerboard(img.width, img.height), (ox, oy))
            sheet.paste(img, (ox, oy), img)
            colour = _verdict(pic.clear, pic.cloud_cover)
            draw.rectangle([x, y + thumb + 3, x + thumb - 1, y + thumb + 8], fill=colour)
            when = pic.when.strftime("%Y-%m-%d %H:%M UTC") if pic.when else tif.stem
            draw.text((x, y + thumb + 13), f"{when}  {pic.platform}", font=label_font, fill=TEXT)
            parts = []
            if pic.cloud_cover is not None:
                parts.append(f"scene cloud {pic.cloud_cover:.0f} %")
            if pic.clear is not None:
                parts.append(f"area clear {pic.clear:.0f} %")
            draw.text((x, y + thumb + 33), " · ".join(parts) or "cloud cover unknown", font=small_font,
                      fill=colour if colour != MUTED else MUTED)
        out = Path(dest) if (dest is not None and len(areas) == 1) else area / CONTACT_SHEET_NAME
        tmp = out.with_name(out.name + ".tmp")
        sheet.save(tmp, format="PNG", optimize=True)
        tmp.replace(out)
        written.append(PngPath(out))
    return PngPaths(written)


# --- timeline -----------------------------------------------------------------------------
def _ticks(start: datetime, end: datetime) -> tuple[list[datetime], str]:
    span = (end - start).total_seconds() / 86400
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if span <= 16:
        step, fmt = 1 if span <= 8 else 2, "%d %b"
        ticks = [day0 + timedelta(days=i) for i in range(0, int(span) + 2, step)]
    elif span <= 120:
        step, fmt = 7, "%d %b"
        ticks = [day0 + timedelta(days=i) for i in range(0, int(span) + 8, step)]
    else:
        fmt = "%b %Y"
        ticks, month = [], day0.replace(day=1)
        every = max(1, math.ceil(span / 30 / 12))
        while month <= end:
            ticks.append(month)
            for _ in range(every):
                month = (month + timedelta(days=32)).replace(day=1)
    return [t for t in ticks if start <= t <= end], fmt


def _platform_marker(draw: Any, x: float, y: float, platform: str, colour: tuple[int, int, int]) -> None:
    r = 6
    if platform.endswith("B"):
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour, outline=TEXT)
    elif platform.endswith("C"):
        draw.polygon([(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)], fill=colour, outline=TEXT)
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=TEXT)


def timeline(
    items: Sequence[Any],
    dest: Path,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    max_cloud: float | None = None,
    title: str | None = None,
    size: tuple[int, int] = (960, 400),
) -> PngPath:
    """Plot ``items`` (pystac Items) over time against ``eo:cloud_cover``; write a PNG to ``dest``."""
    facts = [scene_facts(it) for it in items]
    points = [(f.sensing_time(), f.cloud_cover, f.platform or "S2") for f in facts]
    times = [t for t, _, _ in points]
    lo = start or (min(times) if times else datetime.now(timezone.utc))
    hi = end or (max(times) if times else lo + timedelta(days=1))
    if hi - lo < timedelta(days=1):
        hi = lo + timedelta(days=1)
    width, height = size
    left, right, top, bottom = 64, 24, 56, 62
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(t: datetime) -> float:
        return left + (t - lo).total_seconds() / (hi - lo).total_seconds() * plot_w

    def py(cloud: float) -> float:
        return top + (1 - cloud / 100) * plot_h

    days = len({t.date() for t in times})
    draw.text((left, 12), title or f"{len(points)} scene(s) on {days} day(s), "
              f"{lo:%Y-%m-%d} to {hi:%Y-%m-%d}", font=font, fill=TEXT)
    caption = "cloud cover of each scene (eo:cloud_cover, over its whole tile)"
    draw.text((left, 32), caption, font=small, fill=MUTED)
    x = left + draw.textlength(caption, font=small) + 24
    for name in ("S2A", "S2B", "S2C"):
        _platform_marker(draw, x, 39, name, MUTED)
        draw.text((x + 10, 32), name, font=small, fill=MUTED)
        x += 58
    for level in (0, 25, 50, 75, 100):
        y = py(level)
        draw.line([(left, y), (left + plot_w, y)], fill=(60, 63, 70))
        draw.text((left - 40, y - 7), f"{level:3d} %", font=small, fill=MUTED)
    ticks, fmt = _ticks(lo, hi)
    for t in ticks:
        x = px(t)
        draw.line([(x, top + plot_h), (x, top + plot_h + 5)], fill=MUTED)
        draw.text((x - 18, top + plot_h + 9), t.strftime(fmt), font=small, fill=MUTED)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(90, 94, 102))
    if max_cloud is not None:
        y = py(max_cloud)
        for x0 in range(left, left + plot_w, 12):
            draw.line([(x0, y), (min(x0 + 6, left + plot_w), y)], fill=FAIR, width=2)
        draw.text((left + plot_w - 120, y - 18), f"--max-cloud {max_cloud:g}", font=small, fill=FAIR)
    for t, cloud, platform in sorted(points, key=lambda p: p[0]):
        x = px(t)
        if cloud is None:
            draw.line([(x, top), (x, top + plot_h)], fill=MUTED)
            continue
        colour = _verdict(None, cloud)
        draw.line([(x, top + plot_h), (x, py(cloud))], fill=(80, 84, 92))
        _platform_marker(draw, x, py(cloud), platform, colour)
    draw.text((left, height - 22), "time (UTC)", font=small, fill=MUTED)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.save(dest, format="PNG", optimize=True)
    return PngPath(dest)
