"""Secrets stay secret, credentials go only to the configured hosts, server strings stay inside.

* a whole `get` at -vv with --json and faults: the client secret and every access token the
  emulator issued appear nowhere (stdout, stderr, logs, errors, GeoTIFFs, sidecars, manifest);
* a 307 from the emulator to another loopback host (127.0.0.2) carries no Authorization
  header and no client secret;
* plain HTTP off loopback is refused before connecting; a group-readable .env warns;
* hostile item ids and properties never steer a write outside the output folder.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pystac
import pytest
import rasterio

from stacfetch.api import build_query, get_query
from stacfetch.cli import main
from stacfetch.config import Settings, load_settings
from stacfetch.errors import AuthError
from stacfetch.plan import plan_jobs
from stacfetch.run import RunContext, execute
from stacfetch.testing.emulator import Emulator

CLIENT_ID = "security-test-client"
SECRET = "Needle-s3cr3t/+=value-7f3a"
POINT = ["--lon", "34.665", "--lat", "31.625", "--size", "1500"]


def forms(secret: str) -> set[str]:
    """The secret as it could leak: plain, URL-encoded, in an HTTP Basic header."""
    basic = base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
    return {secret, quote(secret, safe=""), quote_plus(secret), basic}


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator for our client that remembers every token it issues."""
    with Emulator(clients={CLIENT_ID: SECRET}, token_lifetime=3) as server:
        issued: list[str] = []
        real = server._mint

        def mint(client_id: str, lifetime: float) -> tuple[str, float]:
            token, life = real(client_id, lifetime)
            issued.append(token)
            return token, life

        monkeypatch.setattr(server, "_mint", mint)
        server.issued = issued  # type: ignore[attr-defined]
        yield server


def use_env(monkeypatch: pytest.MonkeyPatch, emu: Emulator, secret: str = SECRET) -> None:
    for name, value in {"SH_BASE_URL": emu.url, "SH_TOKEN_URL": emu.token_url,
                        "SH_CLIENT_ID": CLIENT_ID, "SH_CLIENT_SECRET": secret,
                        "STACFETCH_PROVIDER": "sentinelhub"}.items():
        monkeypatch.setenv(name, value)


def test_no_secret_anywhere_after_a_debug_run_with_faults(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    use_env(monkeypatch, emu)
    caplog.set_level(logging.DEBUG)
    emu.faults.fail_next = [401, 503, 429]  # a refresh after 401, a retry, a rate limit
    emu.faults.retry_after_ms = 100
    emu.faults.latency_ms = 150  # 3 s tokens: several are issued during the run
    out = tmp_path / "out"
    code = main(["get", *POINT, "--start", "2022-01-10", "--end", "2022-01-31", "--bands", "B04",
                 "--out", str(out), "--json", "-vv", "--workers", "2"])
    run = capsys.readouterr()
    assert code == 0, run.err
    texts = {"stdout": run.out, "stderr": run.err, "log": caplog.text}
    assert "DEBUG" in run.err and json.loads(run.out)["written"]

    # errors that quote the server: a refused secret, and a token refused twice
    use_env(monkeypatch, emu, secret="Wrong-" + SECRET)
    code = main(["search", *POINT, "--start", "2022-01-10", "-vv"])
    texts["auth-error"] = capsys.readouterr().err
    assert code == 3
    use_env(monkeypatch, emu)
    emu.faults.fail_next = [401] * 4  # twice each: the landing page and the search, sent together
    code = main(["search", *POINT, "--start", "2022-01-10", "-vv"])
    texts["token-error"] = capsys.readouterr().err
    assert code == 3

    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".tif" for p in files) and (out / "catalog.json").is_file()
    for path in files:
        texts[str(path.relative_to(out))] = path.read_bytes().decode("latin-1")
    for path in (p for p in files if p.suffix == ".tif"):
        with rasterio.open(path) as src:
            texts[f"{path.name} tags"] = json.dumps([src.tags(), src.tags(1), src.descriptions])

    tokens = list(emu.issued)  # type: ignore[attr-defined]
    assert len(tokens) >= 3
    needles = forms(SECRET) | forms("Wrong-" + SECRET) | set(tokens)
    needles |= {t.split(".")[2] for t in tokens}  # even the signature alone
    found = [(where, needle[:12]) for where, text in texts.items() for needle in needles
             if needle in text]
    assert found == [], f"secrets found: {found}"
    print(f"\nsecret scan: {len(texts)} texts/files x {len(needles)} secret forms, found {len(found)}")


class _Recorder(BaseHTTPRequestHandler):
    """The 'other host': records what arrives and answers 200 with JSON."""

    seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("latin-1") if length else ""
        type(self).seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        payload = b'{"type": "FeatureCollection", "features": [], "links": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _record  # noqa: N815


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, type[_Recorder]]]:
    """A recorder on 127.0.0.2 (another loopback host than the emulator's 127.0.0.1)."""
    handler = type("Recorder", (_Recorder,), {"seen": []})
    try:
        server = ThreadingHTTPServer(("127.0.0.2", 0), handler)
    except OSError:
        pytest.skip("127.0.0.2 is not usable here")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{server.server_port}", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["process", "catalog"])
def test_redirect_to_another_host_carries_no_credentials(
    emu: Emulator, tmp_path: Path, elsewhere: tuple[str, type[_Recorder]], kind: str,
) -> None:
    target, recorder = elsewhere
    emu.faults.only_kinds = {kind}  # the token comes first, then the API calls are redirected
    emu.faults.redirect_to = target
    query = build_query([34.665, 31.625], "2022-01-22", None, size=1500, bands="B04")
    if kind == "process":  # followed without credentials; the answer is no GeoTIFF: reported
        result = get_query(query, settings=settings_for(emu, tmp_path), workers=1)
        assert len(result.failed) == 1 and "instead of a GeoTIFF" in result.failed[0].error
    else:  # the landing page elsewhere is no STAC catalog: the search fails (any error)
        with pytest.raises(Exception):  # noqa: B017
            get_query(query, settings=settings_for(emu, tmp_path), workers=1)
    assert emu.log.count(kind=kind, status=307) >= 1
    assert recorder.seen, "the redirect was not followed at all"
    for request in recorder.seen:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert "authorization" not in headers, request
        assert all(t not in json.dumps(request) for t in emu.issued)  # type: ignore[attr-defined]


def test_token_endpoint_redirect_to_another_host_is_refused(
    emu: Emulator, tmp_path: Path, elsewhere: tuple[str, type[_Recorder]],
) -> None:
    """A 307 would re-POST the form with client_secret: stacfetch does not follow it."""
    target, recorder = elsewhere
    emu.faults.only_kinds = {"token"}
    emu.faults.redirect_to = target
    query = build_query([34.665, 31.625], "2022-01-22", None, size=1500, bands="B04")
    with pytest.raises(AuthError, match="does not send client credentials") as info:
        get_query(query, settings=settings_for(emu, tmp_path), workers=1)
    assert "127.0.0.2" in str(info.value) and SECRET not in str(info.value)
    assert emu.log.count(kind="token", status=307) == 1
    assert recorder.seen == []


def settings_for(emu: Emulator, out: Path) -> Settings:
    return load_settings(environ={}, provider="sentinelhub", client_id=CLIENT_ID,
                         client_secret=SECRET, base_url=emu.url, token_url=emu.token_url,
                         output_dir=out)


@pytest.mark.parametrize("variable", ["SH_BASE_URL", "SH_TOKEN_URL"])
def test_plain_http_off_loopback_is_refused_before_any_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    variable: str,
) -> None:
    connections: list[Any] = []
    real = socket.create_connection

    def guarded(address: Any, *args: Any, **kwargs: Any) -> Any:
        connections.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("SH_BASE_URL", "https://services.sentinel-hub.com")
    monkeypatch.setenv("SH_TOKEN_URL", "https://services.sentinel-hub.com/auth/realms/main/"
                       "protocol/openid-connect/token")
    monkeypatch.setenv(variable, "http://example.com/x")
    code = main(["get", *POINT, "--start", "2022-01-22", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3 and "plain HTTP" in err and SECRET not in err
    assert connections == []


def test_env_file_readable_by_others_gets_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    env = tmp_path / "creds.env"
    # plain HTTP base URL: refused after the file is read, so nothing is sent anywhere
    env.write_text(f"SH_CLIENT_ID={CLIENT_ID}\nSH_CLIENT_SECRET={SECRET}\n"
                   "SH_BASE_URL=http://example.com\n")
    env.chmod(0o644)
    monkeypatch.chdir(tmp_path)
    for name in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_ACCESS_TOKEN", "SH_BASE_URL",
                 "SH_TOKEN_URL", "STACFETCH_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    assert main(["search", *POINT, "--start", "2022-01-22", "--env-file", str(env)]) == 3
    err = capsys.readouterr().err
    assert "readable by other users" in err and "chmod 600" in err
    assert SECRET not in err
    env.chmod(0o600)
    main(["search", *POINT, "--start", "2022-01-22", "--env-file", str(env)])
    assert "readable by other users" not in capsys.readouterr().err


HOSTILE = [
    pytest.param("../../x", id="dotdot"),
    pytest.param("/etc/passwd", id="absolute"),
    pytest.param("a\x00b/../../c", id="nul"),
    pytest.param("S2A_" + "../" * 40 + "y" * 5000, id="very-long"),
    pytest.param("..\\..\\windows", id="backslash"),
    pytest.param("C:/Windows/evil", id="drive"),
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_item_ids_never_write_outside_the_output_folder(
    emu: Emulator, tmp_path: Path, hostile: str,
) -> None:
    out = tmp_path / "deep" / "out"
    query = build_query([34.665, 31.625], "2022-01-10", "2022-01-31", size=1500, bands="B04")
    raw = emu.items_for(query.geometry, query.interval.start, query.interval.end)
    assert len(raw) >= 2
    items = []
    for i, doc in enumerate(raw):
        item = pystac.Item.from_dict(doc)
        item.id = f"{hostile}{i}"
        item.properties["platform"] = hostile
        item.properties["s2:mgrs_tile"] = hostile
        item.properties["s2:product_uri"] = hostile
        item.properties["sat:relative_orbit"] = hostile
        items.append(item)
    jobs = plan_jobs(query, items, out)
    settings = Settings(provider="sentinelhub", base_url=emu.url, token_url=emu.token_url,
                        client_id=CLIENT_ID, client_secret=SECRET, output_dir=out)
    result = execute(jobs, RunContext(settings), workers=2, manifest_root=out)
    assert not result.failed and result.written
    root = out.resolve()
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.resolve().parents]
    assert outside == []
    for path in result.written:
        assert root in path.resolve().parents and len(path.name) <= 255
        with rasterio.open(path) as src:
            assert "\x00" not in src.tags()["ITEM_IDS"]


def test_custom_header_values_are_masked_whole_and_by_last_word() -> None:
    """A server may echo a STACFETCH_STAC_HEADERS value whole or only its token: both go."""
    from stacfetch.errors import ServiceError
    from stacfetch.http import open_session

    settings = Settings(provider="stac", base_url=None, token_url=None,
                        stac_url="https://stac.example.com/api",
                        stac_headers={"X-Api-Key": "team-41x7 Kq9-part-8812", "X-Blank": " ",
                                      "X-Sig": "Sig k7-a1b2c3 e9-d4e5f6"})
    assert set(settings.secrets) == {"team-41x7 Kq9-part-8812", "Kq9-part-8812", "Sig k7-a1b2c3 e9-d4e5f6",
                                     "k7-a1b2c3 e9-d4e5f6", "e9-d4e5f6"}
    open_session(settings).close()  # registers the settings' secrets
    whole = str(ServiceError("403: key 'team-41x7 Kq9-part-8812' is not valid", status=403))
    last = str(ServiceError("403: unknown key Kq9-part-8812", status=403))
    assert "team-41x7" not in whole and "Kq9-part-8812" not in whole, whole
    assert "Kq9-part-8812" not in last, last


def test_a_secret_too_short_to_mask_gets_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from stacfetch.http.redact import register_secret

    with caplog.at_level(logging.WARNING, logger="stacfetch.http.redact"):
        register_secret("q7z")
        register_secret("q7z")  # once per value
    warnings = [r.getMessage() for r in caplog.records if "too short to be masked" in r.getMessage()]
    assert len(warnings) == 1 and "q7z" not in warnings[0]
