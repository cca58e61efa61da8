"""`stacfetch check` against the emulator: good, wrong and cross-deployment credentials, old hub, local side."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from stacfetch.cli import main
from stacfetch.doctor import Check, diagnose, exit_code, realm_of
from stacfetch.errors import EXIT_AUTH, EXIT_OK, EXIT_SERVICE, EXIT_USAGE
from stacfetch.testing.emulator import Emulator

CLIENT, SECRET = "my-client", "s3cret-value-123"


def env_for(emu_base: Emulator, emu_token: Emulator | None = None, secret: str = SECRET) -> dict[str, str]:
    token = emu_token or emu_base
    return {"SH_BASE_URL": emu_base.url, "SH_TOKEN_URL": token.token_url,
            "SH_CLIENT_ID": CLIENT, "SH_CLIENT_SECRET": secret}


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def all_text(checks: list[Check]) -> str:
    return "\n".join(f"{c.name} {c.detail} {c.hint}" for c in checks)


@pytest.fixture(autouse=True)
def _no_dotenv_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./.env of the developer's leaks into a check."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def hub() -> Emulator:
    with Emulator(clients={CLIENT: SECRET}) as emu:
        yield emu


def test_good_credentials_pass_every_check_and_name_the_sources(hub: Emulator, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"SH_CLIENT_ID={CLIENT}\nSH_CLIENT_SECRET={SECRET}\n")
    os.chmod(env_file, 0o600)
    environ = {"SH_BASE_URL": hub.url, "SH_TOKEN_URL": hub.token_url}
    checks = diagnose(env_file=env_file, environ=environ, output_dir=tmp_path / "out")
    named = by_name(checks)
    assert exit_code(checks) == EXIT_OK, all_text(checks)
    assert all(c.ok is not False for c in checks)
    assert named[".env"].ok and str(env_file) in named[".env"].detail
    variables = named["variables"].detail
    assert "SH_CLIENT_ID" in variables and f".env file ({env_file})" in variables
    assert "SH_BASE_URL" in variables and "[environment]" in variables
    assert SECRET not in all_text(checks) and "****** (16 characters)" in variables
    assert "realm main (Sentinel Hub)" in named["credentials"].detail
    assert named["collection"].ok and named["catalog"].ok
    assert "does not exist yet" in named["output folder"].detail
    assert named["disk space"].ok
    assert hub.log.count(kind="token") == 1


def test_wrong_secret_fails_with_the_deployment_hint(hub: Emulator, tmp_path: Path) -> None:
    checks = diagnose(environ=env_for(hub, secret="wrong-secret"), output_dir=tmp_path)
    named = by_name(checks)
    assert named["token endpoint"].ok is True
    cred = named["credentials"]
    assert cred.ok is False and "refused" in cred.detail and "401" in cred.detail
    assert "Invalid client" in cred.detail
    assert "other deployment" in cred.hint and "STACFETCH_PROVIDER" in cred.hint
    assert named["collection"].ok is None  # not checked without a token
    assert exit_code(checks) == EXIT_AUTH
    assert "wrong-secret" not in all_text(checks)


def test_sentinel_hub_token_against_a_cdse_api_is_named(tmp_path: Path) -> None:
    with Emulator(clients={CLIENT: SECRET}) as sh, Emulator(deployment="cdse", clients={CLIENT: SECRET}) as cdse:
        checks = diagnose(environ=env_for(cdse, sh), output_dir=tmp_path)
        named = by_name(checks)
        assert named["credentials"].ok is True  # the token endpoint (Sentinel Hub) accepts them
        assert "realm main (Sentinel Hub)" in named["credentials"].detail
        col = named["collection"]
        assert col.ok is False and "401" in col.detail
        assert "the token was issued by realm main (Sentinel Hub) but the API at " + cdse.url in col.detail
        assert "belongs to another deployment (most likely Copernicus Data Space Ecosystem)" in col.detail
        assert "same deployment" in col.hint
        assert exit_code(checks) == EXIT_AUTH
        # credentials went only to the configured token URL
        assert cdse.log.count(kind="token") == 0 and sh.log.count(kind="catalog") == 0


def test_cdse_token_against_a_sentinel_hub_api_is_named(tmp_path: Path) -> None:
    with Emulator(clients={CLIENT: SECRET}) as sh, Emulator(deployment="cdse", clients={CLIENT: SECRET}) as cdse:
        checks = diagnose(environ=env_for(sh, cdse), output_dir=tmp_path)
    col = by_name(checks)["collection"]
    assert "issued by realm CDSE (Copernicus Data Space Ecosystem)" in col.detail
    assert "most likely Sentinel Hub" in col.detail


def test_ready_token_realm_is_read_from_the_jwt(hub: Emulator, tmp_path: Path) -> None:
    token = hub.issue_token(CLIENT)
    assert realm_of(token) == "main"
    checks = diagnose(environ={"SH_BASE_URL": hub.url, "SH_TOKEN_URL": hub.token_url,
                               "SH_ACCESS_TOKEN": token}, output_dir=tmp_path)
    named = by_name(checks)
    assert exit_code(checks) == EXIT_OK, all_text(checks)
    assert named["token endpoint"].ok is None and "ready token issued by realm main" in named["credentials"].detail
    assert hub.log.count(kind="token") == 0
    assert token not in all_text(checks)


def test_old_hub_url_in_the_env_file_is_named_and_explained(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SH_BASE_URL=https://apihub.copernicus.eu/apihub\nDHUS_URL=https://scihub.copernicus.eu/dhus\n"
                        f"SH_CLIENT_ID={CLIENT}\nSH_CLIENT_SECRET={SECRET}\n")
    os.chmod(env_file, 0o600)
    checks = diagnose(env_file=env_file, environ={}, output_dir=tmp_path)
    old = [c for c in checks if c.name == "old hub URL"]
    assert {c.detail.split("=")[0] for c in old} == {"SH_BASE_URL", "DHUS_URL"}
    text = old[0].detail
    assert "Open Access Hub" in text and "October 2023" in text and "Connection refused" in text
    assert "Connection reset by peer" in text and "cdse" in old[0].hint
    assert by_name(checks)["configuration"].ok is False
    assert SECRET not in all_text(checks)
    assert exit_code(checks) == EXIT_AUTH


def test_unreachable_token_endpoint(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"SH_BASE_URL": f"http://127.0.0.1:{port}", "SH_CLIENT_ID": CLIENT, "SH_CLIENT_SECRET": SECRET,
           "SH_TOKEN_URL": f"http://127.0.0.1:{port}/auth/realms/main/protocol/openid-connect/token"}
    checks = diagnose(environ=env, output_dir=tmp_path, timeout=3)
    named = by_name(checks)
    assert named["token endpoint"].ok is False and "Connection refused" in named["token endpoint"].detail
    assert named["catalog"].ok is False
    assert exit_code(checks) == EXIT_SERVICE


def test_unknown_collection_lists_the_available_ones(hub: Emulator, tmp_path: Path) -> None:
    checks = diagnose(environ=env_for(hub), output_dir=tmp_path, collection="sentinel-2-l3a")
    col = by_name(checks)["collection"]
    assert col.ok is False and "sentinel-2-l2a" in col.detail
    assert exit_code(checks) == EXIT_USAGE


def test_output_folder_that_is_a_file(hub: Emulator, tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("x")
    checks = diagnose(environ=env_for(hub), output_dir=blocker)
    assert by_name(checks)["output folder"].ok is False
    assert exit_code(checks) == EXIT_USAGE


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_output_folder(hub: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    checks = diagnose(environ=env_for(hub), output_dir=folder)
    assert by_name(checks)["output folder"].ok is False


def test_cli_prints_marks_and_exits_non_zero(hub: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for key, value in env_for(hub).items():
        monkeypatch.setenv(key, value)
    assert main(["check", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "\u2713  credentials" in out and "\u2717" not in out and SECRET not in out
    monkeypatch.setenv("SH_CLIENT_SECRET", "nope-nope")
    assert main(["check"]) == EXIT_AUTH
    out = capsys.readouterr().out
    assert "\u2717  credentials" in out and "hint:" in out
    assert main(["check", "--json", "-q"]) == EXIT_AUTH
    assert '"name": "credentials"' in capsys.readouterr().out


def test_cli_check_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for key in ("SH_BASE_URL", "SH_TOKEN_URL", "SH_CLIENT_ID", "SH_CLIENT_SECRET", "STACFETCH_PROVIDER"):
        monkeypatch.delenv(key, raising=False)
    assert main(["check", "--provider", "sandbox"]) == 0
    assert "emulator started" in capsys.readouterr().out


def test_ready_token_of_the_other_deployment_is_named(tmp_path: Path) -> None:
    with Emulator(clients={CLIENT: SECRET}) as sh, Emulator(deployment="cdse", clients={CLIENT: SECRET}) as cdse:
        token = cdse.issue_token(CLIENT)
        checks = diagnose(environ={"SH_BASE_URL": sh.url, "SH_TOKEN_URL": sh.token_url, "SH_ACCESS_TOKEN": token},
                          output_dir=tmp_path)
        api_url = sh.url
    named = by_name(checks)
    assert named["credentials"].ok is True and "realm CDSE" in named["credentials"].detail
    col = named["collection"]
    assert col.ok is False
    assert "the token was issued by realm CDSE (Copernicus Data Space Ecosystem) but the API at " + api_url in col.detail
    assert "most likely Sentinel Hub" in col.detail
