"""query.build_query / build_options: the one validator the CLI (raw text) and the API share."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from stacfetch.config import Settings
from stacfetch.errors import InvalidLocationError, InvalidOptionError
from stacfetch.query import DEFAULT_TOLERANCE, GetOptions, build_options, build_query


def settings(out: Path, fetch: str = "process") -> Settings:
    provider = "sentinelhub" if fetch == "process" else "earth-search"
    return Settings(provider=provider, base_url=None, token_url=None, output_dir=out)


def test_cli_text_and_python_values_give_the_same_query() -> None:
    typed = build_query([34.665, 31.625], "2022-01-20", "2022-01-25", size=3000, max_cloud=20,
                        bands="B04", resolution=20, crs=32636)
    text = build_query(lon="34.665", lat="31.625", start="2022-01-20", end="2022-01-25", size="3000",
                       max_cloud="20", bands="B04", resolution="20", crs="EPSG:32636")
    assert text.geometry.equals(typed.geometry)
    assert (text.interval, text.max_cloud, text.bands, text.resolution, text.crs) == (
        typed.interval, 20.0, ("B04",), 20.0, "EPSG:32636")
    bbox = build_query(bbox="34.60,31.58,34.72,31.67", start="2022-01-20")
    assert bbox.bbox == pytest.approx((34.60, 31.58, 34.72, 31.67))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        pytest.param(dict(lon="34.6", bbox="1,2,3,4"), "exactly one location", id="two-forms"),
        pytest.param(dict(lon="34.6"), "--lat is missing", id="no-lat"),
        pytest.param(dict(), "exactly one location", id="none"),
        pytest.param(dict(bbox="1,2"), "needs 4 numbers", id="short-bbox"),
    ],
)
def test_location_forms_are_checked(kwargs: dict, words: str) -> None:
    with pytest.raises(InvalidLocationError, match=words):
        build_query(start="2022-01-20", **kwargs)


def test_options_from_text_and_from_values_are_equal(tmp_path: Path) -> None:
    live = settings(tmp_path / "out")
    text = build_options(live, fmt="GTiff", workers="3", time_tolerance="90", min_clear="70",
                         requests_per_minute="300", dry_run=True)
    typed = build_options(live, fmt="gtiff", workers=3, time_tolerance=timedelta(minutes=90),
                          min_clear=70, requests_per_minute=300, dry_run=True)
    assert text == typed == GetOptions(out_dir=tmp_path / "out", fmt="gtiff", workers=3, dry_run=True,
                                       tolerance=timedelta(minutes=90), min_clear=70.0,
                                       requests_per_minute=300.0)
    assert build_options(live, dry_run=True).tolerance == DEFAULT_TOLERANCE
    assert not (tmp_path / "out").exists()  # a dry run creates nothing
    assert build_options(live).out_dir.is_dir()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        pytest.param(dict(workers="0"), "from 1 to 64", id="workers-0"),
        pytest.param(dict(workers=2.5), "whole number", id="workers-float"),
        pytest.param(dict(time_tolerance="nan"), "not a finite number", id="tolerance-nan"),
        pytest.param(dict(time_tolerance=timedelta(days=2)), "at most 1440", id="tolerance-long"),
        pytest.param(dict(min_clear="120"), "outside 0..100", id="min-clear"),
        pytest.param(dict(requests_per_minute="fast"), "not a number", id="rate-text"),
        pytest.param(dict(fmt="png"), "unknown output format", id="format"),
        pytest.param(dict(compress="zstandard"), "unknown compression 'zstandard'; did you mean 'zstd'",
                     id="compress"),
        pytest.param(dict(fmt="raw", compress="zstd"), "does not apply to --format raw", id="compress-raw"),
    ],
)
def test_bad_options_say_what_is_wrong(tmp_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(InvalidOptionError, match=words):
        build_options(settings(tmp_path), dry_run=True, **kwargs)


def test_compression_is_deflate_unless_zstd_is_asked(tmp_path: Path) -> None:
    assert build_options(settings(tmp_path), dry_run=True).compress is None  # deflate
    assert build_options(settings(tmp_path), dry_run=True, compress=" ZSTD ").compress == "zstd"
    assert build_options(settings(tmp_path), dry_run=True, fmt="gtiff", compress="deflate").compress == "deflate"


def test_min_clear_works_with_cog_providers_too(tmp_path: Path) -> None:
    # issue 13: COG providers screen with the SCL asset's windows instead of refusing --min-clear
    options = build_options(settings(tmp_path, fetch="cog"), min_clear=50, dry_run=True)
    assert options.min_clear == 50.0
