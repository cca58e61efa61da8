"""Responses that do not match the request are asked again, then reported; never written.

The emulator answers over real HTTP with a 200 and a well-formed body that is wrong: other
size, band count, CRS or data type, a truncated GeoTIFF, or no GeoTIFF at all.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stacfetch.api import build_query, get_query
from stacfetch.cli import main
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_settings
from stacfetch.run import TILE_ATTEMPTS
from stacfetch.sources.process import evalscript
from stacfetch.testing.emulator import Emulator

POINT = [34.665, 31.625]
DAY = "2022-01-22"  # one acquisition
Mangle = Callable[[dict[str, Any]], dict[str, Any]]


def _wider(body: dict[str, Any]) -> dict[str, Any]:
    body["output"]["width"] += 7
    return body


def _more_bands(body: dict[str, Any]) -> dict[str, Any]:
    body["evalscript"] = evalscript(("B04", "B03"), "uint16")
    return body


def _other_crs(body: dict[str, Any]) -> dict[str, Any]:
    body["input"]["bounds"]["properties"]["crs"] = "http://www.opengis.net/def/crs/EPSG/0/32635"
    return body


def _float(body: dict[str, Any]) -> dict[str, Any]:
    body["evalscript"] = evalscript(("B04",), "float32")
    return body


MANGLES: dict[str, tuple[Mangle, str]] = {
    "size": (_wider, "size"),
    "band-count": (_more_bands, "3 bands, expected 2 (B04,dataMask)"),
    "crs": (_other_crs, "CRS EPSG:32635"),
    "dtype": (_float, "data type float32"),
}


def settings_for(emu: Emulator, out: Path) -> Any:
    return load_settings(
        environ={}, provider="sentinelhub", client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET, base_url=emu.url, token_url=emu.token_url,
        output_dir=out,
    )


def get_one(emu: Emulator, out: Path, fmt: str = "cog") -> Any:
    query = build_query(POINT, DAY, None, size=1500, bands="B04")
    return get_query(query, settings=settings_for(emu, out), workers=1, fmt=fmt)


def serve_wrong(emu: Emulator, monkeypatch: pytest.MonkeyPatch, mangle: Mangle,
                times: int | None = None) -> list[int]:
    """Make the emulator render a mangled copy of the next ``times`` Process requests."""
    real = emu.render
    served = [0]

    def render(body: dict[str, Any], *, accept: str | None = None) -> Any:
        if times is None or served[0] < times:
            served[0] += 1
            return real(mangle(copy.deepcopy(body)), accept=accept)
        return real(body, accept=accept)

    monkeypatch.setattr(emu, "render", render)
    return served


def nothing_written(out: Path) -> bool:
    return not [p for p in out.rglob("*") if p.suffix in (".tif", ".part") or p.name.endswith(".tif.json")]


@pytest.mark.parametrize("fmt", ["cog", "raw"])
@pytest.mark.parametrize("name", list(MANGLES))
def test_wrong_response_is_retried_then_reported_never_written(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, fmt: str
) -> None:
    mangle, words = MANGLES[name]
    serve_wrong(emulator, monkeypatch, mangle)
    result = get_one(emulator, tmp_path, fmt)
    assert not result.written and len(result.failed) == 1
    error = result.failed[0].error
    assert "does not match the request" in error and words in error
    assert f"asked {TILE_ATTEMPTS} times" in error
    assert emulator.log.count(kind="process") == TILE_ATTEMPTS
    assert nothing_written(tmp_path)
    assert result.manifest is None


@pytest.mark.parametrize("name", list(MANGLES))
def test_one_wrong_response_then_a_good_one_gives_the_right_file(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    good = get_one(emulator, tmp_path / "good")
    expected = good.paths[0].read_bytes()
    emulator.log.clear()
    serve_wrong(emulator, monkeypatch, MANGLES[name][0], times=1)
    result = get_one(emulator, tmp_path / "retried")
    assert not result.failed and len(result.written) == 1
    assert emulator.log.count(kind="process") == 2
    assert result.paths[0].read_bytes() == expected


@pytest.mark.parametrize("fmt", ["cog", "raw"])
def test_truncated_tiff_with_a_correct_status_is_never_written(
    emulator: Emulator, tmp_path: Path, fmt: str
) -> None:
    # the header and IFD arrive, the last strips do not: only reading the pixels can tell
    emulator.faults.rate_truncate = 1.0
    result = get_one(emulator, tmp_path, fmt)
    assert len(result.failed) == 1 and "cannot be decoded" in result.failed[0].error
    assert emulator.log.count(kind="process", status=200) == TILE_ATTEMPTS
    assert all(r.fault == "rate_truncate" for r in emulator.log.records(kind="process"))
    assert nothing_written(tmp_path)


def test_a_200_that_is_not_a_geotiff_is_retried_then_reported(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = emulator.render

    def render(body: dict[str, Any], *, accept: str | None = None) -> Any:
        out = real(body, accept=accept)
        return replace(out, content=b'{"status": "ok"}', media_type="application/json")

    monkeypatch.setattr(emulator, "render", render)
    result = get_one(emulator, tmp_path)
    assert len(result.failed) == 1 and "instead of a GeoTIFF" in result.failed[0].error
    assert emulator.log.count(kind="process") == TILE_ATTEMPTS
    assert nothing_written(tmp_path)


def test_cli_reports_the_bad_acquisition_and_keeps_the_others(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # every answer for one acquisition (the first one asked for) is wrong; jobs may interleave
    real = emulator.render
    bad_time: list[Any] = []

    def render(body: dict[str, Any], *, accept: str | None = None) -> Any:
        when = body["input"]["data"][0]["dataFilter"]["timeRange"]
        if not bad_time:
            bad_time.append(when)
        return real(_more_bands(copy.deepcopy(body)) if when == bad_time[0] else body, accept=accept)

    monkeypatch.setattr(emulator, "render", render)
    monkeypatch.chdir(tmp_path)
    for name, value in {"SH_BASE_URL": emulator.url, "SH_TOKEN_URL": emulator.token_url,
                        "SH_CLIENT_ID": SANDBOX_CLIENT_ID,
                        "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET}.items():
        monkeypatch.setenv(name, value)
    code = main(["get", "--lon", "34.665", "--lat", "31.625", "--size", "1500", "--start",
                 "2022-01-20", "--end", "2022-01-25", "--bands", "B04", "--workers", "1",
                 "--out", str(tmp_path / "o"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 5
    assert len(report["failed"]) == 1 and len(report["written"]) >= 1
    bad = Path(report["failed"][0]["destination"])
    assert not bad.exists() and not list(bad.parent.glob(f"{bad.name}.*part"))  # any run's .part
    assert "3 bands, expected 2 (B04,dataMask)" in report["failed"][0]["error"]
