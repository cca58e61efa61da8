"""stacfetch.crs: the one CRS and resolution check (the query and the plan both use it)."""

from __future__ import annotations

import pytest

from stacfetch.crs import canonical_crs, check_resolution, is_geographic
from stacfetch.errors import InvalidOptionError


@pytest.mark.parametrize(
    ("value", "expected"),
    [("EPSG:32636", "EPSG:32636"), ("epsg:4326", "EPSG:4326"), (" 32633 ", "EPSG:32633"), (32760, "EPSG:32760")],
)
def test_canonical_crs(value: object, expected: str) -> None:
    assert canonical_crs(value) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [("EPSG:999999", "unknown CRS"), ("not a crs", "unknown CRS"), (True, "unknown CRS"),
     ("+proj=longlat +datum=WGS84 +no_defs", "not an EPSG code")],
)
def test_non_epsg_crs_is_refused(value: object, match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        canonical_crs(value)


def test_resolution_in_the_crs_units() -> None:
    assert check_resolution("EPSG:32636", 10) == 10.0
    assert check_resolution("EPSG:4326", 0.0001) == 0.0001
    assert is_geographic("EPSG:4326") and not is_geographic("EPSG:32636")
    for crs, res, match in [("EPSG:32636", 0.5, "outside 1 .. 1000 m"), ("EPSG:4326", 10, "degrees"),
                            ("EPSG:2263", 10, "only metre or degree"), ("EPSG:32636", True, "a number"),
                            ("EPSG:32636", float("inf"), "outside")]:
        with pytest.raises(InvalidOptionError, match=match):
            check_resolution(crs, res)
