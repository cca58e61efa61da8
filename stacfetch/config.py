"""Settings from arguments > environment > ``.env`` file, and the provider profiles.

Variables (exactly these names): SH_CLIENT_ID, SH_CLIENT_SECRET, SH_ACCESS_TOKEN,
STACFETCH_OUTPUT_DIR, STACFETCH_PROVIDER, SH_BASE_URL, SH_TOKEN_URL, and for the STAC/COG
providers STACFETCH_STAC_URL, STACFETCH_STAC_TOKEN, STACFETCH_STAC_HEADERS.

Each provider has a pixel ``source``: ``"process"`` renders pixels through the Sentinel Hub
Process API (OAuth credentials needed); ``"assets"`` reads the Cloud-Optimized GeoTIFF assets
that a STAC API publishes (``stacfetch.sources.assets``; no Sentinel Hub account needed).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .errors import ConfigError, InvalidOptionError, closest
from .http.urls import (  # noqa: F401  (OLD_HUB_*, is_loopback_host, old_hub_host: re-exported)
    OLD_HUB_HINT,
    OLD_HUB_HOSTS,
    OLD_HUB_MESSAGE,
    check_destination,
    is_loopback_host,
    old_hub_host,
)

log = logging.getLogger(__name__)

VARIABLES = (
    "SH_CLIENT_ID",
    "SH_CLIENT_SECRET",
    "SH_ACCESS_TOKEN",
    "STACFETCH_OUTPUT_DIR",
    "STACFETCH_PROVIDER",
    "SH_BASE_URL",
    "SH_TOKEN_URL",
    "STACFETCH_STAC_URL",
    "STACFETCH_STAC_TOKEN",
    "STACFETCH_STAC_HEADERS",
)
SECRET_VARIABLES = ("SH_CLIENT_SECRET", "SH_ACCESS_TOKEN", "STACFETCH_STAC_TOKEN", "STACFETCH_STAC_HEADERS")
SOURCES = ("process", "assets")  # where pixels come from: stacfetch.sources
DEFAULT_OUTPUT_DIR = "stacfetch-output"
DEFAULT_TIMEOUT_SECONDS = 120.0  # --timeout / timeout=: seconds for an answer to start arriving
MAX_TIMEOUT_SECONDS = 3600.0
SANDBOX_CLIENT_ID = "sandbox"
SANDBOX_CLIENT_SECRET = "sandbox-secret"

@dataclass(frozen=True)
class Provider:
    """A deployment stacfetch knows how to talk to."""

    name: str
    title: str
    base_url: str | None
    token_url: str | None
    clients_page: str
    source: str = "process"  # "process": Sentinel Hub Process API; "assets": the STAC items' COG assets
    stac_url: str | None = None  # the STAC API root of an "assets" provider (None: STACFETCH_STAC_URL)
    signing: str | None = None  # asset href signing: "planetary-computer" (SAS tokens) or None


PROVIDERS: dict[str, Provider] = {
    "sentinelhub": Provider(
        "sentinelhub",
        "Sentinel Hub (commercial, services.sentinel-hub.com)",
        "https://services.sentinel-hub.com",
        "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token",
        "the Sentinel Hub Dashboard -> User settings -> OAuth clients",
    ),
    "cdse": Provider(
        "cdse",
        "Copernicus Data Space Ecosystem (sh.dataspace.copernicus.eu)",
        "https://sh.dataspace.copernicus.eu",
        "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token",
        "https://shapps.dataspace.copernicus.eu/dashboard/#/account/settings",
    ),
    "sandbox": Provider(
        "sandbox",
        "stacfetch's built-in emulator on 127.0.0.1 (synthetic data, no account needed)",
        None,  # filled in when the emulator starts
        None,
        "nowhere: the sandbox needs no account",
    ),
    "earth-search": Provider(
        "earth-search",
        "Earth Search by Element 84 (public STAC API, COGs on AWS; no account)",
        None,
        None,
        "nowhere: Earth Search needs no account",
        source="assets",
        stac_url="https://earth-search.aws.element84.com/v1",
    ),
    "planetary-computer": Provider(
        "planetary-computer",
        "Microsoft Planetary Computer (public STAC API; asset URLs signed with SAS tokens)",
        None,
        None,
        "nowhere: anonymous SAS tokens need no account",
        source="assets",
        stac_url="https://planetarycomputer.microsoft.com/api/stac/v1",
        signing="planetary-computer",
    ),
    "stac": Provider(
        "stac",
        "any STAC API publishing COG assets (STACFETCH_STAC_URL)",
        None,
        None,
        "the STAC API's own documentation (STACFETCH_STAC_TOKEN or STACFETCH_STAC_HEADERS)",
        source="assets",
    ),
}

# Which deployment a host belongs to, to catch a base URL and a token URL that disagree.
_HOST_FAMILIES = {"sentinel-hub.com": "sentinelhub", "dataspace.copernicus.eu": "cdse"}


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Secrets are hidden from ``repr``."""

    provider: str
    base_url: str | None
    token_url: str | None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    output_dir: Path = Path(DEFAULT_OUTPUT_DIR)
    env_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    stac_url: str | None = None
    stac_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = DEFAULT_TIMEOUT_SECONDS  # for an answer to start arriving (--timeout)

    @property
    def source(self) -> str:
        """``"process"`` or ``"assets"``: where this provider's pixels come from (``stacfetch.sources``)."""
        profile = PROVIDERS.get(self.provider)
        return profile.source if profile is not None else "process"

    @property
    def signing(self) -> str | None:
        """How asset hrefs are signed (``"planetary-computer"``) or None."""
        profile = PROVIDERS.get(self.provider)
        return profile.signing if profile is not None else None

    @property
    def catalog_url(self) -> str:
        """The STAC API root (with a trailing ``/``): the Catalog API, or ``STACFETCH_STAC_URL``."""
        if self.source == "assets":
            if not self.stac_url:
                raise ConfigError("no STAC API URL is set", hint="set STACFETCH_STAC_URL")
            return self.stac_url.rstrip("/") + "/"
        return f"{_need(self.base_url)}/api/v1/catalog/1.0.0/"

    @property
    def process_url(self) -> str:
        """The Process API endpoint under ``SH_BASE_URL``."""
        return f"{_need(self.base_url)}/api/v1/process"

    @property
    def is_sandbox(self) -> bool:
        return self.provider == "sandbox"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be printed, logged or written.

        Each custom STAC header value counts whole, after its first word (the credential of
        ``Scheme credential``) and by its last word: a server may echo any of them. An empty
        value hides nothing.
        """
        header_values = [w for v in self.stac_headers.values() if v.strip()
                         for w in dict.fromkeys((v.strip(), v.split(None, 1)[-1].strip(), v.split()[-1]))]
        return tuple(s for s in (self.client_secret, self.access_token, *header_values) if s)

    def with_urls(self, base_url: str, token_url: str) -> Settings:
        """A copy pointed at another deployment (``base_url`` without a trailing ``/``)."""
        return replace(self, base_url=base_url.rstrip("/"), token_url=token_url)

    def describe(self) -> list[tuple[str, str, str]]:
        """``(variable, shown value, source)`` rows with secrets masked, for `check` and -v."""
        if self.source == "assets":
            cog_values = {
                "STACFETCH_PROVIDER": self.provider,
                "STACFETCH_STAC_URL": self.stac_url or "",
                "STACFETCH_STAC_HEADERS": ", ".join(
                    f"{k}: {mask(v)}" for k, v in self.stac_headers.items()),
                "STACFETCH_OUTPUT_DIR": str(self.output_dir),
            }
            return [(k, v, self.sources.get(k, "default")) for k, v in cog_values.items()]
        values = {
            "STACFETCH_PROVIDER": self.provider,
            "SH_BASE_URL": self.base_url or "(started with the sandbox)",
            "SH_TOKEN_URL": self.token_url or "(started with the sandbox)",
            "SH_CLIENT_ID": self.client_id or "",
            "SH_CLIENT_SECRET": mask(self.client_secret),
            "SH_ACCESS_TOKEN": mask(self.access_token),
            "STACFETCH_OUTPUT_DIR": str(self.output_dir),
        }
        return [(k, v, self.sources.get(k, "default")) for k, v in values.items()]


def _need(url: str | None) -> str:
    if not url:
        raise ConfigError("no service URL is set", hint="set STACFETCH_PROVIDER or SH_BASE_URL")
    return url.rstrip("/")


def mask(secret: str | None) -> str:
    """Show that a secret is set without showing it."""
    if not secret:
        return ""
    return f"****** ({len(secret)} characters)"


def check_url(url: str, variable: str) -> None:
    """Refuse URLs that are malformed, point at the dead hub, or are plain HTTP off-loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{variable}={url!r} is not an http(s) URL",
            hint=f"set {variable} to a full URL such as https://sh.dataspace.copernicus.eu, "
            "or remove it to use the provider's default",
        )
    check_destination(url, variable)


def deployment_of(url: str | None) -> str | None:
    """``"sentinelhub"`` or ``"cdse"`` when ``url``'s host belongs to that deployment, else None."""
    host = (urlsplit(url or "").hostname or "").lower()
    for suffix, family in _HOST_FAMILIES.items():
        if host == suffix or host.endswith("." + suffix):
            return family
    return None


def _utf16_name(path: Path) -> str | None:
    """``"UTF-16"`` (LE/BE) when the file starts with a UTF-16 byte-order mark or looks like
    UTF-16 text without one (every other byte NUL); else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "UTF-16 " + ("LE" if head[:2] == b"\xff\xfe" else "BE")
    if len(head) >= 4 and (head[1::2].count(0) > len(head) // 4 or head[0::2].count(0) > len(head) // 4):
        return "UTF-16 " + ("LE" if head[1::2].count(0) > head[0::2].count(0) else "BE")
    return None


def _read_env_file(path: Path) -> dict[str, str]:
    try:
        mode = path.stat().st_mode
    except OSError:
        return {}
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "%s is readable by other users and may hold secrets; run: chmod 600 %s", path, path
        )
    encoding = _utf16_name(path)
    if encoding:
        raise ConfigError(
            f"{path} is saved as {encoding}; stacfetch reads .env files as UTF-8 and would find "
            "no settings in it",
            hint=f"save {path.name} as UTF-8 (in Notepad: Save as, Encoding UTF-8; or run "
            f"iconv -f UTF-16 -t UTF-8 {path.name} > {path.name}.utf8 and rename it)",
        )
    try:
        values = dotenv_values(path, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="check the file's permissions and encoding") from None
    return {k: v for k, v in values.items() if v is not None}


def load_settings(
    *,
    env_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    provider: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    access_token: str | None = None,
    base_url: str | None = None,
    token_url: str | None = None,
    stac_url: str | None = None,
    stac_token: str | None = None,
    timeout: float | str | None = None,
) -> Settings:
    """Resolve settings: keyword arguments > ``environ`` (default os.environ) > ``.env`` file.

    ``env_file`` defaults to ``./.env``; an explicitly named file that does not exist is an error.
    ``timeout``: seconds a request may wait for its answer to start (default 120).
    """
    seconds = check_timeout(timeout)
    settings = _resolve(env_file=env_file, environ=environ, provider=provider, output_dir=output_dir,
                        client_id=client_id, client_secret=client_secret, access_token=access_token,
                        base_url=base_url, token_url=token_url, stac_url=stac_url,
                        stac_token=stac_token)
    return settings if seconds == settings.timeout else replace(settings, timeout=seconds)


def check_timeout(value: float | str | None) -> float:
    """``--timeout`` / ``timeout=`` in seconds (default 120), refused unless 1..3600."""
    if value is None:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"timeout {value!r} is not a number of seconds",
                                 hint="e.g. --timeout 120") from None
    if isinstance(value, bool) or not 1 <= seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidOptionError(f"timeout {value!r} must be 1 to {MAX_TIMEOUT_SECONDS:.0f} seconds",
                                 hint="e.g. --timeout 120 (the default)")
    return seconds


def _resolve(
    *,
    env_file: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None,
    provider: str | None,
    output_dir: str | os.PathLike[str] | None,
    client_id: str | None,
    client_secret: str | None,
    access_token: str | None,
    base_url: str | None,
    token_url: str | None,
    stac_url: str | None,
    stac_token: str | None,
) -> Settings:
    environ = os.environ if environ is None else environ
    explicit_file = env_file is not None
    path = Path(env_file) if explicit_file else Path(".env")
    if explicit_file and not path.is_file():
        raise ConfigError(
            f"the env file {path} does not exist",
            hint="check the --env-file path, or copy .env.example to .env and fill it in",
        )
    file_values = _read_env_file(path) if path.is_file() else {}
    arguments = {
        "STACFETCH_PROVIDER": provider,
        "STACFETCH_OUTPUT_DIR": None if output_dir is None else str(output_dir),
        "SH_CLIENT_ID": client_id,
        "SH_CLIENT_SECRET": client_secret,
        "SH_ACCESS_TOKEN": access_token,
        "SH_BASE_URL": base_url,
        "SH_TOKEN_URL": token_url,
        "STACFETCH_STAC_URL": stac_url,
        "STACFETCH_STAC_TOKEN": stac_token,
    }
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name in VARIABLES:
        for source, table in (
            ("argument", arguments),
            ("environment", environ),
            (f".env file ({path})", file_values),
        ):
            value = table.get(name)
            if value is not None and str(value).strip() != "":
                values[name] = str(value).strip()
                sources[name] = source
                break

    provider_name = values.get("STACFETCH_PROVIDER", "sentinelhub").lower()
    if provider_name not in PROVIDERS:
        hint = ", ".join(PROVIDERS)
        if provider_name in ("scihub", "apihub", "copernicus", "dhus"):
            raise ConfigError(
                f"STACFETCH_PROVIDER={provider_name!r}: the Copernicus Open Access Hub was shut down "
                "at the end of October 2023",
                hint="set STACFETCH_PROVIDER=cdse (its successor) or sentinelhub",
            )
        near = closest(provider_name, PROVIDERS)
        raise ConfigError(
            f"unknown provider {provider_name!r} (from {sources.get('STACFETCH_PROVIDER')})"
            + (f"; did you mean {near!r}?" if near else ""),
            hint=f"set STACFETCH_PROVIDER (or --provider) to one of: {hint}",
        )
    profile = PROVIDERS[provider_name]
    out = Path(values.get("STACFETCH_OUTPUT_DIR", DEFAULT_OUTPUT_DIR)).expanduser()

    if profile.source == "assets":
        return _cog_settings(profile, values, sources, out, path if file_values else None)

    if profile.name == "sandbox":
        for name in ("SH_BASE_URL", "SH_TOKEN_URL"):
            if name in values:
                log.warning("%s is ignored with the sandbox provider (from %s)", name, sources[name])
        return Settings(
            provider="sandbox",
            base_url=None,
            token_url=None,
            client_id=SANDBOX_CLIENT_ID,
            client_secret=SANDBOX_CLIENT_SECRET,
            output_dir=out,
            env_file=path if file_values else None,
            sources=sources,
        )

    base = values.get("SH_BASE_URL", profile.base_url or "").rstrip("/")
    token = values.get("SH_TOKEN_URL", profile.token_url or "")
    check_url(base, "SH_BASE_URL")
    check_url(token, "SH_TOKEN_URL")
    base_family, token_family = deployment_of(base), deployment_of(token)
    if base_family and token_family and base_family != token_family:
        raise ConfigError(
            f"SH_BASE_URL ({base}) belongs to {PROVIDERS[base_family].title} but SH_TOKEN_URL "
            f"({token}) to {PROVIDERS[token_family].title}; tokens only work on the deployment "
            "that issued them",
            hint="set STACFETCH_PROVIDER=sentinelhub or cdse and remove SH_BASE_URL/SH_TOKEN_URL",
        )

    cid = values.get("SH_CLIENT_ID")
    secret = values.get("SH_CLIENT_SECRET")
    ready = values.get("SH_ACCESS_TOKEN")
    where = f"in {path}" if path.is_file() else f"in a .env file (copy .env.example to {path})"
    if bool(cid) != bool(secret):
        missing = "SH_CLIENT_SECRET" if cid else "SH_CLIENT_ID"
        present = "SH_CLIENT_ID" if cid else "SH_CLIENT_SECRET"
        raise ConfigError(
            f"{present} is set (from {sources[present]}) but {missing} is not",
            hint=f"set {missing} {where}; both come from the OAuth client you created on "
            f"{profile.clients_page}",
        )
    if cid and ready:
        log.info("both client credentials and SH_ACCESS_TOKEN are set; using the client credentials")
        ready = None
    if not cid and not ready:
        raise ConfigError(
            f"no credentials for {profile.title}: SH_CLIENT_ID and SH_CLIENT_SECRET are not set",
            hint=f"create an OAuth client on {profile.clients_page} and put SH_CLIENT_ID and "
            f"SH_CLIENT_SECRET {where} (or SH_ACCESS_TOKEN for a ready token); "
            "to try stacfetch without an account use --provider sandbox",
        )
    return Settings(
        provider=profile.name,
        base_url=base,
        token_url=token,
        client_id=cid,
        client_secret=secret,
        access_token=ready,
        output_dir=out,
        env_file=path if file_values else None,
        sources=sources,
    )


def parse_headers(text: str) -> dict[str, str]:
    """``STACFETCH_STAC_HEADERS``: a JSON object, or ``Name: value`` pairs separated by newlines or ``;``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"STACFETCH_STAC_HEADERS is not valid JSON: {exc.msg}",
                              hint='e.g. {"X-Api-Key": "..."}') from None
        if not isinstance(raw, dict):
            raise ConfigError("STACFETCH_STAC_HEADERS must be a JSON object")
        pairs = [(str(k), str(v)) for k, v in raw.items()]
    else:
        pairs = []
        for part in text.replace(";", "\n").splitlines():
            if not part.strip():
                continue
            name, sep, value = part.partition(":")
            if not sep or not name.strip():
                raise ConfigError(
                    "STACFETCH_STAC_HEADERS: expected 'Name: value' pairs separated by ';'",
                    hint='e.g. STACFETCH_STAC_HEADERS="X-Api-Key: abc; X-Team: eo" or a JSON object',
                )
            pairs.append((name.strip(), value.strip()))
    headers = {}
    for name, value in pairs:
        if not name.replace("-", "").replace("_", "").isalnum() or "\n" in value or "\r" in value:
            raise ConfigError(f"STACFETCH_STAC_HEADERS: bad header name or value for {name!r}")
        if not value.strip():
            raise ConfigError(f"STACFETCH_STAC_HEADERS: header {name!r} has no value",
                              hint="give it a value, or leave it out")
        headers[name] = value
    return headers


def _cog_settings(
    profile: Provider,
    values: Mapping[str, str],
    sources: Mapping[str, str],
    out: Path,
    env_file: Path | None,
) -> Settings:
    """Settings for a STAC API with COG assets: a STAC URL, optional headers, no SH credentials."""
    url = values.get("STACFETCH_STAC_URL", profile.stac_url or "").rstrip("/")
    if not url:
        raise ConfigError(
            f"STACFETCH_PROVIDER={profile.name} needs the STAC API's URL",
            hint="set STACFETCH_STAC_URL, e.g. https://earth-search.aws.element84.com/v1 "
            "(or use --provider earth-search)",
        )
    check_url(url, "STACFETCH_STAC_URL")
    ignored = [n for n in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_ACCESS_TOKEN", "SH_BASE_URL",
                           "SH_TOKEN_URL") if n in values]
    if ignored:
        log.info("%s not used by the %s provider", ", ".join(ignored), profile.name)
    headers = parse_headers(values["STACFETCH_STAC_HEADERS"]) if "STACFETCH_STAC_HEADERS" in values else {}
    token = values.get("STACFETCH_STAC_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return Settings(
        provider=profile.name,
        base_url=None,
        token_url=None,
        output_dir=out,
        env_file=env_file,
        sources=sources,
        stac_url=url,
        stac_headers=headers,
    )
