"""Settings: precedence, provider profiles and the clear errors for bad configuration."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stacfetch.config import PROVIDERS, is_loopback_host, load_settings, mask
from stacfetch.errors import ConfigError, InsecureTransportError

CREDS = {"SH_CLIENT_ID": "env-id", "SH_CLIENT_SECRET": "env-secret-value"}


def write_env(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_arguments_override_environment_override_env_file(tmp_path: Path) -> None:
    env_file = write_env(
        tmp_path,
        "SH_CLIENT_ID=file-id\nSH_CLIENT_SECRET=file-secret\nSTACFETCH_OUTPUT_DIR=/from/file\n"
        "STACFETCH_PROVIDER=cdse\n",
    )
    s = load_settings(env_file=env_file, environ={"SH_CLIENT_ID": "env-id", "SH_CLIENT_SECRET": "env-s"},
                      output_dir="/from/arg")
    assert s.client_id == "env-id" and s.client_secret == "env-s"
    assert s.output_dir == Path("/from/arg")
    assert s.provider == "cdse"
    assert s.base_url == PROVIDERS["cdse"].base_url
    assert s.token_url == PROVIDERS["cdse"].token_url
    assert s.sources["SH_CLIENT_ID"] == "environment"
    assert s.sources["STACFETCH_OUTPUT_DIR"] == "argument"
    assert s.sources["STACFETCH_PROVIDER"].startswith(".env file")
    assert s.catalog_url == "https://sh.dataspace.copernicus.eu/api/v1/catalog/1.0.0/"
    assert s.process_url == "https://sh.dataspace.copernicus.eu/api/v1/process"


def test_default_provider_is_sentinel_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.env here
    s = load_settings(environ=CREDS)
    assert s.provider == "sentinelhub"
    assert s.token_url.endswith("/auth/realms/main/protocol/openid-connect/token")
    assert s.output_dir == Path("stacfetch-output")


def test_provider_flag_overrides_variable() -> None:
    s = load_settings(environ={**CREDS, "STACFETCH_PROVIDER": "cdse"}, provider="sentinelhub",
                      env_file=None)
    assert s.provider == "sentinelhub"


def test_sandbox_needs_no_credentials() -> None:
    s = load_settings(environ={}, provider="sandbox")
    assert s.is_sandbox and s.client_id and s.base_url is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, "SH_CLIENT_ID and SH_CLIENT_SECRET are not set", id="no-credentials"),
        pytest.param({"SH_CLIENT_ID": "x"}, "SH_CLIENT_SECRET is not", id="secret-missing"),
        pytest.param({"SH_CLIENT_SECRET": "x"}, "SH_CLIENT_ID is not", id="id-missing"),
        pytest.param({**CREDS, "STACFETCH_PROVIDER": "nasa"}, "unknown provider 'nasa'", id="bad-provider"),
        pytest.param({**CREDS, "STACFETCH_PROVIDER": "scihub"}, "shut down", id="scihub-provider"),
        pytest.param({**CREDS, "SH_BASE_URL": "https://apihub.copernicus.eu/apihub"}, "shut down",
                     id="old-hub-url"),
        pytest.param({**CREDS, "SH_BASE_URL": "ftp://x"}, "is not an http(s) URL", id="not-http"),
        pytest.param(
            {**CREDS, "SH_BASE_URL": "https://services.sentinel-hub.com",
             "SH_TOKEN_URL": PROVIDERS["cdse"].token_url},
            "tokens only work on the deployment", id="mixed-deployments"),
    ],
)
def test_bad_configuration_is_one_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environ: dict, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    assert expected in str(info.value)
    assert info.value.hint  # always says what to do
    assert info.value.exit_code == 3


def test_plain_http_refused_except_loopback() -> None:
    with pytest.raises(InsecureTransportError):
        load_settings(environ={**CREDS, "SH_BASE_URL": "http://example.org",
                               "SH_TOKEN_URL": "http://example.org/token"})
    s = load_settings(environ={**CREDS, "SH_BASE_URL": "http://127.0.0.1:9999",
                               "SH_TOKEN_URL": "http://localhost:9999/token"})
    assert s.base_url == "http://127.0.0.1:9999"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "example.org", "127.example.org", "", None])
def test_non_loopback_hosts(host: str | None) -> None:
    assert not is_loopback_host(host)


def test_missing_explicit_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env_file=tmp_path / "nope.env", environ=CREDS)


def test_world_readable_env_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env_file = write_env(tmp_path, "SH_CLIENT_ID=a\nSH_CLIENT_SECRET=b\n", mode=0o644)
    with caplog.at_level(logging.WARNING):
        load_settings(env_file=env_file, environ={})
    assert "chmod 600" in caplog.text


def test_secrets_are_masked_in_repr_and_describe() -> None:
    s = load_settings(environ={**CREDS, "SH_ACCESS_TOKEN": "tok"}, env_file=None)
    assert "env-secret-value" not in repr(s)
    rows = dict((k, v) for k, v, _ in s.describe())
    assert "env-secret-value" not in str(rows)
    assert rows["SH_CLIENT_SECRET"] == mask("env-secret-value")


@pytest.mark.parametrize("headers", ['{"X-Key": ""}', '{"X-Key": "  "}', "X-Key:", "X-Team: eo; X-Key: "])
def test_an_empty_stac_header_value_is_refused_naming_it(headers: str) -> None:
    with pytest.raises(ConfigError, match="X-Key") as info:
        load_settings(provider="stac", environ={"STACFETCH_STAC_URL": "https://stac.example.com/api",
                                                "STACFETCH_STAC_HEADERS": headers})
    assert "no value" in info.value.message


def test_secrets_of_settings_with_an_empty_header_value() -> None:
    from stacfetch.config import Settings

    settings = Settings(provider="stac", base_url=None, token_url=None, stac_url="https://stac.example.com/api",
                        stac_headers={"X-Key": "", "X-Api-Key": "Key abc-123456789"})
    # the credential and the whole value are secrets; the empty value adds nothing
    assert set(settings.secrets) == {"Key abc-123456789", "abc-123456789"}
