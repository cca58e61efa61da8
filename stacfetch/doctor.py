"""``stacfetch check``: the configuration and the service, checked step by step.

Checks are data: :func:`diagnose` returns a list of :class:`Check` (``ok`` True, False, or
None for "nothing to check"); the CLI prints them with ✓/✗. Each step reads the
configuration as ``get`` does (arguments > environment > ``.env``), then asks the configured
token endpoint for a token, and the configured Catalog for its landing page and the
collection. Credentials are only ever sent to the configured token URL, never to another
deployment's host: a token of the wrong deployment is recognised by its issuer (the JWT
``iss`` realm) and by the Catalog's 401.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .config import (
    PROVIDERS,
    SECRET_VARIABLES,
    VARIABLES,
    Settings,
    deployment_of,
    load_settings,
    mask,
)
from .errors import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_USAGE,
    NetworkError,
    ServiceError,
    StacfetchError,
    decode_error_body,
)
from .http.ratelimit import RateLimiter
from .http.redact import redact, register_secret
from .http.retry import RetryPolicy
from .http.session import ServiceSession, open_service
from .http.tokens import ClientCredentialsToken, deployment_hint, jwt_claims
from .http.urls import OLD_HUB_HINT, OLD_HUB_MESSAGE, old_hub_host

__all__ = ["Check", "diagnose", "exit_code", "realm_of"]

MIN_FREE_BYTES = 1 << 30  # below 1 GiB free, `get` of a few acquisitions may not fit
LEGACY_TOKEN_PATH = "/oauth/token"
REALM_NAMES = {"main": "sentinelhub", "CDSE": "cdse"}


@dataclass(frozen=True)
class Check:
    """One line of the report: ``ok`` is True (✓), False (✗) or None (nothing to check)."""

    name: str
    ok: bool | None
    detail: str
    hint: str = ""
    code: int = EXIT_AUTH  # the exit code when this check fails


def exit_code(checks: list[Check]) -> int:
    """0 when nothing failed, else the code of the first failed check."""
    for check in checks:
        if check.ok is False:
            return check.code
    return EXIT_OK


def realm_of(token: str) -> str | None:
    """The Keycloak realm that issued a JWT (``main``, ``CDSE`` ...), from its ``iss`` claim."""
    claims = jwt_claims(token) or {}
    issuer = str(claims.get("iss") or "")
    if "/realms/" not in issuer:
        return None
    return issuer.rsplit("/realms/", 1)[1].strip("/") or None


def _realm_title(realm: str | None) -> str:
    provider = REALM_NAMES.get(realm or "")
    if provider:
        return f"realm {realm} ({PROVIDERS[provider].title.split(' (')[0]})"
    return f"realm {realm}" if realm else "an unknown issuer"


# --- the configuration --------------------------------------------------------------------
def _raw_sources(env_file: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> tuple[Path, dict[str, str], bool]:
    """The .env path, its values (unparsed errors ignored) and whether it exists."""
    path = Path(env_file) if env_file is not None else Path(".env")
    values: dict[str, str] = {}
    if path.is_file():
        try:
            values = {k: v for k, v in dotenv_values(path).items() if v is not None}
        except (OSError, UnicodeDecodeError):
            values = {}
    return path, values, path.is_file()


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return parts._replace(netloc=netloc).geturl()
    return url


def _old_hub_checks(file_values: Mapping[str, str], path: Path, environ: Mapping[str, str]) -> list[Check]:
    """Every variable (ours or another tool's) that still points at the shut-down hub."""
    found: list[Check] = []
    seen: set[str] = set()
    for source, table in ((f".env file ({path})", file_values), ("environment", environ)):
        for name, value in table.items():
            if not isinstance(value, str) or name in seen:
                continue
            host = old_hub_host(value.strip()) if "://" in value else None
            if host is None and ("apihub.copernicus.eu" in value or "scihub.copernicus.eu" in value):
                host = "apihub.copernicus.eu" if "apihub" in value else "scihub.copernicus.eu"
            if host is None:
                continue
            seen.add(name)
            found.append(Check(
                "old hub URL", False,
                f"{name}={_strip_userinfo(value.strip())} (from {source}): "
                + OLD_HUB_MESSAGE.format(host=host)
                + " Requests to it fail with 'ConnectionError: HTTPSConnectionPool(host="
                f"'{host}', port=443) ... Connection refused' or 'ConnectionResetError(104, "
                "'Connection reset by peer')'.",
                hint=OLD_HUB_HINT + (f"; remove {name}" if not name.startswith("SH_") else ""),
            ))
    return found


def _variables_detail(settings: Settings | None, file_values: Mapping[str, str], path: Path,
                      environ: Mapping[str, str]) -> str:
    if settings is not None:
        rows = settings.describe()
    else:  # the configuration did not load: show what was found, secrets masked
        rows = []
        for name in VARIABLES:
            for source, table in (("environment", environ), (f".env file ({path})", file_values)):
                value = table.get(name)
                if value:
                    shown = mask(value) if name in SECRET_VARIABLES else value
                    rows.append((name, shown, source))
                    break
            else:
                rows.append((name, "", "not set"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name.ljust(width)} = {value or '(not set)'}  [{source}]" for name, value, source in rows)


# --- the service ------------------------------------------------------------------------
# one try per check: a check reports what the service answers now, it does not wait it out
_ONE_TRY = RetryPolicy(max_attempts=1, max_rate_limit_retries=0)


def _http(settings: Settings, timeout: float) -> ServiceSession:
    """The session code without an authoriser: each check passes its own credentials."""
    return ServiceSession(settings, limiter=RateLimiter(), retry=_ONE_TRY, pool_size=2, timeout=timeout)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset by peer", "Name or service not known",
                   "nodename nor servname", "timed out", "CERTIFICATE_VERIFY_FAILED",
                   "No route to host", "Temporary failure in name resolution"):
        if marker in text:
            return marker
    return type(exc).__name__


def _failed(url: str, exc: BaseException) -> str:
    """A request that raised: the service failed (5xx, 429: the session's error) or was not reached."""
    if isinstance(exc, ServiceError) and not isinstance(exc, NetworkError):
        return redact(f"{url} answered {exc.message}")
    return f"{url} is not reachable: {_reason(exc)}"


def _error_text(response: Any) -> str:
    try:
        _, text = decode_error_body(response)
    except Exception:
        text = None
    return text or response.reason or f"HTTP {response.status_code}"


def _token_checks(http: ServiceSession, settings: Settings) -> tuple[list[Check], str | None]:
    """Token endpoint reachable, credentials accepted; returns the checks and the token."""
    checks: list[Check] = []
    if not settings.client_id and settings.access_token:
        token = settings.access_token
        claims = jwt_claims(token) or {}
        checks.append(Check("token endpoint", None, "not needed: SH_ACCESS_TOKEN is a ready token"))
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and exp <= time.time():
            checks.append(Check(
                "credentials", False,
                f"SH_ACCESS_TOKEN (issued by {_realm_title(realm_of(token))}) expired "
                f"{(time.time() - exp) / 60:.0f} min ago",
                hint="use SH_CLIENT_ID and SH_CLIENT_SECRET so stacfetch fetches fresh tokens itself",
            ))
            return checks, None
        left = f", valid {(exp - time.time()) / 60:.0f} more min" if isinstance(exp, (int, float)) else ""
        checks.append(Check("credentials", True,
                            f"ready token issued by {_realm_title(realm_of(token))}{left}"))
        return checks, token

    url = settings.token_url or ""
    if urlsplit(url).path.rstrip("/").endswith(LEGACY_TOKEN_PATH):
        checks.append(Check(
            "token URL", False,
            f"SH_TOKEN_URL={url} is Sentinel Hub's legacy token endpoint (replaced in December "
            "2023 by .../auth/realms/main/protocol/openid-connect/token)",
            hint=f"remove SH_TOKEN_URL to use {PROVIDERS['sentinelhub'].token_url}",
        ))
    try:
        source = ClientCredentialsToken(settings, session=http)
    except StacfetchError as exc:  # no client credentials
        checks.append(Check("credentials", False, exc.message, hint=exc.hint or ""))
        return checks, None
    started = time.monotonic()
    try:
        token: str | None = source.get()
        failure: StacfetchError | None = None
    except NetworkError as exc:  # the endpoint is not reachable
        checks.append(Check(
            "token endpoint", False, f"{url} is not reachable: {redact(_reason(exc), settings.secrets)}",
            hint="check the network, a proxy (HTTPS_PROXY) or SH_TOKEN_URL",
            code=EXIT_SERVICE,
        ))
        return checks, None
    except StacfetchError as exc:  # it answered, and refused or failed
        token, failure = None, exc
    ms = (time.monotonic() - started) * 1000
    status = getattr(failure, "status", None) or source.last_status
    checks.append(Check("token endpoint", True, f"{url} answered HTTP {status} in {ms:.0f} ms"))
    if failure is not None or token is None:
        checks.append(_credentials_failure(failure, status, settings))
        return checks, None
    register_secret(token)
    claims = jwt_claims(token) or {}
    exp = claims.get("exp")
    valid = f", valid {float(exp) - time.time():.0f} s" if isinstance(exp, (int, float)) else ""
    checks.append(Check(
        "credentials", True,
        f"client id {settings.client_id!r} accepted; token issued by {_realm_title(realm_of(token))}{valid}",
    ))
    return checks, token


def _credentials_failure(failure: StacfetchError | None, status: int | None, settings: Settings) -> Check:
    """What the token endpoint's refusal (an AuthError) or failure (a ServiceError) says."""
    text = redact(failure.message if failure is not None else "no token", settings.secrets)
    if isinstance(failure, ServiceError) or status == 200:  # a 5xx or 429, or no token in a 200
        hint = ("the service has a problem; try again later" if status != 200
                else "SH_TOKEN_URL may not be an OAuth2 token endpoint")
        return Check("credentials", False, text, hint=hint, code=EXIT_SERVICE)
    return Check("credentials", False, f"{text} (HTTP {status})",
                 hint=failure.hint if failure is not None and failure.hint else deployment_hint(settings))


def _catalog_checks(http: ServiceSession, settings: Settings, token: str | None, collection: str,
                    timeout: float) -> list[Check]:
    checks: list[Check] = []
    root = settings.catalog_url
    cog = getattr(settings, "source", "process") == "assets"
    auth = dict(getattr(settings, "stac_headers", {}) or {}) if cog else (
        {"Authorization": f"Bearer {token}"} if token else None)
    try:
        landing = http.get(root, headers={"Accept": "application/json"}, timeout=timeout)
    except Exception as exc:
        return [Check("catalog", False, _failed(root, exc),
                      hint="check the network, a proxy (HTTPS_PROXY) or SH_BASE_URL", code=EXIT_SERVICE)]
    if landing.status_code != 200:
        return [Check("catalog", False, f"{root} answered HTTP {landing.status_code}: {_error_text(landing)}",
                      hint="SH_BASE_URL should be the API root, e.g. "
                      f"{PROVIDERS['cdse'].base_url} or {PROVIDERS['sentinelhub'].base_url}",
                      code=EXIT_SERVICE)]
    try:
        title = landing.json().get("title") or landing.json().get("id") or "STAC catalog"
    except ValueError:
        return [Check("catalog", False, f"{root} did not answer JSON: it is not a STAC catalog",
                      hint="SH_BASE_URL should be the API root, not a web page", code=EXIT_SERVICE)]
    checks.append(Check("catalog", True, f"{root} ({title})"))
    if auth is None:
        checks.append(Check("collection", None, f"{collection}: not checked without a token"))
        return checks
    url = f"{root}collections/{collection}"
    try:
        response = http.get(url, headers={**auth, "Accept": "application/json"}, timeout=timeout)
    except Exception as exc:
        checks.append(Check("collection", False, _failed(url, exc), code=EXIT_SERVICE))
        return checks
    if response.status_code == 200:
        checks.append(Check("collection", True, f"{collection} is in the catalog"))
    elif response.status_code in (401, 403) and token:
        checks.append(_foreign_token_check(settings, token, response))
    elif response.status_code in (401, 403):
        checks.append(Check("collection", False, f"the STAC API refused access (HTTP {response.status_code}: "
                            f"{redact(_error_text(response), settings.secrets)})",
                            hint="check STACFETCH_STAC_TOKEN or STACFETCH_STAC_HEADERS"))
    elif response.status_code == 404:
        available = _collection_ids(http, root, auth, timeout)
        checks.append(Check(
            "collection", False, f"{collection} is not in this catalog"
            + (f"; it has: {', '.join(available)}" if available else ""),
            hint="use --collection with one of those ids (Sentinel-2 L2A is sentinel-2-l2a)",
            code=EXIT_USAGE,
        ))
    else:
        checks.append(Check("collection", False,
                            f"{url} answered HTTP {response.status_code}: {redact(_error_text(response))}",
                            code=EXIT_SERVICE))
    return checks


def _foreign_token_check(settings: Settings, token: str, response: Any) -> Check:
    realm = realm_of(token)
    issued = _realm_title(realm)
    api_family = deployment_of(settings.base_url)
    token_provider = REALM_NAMES.get(realm or "")
    if api_family:
        belongs = PROVIDERS[api_family].title
    elif token_provider:
        other = "cdse" if token_provider == "sentinelhub" else "sentinelhub"
        belongs = f"another deployment (most likely {PROVIDERS[other].title.split(' (')[0]})"
    else:
        belongs = "another deployment"
    mismatch = api_family is None or token_provider is None or api_family != token_provider
    detail = (
        f"the Catalog refused the token (HTTP {response.status_code}: {_error_text(response)})"
        + (f": the token was issued by {issued} but the API at {settings.base_url} belongs to {belongs}"
           if mismatch else "")
    )
    return Check("collection", False, detail,
                 hint="SH_BASE_URL and SH_TOKEN_URL must belong to the same deployment; "
                 + deployment_hint(settings))


def _collection_ids(http: Any, root: str, auth: Mapping[str, str], timeout: float) -> list[str]:
    try:
        response = http.get(f"{root}collections", headers=dict(auth), timeout=timeout)
        return sorted(c["id"] for c in response.json().get("collections", []) if "id" in c)
    except Exception:
        return []


# --- the local side ---------------------------------------------------------------------
def _existing_ancestor(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _output_checks(folder: Path) -> list[Check]:
    checks: list[Check] = []
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        return [Check("output folder", False, f"{folder} exists and is not a folder",
                      hint="set --out or STACFETCH_OUTPUT_DIR to a folder", code=EXIT_USAGE)]
    if folder.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".stacfetch-check-"):
                pass
            checks.append(Check("output folder", True, f"{folder.absolute()} is writable"))
        except OSError as exc:
            checks.append(Check("output folder", False, f"{folder.absolute()} is not writable: "
                                f"{exc.strerror or exc}",
                                hint="choose a folder you can write to with --out or STACFETCH_OUTPUT_DIR",
                                code=EXIT_USAGE))
    else:
        parent = _existing_ancestor(folder)
        if os.access(parent, os.W_OK | os.X_OK):
            checks.append(Check("output folder", True,
                                f"{folder.absolute()} does not exist yet; `get` will create it in {parent}"))
        else:
            checks.append(Check("output folder", False,
                                f"{folder.absolute()} does not exist and {parent} is not writable",
                                hint="choose a folder you can write to with --out or STACFETCH_OUTPUT_DIR",
                                code=EXIT_USAGE))
    try:
        usage = shutil.disk_usage(_existing_ancestor(folder))
    except OSError as exc:
        checks.append(Check("disk space", None, f"unknown ({exc})"))
        return checks
    free = usage.free
    detail = f"{free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB"
    if free < MIN_FREE_BYTES:
        checks.append(Check("disk space", False, detail + " (less than 1 GiB)",
                            hint="one 5 km square with all 12 bands is about 6 MB per acquisition; "
                            "a 100 km square about 600 MB: free space or choose another --out",
                            code=EXIT_USAGE))
    else:
        checks.append(Check("disk space", True, detail))
    return checks


def _gdal_check() -> Check:
    try:
        import rasterio  # here: this check reports a rasterio that does not load

        with rasterio.Env() as env:
            drivers = env.drivers()
        if "COG" not in drivers:
            return Check("GeoTIFF writer", False,
                         f"GDAL {rasterio.__gdal_version__} has no COG driver (needs GDAL 3.1 or newer)",
                         hint="use --format gtiff, or upgrade rasterio", code=EXIT_USAGE)
        return Check("GeoTIFF writer", True,
                     f"rasterio {rasterio.__version__}, GDAL {rasterio.__gdal_version__} with the COG driver")
    except Exception as exc:
        return Check("GeoTIFF writer", False, f"rasterio does not load: {exc}",
                     hint="reinstall: python3 -m pip install -e .", code=EXIT_USAGE)


# --- everything ---------------------------------------------------------------------------
def diagnose(
    *,
    env_file: str | os.PathLike[str] | None = None,
    provider: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    collection: str = "sentinel-2-l2a",
    environ: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    timeout: float = 15.0,
) -> list[Check]:
    """Run every check in order and return them; never raises for what it checks."""
    environ = os.environ if environ is None else environ
    checks: list[Check] = []
    path, file_values, has_file = _raw_sources(env_file, environ)
    if has_file:
        checks.append(Check(".env", True, f"{path.absolute()} found ({len(file_values)} variables)"))
    else:
        checks.append(Check(".env", None if env_file is None else False,
                            f"{path.absolute()} not found; settings come from arguments and the environment",
                            hint="" if env_file is None else "check the --env-file path"))
    checks.extend(_old_hub_checks(file_values, path, environ))
    error: StacfetchError | None = None
    if settings is None:
        try:
            settings = load_settings(env_file=env_file, environ=environ, provider=provider,
                                     output_dir=output_dir)
        except StacfetchError as exc:
            error = exc
    checks.append(Check(
        "variables", error is None,
        _variables_detail(settings, file_values, path, environ),
    ))
    if settings is None:
        assert error is not None
        checks.append(Check("configuration", False, error.message, hint=error.hint or "",
                            code=error.exit_code))
        checks.append(_gdal_check())
        checks.extend(_output_checks(Path(output_dir or environ.get("STACFETCH_OUTPUT_DIR")
                                          or file_values.get("STACFETCH_OUTPUT_DIR") or "stacfetch-output")))
        return checks
    checks.append(Check("provider", True, PROVIDERS[settings.provider].title))
    with open_service(settings) as live, _http(live, timeout) as http:
        if settings.is_sandbox:
            checks.append(Check("sandbox", True, f"emulator started at {live.base_url} (synthetic data)"))
        if getattr(live, "source", "process") == "assets":
            token_checks, token = [Check("credentials", None, "no Sentinel Hub account needed: "
                                         "pixels come from the STAC API's COG assets")], None
        else:
            token_checks, token = _token_checks(http, live)
        checks.extend(token_checks)
        checks.extend(_catalog_checks(http, live, token, collection, timeout))
    checks.append(_gdal_check())
    checks.extend(_output_checks(settings.output_dir))
    return checks
