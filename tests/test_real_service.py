"""Right data on the real service (issue 11), over real HTTP against the emulator.

The emulator follows the service's documentation here (polygon masks, valid zeros, units per
band, harmonised values, the CRS list, the PU formula, item shapes per deployment, the monthly
quota's 403); these tests check that ``stacfetch get``/``search`` write what the service means.
Expected pixel values are recomputed from :mod:`stacfetch.testing.pixels`, never from the client.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import requests
from helpers import run_stacfetch
from pyproj import Transformer
from shapely import contains_xy
from shapely.geometry import Point, Polygon
from shapely.ops import transform as shp_transform

import stacfetch
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Settings, load_settings
from stacfetch.testing import pixels
from stacfetch.testing.emulator import Emulator
from stacfetch.testing.s2bands import has_offset
from stacfetch.testing.units import input_band_count, processing_units

UTC = timezone.utc
# the middle of emulator tile (34, 31): a 5 km square lies in this one tile only
CENTRE = [34.5, 31.5]
# a 6-vertex field (lon/lat), about 2 km across, inside the same tile
FIELD = [[34.49, 31.49], [34.51, 31.488], [34.518, 31.5], [34.508, 31.512], [34.492, 31.511],
         [34.484, 31.5], [34.49, 31.49]]


# -- helpers ---------------------------------------------------------------------------------
def settings_for(emu: Emulator, out: Path) -> Settings:
    return load_settings(environ={}, provider="sentinelhub", client_id=SANDBOX_CLIENT_ID,
                         client_secret=SANDBOX_CLIENT_SECRET, base_url=emu.url,
                         token_url=emu.token_url, output_dir=out)


def cli(args: list[str], emu: Emulator, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_stacfetch(args, emu, tmp_path, timeout=300)


def where(point: list[float], day: date, end: date | None = None) -> list[str]:
    return ["--lon", str(point[0]), "--lat", str(point[1]), "--start", day.isoformat(),
            "--end", (end or day).isoformat()]


def single_pass(emu: Emulator, point: list[float], start: date, end: date,
                max_cloud: float = 100.0) -> dict[str, Any]:
    """The first item over ``point`` in [start, end] whose pass has exactly one item there."""
    t0 = datetime.combine(start, datetime.min.time(), UTC)
    t1 = datetime.combine(end, datetime.max.time(), UTC)
    items = emu.items_for(Point(point).buffer(0.03), t0, t1)
    by_day: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        by_day.setdefault(it["properties"]["datetime"][:10], []).append(it)
    for day in sorted(by_day):
        group = by_day[day]
        if len(group) == 1 and group[0]["properties"]["eo:cloud_cover"] <= max_cloud:
            return group[0]
    raise AssertionError(f"no single-item pass over {point} in {start}..{end}")


def item_day(item: dict[str, Any]) -> date:
    return date.fromisoformat(item["properties"]["datetime"][:10])


def baseline_of(item_id: str) -> str:
    return item_id.split("_")[3][1:]


def expected(src: Any, band: str, item: dict[str, Any], *, harmonize: bool = True) -> np.ndarray:
    """The values the service holds for ``band`` on the file's grid (DN units)."""
    x, y = pixels.pixel_centers(src.transform, src.width, src.height)
    unit = pixels.coordinate_unit(src.crs.is_geographic)
    day = pixels.day_number(item_day(item))
    cc = item["properties"]["eo:cloud_cover"]
    if harmonize:
        return pixels.band_values(band, day, x, y, unit, cc)
    return pixels.archive_dn(band, day, x, y, unit, cc, baseline_of(item["id"]))


def process_bodies(emu: Emulator) -> list[dict[str, Any]]:
    return [r.body for r in emu.log.records(kind="process")]


def inside_mask(src: Any, polygon_lonlat: Polygon, margin: float = 0.0) -> np.ndarray:
    """True where the pixel centre lies inside the polygon (in the file's CRS) grown by ``margin`` m."""
    to_file = Transformer.from_crs(4326, src.crs, always_xy=True).transform
    poly = shp_transform(to_file, polygon_lonlat.segmentize(0.0005)).buffer(margin)
    x, y = pixels.pixel_centers(src.transform, src.width, src.height)
    return contains_xy(poly, x, y)


def inside_outside(src: Any, polygon_lonlat: Polygon) -> tuple[np.ndarray, np.ndarray]:
    """Pixels surely inside / surely outside the polygon (one pixel off its edge either way)."""
    res = abs(src.transform.a)
    return inside_mask(src, polygon_lonlat, -res), ~inside_mask(src, polygon_lonlat, res)


# -- 1. the area is the polygon ----------------------------------------------------------------
def test_polygon_is_sent_as_geometry_and_pixels_outside_are_masked(emulator: Emulator, tmp_path: Path) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 3, 20))
    ring = {"type": "Polygon", "coordinates": [FIELD]}
    result = stacfetch.get(ring, item_day(item), None, bands="B04",
                           settings=settings_for(emulator, tmp_path / "out"))
    assert len(result.paths) == 1 and not result.failed
    for body in process_bodies(emulator):
        geometry = body["input"]["bounds"].get("geometry")
        assert geometry is not None and geometry["type"] in ("Polygon", "MultiPolygon"), body["input"]["bounds"]
    with rasterio.open(result.paths[0]) as src:
        inside, outside = inside_outside(src, Polygon(FIELD))
        assert 0.3 < inside.mean() < 0.95  # the grid covers the polygon's bounds
        band = src.read(1, masked=True)
        assert band.mask[outside].all(), "pixels outside the field must be no data"
        assert not band.mask[inside].any(), "pixels inside the field hold data"
        np.testing.assert_array_equal(band.data[inside], expected(src, "B04", item)[inside])


def test_min_clear_screens_the_polygon_not_its_bbox(emulator: Emulator, tmp_path: Path) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 3, 20))
    ring = {"type": "Polygon", "coordinates": [FIELD]}
    stacfetch.get(ring, item_day(item), None, bands="B04", min_clear=0,
                  settings=settings_for(emulator, tmp_path / "out"))
    bodies = process_bodies(emulator)
    screening = [b for b in bodies if "SCL" in b["evalscript"] and "B04" not in b["evalscript"]]
    assert screening, "no screening request was made"
    for body in screening:
        assert body["input"]["bounds"].get("geometry") is not None


def test_a_point_stays_a_bbox(emulator: Emulator, tmp_path: Path) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 3, 20))
    result = stacfetch.get(CENTRE, item_day(item), None, bands="B04",
                           settings=settings_for(emulator, tmp_path / "out"))
    assert not result.failed
    with rasterio.open(result.paths[0]) as src:
        assert not src.read(1, masked=True).mask.any()


# -- 2. a valid pixel is never nodata ----------------------------------------------------------
@pytest.mark.parametrize("fmt", ["cog", "gtiff", "raw"])
def test_valid_zeros_are_data_and_no_data_is_marked_by_the_mask(emulator: Emulator, tmp_path: Path, fmt: str) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 4, 30), max_cloud=20)
    ring = {"type": "Polygon", "coordinates": [FIELD]}
    result = stacfetch.get(ring, item_day(item), None, bands="B08,B12,CLD", format=fmt, size=4000,
                           settings=settings_for(emulator, tmp_path / "out"))
    assert len(result.paths) == 1 and not result.failed
    with rasterio.open(result.paths[0]) as src:
        inside, outside = inside_outside(src, Polygon(FIELD))
        for i, band in enumerate(("B08", "B12", "CLD"), start=1):
            want = expected(src, band, item)
            zeros = inside & (want == 0)
            assert zeros.sum() > 50, f"the test area must hold valid zeros of {band}"
            got = src.read(i, masked=True)
            assert not got.mask[inside].any(), f"{band}: valid pixels (zeros included) are masked"
            assert got.mask[outside].all(), f"{band}: no-data pixels are not masked"
            np.testing.assert_array_equal(got.data[inside], want[inside])
        masks = src.read_masks()
        assert (masks[:, inside] == 255).all() and (masks[:, outside] == 0).all()


def test_float32_reflectance_zero_is_valid(emulator: Emulator, tmp_path: Path) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 4, 30), max_cloud=20)
    result = stacfetch.get(CENTRE, item_day(item), None, bands="B08", dtype="float32",
                           settings=settings_for(emulator, tmp_path / "out"))
    with rasterio.open(result.paths[0]) as src:
        want = pixels.reflectance(expected(src, "B08", item))
        got = src.read(1, masked=True)
        assert (want == 0).sum() > 50
        assert not got.mask.any()
        np.testing.assert_allclose(got.data, want, atol=1e-6)


# -- 3. units per band -------------------------------------------------------------------------
def test_b04_scl_cld_download_and_cld_holds_percentages(emulator: Emulator, tmp_path: Path) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 4, 30), max_cloud=80)
    result = stacfetch.get(CENTRE, item_day(item), None, bands="B04,SCL,CLD",
                           settings=settings_for(emulator, tmp_path / "out"))
    assert len(result.paths) == 1 and not result.failed, result.failed
    with rasterio.open(result.paths[0]) as src:
        cld = src.read(3)
        np.testing.assert_array_equal(cld, expected(src, "CLD", item))
        assert set(np.unique(cld)) <= set(range(101))
        np.testing.assert_array_equal(src.read(2), expected(src, "SCL", item))
    script = process_bodies(emulator)[0]["evalscript"]
    assert "PERCENT" in script


def test_clp_and_clm_are_l2a_bands(emulator: Emulator, tmp_path: Path) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 4, 30), max_cloud=80)
    result = stacfetch.get(CENTRE, item_day(item), None, bands="CLP,CLM",
                           settings=settings_for(emulator, tmp_path / "out"))
    assert not result.failed
    with rasterio.open(result.paths[0]) as src:
        assert src.dtypes[0] == "uint8"
        np.testing.assert_array_equal(src.read(1), expected(src, "CLP", item))
        np.testing.assert_array_equal(src.read(2), expected(src, "CLM", item))


def test_the_service_refuses_wrong_units_with_its_message(emulator: Emulator) -> None:
    token = emulator.issue_token()
    script = ('//VERSION=3\nfunction setup() { return {input: [{bands: ["CLD"], units: "DN"}], '
              'output: {bands: 1, sampleType: "UINT8"}}; }\nfunction evaluatePixel(s) { return [s.CLD]; }')
    body = {"input": {"bounds": {"bbox": [34.49, 31.49, 34.51, 31.51]},
                      "data": [{"type": "sentinel-2-l2a",
                                "dataFilter": {"timeRange": {"from": "2022-03-01T00:00:00Z",
                                                             "to": "2022-03-05T00:00:00Z"}}}]},
            "output": {"width": 10, "height": 10,
                       "responses": [{"identifier": "default", "format": {"type": "image/tiff"}}]},
            "evalscript": script}
    answer = requests.post(emulator.process_url, json=body, headers={"Authorization": f"Bearer {token}"},
                           timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "Invalid script! Band 'CLD' of collection 'S2L2A' requested in unsupported units 'DN'! "
        "Supported units for this band: [PERCENT].")


# -- 4. harmonised values, said out loud ---------------------------------------------------------
@pytest.mark.parametrize("year", [2021, 2022])
def test_value_times_scale_plus_offset_is_reflectance(emulator: Emulator, tmp_path: Path, year: int) -> None:
    item = single_pass(emulator, CENTRE, date(year, 3, 1), date(year, 4, 30))
    assert has_offset(baseline_of(item["id"])) == (year == 2022)
    result = stacfetch.get(CENTRE, item_day(item), None, bands="B04,B08",
                           settings=settings_for(emulator, tmp_path / "h"))
    body = process_bodies(emulator)[-1]
    assert body["input"]["data"][0]["processing"]["harmonizeValues"] is True
    with rasterio.open(result.paths[0]) as src:
        for i, band in enumerate(("B04", "B08"), start=1):
            x, y = pixels.pixel_centers(src.transform, src.width, src.height)
            truth = np.maximum(pixels.true_dn(band, pixels.day_number(item_day(item)), x, y, 1.0,
                                              item["properties"]["eo:cloud_cover"]), 0) / 10000
            got = src.read(i).astype("float64") * src.scales[i - 1] + src.offsets[i - 1]
            np.testing.assert_allclose(got, truth, atol=1e-6)


@pytest.mark.parametrize("year", [2021, 2022])
def test_no_harmonize_keeps_the_archive_values_with_the_offset_in_the_metadata(
        emulator: Emulator, tmp_path: Path, year: int) -> None:
    item = single_pass(emulator, CENTRE, date(year, 3, 1), date(year, 4, 30))
    result = stacfetch.get(CENTRE, item_day(item), None, bands="B04,B08", harmonize=False,
                           settings=settings_for(emulator, tmp_path / "raw"))
    body = process_bodies(emulator)[-1]
    assert body["input"]["data"][0]["processing"]["harmonizeValues"] is False
    with rasterio.open(result.paths[0]) as src:
        for i, band in enumerate(("B04", "B08"), start=1):
            np.testing.assert_array_equal(src.read(i), expected(src, band, item, harmonize=False))
            assert src.offsets[i - 1] == pytest.approx(-0.1 if year == 2022 else 0.0)
            x, y = pixels.pixel_centers(src.transform, src.width, src.height)
            truth = pixels.true_dn(band, pixels.day_number(item_day(item)), x, y, 1.0,
                                   item["properties"]["eo:cloud_cover"]) / 10000
            if year == 2021:
                truth = np.maximum(truth, 0)  # the old archive was clamped at 0
            got = src.read(i).astype("float64") * src.scales[i - 1] + src.offsets[i - 1]
            np.testing.assert_allclose(got, truth, atol=1e-6)


def test_cli_no_harmonize_flag(emulator: Emulator, tmp_path: Path) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 4, 30))
    proc = cli(["get", *where(CENTRE, item_day(item)), "--bands", "B04", "--no-harmonize"], emulator, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert process_bodies(emulator)[-1]["input"]["data"][0]["processing"]["harmonizeValues"] is False


# -- 5. CRSs the service supports ----------------------------------------------------------------
def test_an_unsupported_crs_is_refused_before_any_request(emulator: Emulator, tmp_path: Path) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 3, 20))
    proc = cli(["get", *where(CENTRE, item_day(item)), "--bands", "B04", "--crs", "EPSG:2056"],
               emulator, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "EPSG:2056" in proc.stderr and "3857" in proc.stderr and "326" in proc.stderr
    assert len(emulator.log) == 0, [r.path for r in emulator.log]


def test_a_national_crs_of_the_list_works(emulator: Emulator, tmp_path: Path) -> None:
    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 3, 20))
    result = stacfetch.get(CENTRE, item_day(item), None, bands="B04", crs="EPSG:3035",
                           settings=settings_for(emulator, tmp_path / "out"))
    assert len(result.paths) == 1 and not result.failed
    with rasterio.open(result.paths[0]) as src:
        assert src.crs.to_epsg() == 3035


# -- 6. processing units as the service counts them ----------------------------------------------
@pytest.mark.parametrize(("bands", "dtype"), [("SCL", "uint16"), ("B04,B08", "uint16"), ("all", "float32")],
                         ids=["scl-only", "two-bands", "twelve-float32"])
def test_dry_run_estimate_equals_the_charge(emulator: Emulator, tmp_path: Path, bands: str, dtype: str) -> None:
    start, end = date(2022, 3, 1), date(2022, 3, 31)
    args = ["get", *where(CENTRE, start, end), "--bands", bands, "--dtype", dtype]
    dry = cli([*args, "--dry-run"], emulator, tmp_path)
    assert dry.returncode == 0, dry.stderr
    found = re.search(r"estimate: ([\d.]+) processing units", dry.stderr)
    assert found, dry.stderr
    estimate = float(found.group(1))
    emulator.account.reset()
    run = cli(args, emulator, tmp_path)
    assert run.returncode == 0, run.stderr
    charged = emulator.account.pu_spent
    assert charged > 0
    assert estimate == pytest.approx(charged, rel=0.05), (estimate, charged)


def _body(bands: list[str], size: int, sample_type: str) -> dict[str, Any]:
    script = (f'//VERSION=3\nfunction setup() {{ return {{input: [{{bands: {json.dumps(bands)}}}], '
              f'output: {{bands: 1, sampleType: "{sample_type}"}}}}; }}\n'
              f'function evaluatePixel(s) {{ return [s.{bands[0]}]; }}')
    return {"input": {"bounds": {"bbox": [34.49, 31.49, 34.51, 31.51]},
                      "data": [{"type": "sentinel-2-l2a",
                                "dataFilter": {"timeRange": {"from": "2022-03-01T00:00:00Z",
                                                             "to": "2022-03-05T00:00:00Z"}}}]},
            "output": {"width": size, "height": size,
                       "responses": [{"identifier": "default", "format": {"type": "image/tiff"}}]},
            "evalscript": script}


@pytest.mark.parametrize(("bands", "size", "sample_type", "pu"), [
    (["B04", "B08", "dataMask"], 512, "UINT16", 2 / 3),       # dataMask is free
    (["SCL"], 512, "UINT8", 1 / 3),                           # no floor on bands / 3
    (["B04", "B08"], 100, "FLOAT32", 100 * 100 / 512**2 * 2 / 3 * 2),
    (["SCL"], 10, "UINT8", 0.005),                            # area >= 0.01, request >= 0.005
    (["B01", "B02", "B03", "B04", "B05", "B06"], 40, "UINT16", 0.01 * 2),
])
def test_the_emulator_charges_the_documented_formula(emulator: Emulator, bands: list[str], size: int,
                                                     sample_type: str, pu: float) -> None:
    token = emulator.issue_token()
    answer = requests.post(emulator.process_url, json=_body(bands, size, sample_type),
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert float(answer.headers["x-processingunits-spent"]) == pytest.approx(pu)
    assert processing_units(size, size, input_band_count(bands), sample_type) == pytest.approx(pu)


# -- 7. search --json is what the service sent ---------------------------------------------------
@pytest.mark.parametrize("deployment", ["sentinelhub", "cdse"])
def test_search_json_prints_the_service_items_unchanged(tmp_path: Path, deployment: str) -> None:
    with Emulator(deployment=deployment) as emu:
        proc = cli(["search", *where(CENTRE, date(2022, 3, 1), date(2022, 3, 10)), "--json"], emu, tmp_path)
        assert proc.returncode == 0, proc.stderr
        printed = json.loads(proc.stdout)["features"]
        start = datetime(2022, 3, 1, tzinfo=UTC)
        served = emu.items_for(Point(CENTRE).buffer(0.03), start, start + timedelta(days=10))
    assert printed and all("proj:epsg" in f["properties"] for f in printed)
    by_id = {f["id"]: f for f in served}
    for feature in printed:
        assert feature == by_id[feature["id"]]
    assert ("collection" in printed[0]) == (deployment == "cdse")


# -- 10. the monthly quota ---------------------------------------------------------------------
def test_monthly_quota_403_stops_the_run_and_keeps_the_files(emulator: Emulator, tmp_path: Path) -> None:
    args = ["get", *where(CENTRE, date(2022, 3, 1), date(2022, 3, 31)), "--bands", "B04", "--workers", "1"]
    planned = stacfetch.get(CENTRE, date(2022, 3, 1), date(2022, 3, 31), bands="B04", dry_run=True,
                            settings=settings_for(emulator, tmp_path / "out"))
    assert len(planned.jobs) >= 6
    per_request = processing_units(501, 501, 1, "UINT16")
    emulator.account.reset()
    emulator.account.monthly_pu = 1.5 * per_request  # two requests pass, the third is refused
    emulator.log.clear()
    proc = cli(args, emulator, tmp_path)
    assert proc.returncode == 4, proc.stderr
    statuses = [r.status for r in emulator.log.records(kind="process")]
    assert statuses == [200, 200, 403], f"the run must stop at the first 403: {statuses}"
    text = proc.stderr.lower()
    assert "monthly" in text and "quota" in text and "reset" in text, proc.stderr
    now = datetime.now(UTC)
    reset = date(now.year + (now.month == 12), now.month % 12 + 1, 1)
    assert reset.isoformat() in proc.stderr, proc.stderr
    written = sorted((tmp_path / "out").rglob("*.tif"))
    assert len(written) == 2
    for path in written:
        with rasterio.open(path) as src:
            assert src.tags().get("STACFETCH_COMPLETE") == "1"


# -- 4b. the same place and date gives the same DN from every provider -----------------------
def test_same_dn_from_the_process_api_and_the_archive_cogs(emulator: Emulator, tmp_path: Path) -> None:
    from stacfetch.testing.earthsearch import EarthSearch

    item = single_pass(emulator, CENTRE, date(2022, 3, 1), date(2022, 3, 20))
    day = item_day(item)
    sh = stacfetch.get(CENTRE, day, None, bands="B04,B08", settings=settings_for(emulator, tmp_path / "sh"))
    with EarthSearch(tmp_path / "cogs", (CENTRE[0], CENTRE[1]), day, day) as es:
        cog_settings = Settings(provider="stac", base_url=None, token_url=None, stac_url=es.url,
                                output_dir=tmp_path / "es")
        es_result = stacfetch.get(CENTRE, day, None, bands="B04,B08", settings=cog_settings)
    assert len(sh.paths) == len(es_result.paths) == 1
    with rasterio.open(sh.paths[0]) as a, rasterio.open(es_result.paths[0]) as b:
        assert a.transform == b.transform and a.crs == b.crs
        pa, pb = a.read(masked=True), b.read(masked=True)
        assert (pa.data == 0).sum() > 50, "the area must hold valid zeros (dark water in B08)"
        assert not pa.mask.any() and not pb.mask.any(), "valid zeros must not be masked by any provider"
        assert np.abs(pa.data.astype(int) - pb.data.astype(int)).max() <= 1
        assert a.scales == b.scales and a.offsets == b.offsets
