"""stacfetch.location: every accepted shape, every failsafe, and property tests."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Point, Polygon, box

from stacfetch import location
from stacfetch.errors import InvalidLocationError, UsageError
from stacfetch.location import (
    MAX_AREA_KM2,
    _fmt,
    area_km2,
    bbox_geometry,
    describe_area,
    from_geojson_file,
    parse_bbox,
    point_geometry,
    to_geometry,
    utm_epsg,
)

ASHKELON = (34.665, 31.625)  # lon, lat
EXAMPLES = int(os.environ.get("STACFETCH_HYPOTHESIS_EXAMPLES", "200"))
PROPS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _square(lon: float, lat: float, d: float = 0.01) -> list[list[float]]:
    return [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]]


class GeoThing:
    """A third-party object exposing __geo_interface__."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self.__geo_interface__ = mapping


def assert_usable(geometry: Any) -> None:
    """The contract of every successful result."""
    assert isinstance(geometry, (Polygon, MultiPolygon))
    assert geometry.is_valid and not geometry.is_empty
    w, s, e, n = geometry.bounds
    assert -180 <= w <= e <= 180 and -90 <= s <= n <= 90
    assert 0 < area_km2(geometry) <= MAX_AREA_KM2


def assert_our_error(exc: BaseException) -> None:
    assert isinstance(exc, InvalidLocationError) and isinstance(exc, UsageError)
    assert str(exc).strip() and exc.message.strip()


# --- accepted shapes --------------------------------------------------------------------
ASH_POLY = _square(*ASHKELON)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(ASHKELON, id="point-tuple"),
        pytest.param(list(ASHKELON), id="point-list"),
        pytest.param("34.665,31.625", id="point-string"),
        pytest.param(" 34.665, 31.625 ", id="point-string-spaces"),
        pytest.param("[34.665, 31.625]", id="point-json"),
        pytest.param([[34.665, 31.625]], id="single-pair-ring"),
        pytest.param({"lon": 34.665, "lat": 31.625}, id="lon-lat-dict"),
        pytest.param({"type": "Point", "coordinates": [34.665, 31.625]}, id="geojson-point"),
        pytest.param(Point(*ASHKELON), id="shapely-point"),
        pytest.param(np.array(ASHKELON), id="numpy-point"),
        pytest.param(("34.665", "31.625"), id="numeric-strings"),
        pytest.param([34.6, 31.6, 34.7, 31.65], id="bbox-list"),
        pytest.param("34.6,31.6,34.7,31.65", id="bbox-string"),
        pytest.param("34.6 31.6 34.7 31.65", id="bbox-space-separated"),
        pytest.param({"west": 34.6, "south": 31.6, "east": 34.7, "north": 31.65}, id="bbox-dict"),
        pytest.param(ASH_POLY, id="ring"),
        pytest.param(json.dumps(ASH_POLY), id="ring-json"),
        pytest.param([ASH_POLY], id="polygon-coordinates"),
        pytest.param({"type": "Polygon", "coordinates": [ASH_POLY]}, id="geojson-polygon"),
        pytest.param(
            {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ASH_POLY]}},
            id="geojson-feature",
        ),
        pytest.param(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ASH_POLY]}},
                    {"type": "Feature", "geometry": {"type": "Point", "coordinates": [34.7, 31.7]}},
                ],
            },
            id="geojson-featurecollection",
        ),
        pytest.param(
            {"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": list(ASHKELON)}]},
            id="geojson-geometrycollection",
        ),
        pytest.param(
            {"type": "MultiPolygon", "coordinates": [[ASH_POLY], [_square(34.67, 31.63)]]},
            id="multipolygon-overlapping-parts",
        ),
        pytest.param({"type": "Point", "coordinates": [34.665, 31.625, 12.0]}, id="position-with-z"),
        pytest.param(
            {"type": "Point", "coordinates": list(ASHKELON), "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC::CRS84"}}},
            id="geojson-crs84",
        ),
        pytest.param(box(34.6, 31.6, 34.7, 31.65), id="shapely-polygon"),
        pytest.param(GeoThing({"type": "Point", "coordinates": ASHKELON}), id="geo-interface"),
        pytest.param("POLYGON((34.6 31.6, 34.7 31.6, 34.7 31.65, 34.6 31.6))", id="wkt"),
        pytest.param("SRID=4326;POINT(34.665 31.625)", id="ewkt-4326"),
    ],
)
def test_accepted_shapes(value: Any) -> None:
    geometry = to_geometry(value)
    assert_usable(geometry)
    assert geometry.buffer(0.02).contains(Point(*ASHKELON)) or geometry.contains(Point(*ASHKELON))


def test_geojson_file_and_pathlike(tmp_path: Path) -> None:
    path = tmp_path / "area.geojson"
    path.write_text(json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ASH_POLY]}}))
    for value in (path, str(path)):
        assert_usable(to_geometry(value))
    assert from_geojson_file(path).equals(to_geometry(ASH_POLY))


def test_point_square_is_size_metres_and_centred() -> None:
    geometry = point_geometry(*ASHKELON, size=5000)
    assert math.sqrt(area_km2(geometry)) == pytest.approx(5.0, rel=0.005)
    assert geometry.centroid.distance(Point(*ASHKELON)) < 1e-6


def test_results_are_counter_clockwise() -> None:
    clockwise = list(reversed(ASH_POLY))
    assert to_geometry(clockwise).exterior.is_ccw


def test_parse_bbox_returns_floats() -> None:
    assert parse_bbox(" 34.6, 31.6 ,34.7,31.65") == (34.6, 31.6, 34.7, 31.65)


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        pytest.param(34.665, 31.625, 32636, id="north"),
        pytest.param(-58.38, -34.6, 32721, id="south"),
        pytest.param(-180.0, 10.0, 32601, id="lon-minus-180"),
        pytest.param(180.0, 10.0, 32660, id="lon-plus-180"),
        pytest.param(5.3, 60.4, 32632, id="norway-32V"),
        pytest.param(5.3, 55.0, 32631, id="south-of-norway-exception"),
        pytest.param(15.6, 78.2, 32633, id="svalbard-33X"),
        pytest.param(8.0, 78.0, 32631, id="svalbard-31X"),
        pytest.param(25.0, 78.0, 32635, id="svalbard-35X"),
        pytest.param(40.0, 80.0, 32637, id="svalbard-37X"),
    ],
)
def test_utm_epsg(lon: float, lat: float, epsg: int) -> None:
    assert utm_epsg(Point(lon, lat)) == epsg


def test_describe_area_north_east() -> None:
    text = describe_area(to_geometry(ASHKELON))
    assert text == "centre 31.6250°N 34.6650°E, 5.0 km × 5.0 km (25.0 km²), UTM zone 36N (EPSG:32636)"


def test_describe_area_south_west_latitude_first() -> None:
    text = describe_area(to_geometry((-58.38, -34.6), size=200))
    assert text.startswith("centre 34.6000°S 58.3800°W, 200 m × 200 m (0.04 km²)")
    assert "UTM zone 21S (EPSG:32721)" in text


def test_area_km2_of_a_one_degree_box_on_the_equator() -> None:
    assert area_km2(box(0, 0, 1, 1)) == pytest.approx(12308.8, rel=1e-3)


# --- safe corrections (a warning, then a result) ---------------------------------------
SPIKE = [[34.60, 31.60], [34.61, 31.60], [34.61, 31.61], [34.605, 31.61], [34.605, 31.615], [34.605, 31.61], [34.60, 31.61], [34.60, 31.60]]


@pytest.mark.parametrize(
    ("value", "warning", "expected_bounds"),
    [
        pytest.param([34.6, 31.65, 34.7, 31.6], "swapped them", (34.6, 31.6, 34.7, 31.65), id="bbox-south-north-swapped"),
        pytest.param([34.7, 31.6, 34.6, 31.65], "swapped them", (34.6, 31.6, 34.7, 31.65), id="bbox-west-east-clearly-reversed"),
        pytest.param(ASH_POLY[:-1], "was not closed", None, id="unclosed-ring-closed"),
        pytest.param(SPIKE, "repaired it with make_valid", (34.60, 31.60, 34.61, 31.61), id="spike-repaired-area-kept"),
    ],
)
def test_safe_corrections_warn(value: Any, warning: str, expected_bounds: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stacfetch.location"):
        geometry = to_geometry(value)
    assert_usable(geometry)
    assert warning in caplog.text
    if expected_bounds:
        assert geometry.bounds == pytest.approx(expected_bounds)


# --- failsafes: clear errors -----------------------------------------------------------
BOWTIE = [[34.60, 31.60], [34.61, 31.61], [34.61, 31.60], [34.60, 31.61], [34.60, 31.60]]
DEEP = "[" * 50 + "]" * 50


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # coordinates out of range, with swap suggestions
        pytest.param((31.625, 134.665), ["latitude 134.665 is outside -90..90", "--lon 134.665 --lat 31.625"], id="swapped-point"),
        pytest.param("31.625,134.665", ["--lon 134.665 --lat 31.625"], id="swapped-point-string"),
        pytest.param((200, 10), ["longitude 200 is outside -180..180"], id="lon-out-of-range"),
        pytest.param((10, -95), ["latitude -95 is outside"], id="lat-out-of-range"),
        pytest.param((350, 10), ["0..360", "--lon -10"], id="lon-0-360-convention"),
        pytest.param((500000, 3500000), ["projected coordinates"], id="projected-point"),
        pytest.param([-33.9, 151.1, -33.8, 151.3], ["south 151.1 is outside", "--bbox 151.1,-33.9,151.3,-33.8"], id="bbox-lat-lon-order"),
        pytest.param([[31.60, 134.60], [31.60, 134.61], [31.61, 134.61], [31.60, 134.60]], ["look like [lat, lon]", "swap every pair"], id="ring-lat-lon-order"),
        pytest.param({"type": "Polygon", "coordinates": [[[660000, 3500000], [661000, 3500000], [661000, 3501000], [660000, 3500000]]]}, ["projected coordinates"], id="geojson-projected"),
        # non-numbers
        pytest.param((float("nan"), 31.6), ["longitude is nan"], id="nan"),
        pytest.param((34.6, float("inf")), ["latitude is inf"], id="inf"),
        pytest.param("nan,31.6", ["longitude is nan"], id="nan-string"),
        pytest.param((True, 31.6), ["must be a number, got True"], id="bool-coordinate"),
        pytest.param(("abc", 31.6), ["'abc' is not a number"], id="non-numeric-coordinate"),
        pytest.param(("", 31.6), ["longitude is empty"], id="empty-coordinate"),
        pytest.param((None, 31.6), ["must be a number, got None"], id="none-coordinate"),
        pytest.param("", ["empty string"], id="empty-string"),
        pytest.param("   ", ["empty string"], id="blank-string"),
        pytest.param([], ["empty list"], id="empty-list"),
        pytest.param(None, ["no usable location"], id="none"),
        pytest.param(True, ["no usable location"], id="bool"),
        pytest.param(34.665, ["single number"], id="one-number"),
        pytest.param(b"34.6,31.6", ["bytes"], id="bytes"),
        pytest.param(object(), ["cannot use a object"], id="unknown-type"),
        pytest.param([34.6, 31.6, 34.7], ["3 numbers", "a bbox is 4"], id="three-numbers"),
        pytest.param("1,2,3,4,5", ["5 numbers"], id="five-numbers-string"),
        pytest.param([34.6, [31.6]], ["mixes numbers and lists"], id="mixed-list"),
        pytest.param("34,665,31,625", ["decimal commas"], id="decimal-commas"),
        pytest.param("Ashkelon", ["place names are not looked up"], id="place-name"),
        # bbox shape
        pytest.param([170, 0, -170, 1], ["antimeridian", "--bbox -170,0,170,1", "--bbox 170,0,180,1"], id="bbox-west-east-antimeridian"),
        pytest.param([34.6, 31.6, 34.6, 31.7], ["zero area", "west equals east"], id="bbox-zero-width"),
        pytest.param([34.6, 31.6, 34.7, 31.6], ["zero area", "south equals north"], id="bbox-zero-height"),
        pytest.param([0, 0, 10, 10], ["covers 1,22", "the maximum is 250,000 km²"], id="area-too-large"),
        pytest.param([34.6, 31.6, 34.60001, 31.60001], ["zero area", "less than 50 m²"], id="area-too-small"),
        # rings
        pytest.param([[34.6, 31.6], [34.7, 31.7]], ["2 distinct points", "at least 3"], id="ring-two-points"),
        pytest.param([[34.6, 31.6], [34.6, 31.6], [34.7, 31.7], [34.6, 31.6]], ["2 distinct points"], id="ring-repeated-points"),
        pytest.param([[34.6, 31.6], [34.7, 31.7], [34.8, 31.8]], ["zero area", "one line"], id="ring-collinear"),
        pytest.param(BOWTIE, ["crosses itself", "bow-tie"], id="ring-bow-tie"),
        pytest.param([[179.9, 0], [-179.9, 0], [-179.9, 0.1], [179.9, 0.1]], ["across the antimeridian", "split"], id="ring-antimeridian"),
        pytest.param([[34.6, 31.6], [34.7, 31.6, 1, 2]], ["a position must be [lon, lat]"], id="ring-bad-position"),
        pytest.param([[[[[34.6, 31.6]]]]], ["nested 5 levels"], id="ring-too-nested"),
        # points near the edges of the map
        pytest.param((179.99, 0), ["crosses the antimeridian"], id="point-square-antimeridian"),
        pytest.param((0, 89.99), ["contains the North Pole"], id="point-square-pole"),
        # GeoJSON
        pytest.param({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, ["has no area"], id="geojson-line"),
        pytest.param({"type": "Feature", "geometry": None}, ["no geometry"], id="geojson-null-geometry"),
        pytest.param({"type": "FeatureCollection", "features": []}, ["no features"], id="geojson-empty-collection"),
        pytest.param({"type": "Circle", "coordinates": [0, 0]}, ["unknown GeoJSON type"], id="geojson-unknown-type"),
        pytest.param({"foo": 1}, ["no GeoJSON 'type'"], id="dict-without-type"),
        pytest.param({"type": "Point", "coordinates": [0, 0], "crs": {"type": "name", "properties": {"name": "EPSG:3857"}}}, ["only lon/lat"], id="geojson-other-crs"),
        pytest.param({"type": "Polygon", "coordinates": []}, ["no coordinates"], id="geojson-empty-polygon"),
        pytest.param(Polygon(), ["no coordinates"], id="shapely-empty"),
        # text forms
        pytest.param("{not json", ["not valid JSON"], id="bad-json"),
        pytest.param(DEEP, ["nested more than"], id="deep-json"),
        pytest.param("[" * 100000, ["nested too deeply"], id="very-deep-json"),
        pytest.param("POLYGON((0 0, 1 1", ["WKT text could not be read"], id="bad-wkt"),
        pytest.param("SRID=3857;POINT(0 0)", ["only EPSG:4326"], id="wkt-other-srid"),
        pytest.param("missing-file.geojson", ["does not exist"], id="missing-file"),
    ],
)
def test_failsafes(value: Any, expected: list[str]) -> None:
    with pytest.raises(InvalidLocationError) as info:
        to_geometry(value)
    assert_our_error(info.value)
    for fragment in expected:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(0, "outside 10 m .. 200000 m", id="size-zero"),
        pytest.param(-5000, "outside 10 m", id="size-negative"),
        pytest.param(5, "outside 10 m", id="size-too-small"),
        pytest.param(1e7, "outside 10 m", id="size-too-large"),
        pytest.param(float("nan"), "size is nan", id="size-nan"),
        pytest.param(True, "size must be a number", id="size-bool"),
        pytest.param("big", "'big' is not a number", id="size-text"),
    ],
)
def test_size_failsafes(size: Any, expected: str) -> None:
    with pytest.raises(InvalidLocationError, match=expected.replace(".", r"\.")):
        to_geometry(ASHKELON, size=size)


def test_file_failsafes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases: dict[str, tuple[Path, str]] = {}
    (tmp_path / "dir.geojson").mkdir()
    cases["directory"] = (tmp_path / "dir.geojson", "is not a file")
    binary = tmp_path / "binary.geojson"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    cases["not-utf8"] = (binary, "not UTF-8")
    text = tmp_path / "notes.json"
    text.write_text("hello, not json")
    cases["not-json"] = (text, "not valid JSON")
    shp = tmp_path / "fields.shp"
    shp.write_bytes(b"\x00\x00\x27\x0a")
    cases["shapefile"] = (shp, "ogr2ogr")
    deep = tmp_path / "deep.geojson"
    deep.write_text("[" * 5000 + "]" * 5000)
    cases["deeply-nested"] = (deep, "nested")
    for name, (path, fragment) in cases.items():
        with pytest.raises(InvalidLocationError) as info:
            to_geometry(path)
        assert fragment in str(info.value), name
    big = tmp_path / "big.geojson"
    big.write_text(json.dumps({"type": "Polygon", "coordinates": [ASH_POLY]}) + " " * 2000)
    monkeypatch.setattr(location, "MAX_FILE_BYTES", 1000)
    with pytest.raises(InvalidLocationError, match=r"MB; the maximum is"):
        from_geojson_file(big)


def test_bbox_and_point_helpers_validate_too() -> None:
    with pytest.raises(InvalidLocationError, match="--lon 134.665 --lat 31.625"):
        point_geometry(31.625, 134.665)
    with pytest.raises(InvalidLocationError, match="zero area"):
        bbox_geometry(1, 1, 1, 2)
    with pytest.raises(InvalidLocationError, match="needs 4 numbers"):
        parse_bbox("1,2,3")


# --- properties -------------------------------------------------------------------------
def valid_or_our_error(value: Any, **kwargs: Any) -> None:
    try:
        geometry = to_geometry(value, **kwargs)
    except InvalidLocationError as exc:
        assert_our_error(exc)
    else:
        assert_usable(geometry)


anything_numeric = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(min_value=-200, max_value=200),
)
scalars = st.one_of(anything_numeric, st.booleans(), st.none(), st.text(max_size=6))
nested = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
coordinate = st.floats(min_value=-200, max_value=200, allow_nan=False)
small_nested = st.recursive(
    st.one_of(coordinate, anything_numeric, st.none()), lambda c: st.lists(c, max_size=5), max_leaves=12
)
geojson_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Point", "MultiPoint", "Polygon", "MultiPolygon", "Feature", "FeatureCollection", "LineString", "Nope"]),
        "coordinates": small_nested,
    },
    optional={
        "geometry": st.fixed_dictionaries({"type": st.sampled_from(["Point", "Polygon"]), "coordinates": small_nested}),
        "features": st.lists(st.fixed_dictionaries({"type": st.just("Feature"), "geometry": st.none() | st.fixed_dictionaries({"type": st.just("Point"), "coordinates": small_nested})}), max_size=3),
    },
)


@PROPS
@given(st.text(max_size=60))
def test_property_any_text(text: str) -> None:
    valid_or_our_error(text)


@PROPS
@given(st.lists(anything_numeric, max_size=6))
def test_property_any_list_of_numbers(values: list[Any]) -> None:
    valid_or_our_error(values)


@PROPS
@given(nested)
def test_property_any_nested_structure(value: Any) -> None:
    valid_or_our_error(value)


@PROPS
@given(geojson_like)
def test_property_any_geojson_like_dict(value: dict[str, Any]) -> None:
    valid_or_our_error(value)


@PROPS
@given(st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=8))
def test_property_any_ring(ring: list[tuple[float, float]]) -> None:
    valid_or_our_error([list(p) for p in ring])


@PROPS
@given(st.tuples(coordinate, coordinate, coordinate, coordinate))
def test_property_any_bbox(bbox: tuple[float, float, float, float]) -> None:
    valid_or_our_error(list(bbox))
    valid_or_our_error(",".join(repr(v) for v in bbox))


@PROPS
@given(coordinate, coordinate, st.one_of(anything_numeric, st.booleans(), st.text(max_size=4)))
def test_property_any_point_and_size(lon: float, lat: float, size: Any) -> None:
    valid_or_our_error((lon, lat), size=size)


@PROPS
@given(
    st.floats(min_value=-179.0, max_value=179.0),
    st.floats(min_value=-80.0, max_value=84.0),
    st.floats(min_value=10.0, max_value=200_000.0),
)
def test_property_point_square_has_requested_size(lon: float, lat: float, size: float) -> None:
    try:
        geometry = point_geometry(lon, lat, size)
    except InvalidLocationError as exc:  # only a square reaching across 180° may fail
        assert "antimeridian" in str(exc)
        assume(False)
        return
    assert_usable(geometry)
    assert math.sqrt(area_km2(geometry)) * 1000 == pytest.approx(size, rel=0.005)
    assert shapely.contains_xy(geometry, lon, lat)


@PROPS
@given(
    st.one_of(st.floats(min_value=90.0, max_value=180.0, exclude_min=True), st.floats(min_value=-180.0, max_value=-90.0, exclude_max=True)),
    st.floats(min_value=-90.0, max_value=90.0),
)
def test_property_swapped_point_is_detected(lon: float, lat: float) -> None:
    with pytest.raises(InvalidLocationError) as info:
        to_geometry((lat, lon))  # the user's mistake: lat first
    assert f"--lon {_fmt(lon)} --lat {_fmt(lat)}" in str(info.value)
    assert "swapped" in str(info.value)
