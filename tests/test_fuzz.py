"""Bad input, generated: the CLI and ``stacfetch.search/get`` accept a valid Query or say why.

Over 10,000 generated inputs across the tests below (each counts what it ran): every one
either gives a valid ``Query`` (or reaches the service with one) or raises a
``StacfetchError`` with a message; never another exception, never exit 1 ("internal
error"). Also: hostile GeoJSON files, unusable output folders and a full disk.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import stacfetch
from stacfetch import api
from stacfetch.cli import main
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from stacfetch.errors import InvalidLocationError, InvalidOptionError, StacfetchError
from stacfetch.query import Query
from stacfetch.testing.emulator import Emulator

COUNTS: dict[str, int] = {}
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class Accepted(StacfetchError):
    """Raised instead of contacting the service: the input got through every check."""

    exit_code = 99


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print(f"\nfuzzed inputs: {sum(COUNTS.values())} {COUNTS}")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[Any]]:
    """Credentials in the environment; the service is replaced by ``Accepted``."""
    monkeypatch.chdir(tmp_path)
    for name, value in {"SH_CLIENT_ID": "fuzz", "SH_CLIENT_SECRET": "fuzz-secret",
                        "STACFETCH_PROVIDER": "sentinelhub"}.items():
        monkeypatch.setenv(name, value)
    for name in ("SH_BASE_URL", "SH_TOKEN_URL", "SH_ACCESS_TOKEN", "STACFETCH_OUTPUT_DIR"):
        monkeypatch.delenv(name, raising=False)
    reached: list[Any] = []

    @contextlib.contextmanager
    def no_service(live: Any) -> Iterator[Any]:
        reached.append(live)
        raise Accepted("accepted")
        yield live  # pragma: no cover

    monkeypatch.setattr(api, "open_service", no_service)
    yield reached


def counted(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Count every input ``fn`` sees under ``name`` (place it below ``@given``)."""
    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> None:
            COUNTS[name] = COUNTS.get(name, 0) + 1
            fn(*args, **kwargs)
        return inner
    return wrap


def valid_query(query: Any) -> None:
    assert isinstance(query, Query)
    assert query.geometry.is_valid and not query.geometry.is_empty
    w, s, e, n = query.geometry.bounds
    assert -180 <= w <= e <= 180 and -90 <= s <= n <= 90
    assert query.interval.start <= query.interval.end
    assert query.bands and math.isfinite(query.resolution) and query.resolution > 0
    assert query.max_cloud is None or 0 <= query.max_cloud <= 100


def our_error(exc: BaseException) -> None:
    assert isinstance(exc, StacfetchError), f"{type(exc).__name__}: {exc}"
    assert exc.message.strip(), "an error without a message"


# --- strategies -------------------------------------------------------------------------
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
    st.floats(-200, 200), st.floats(-1e-3, 1e-3),
)
number_text = st.one_of(
    numbers.map(repr), numbers.map(str), st.text(max_size=10),
    st.sampled_from(["", " ", "1,5", "1e400", "-0", "0x10", "nan", "inf", "12 000", "٣"]),
)
bbox_text = st.one_of(
    st.lists(number_text, min_size=0, max_size=6).map(",".join),
    st.tuples(*[st.floats(-200, 200)] * 4).map(lambda t: ",".join(map(str, t))),
    st.text(max_size=30),
)
rings = st.lists(st.lists(numbers, min_size=0, max_size=3), max_size=7)
geojson = st.recursive(
    st.one_of(numbers, st.text(max_size=6), st.none(), st.booleans()),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(
        st.sampled_from(["type", "coordinates", "geometry", "features", "geometries", "crs", "x"]),
        c, max_size=4),
    max_leaves=25,
)
geojson_typed = st.fixed_dictionaries({
    "type": st.sampled_from(["Point", "Polygon", "MultiPolygon", "Feature", "FeatureCollection",
                             "GeometryCollection", "LineString", "Bogus"]),
    "coordinates": rings,
})
dates = st.one_of(
    st.dates().map(str), st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2022-01-20", "2022-02-30", "20.01.2022", "2022/01/20", "20220120",
                     "2022-01-20T10:00Z", "2022-13-01", "yesterday", "", "2022", "2022-06",
                     "1990-01-01", "2999-01-01", "01/02/2022", "2022-01-20T25:00"]),
    st.text(max_size=25),
)
band_lists = st.one_of(
    st.lists(st.sampled_from(["B01", "B02", "B03", "B04", "B08", "B8A", "B12", "SCL", "AOT",
                              "dataMask", "b4", "B13", "", " ", "truecolor", "all", "all+scl"]),
             max_size=5).map(",".join),
    st.text(max_size=20),
)
resolutions = st.one_of(number_text, st.sampled_from(["10", "20", "60", "0.0001", "0", "-10"]))
crs_values = st.one_of(st.none(), st.sampled_from(["EPSG:32636", "EPSG:4326", "32636", "EPSG:0",
                                                   "WGS84", "EPSG:3857", "epsg:32636", ""]),
                       st.text(max_size=12))
paths = st.one_of(
    st.lists(st.sampled_from(["a", "..", ".", "out dir", "x" * 300, "é", "nul\x00", "~", ""]),
             min_size=1, max_size=4).map(lambda p: "/".join(p)),
    st.text(max_size=20),
)


# --- the CLI ----------------------------------------------------------------------------
def run_cli(argv: list[str]) -> int:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors: exit 2 with its message
        assert exc.code == 2, argv
        return 2
    assert code in (2, 3, 99), (code, argv)
    return code


location_args = st.one_of(
    st.tuples(number_text, number_text, number_text).map(
        lambda t: ["--lon", t[0], "--lat", t[1], "--size", t[2]]),
    bbox_text.map(lambda b: ["--bbox", b]),
    rings.map(lambda r: ["--location", json.dumps(r)]),
    st.text(max_size=30).map(lambda t: ["--location", t]),
    st.just([]),
    st.tuples(number_text, bbox_text).map(lambda t: ["--lon", t[0], "--bbox", t[1]]),
)


def _clean(argv: list[str]) -> list[str]:
    # argv entries cannot hold NUL; a leading '-' makes argparse see an option: pass as --x=v
    return [a.replace("\x00", "") for a in argv]


def test_cli_get_arguments(offline: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    @settings(max_examples=2200, **FUZZ)
    @given(location_args, dates, st.one_of(st.none(), dates), band_lists, resolutions,
           crs_values, st.one_of(st.none(), number_text), number_text)
    @counted("cli get")
    def check(loc: list[str], start: str, end: str | None, bands: str, res: str,
              crs: str | None, cloud: str | None, tolerance: str) -> None:
        argv = ["get", *loc, f"--start={start}", f"--bands={bands}", f"--resolution={res}",
                f"--time-tolerance={tolerance}", "--dry-run", "-q"]
        argv += [f"--end={end}"] if end is not None else []
        argv += [f"--crs={crs}"] if crs is not None else []
        argv += [f"--max-cloud={cloud}"] if cloud is not None else []
        code = run_cli(_clean(argv))
        err = capsys.readouterr().err
        assert "internal error" not in err
        if code in (2, 3):
            assert "error" in err.lower(), argv

    check()


def test_cli_search_arguments(offline: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    @settings(max_examples=1200, **FUZZ)
    @given(location_args, dates, st.one_of(st.none(), dates), st.one_of(st.none(), number_text))
    @counted("cli search")
    def check(loc: list[str], start: str, end: str | None, cloud: str | None) -> None:
        argv = ["search", *loc, f"--start={start}", "-q"]
        argv += [f"--end={end}"] if end is not None else []
        argv += [f"--max-cloud={cloud}"] if cloud is not None else []
        run_cli(_clean(argv))
        assert "internal error" not in capsys.readouterr().err

    check()


# --- the Python API ---------------------------------------------------------------------
locations = st.one_of(
    st.tuples(st.floats(-200, 200), st.floats(-100, 100)).map(list),
    st.lists(numbers, max_size=5), rings, geojson, geojson_typed, st.text(max_size=40),
    bbox_text, st.none(), st.integers(),
)
anything = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8),
                     st.lists(st.integers(), max_size=3))


def test_build_query_any_arguments() -> None:
    @settings(max_examples=3100, **FUZZ)
    @given(locations, st.one_of(dates, anything), st.one_of(st.none(), dates, anything),
           st.one_of(numbers, st.text(max_size=5)),
           st.one_of(st.none(), numbers, st.text(max_size=5)),
           st.one_of(band_lists, st.lists(st.text(max_size=4), max_size=3), anything),
           st.one_of(st.none(), numbers, resolutions), st.one_of(crs_values, anything),
           st.sampled_from(["uint16", "float32", "uint8", "int64", "", None]))
    @counted("build_query")
    def check(loc: Any, start: Any, end: Any, size: Any, cloud: Any, bands: Any, res: Any,
              crs: Any, dtype: Any) -> None:
        try:
            query = api.build_query(loc, start, end, size=size, max_cloud=cloud, bands=bands,
                                    resolution=res, crs=crs, dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - checked below
            our_error(exc)
        else:
            valid_query(query)

    check()


def test_get_and_search_any_arguments(offline: list[Any], tmp_path: Path) -> None:
    @settings(max_examples=1800, **FUZZ)
    @given(locations, dates, st.one_of(st.none(), dates), band_lists,
           st.one_of(st.integers(-3, 100), anything), st.one_of(numbers, anything),
           paths, st.booleans())
    # which generated inputs get through depends on Hypothesis' timing even when derandomized;
    # these two make sure both accepted paths run on every machine
    @example([90.36, 0.0], "2022-01-20T10:00Z", "8195-02-27", None, 4, 60, "out", True)
    @example([10.0, 50.0], "2022-01-20", "2022-01-25", ["B04"], 4, 60, "out", False)
    @counted("get/search")
    def check(loc: Any, start: Any, end: Any, bands: Any, workers: Any, tolerance: Any,
              out: str, search: bool) -> None:
        try:
            if search:
                stacfetch.search(loc, start, end, provider="sentinelhub")
            else:  # dry run: nothing is created, whatever the path
                stacfetch.get(loc, start, end, bands=bands, workers=workers,
                              time_tolerance=tolerance, out=out, dry_run=True,
                              provider="sentinelhub")
        except Accepted:
            pass
        except Exception as exc:  # noqa: BLE001 - checked below
            our_error(exc)

    check()
    assert offline, "no input was ever accepted"


def test_cli_parsers_any_text() -> None:
    """The CLI's own parsers, directly: bbox, numbers, bands, dates, GeoJSON/ring text."""
    from stacfetch.bands import parse_bands
    from stacfetch.dates import to_interval
    from stacfetch.location import parse_bbox, to_geometry
    from stacfetch.query import number as _number

    @settings(max_examples=2000, **FUZZ)
    @given(bbox_text, number_text, band_lists, dates, st.one_of(st.none(), dates),
           st.one_of(rings.map(json.dumps), geojson.map(json.dumps), st.text(max_size=40)))
    @counted("parsers")
    def check(bbox: str, number: str, bands: str, start: str, end: str | None, loc: str) -> None:
        for call in (lambda: parse_bbox(bbox), lambda: _number(number, "--size"),
                     lambda: parse_bands(bands), lambda: to_interval(start, end),
                     lambda: to_geometry(loc)):
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - checked below
                our_error(exc)

    check()


# --- files and folders ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param("not json {", "JSON", id="not-json"),
        pytest.param("\x00\x01\x02", "JSON", id="binary"),
        pytest.param("[" * 100_000 + "]" * 100_000, "", id="deeply-nested"),
        pytest.param('{"type": "Point", "coordinates": [34.6, 31.6], "x": "'
                     + "a" * 60_000_000 + '"}', "", id="huge"),
        pytest.param("", "", id="empty"),
        pytest.param('{"type": "FeatureCollection", "features": []}', "", id="no-features"),
    ],
)
def test_bad_geojson_files_are_our_error(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "area.geojson"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(InvalidLocationError) as info:
        api.build_query(path, "2022-01-22")
    assert words in str(info.value)
    assert code_of(["get", "--geojson", str(path), "--start", "2022-01-22"]) == 2


def code_of(argv: list[str]) -> int:
    return main(argv)


def test_output_folder_that_is_a_file_or_under_a_file(emulator: Emulator, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {"SH_BASE_URL": emulator.url, "SH_TOKEN_URL": emulator.token_url,
                        "SH_CLIENT_ID": SANDBOX_CLIENT_ID,
                        "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET}.items():
        monkeypatch.setenv(name, value)
    afile = tmp_path / "file"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        with pytest.raises(InvalidOptionError, match="folder"):
            stacfetch.get([34.665, 31.625], "2022-01-22", size=1500, bands="B04", out=out,
                          provider="sentinelhub")
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o555)
    if os.geteuid() != 0:  # root writes anywhere: the folder check cannot fail for root
        with pytest.raises(InvalidOptionError, match="not writable"):
            stacfetch.get([34.665, 31.625], "2022-01-22", size=1500, bands="B04", out=readonly,
                          provider="sentinelhub")
    assert emulator.log.count(kind="process") == 0


@pytest.mark.parametrize("fmt", ["cog", "gtiff", "raw"])
def test_disk_full_leaves_no_partial_file(emulator: Emulator, tmp_path: Path, fmt: str) -> None:
    """A real write failure: the file-size limit (RLIMIT_FSIZE) makes every write past 4 KiB fail.

    GDAL only logs such failures while copying or tagging: each written file is read back.
    """
    out = tmp_path / "out"
    env = {**os.environ, "SH_BASE_URL": emulator.url, "SH_TOKEN_URL": emulator.token_url,
           "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
           "STACFETCH_PROVIDER": "sentinelhub", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(Path(stacfetch.__file__).resolve().parents[1])}

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run(
        [sys.executable, "-m", "stacfetch", "get", "--lon", "34.665", "--lat", "31.625",
         "--size", "1500", "--start", "2022-01-20", "--end", "2022-01-25", "--bands", "B04,B08",
         "--out", str(out), "--workers", "1", "--format", fmt],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, preexec_fn=limit,
    )
    assert proc.returncode == 6, proc.stderr  # every acquisition failed, none was written (exit 6)
    assert "internal error" not in proc.stderr and "FAILED" in proc.stderr
    left = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in left if p.suffix in (".tif", ".part", ".tmp")], left
    assert emulator.log.count(kind="process") >= 1
