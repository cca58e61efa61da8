"""Quicklooks, contact sheets and the search timeline, drawn from emulator output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from stacfetch.api import build_query, get_query, search_query
from stacfetch.cli import main
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_settings
from stacfetch.preview import (
    BAD,
    CLOUD_TINT,
    GOOD,
    QUICKLOOK_SIDE,
    contact_sheet,
    quicklook,
    quicklook_path,
    read_picture,
    timeline,
)
from stacfetch.testing.emulator import Emulator

POINT = [34.665, 31.625]


def settings_for(emu: Emulator, out: Path):
    return load_settings(environ={}, provider="sentinelhub", client_id=SANDBOX_CLIENT_ID,
                         client_secret=SANDBOX_CLIENT_SECRET, base_url=emu.url, token_url=emu.token_url,
                         output_dir=out)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A month of one 7 km area with true colour + SCL, written with --preview."""
    out = tmp_path_factory.mktemp("preview") / "out"
    with Emulator() as emu:
        query = build_query(POINT, "2022-01-01", "2022-01-16", size=7000, bands="B04,B03,B02,SCL")
        result = get_query(query, settings=settings_for(emu, out), preview=True)
    assert len(result.paths) >= 5
    return out, result.paths


def colours(img: Image.Image) -> int:
    return len(img.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def test_get_preview_writes_a_quicklook_next_to_each_geotiff(run_dir: tuple[Path, list[Path]]) -> None:
    _, paths = run_dir
    for tif in paths:
        png = quicklook_path(tif)
        assert png.exists() and png.parent == tif.parent and png.stem == tif.stem
        with Image.open(png) as img, rasterio.open(tif) as src:
            assert img.format == "PNG" and img.mode == "RGBA"
            assert max(img.size) == QUICKLOOK_SIDE and img.size[0] / img.size[1] == pytest.approx(src.width / src.height, abs=0.01)
            rgb = np.asarray(img)[..., :3]
            assert rgb.std() > 20 and colours(img) > 200  # a stretched picture, not a flat fill
            assert (np.asarray(img)[..., 3] == 255).all()  # the area has data everywhere
        assert png.stat().st_size > 5_000


def test_quicklook_makes_nodata_transparent_and_stretches(tmp_path: Path) -> None:
    tif = tmp_path / "x.tif"
    data = np.zeros((3, 64, 80), dtype=np.uint16)
    ramp = np.linspace(500, 3000, 80, dtype=np.float64)
    data[:, :, :] = ramp.astype(np.uint16)
    data[:, :16, :] = 0  # a strip without data
    with rasterio.open(tif, "w", driver="GTiff", width=80, height=64, count=3, dtype="uint16", nodata=0,
                       crs="EPSG:32636", transform=from_origin(600000, 3500000, 10, 10)) as dst:
        dst.write(data)
        for i, band in enumerate(("B04", "B03", "B02"), start=1):
            dst.set_band_description(i, band)
    png = quicklook(tif)
    with Image.open(png) as img:
        pixels = np.asarray(img)
    assert pixels.shape == (64, 80, 4)
    assert (pixels[:16, :, 3] == 0).all() and (pixels[16:, :, 3] == 255).all()
    grey = pixels[16:, :, 0].astype(int)
    assert grey[:, 0].max() <= 10 and grey[:, -1].min() >= 245  # 2-98 % stretch to the full range


def test_scl_only_file_is_drawn_in_class_colours(tmp_path: Path) -> None:
    tif = tmp_path / "scl.tif"
    scl = np.full((1, 20, 20), 4, dtype=np.uint8)
    scl[0, :10] = 9
    with rasterio.open(tif, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8", nodata=0,
                       crs="EPSG:32636", transform=from_origin(600000, 3500000, 10, 10)) as dst:
        dst.write(scl)
        dst.set_band_description(1, "SCL")
    picture = read_picture(tif)
    assert tuple(picture.rgba[0, 0, :3]) == (255, 255, 255) and tuple(picture.rgba[15, 0, :3]) == (0, 160, 0)
    assert picture.clear == pytest.approx(50.0)


def test_contact_sheet_shows_every_acquisition_with_labels_and_cloud_marks(run_dir: tuple[Path, list[Path]]) -> None:
    out, paths = run_dir
    (sheet,) = contact_sheet(out, thumb=160)
    assert sheet.name == "contact-sheet.png" and sheet.parent == paths[0].parent
    pictures = [read_picture(p, 160) for p in paths]
    with Image.open(sheet) as img:
        width, height = img.size
        rgb = np.asarray(img.convert("RGB")).astype(int)
    cols = min(len(paths), 5)
    rows = -(-len(paths) // cols)
    assert width >= cols * 160 and height >= 62 + rows * (160 + 58)
    assert colours(Image.fromarray(rgb.astype(np.uint8))) > 500

    def has(colour: tuple[int, int, int]) -> bool:
        return bool((np.abs(rgb - np.array(colour)).sum(axis=2) == 0).any())

    verdicts = {p.clear is not None and p.clear >= 80 for p in pictures}
    assert verdicts == {True, False}, [p.clear for p in pictures]  # both usable and cloudy days
    assert has(GOOD) and has(BAD)  # the green and red verdict bars
    tint = np.array(CLOUD_TINT) * 0.55
    reddish = (rgb[..., 0] > tint[0]) & (rgb[..., 1] < rgb[..., 0] * 0.7)
    assert reddish.sum() > 1000  # SCL cloud is tinted red on the cloudy days


def test_cli_preview_writes_one_sheet_per_area(run_dir: tuple[Path, list[Path]], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run_dir
    target = tmp_path / "sheet.png"
    assert main(["preview", str(out), "-o", str(target), "--thumb", "96"]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    with Image.open(target) as img:
        assert img.size[0] >= 5 * 96
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["preview", str(empty)]) == 2
    assert "no GeoTIFFs" in capsys.readouterr().err


def test_timeline_of_a_search(tmp_path: Path) -> None:
    with Emulator() as emu:
        query = build_query(POINT, "2022-01-01", "2022-03-31", max_cloud=80)
        items = search_query(query, settings=settings_for(emu, tmp_path))
    png = timeline(items, tmp_path / "t.png", start=query.interval.start, end=query.interval.end, max_cloud=80)
    with Image.open(png) as img:
        assert img.size == (960, 400)
        rgb = np.asarray(img.convert("RGB")).astype(int)
    for colour in (GOOD, BAD):
        assert (np.abs(rgb - np.array(colour)).sum(axis=2) == 0).sum() > 50


def test_cli_search_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for key in ("SH_BASE_URL", "SH_TOKEN_URL", "SH_CLIENT_ID", "SH_CLIENT_SECRET", "STACFETCH_PROVIDER"):
        monkeypatch.delenv(key, raising=False)
    code = main(["search", "--provider", "sandbox", "--lon", "34.665", "--lat", "31.625", "--start", "2022-01-01",
                 "--end", "2022-01-31", "--plot", "timeline.png"])
    assert code == 0 and "timeline: timeline.png" in capsys.readouterr().err
    assert (tmp_path / "timeline.png").stat().st_size > 3_000
