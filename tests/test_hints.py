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


GET = ["get", "--lon", "34.665", "--lat", "31.625", "--start", "2022-01-20", "--dry-run"]


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--provider", "sandbx"], 3, "unknown provider 'sandbx' (from argument); did you mean 'sandbox'?"),
        (["--provider", "planetary"], 3, "did you mean 'planetary-computer'?"),
        (["--provider", "sandbox", "--format", "cgo"], 2, "unknown output format 'cgo'; did you mean 'cog'?"),
        (["--provider", "sandbox", "--format", "tiff"], 2, "did you mean 'gtiff'?"),
    ],
)
def test_an_unknown_provider_or_format_suggests_the_closest(extra, code, words, capsys, monkeypatch, tmp_path) -> None:
    from stacfetch.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STACFETCH_PROVIDER", raising=False)
    assert main([*GET, *extra]) == code
    assert words in capsys.readouterr().err


def test_cli_hints_for_decimal_commas_and_large_areas(capsys, monkeypatch, tmp_path) -> None:
    from stacfetch.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["get", "--lon", "34,665", "--lat", "31.625", "--start", "2022-01-20", "--provider",
                 "sandbox", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "34.665" in err and "e.g. --lon 5000" not in err
    assert main(["get", "--bbox", "30,20,40,35", "--start", "2022-01-20", "--provider", "sandbox",
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "the maximum is 250,000 km²" in err and "decimal" not in err


def test_python_api_format_hint() -> None:
    import stacfetch
    from stacfetch.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="did you mean 'gtiff'"):
        stacfetch.get([34.665, 31.625], "2022-01-20", provider="sandbox", format="GTif", dry_run=True)
