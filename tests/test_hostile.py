"""Hostile servers on 127.0.0.1: nothing hangs, nothing grows without bound, nothing leaks.

Every case runs a real ``python -m stacfetch`` subprocess against
:class:`stacfetch.testing.hostile.Hostile` (a front for the emulator) under a watchdog that
kills it past a time or memory bound and measures its exit code, seconds and peak RSS:

* silent token endpoint, Catalog and Process API with ``--timeout 2``: exit 4 within a bounded
  time, the message names the 2 s, a line on stderr while waiting;
* endless ``next`` paging (same page; new tokens), 100,000 features on a page, 200 MB of JSON,
  gzip bombs (2 MB -> 2 GiB) on the Catalog and the Process API: a clear message, bounded
  memory;
* a Process 403 that echoes the bearer token: the token appears nowhere (summary, --json,
  -vv tracebacks, ``result.summary()``, ``to_dict()``, the error's own text);
* core dumps are off (RLIMIT_CORE 0) while the CLI holds secrets;
* no acquisition written: its own exit code (6); an HTML 200 from the Catalog; a UTF-16 .env.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

import stacfetch
import stacfetch.api
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from stacfetch.errors import ServiceError
from stacfetch.testing.emulator import Emulator
from stacfetch.testing.hostile import Hostile, Watched, watch

pytestmark = pytest.mark.timeout(180)

REPO = str(Path(stacfetch.__file__).resolve().parents[1])
EXIT_SERVICE = 4
EXIT_NOTHING_WRITTEN = 6  # the next free code after 5 (some failed): none was written
BASELINE_MB = 400  # the CLI with rasterio, numpy, pystac: ~110-140 MB; streams add little
KILL_MB = 900  # the watchdog's bound, so that a failing run cannot hurt the machine


@pytest.fixture(scope="module")
def upstream() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def environment(front: Hostile | Emulator) -> dict[str, str]:
    return {**os.environ, "SH_BASE_URL": front.url, "SH_TOKEN_URL": front.token_url,
            "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
            "STACFETCH_PROVIDER": "sentinelhub", "PYTHONUNBUFFERED": "1", "PYTHONPATH": REPO}


def get_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stacfetch", "get", "--lon", "34.665", "--lat", "31.625",
            "--size", "1000", "--start", "2022-01-01", "--end", "2022-01-10", "--bands", "B04",
            "--out", str(out), "--workers", "2", *extra]


def run(front: Hostile, out: Path, *extra: str, seconds: float = 60.0, **options: object) -> Watched:
    return watch(get_command(out, *extra), env=environment(front), seconds=seconds,
                 max_mb=KILL_MB, **options)  # type: ignore[arg-type]


# --- 4. bounded waits -------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["token", "catalog", "process"])
def test_a_silent_server_ends_in_bounded_time_naming_the_timeout(
    upstream: Emulator, tmp_path: Path, endpoint: str
) -> None:
    with Hostile(upstream, **{endpoint: "silent"}, lifetime=90) as front:
        seen = run(front, tmp_path / "out", "--timeout", "2", seconds=45,
                   marks=[r"(?i)waiting", r"did not answer within 2(\.0)? s"])
    print(seen.describe())
    assert seen.code in (EXIT_SERVICE, EXIT_NOTHING_WRITTEN), seen.describe()
    assert seen.seconds < 30, seen.describe()
    assert re.search(r"did not answer within 2(\.0)? s", seen.stderr), seen.describe()
    assert "check your network connection" not in seen.stderr
    # a line on stderr while the slow request is waited for, before the final message
    assert r"(?i)waiting" in seen.marks, seen.describe()
    assert seen.marks[r"(?i)waiting"] <= seen.marks[r"did not answer within 2(\.0)? s"]


def test_the_api_takes_a_timeout(upstream: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    with Hostile(upstream, catalog="silent", lifetime=60) as front:
        for name, value in environment(front).items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ServiceError) as caught:
            stacfetch.search([34.665, 31.625], "2022-01-01", "2022-01-10", timeout=1.5)
    assert re.search(r"did not answer within 1\.5 s", str(caught.value))


# --- 5. bounded responses ----------------------------------------------------------------
CATALOG_CASES = {
    "endless-same": r"(?i)(same page|repeated)",
    "endless-new": r"\b\d[\d,]* pages\b",
    "huge-page": r"(?i)(\d[\d,]* features|\d+ MB)",
    "huge-json": r"\d+ MB",
    "gzip-bomb": r"\d+ MB",
}


@pytest.mark.parametrize("mode", list(CATALOG_CASES))
def test_a_hostile_catalog_ends_with_a_clear_message_and_bounded_memory(
    upstream: Emulator, tmp_path: Path, mode: str
) -> None:
    with Hostile(upstream, catalog=mode, lifetime=90, max_requests=5000) as front:
        seen = run(front, tmp_path / "out", seconds=60)
        searches = front.requests["search"]
    print(mode, seen.describe(), f"{searches} searches")
    assert seen.killed is None, seen.describe()
    assert seen.code == EXIT_SERVICE, seen.describe()
    assert re.search(CATALOG_CASES[mode], seen.stderr), seen.describe()
    assert seen.peak_mb < BASELINE_MB, seen.describe()
    assert searches < 2500, f"{searches} search requests"


def test_a_gzip_bomb_from_the_process_api_is_refused_with_bounded_memory(
    upstream: Emulator, tmp_path: Path
) -> None:
    with Hostile(upstream, process="gzip-bomb", lifetime=90) as front:
        seen = run(front, tmp_path / "out", seconds=60)
    print(seen.describe())
    assert seen.killed is None, seen.describe()
    assert seen.code == EXIT_NOTHING_WRITTEN, seen.describe()
    assert re.search(r"\d+ (MB|bytes)", seen.stderr), seen.describe()
    assert seen.peak_mb < BASELINE_MB, seen.describe()


# --- 6. secrets ---------------------------------------------------------------------------
def assert_no_token(front: Hostile, *texts: str) -> None:
    assert front.tokens, "the hostile server issued no token"
    for text in texts:
        for token in front.tokens:
            assert token not in text, f"the bearer token leaked: ...{text[max(0, text.find(token) - 200):][:400]}"


def test_a_403_echoing_the_token_never_shows_it_on_the_command_line(
    upstream: Emulator, tmp_path: Path
) -> None:
    with Hostile(upstream, process="echo-token-403") as front:
        plain = run(front, tmp_path / "a")
        debug = run(front, tmp_path / "b", "-vv")
        as_json = run(front, tmp_path / "c", "--json")
        assert "FAILED" in plain.stderr and "403" in plain.stderr, plain.describe()
        assert "Traceback" in debug.stderr, debug.describe()
        failed = json.loads(as_json.stdout)["failed"]
        assert failed and all("403" in f["error"] for f in failed)
        assert_no_token(front, plain.stdout, plain.stderr, debug.stdout, debug.stderr,
                        as_json.stdout, as_json.stderr)


def test_a_403_echoing_the_token_never_shows_it_through_the_api(
    upstream: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from stacfetch.api import get_query
    from stacfetch.config import load_settings
    from stacfetch.http import open_session

    caplog.set_level(logging.DEBUG)
    with Hostile(upstream, process="echo-token-403") as front:
        for name, value in environment(front).items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        settings = load_settings(output_dir=tmp_path / "out")
        query = stacfetch.api.build_query([34.665, 31.625], "2022-01-01", "2022-01-10",
                                          size=1000, bands="B04")
        result = get_query(query, settings=settings, workers=1)
        assert result.failed
        texts = [result.summary(), json.dumps(result.to_dict()), caplog.text]
        texts += [str(o.error) for o in result.outcomes]
        # the error itself, raised and formatted as a traceback by the caller
        session = open_session(settings)
        try:
            response = session.post(settings.process_url, json={})
            try:
                raise ServiceError.from_response(response)
            except ServiceError as exc:
                texts += [str(exc), exc.message, repr(exc), "".join(traceback.format_exception(exc))]
        finally:
            session.close()
        assert_no_token(front, *texts)


def test_core_dumps_are_off_while_the_cli_holds_secrets(upstream: Emulator, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.skip("core dumps are already impossible here (hard RLIMIT_CORE 0)")

    def allow_cores() -> None:  # what a shell with `ulimit -c unlimited` gives the CLI
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))

    with Hostile(upstream, process="silent", lifetime=60) as front:
        seen = run(front, tmp_path / "out", "--timeout", "30", seconds=8, limits_after=5,
                   preexec=allow_cores)
        assert front.requests["process"] >= 1, "the run never reached the Process API"
    line = next(x for x in seen.limits.splitlines() if x.startswith("Max core file size"))
    assert line.split()[4] == "0", line  # soft limit


# --- 7. exit codes -----------------------------------------------------------------------
def test_no_acquisition_written_has_its_own_exit_code(upstream: Emulator, tmp_path: Path) -> None:
    with Hostile(upstream, process="echo-token-403") as front:
        seen = run(front, tmp_path / "out", "-q")
    assert seen.code == EXIT_NOTHING_WRITTEN, seen.describe()
    documented = watch([sys.executable, "-m", "stacfetch", "get", "--help"], env=environment(upstream))
    assert re.search(r"\b6\b[^\n]*(none|no acquisition|nothing)", documented.stdout), documented.stdout


# --- 9. small things ---------------------------------------------------------------------
def test_an_html_200_from_the_catalog_says_so(upstream: Emulator, tmp_path: Path) -> None:
    with Hostile(upstream, catalog="html") as front:
        seen = run(front, tmp_path / "out")
    assert seen.code == EXIT_SERVICE, seen.describe()
    assert "answered HTML, not JSON" in seen.stderr, seen.describe()
    assert "Expecting value" not in seen.stderr


def test_a_utf16_env_file_gets_a_word_about_the_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from stacfetch.config import load_settings
    from stacfetch.errors import StacfetchError

    for name in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "STACFETCH_PROVIDER", "SH_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    env = tmp_path / ".env"
    env.write_text("STACFETCH_PROVIDER=cdse\nSH_CLIENT_ID=abc\nSH_CLIENT_SECRET=def-ghi\n",
                   encoding="utf-16")
    env.chmod(0o600)
    caplog.set_level(logging.WARNING)
    try:
        load_settings(env_file=env)
    except StacfetchError as exc:
        text = str(exc)
    else:
        text = caplog.text
    assert "UTF-16" in text, text
