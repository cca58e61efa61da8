"""Tests of stacfetch.plan: acquisitions, the snapped grid, tiles, names, the dry-run plan."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pystac
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.windows import Window
from shapely.geometry import Point, box

from stacfetch.cli.output import summarize
from stacfetch.errors import InvalidOptionError, InvalidResponseError
from stacfetch.location import utm_epsg
from stacfetch.plan import (
    Acquisition,
    Grid,
    Plan,
    area_id,
    cut_tiles,
    estimate_processing_units,
    grid_for,
    group_acquisitions,
    plan_jobs,
    safe_join,
    sanitize,
)
from stacfetch.query import Interval, Query

SHARED = Path(__file__).resolve().parents[2] / "shared"
T0 = datetime(2022, 1, 21, 8, 32, 1, tzinfo=timezone.utc)
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def make_item(
    item_id: str,
    when: datetime,
    *,
    cloud: float | None = None,
    **props: object,
) -> pystac.Item:
    """A minimal STAC item with only what planning reads."""
    properties: dict[str, object] = dict(props)
    if cloud is not None:
        properties["eo:cloud_cover"] = cloud
    return pystac.Item(
        id=item_id,
        geometry={"type": "Point", "coordinates": [34.67, 31.62]},
        bbox=[34.67, 31.62, 34.67, 31.62],
        datetime=when,
        properties=properties,
    )


def product_id(tile: str, *, platform: str = "S2A", baseline: str = "0400", orbit: str = "021",
               sensing: str = "20220121T083201", generated: str = "20220121T105105") -> str:
    return f"{platform}_MSIL2A_{sensing}_N{baseline}_R{orbit}_T{tile}_{generated}"


def make_query(geometry=None, **kw: object) -> Query:
    geometry = geometry if geometry is not None else Point(34.67, 31.62).buffer(0.02)
    interval = Interval(T0 - timedelta(days=5), T0 + timedelta(days=5))
    return Query(geometry=geometry, interval=interval, **kw)  # type: ignore[arg-type]


# --- acquisitions -----------------------------------------------------------------------
def test_neighbouring_tiles_of_one_pass_are_one_acquisition() -> None:
    items = [
        make_item(product_id("36RXV"), T0 + timedelta(seconds=4), cloud=10),
        make_item(product_id("36RYV"), T0, cloud=30),
        make_item(product_id("36RXA"), T0 + timedelta(seconds=9), cloud=20),
    ]
    (acq,) = group_acquisitions(items)
    assert acq.tiles == ("36RXA", "36RXV", "36RYV")
    assert acq.platform == "S2A"
    assert acq.relative_orbit == 21
    assert acq.datetime == acq.start == T0
    assert acq.end == T0 + timedelta(seconds=9)
    assert acq.cloud_cover == pytest.approx(20)
    assert acq.item_ids[0] == product_id("36RYV")  # sorted by time
    assert acq.key == "2022-01-21T08:32:01Z_S2A_R021"


@pytest.mark.parametrize("suffix", ["", ".SAFE"], ids=["sentinelhub", "cdse"])
def test_duplicate_baselines_keep_newest_as_primary_and_all_ids(suffix: str) -> None:
    old = make_item(product_id("36RXV", baseline="0400") + suffix, T0, cloud=12)
    new = make_item(
        product_id("36RXV", baseline="0509", generated="20240101T000000") + suffix, T0, cloud=14
    )
    other = make_item(product_id("36RYV") + suffix, T0 + timedelta(seconds=3), cloud=40)
    (acq,) = group_acquisitions([new, other, old])
    assert set(acq.item_ids) == {old.id, new.id, other.id}
    assert [it.id for it in acq.primary_items] == [new.id, other.id]
    assert acq.primary.id == new.id
    assert acq.duplicate_ids == (old.id,)
    assert acq.tiles == ("36RXV", "36RYV")
    assert acq.cloud_cover == pytest.approx(27)  # mean over primary items only


def test_baseline_from_properties_beats_id_order() -> None:
    a = make_item("S2A_36RXV_20220121_0_L2A", T0, **{"s2:processing_baseline": "05.09",
                                                     "platform": "sentinel-2a"})
    b = make_item("S2A_36RXV_20220121_1_L2A", T0, **{"s2:processing_baseline": "04.00",
                                                     "platform": "sentinel-2a"})
    (acq,) = group_acquisitions([a, b])
    assert acq.primary.id == a.id
    assert acq.tiles == ("36RXV",)


def test_passes_days_apart_are_separate_acquisitions() -> None:
    first = make_item(product_id("36RXV"), T0)
    second = make_item(
        product_id("36RXV", platform="S2B", sensing="20220123T203201"), T0 + timedelta(days=2.5)
    )
    acqs = group_acquisitions([second, first])
    assert [a.item_ids for a in acqs] == [(first.id,), (second.id,)]


@pytest.mark.parametrize(
    ("gap", "groups"),
    [
        pytest.param(timedelta(hours=1), 1, id="exactly-tolerance-joins"),
        pytest.param(timedelta(hours=1, seconds=1), 2, id="just-over-splits"),
        pytest.param(timedelta(0), 1, id="same-instant"),
    ],
)
def test_tolerance_edge(gap: timedelta, groups: int) -> None:
    items = [make_item("a", T0), make_item("b", T0 + gap)]
    assert len(group_acquisitions(items, timedelta(hours=1))) == groups


def test_grouping_is_anchored_on_first_item_not_chained() -> None:
    items = [make_item(f"i{k}", T0 + timedelta(minutes=40 * k)) for k in range(4)]
    acqs = group_acquisitions(items, timedelta(hours=1))
    assert [a.item_ids for a in acqs] == [("i0", "i1"), ("i2", "i3")]
    assert all(a.end - a.start <= timedelta(hours=1) for a in acqs)


def test_different_platforms_or_orbits_within_the_hour_stay_apart() -> None:
    a = make_item(product_id("09UWA", orbit="142"), T0)
    b = make_item(product_id("09WWM", platform="S2B", orbit="071"), T0 + timedelta(minutes=48))
    assert len(group_acquisitions([a, b])) == 2


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(InvalidOptionError):
        group_acquisitions([make_item("a", T0)], timedelta(seconds=-1))


def test_item_without_datetime_is_an_invalid_response() -> None:
    item = make_item("a", T0)
    item.datetime = None
    item.properties.pop("datetime", None)
    with pytest.raises(InvalidResponseError, match="no datetime"):
        group_acquisitions([item])


def test_duplicate_item_ids_are_kept_once() -> None:
    (acq,) = group_acquisitions([make_item("a", T0), make_item("a", T0)])
    assert acq.item_ids == ("a",)


@pytest.mark.skipif(not (SHARED / "data/items").is_dir(), reason="shared sample data not present")
def test_real_sentinel_hub_search_page_groups_by_pass() -> None:
    path = SHARED / "data/items/sentinel-hub-catalog_search-response_sentinel-2-l2a_fields-id-datetime-cloud.json"
    items = [pystac.Item.from_dict(f) for f in json.loads(path.read_text())["features"]]
    acqs = group_acquisitions(items)
    assert [(a.platform, a.relative_orbit) for a in acqs] == [("S2A", 142), ("S2B", 71)]
    assert sum(len(a.items) for a in acqs) == len(items)
    # same tile generated twice (20240903T020644 and ...T023454): the later one is primary
    first = acqs[0]
    assert len(first.primary_items) == len(first.tiles)
    assert all(i.endswith("20240903T020644") for i in first.duplicate_ids)


@pytest.mark.skipif(not (SHARED / "data/items").is_dir(), reason="shared sample data not present")
def test_metadata_from_earth_search_and_planetary_computer_items() -> None:
    es = json.loads((SHARED / "data/items/earth-search-v1_sentinel-2-l2a.json").read_text())
    pc = json.loads((SHARED / "data/items/planetary-computer_sentinel-2-l2a.json").read_text())
    items = [pystac.Item.from_dict(f) for f in es["features"][:1] + pc["features"][:1]]
    acqs = group_acquisitions(items)
    assert [(a.platform, a.tiles, a.relative_orbit) for a in acqs] == [
        ("S2A", ("60VUK",), 116),
        ("S2B", ("20EPT",), 95),
    ]


# --- the grid ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [(34.67, 31.62, 32636), (-70.6, -33.4, 32719), (0.0, 0.0, 32631), (-180.0, 10.0, 32601),
     (180.0, 10.0, 32660), (179.99, -0.01, 32760)],
)
def test_utm_zone(lon: float, lat: float, epsg: int) -> None:
    assert utm_epsg(Point(lon, lat)) == epsg


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [pytest.param(5.5, 60.5, 32632, id="norway-32V"), pytest.param(9.0, 78.0, 32633, id="svalbard-33X")],
)
def test_utm_zone_is_the_same_wherever_it_is_asked(lon: float, lat: float, epsg: int,
                                                   tmp_path: Path) -> None:
    from stacfetch.api import build_query

    assert utm_epsg(Point(lon, lat)) == epsg
    assert grid_for(Point(lon, lat).buffer(0.01), None, 10).crs == f"EPSG:{epsg}"
    query = build_query([lon, lat], "2022-01-20", "2022-01-25", size=2000)
    item = make_item("a", datetime(2022, 1, 21, tzinfo=timezone.utc))
    (job,) = plan_jobs(query, [item], tmp_path)
    assert job.grid.crs == f"EPSG:{epsg}"
    assert f"utm{epsg - 32600}n" in job.area_dir.name


def _projected(geometry, crs: str):
    t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return shapely.transform(shapely.segmentize(geometry, 0.001), t.transform, interleaved=False)


@pytest.mark.parametrize(
    ("geometry", "crs"),
    [
        pytest.param(box(34.60, 31.55, 34.75, 31.70), "EPSG:32636", id="north"),
        pytest.param(box(-70.70, -33.50, -70.55, -33.35), "EPSG:32719", id="south"),
        pytest.param(Point(24.0, 60.2).buffer(0.3), "EPSG:32635", id="far-north-circle"),
    ],
)
def test_default_grid_is_utm_snapped_and_covers_area(geometry, crs: str) -> None:
    grid = grid_for(geometry, None, 10)
    assert grid.crs == crs
    left, bottom, right, top = grid.bounds
    for v in (left, bottom, right, top):
        assert v % 10 == 0
    assert box(*grid.bounds).buffer(1e-6).contains(_projected(geometry, crs))
    # tight: never a whole extra pixel on any side
    minx, miny, maxx, maxy = _projected(geometry, crs).bounds
    assert minx - left < 10 and right - maxx < 10 and miny - bottom < 10 and top - maxy < 10
    assert grid.shape == (grid.height, grid.width)


def test_overlapping_areas_share_pixel_edges() -> None:
    a = grid_for(box(34.600, 31.550, 34.700, 31.650), None, 20)
    b = grid_for(box(34.6537, 31.6011, 34.7519, 31.7003), None, 20)
    assert a.crs == b.crs
    dx = (b.transform.c - a.transform.c) / 20
    dy = (b.transform.f - a.transform.f) / 20
    assert dx == int(dx) and dy == int(dy)
    # the same ground pixel has bit-identical bounds in both grids
    col, row = int(dx), int(-dy)
    assert b.window_bounds(Window(0, 0, 1, 1)) == a.window_bounds(Window(col, row, 1, 1))


def test_explicit_crs_and_geographic_resolution() -> None:
    geom = box(10.001, 45.002, 10.051, 45.033)
    grid = grid_for(geom, "EPSG:4326", 0.0001)
    assert grid.crs == "EPSG:4326"
    assert (grid.width, grid.height) == (500, 310)
    assert box(*grid.bounds).buffer(1e-9).contains(geom)
    utm = grid_for(geom, "epsg:32633", 10)
    assert utm.crs == "EPSG:32633"
    assert grid_for(geom, "EPSG:32632", 10).crs == "EPSG:32632"


def test_point_area_gets_at_least_one_pixel() -> None:
    grid = grid_for(Point(34.67, 31.62), None, 10)
    assert grid.width >= 1 and grid.height >= 1


@pytest.mark.parametrize(
    ("crs", "resolution", "match"),
    [
        pytest.param(None, 0.5, "outside 1 .. 1000 m", id="too-fine-m"),
        pytest.param(None, 5000, "outside 1 .. 1000 m", id="too-coarse-m"),
        pytest.param("EPSG:4326", 10, "degrees", id="metres-given-for-degrees"),
        pytest.param("EPSG:4326", 1e-7, "degrees", id="too-fine-deg"),
        pytest.param(None, float("nan"), "outside", id="nan"),
        pytest.param(None, "ten", "must be a number", id="not-a-number"),
        pytest.param("EPSG:2263", 10, "only metre or degree", id="us-feet"),
        pytest.param("EPSG:999999", 10, "unknown CRS", id="unknown-epsg"),
        pytest.param("not a crs", 10, "unknown CRS", id="garbage"),
    ],
)
def test_bad_crs_or_resolution(crs, resolution, match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        grid_for(box(34.6, 31.6, 34.7, 31.7), crs, resolution)


def test_grid_refuses_unsnapped_transform() -> None:
    from affine import Affine

    with pytest.raises(ValueError):
        Grid("EPSG:32636", Affine(10, 0, 5.0, 0, -10, 100.0), 10, 10, 10.0)


# --- tiles ------------------------------------------------------------------------------
def _grid(width: int, height: int, res: float = 10.0) -> Grid:
    from affine import Affine

    return Grid("EPSG:32636", Affine(res, 0, 600000.0, 0, -res, 3500000.0), width, height, res)


def test_5001_px_gives_three_tiles_of_1667() -> None:
    tiles = cut_tiles(_grid(5001, 2500))
    assert [t.width for t in tiles] == [1667, 1667, 1667]
    assert {t.height for t in tiles} == {2500}
    assert [(t.row, t.col) for t in tiles] == [(0, 0), (0, 1), (0, 2)]


def test_block_aligned_tiles() -> None:
    tiles = cut_tiles(_grid(5001, 1000), align=512)
    assert [t.width for t in tiles] == [2048, 2048, 905]
    assert [int(t.window.col_off) % 512 for t in tiles] == [0, 0, 0]
    assert [t.height for t in tiles] == [1000] * 3
    # alignment never costs an extra request: 2501 px -> 2 tiles either way
    assert len(cut_tiles(_grid(2501, 10), align=512)) == len(cut_tiles(_grid(2501, 10))) == 2
    # when aligned sizes would exceed max_px, fall back to equal sizes
    assert [t.width for t in cut_tiles(_grid(4999, 10), 2500, align=512)] == [2500, 2499]


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 12000),
    height=st.integers(1, 12000),
    max_px=st.integers(1, 3000),
    align=st.sampled_from([None, 1, 7, 512]),
)
def test_tiles_partition_the_grid(width: int, height: int, max_px: int, align: int | None) -> None:
    if math.ceil(width / max_px) * math.ceil(height / max_px) > 5000:
        return  # keep the example cheap
    grid = _grid(width, height)
    tiles = cut_tiles(grid, max_px, align=align)
    assert sum(t.width * t.height for t in tiles) == width * height
    assert len(tiles) == math.ceil(width / max_px) * math.ceil(height / max_px) or align
    assert len(tiles) <= math.ceil(width / max_px) * math.ceil(height / max_px)
    widths = {t.width for t in tiles}
    heights = {t.height for t in tiles}
    assert max(widths) <= max_px and max(heights) <= max_px
    if align is None:
        assert max(widths) - min(widths) <= 1 and max(heights) - min(heights) <= 1
    # columns and rows are contiguous, so no overlap and no gap
    row0 = [t for t in tiles if t.row == 0]
    col0 = [t for t in tiles if t.col == 0]
    assert [int(t.window.col_off) for t in row0] == [sum(x.width for x in row0[:i]) for i in range(len(row0))]
    assert [int(t.window.row_off) for t in col0] == [sum(x.height for x in col0[:i]) for i in range(len(col0))]
    last = tiles[-1]
    assert (last.window.col_off + last.width, last.window.row_off + last.height) == (width, height)
    # bounds: exact, adjacent tiles share edges bit for bit, union is the grid
    by_pos = {(t.row, t.col): t for t in tiles}
    for (r, c), t in by_pos.items():
        if (r, c + 1) in by_pos:
            assert t.bounds[2] == by_pos[(r, c + 1)].bounds[0]
        if (r + 1, c) in by_pos:
            assert t.bounds[1] == by_pos[(r + 1, c)].bounds[3]
    assert (tiles[0].bounds[0], tiles[0].bounds[3]) == (grid.bounds[0], grid.bounds[3])
    assert (last.bounds[2], last.bounds[1]) == (grid.bounds[2], grid.bounds[1])


def test_tile_bounds_match_snapped_transform() -> None:
    grid = _grid(5001, 4000)
    for t in cut_tiles(grid):
        left, bottom, right, top = t.bounds
        assert left == 600000.0 + t.window.col_off * 10
        assert top == 3500000.0 - t.window.row_off * 10
        assert (right - left, top - bottom) == (t.width * 10, t.height * 10)
        assert grid.window_transform(t.window).c == left


@pytest.mark.parametrize("max_px", [0, -5, 2.5, True])
def test_bad_max_px(max_px) -> None:
    with pytest.raises(InvalidOptionError):
        cut_tiles(_grid(10, 10), max_px)


# --- names ------------------------------------------------------------------------------
HOSTILE = ["../../x", "/etc/passwd", "..", ".", "a\x00b", "x" * 5000, "C:\\win\\sys", "CON",
           ".hidden", "-rf", "a/../../b", "é✓", "", " "]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_sanitize_hostile(value: str) -> None:
    out = sanitize(value)
    assert SAFE_NAME.fullmatch(out)
    assert len(out) <= 100
    assert out.upper() != "CON"


@given(st.text(max_size=300))
def test_sanitize_property(value: str) -> None:
    out = sanitize(value, max_len=60)
    assert SAFE_NAME.fullmatch(out) and len(out) <= 60 and out not in (".", "..")


def test_long_names_stay_distinct() -> None:
    assert sanitize("x" * 5000 + "a") != sanitize("x" * 5000 + "b")


@pytest.mark.parametrize("collection", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_collection_cannot_escape(tmp_path: Path, collection: str) -> None:
    out = tmp_path / "out"
    hostile_item = make_item("../../../etc/x", T0, platform="../../evil", **{"s2:mgrs_tile": "/x"})
    (job,) = plan_jobs(make_query(collection=collection), [hostile_item], out)
    resolved = job.destination.resolve()
    assert out.resolve() in resolved.parents
    assert len(resolved.relative_to(out.resolve()).parts) == 3
    for part in resolved.relative_to(out.resolve()).parts:
        assert SAFE_NAME.fullmatch(part)


def test_safe_join_stays_inside_and_refuses_symlink_escape(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "..", "a").parent.parent == tmp_path
    assert safe_join(tmp_path, "").parent == tmp_path
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(InvalidOptionError, match="outside"):
        safe_join(tmp_path, "link", "x.tif")


def test_layout_example(tmp_path: Path) -> None:
    items = [make_item(product_id("36RXV"), T0, cloud=5), make_item(product_id("36RYV"), T0)]
    (job,) = plan_jobs(make_query(bands=("B04", "B03", "B02")), items, tmp_path)
    rel = job.destination.relative_to(tmp_path)
    assert rel.parts[0] == "sentinel-2-l2a"
    assert re.fullmatch(r"31\.62N_34\.67E_4\.\dkm_utm36n_10m_truecolor_uint16-[0-9a-f]{8}", rel.parts[1])
    assert rel.parts[2] == "2022-01-21T083201_S2A_R021.tif"
    assert job.area_dir == job.destination.parent


def test_same_inputs_same_path_and_other_inputs_other_folder(tmp_path: Path) -> None:
    items = [make_item(product_id("36RXV"), T0)]

    def dest(**kw: object) -> Path:
        return plan_jobs(make_query(**kw), items, tmp_path)[0].destination

    base = dest(bands=("B04", "B03"))
    assert dest(bands=("B04", "B03")) == base
    variants = {
        "bands": dest(bands=("B03", "B04")),
        "resolution": dest(bands=("B04", "B03"), resolution=20.0),
        "crs": dest(bands=("B04", "B03"), crs="EPSG:32637"),
        "dtype": dest(bands=("B04", "B03"), dtype="float32"),
        "area": dest(bands=("B04", "B03"), geometry=Point(34.67, 31.62).buffer(0.0201)),
    }
    folders = {p.parent for p in variants.values()} | {base.parent}
    assert len(folders) == len(variants) + 1
    assert all(p.name == base.name for p in variants.values())


def test_area_id_same_geometry_explicit_utm_equals_default(tmp_path: Path) -> None:
    geom = Point(34.67, 31.62).buffer(0.02)
    g1, g2 = grid_for(geom, None, 10), grid_for(geom, "EPSG:32636", 10)
    assert area_id(geom, g1, ("B04",), "uint16") == area_id(geom, g2, ("B04",), "uint16")


def test_colliding_names_get_deterministic_suffixes(tmp_path: Path) -> None:
    items = [make_item(product_id("36RXV"), T0 + timedelta(milliseconds=ms)) for ms in (0, 300, 600)]
    items = [make_item(f"id{i}", it.datetime, platform="sentinel-2a", **{"sat:relative_orbit": 21})
             for i, it in enumerate(items)]
    jobs = plan_jobs(make_query(), items, tmp_path, tolerance=timedelta(milliseconds=100))
    names = [j.destination.name for j in jobs]
    assert names == ["2022-01-21T083201_S2A_R021.tif", "2022-01-21T083201_S2A_R021-2.tif",
                     "2022-01-21T083201_S2A_R021-3.tif"]
    assert len({j.key for j in jobs}) == 3
    again = plan_jobs(make_query(), list(reversed(items)), tmp_path, tolerance=timedelta(milliseconds=100))
    assert [j.destination.name for j in again] == names


# --- jobs and plan ----------------------------------------------------------------------
def test_plan_jobs_and_summary(tmp_path: Path) -> None:
    geom = box(34.50, 31.50, 34.80, 31.75)  # ~28 x 28 km at 10 m: 2 x 2 tiles of 2500
    items = [
        make_item(product_id("36RXV"), T0, cloud=10),
        make_item(product_id("36RXV", platform="S2B", sensing="20220126T083159"),
                  T0 + timedelta(days=5), cloud=50),
    ]
    jobs = plan_jobs(make_query(geometry=geom, bands=("B04", "B03", "B02", "B08")), items, tmp_path)
    assert len(jobs) == 2
    assert all(j.grid == jobs[0].grid and j.tiles == jobs[0].tiles for j in jobs)
    assert all(j.dtype == "uint16" and j.bands == ("B04", "B03", "B02", "B08") for j in jobs)
    plan = Plan(tuple(jobs))
    n_tiles = len(jobs[0].tiles)
    assert n_tiles == math.ceil(jobs[0].grid.width / 2500) * math.ceil(jobs[0].grid.height / 2500)
    assert plan.acquisitions == 2
    assert plan.requests == 2 * n_tiles
    assert plan.pixels == 2 * jobs[0].grid.width * jobs[0].grid.height
    assert plan.estimated_bytes == plan.pixels * 4 * 2
    expected_pu = 2 * sum(t.width * t.height / 262144 * 4 / 3 for t in jobs[0].tiles)
    assert plan.processing_units == pytest.approx(expected_pu)
    summary = plan.summary()
    json.dumps(summary)
    assert summary["requests"] == plan.requests
    assert [f["cloud_cover"] for f in summary["files"]] == [10, 50]


def test_empty_plan_summary() -> None:
    assert Plan().summary()["acquisitions"] == 0


def test_processing_unit_estimate() -> None:
    # the documented rule: bands / 3 without a floor, dataMask free, area factor >= 0.01
    assert estimate_processing_units(512, 512, 3, "uint16") == pytest.approx(1.0)
    assert estimate_processing_units(512, 512, 1, "uint16") == pytest.approx(1 / 3)
    assert estimate_processing_units(512, 512, ["SCL", "dataMask"], "uint8") == pytest.approx(1 / 3)
    assert estimate_processing_units(512, 512, 6, "uint16") == pytest.approx(2.0)
    assert estimate_processing_units(512, 512, 3, "float32") == pytest.approx(2.0)
    assert estimate_processing_units(40, 40, 6, "uint16") == pytest.approx(0.02)
    assert estimate_processing_units(10, 10, 1, "uint8") == pytest.approx(0.005)
    assert estimate_processing_units(1, 1, 1, "uint8") == 0.005


def test_scl_only_job_is_uint8(tmp_path: Path) -> None:
    (job,) = plan_jobs(make_query(bands=("SCL",)), [make_item("a", T0)], tmp_path)
    assert job.dtype == "uint8"
    assert "SCL_uint8" in job.destination.parent.name


def test_acquisition_needs_items() -> None:
    with pytest.raises(ValueError):
        Acquisition.from_items([])


def test_summarize_text(tmp_path: Path) -> None:
    items = [make_item(product_id("36RXV"), T0, cloud=12.5)]
    jobs = plan_jobs(make_query(bands=("B04", "B03", "B02")), items, tmp_path)
    text = summarize(jobs, item_count=1)
    assert text.startswith("1 items -> 1 acquisitions, 1 tile(s) each, 1 Process API requests")
    assert "EPSG:32636, 10 m" in text and "processing units" in text
    assert "2022-01-21T083201_S2A_R021.tif  1 item(s)  cloud 12.5%" in text
    assert "nothing to download" in summarize([], query=make_query(), item_count=0)


def test_jobs_pickle_for_process_pools(tmp_path: Path) -> None:
    import pickle

    (job,) = plan_jobs(make_query(), [make_item(product_id("36RXV"), T0, cloud=1)], tmp_path)
    copy = pickle.loads(pickle.dumps(job))
    assert copy.destination == job.destination and copy.grid == job.grid
    assert copy.tiles == job.tiles and copy.acquisition.key == job.acquisition.key


def test_plan_jobs_aligns_tiles_to_blocks_by_default(tmp_path: Path) -> None:
    geom = box(34.50, 31.50, 34.80, 31.75)
    items = [make_item(product_id("36RXV"), T0)]
    (aligned,) = plan_jobs(make_query(geometry=geom), items, tmp_path)
    (equal,) = plan_jobs(make_query(geometry=geom), items, tmp_path, align=None)
    assert len(aligned.tiles) == len(equal.tiles) > 1
    assert all(int(t.window.col_off) % 512 == 0 and int(t.window.row_off) % 512 == 0 for t in aligned.tiles)
    assert max(t.width for t in equal.tiles) - min(t.width for t in equal.tiles) <= 1
