"""stacfetch.stac.items: a scene's facts from properties or, where they are missing, from the id."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pystac
import pytest
from realstac.pgstac import default_shared_dir

from stacfetch.errors import InvalidResponseError
from stacfetch.stac.items import scene_facts

T0 = datetime(2022, 1, 21, 8, 32, 1, tzinfo=timezone.utc)
PAGE = (default_shared_dir(Path(__file__).resolve().parents[1]) / "data" / "items"
        / "sentinel-hub-catalog_search-response_sentinel-2-l2a_fields-id-datetime-cloud.json")


@pytest.mark.skipif(not PAGE.is_file(), reason=f"shared test data not found: {PAGE}")
def test_facts_of_a_real_sentinel_hub_item_come_from_its_id() -> None:
    feature = json.loads(PAGE.read_text())["features"][0]
    assert feature["id"] == "S2B_MSIL2A_20240902T201929_N0511_R071_T09WWM_20240902T230811"
    assert not {"platform", "s2:mgrs_tile", "sat:relative_orbit"} & set(feature["properties"])
    facts = scene_facts(pystac.Item.from_dict(feature))
    assert (facts.platform, facts.tile, facts.relative_orbit, facts.baseline_key) == (
        "S2B", "09WWM", 71, (511, "20240902T230811"))
    assert facts.platform_name == "sentinel-2b"
    assert facts.datetime is not None and facts.datetime.tzinfo is not None


def test_properties_win_over_the_id() -> None:
    item = pystac.Item(
        "S2A_MSIL2A_20220121T083201_N0400_R021_T36RXV_20220121T105105", None, None, T0,
        properties={"platform": "Sentinel-2B", "s2:mgrs_tile": "9UWA",
                    "sat:relative_orbit": 7, "s2:processing_baseline": "05.09", "eo:cloud_cover": float("nan")},
    )
    facts = scene_facts(item)
    assert (facts.platform, facts.tile, facts.relative_orbit, facts.baseline) == ("S2B", "09UWA", 7, 509)
    assert facts.generated == "20220121T105105" and facts.cloud_cover is None


def test_missing_datetime_is_known_and_refused_where_needed() -> None:
    item = pystac.Item("x", None, None, T0, properties={"start_datetime": "not a date"})
    item.datetime = None
    facts = scene_facts(item)
    assert facts.datetime is None and facts.platform is None and facts.tile is None
    with pytest.raises(InvalidResponseError, match="no datetime"):
        facts.sensing_time()
