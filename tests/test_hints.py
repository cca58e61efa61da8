"""Hints point at the actual mistake: decimal commas, too-large areas, near-miss option values."""

from __future__ import annotations

import pytest

from stacfetch.errors import AreaTooLargeError, InvalidLocationError
from stacfetch.location import to_geometry


@pytest.mark.parametrize("value", ["30,20,40,35", [0, 0, 10, 10], "0 0 10 10"])
def test_a_too_large_area_says_split_not_decimal_commas(value) -> None:
    with pytest.raises(AreaTooLargeError) as info:
        to_geometry(value)
    text = str(info.value)
    assert "the maximum is 250,000 km²" in text and "split the area" in text
    assert "decimal" not in text


def test_a_decimal_comma_number_suggests_the_dotted_value() -> None:
    with pytest.raises(InvalidLocationError) as info:
        to_geometry(("34,665", 31.625))
    assert "'34,665' is not a number" in str(info.value) and "34.665" in info.value.hint
    with pytest.raises(InvalidLocationError) as info:
        to_geometry("34,665,31,625")  # four numbers: out of range, most likely decimal commas
    assert "decimal commas" in str(info.value)
