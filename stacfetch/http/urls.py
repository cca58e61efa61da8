"""URL policy, one copy each: origins, query-string stripping, where requests may go.

Plain HTTP is refused except to loopback (a local emulator); the Copernicus Open Access Hub
(shut down in October 2023) is refused before any connection. This module imports nothing
from stacfetch but the errors and the :mod:`.redact` leaf, so ``config`` can use it too.
:func:`strip_query` lives in :mod:`.redact` (the errors use it, and this module imports the
errors) and is re-exported here.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ..errors import ConfigError, InsecureTransportError, ShutDownHubError
from .redact import strip_query

__all__ = [
    "OLD_HUB_HINT",
    "OLD_HUB_HOSTS",
    "OLD_HUB_MESSAGE",
    "check_destination",
    "is_loopback_host",
    "old_hub_host",
    "origin",
    "same_origin",
    "strip_query",
]

OLD_HUB_HOSTS = ("apihub.copernicus.eu", "scihub.copernicus.eu")
OLD_HUB_MESSAGE = (
    "{host} belongs to the Copernicus Open Access Hub (SciHub/APIHub), which was shut down "
    "at the end of October 2023 and no longer answers."
)
OLD_HUB_HINT = (
    "its successor is the Copernicus Data Space Ecosystem, which runs the same Sentinel Hub "
    "APIs: set STACFETCH_PROVIDER=cdse, remove SH_BASE_URL/SH_TOKEN_URL, and create an OAuth "
    "client at https://shapps.dataspace.copernicus.eu/dashboard/#/account/settings"
)
_DEFAULT_PORTS = {"https": 443, "http": 80}
_PLAIN_HTTP_HINT = "use https://, or a loopback address (127.0.0.1, localhost) for a local emulator"


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, lower case, with the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def same_origin(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` have the same scheme, host and port."""
    return origin(a) == origin(b)


def is_loopback_host(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def old_hub_host(url: str | None) -> str | None:
    """The Open Access Hub host named in ``url``, if any."""
    host = (urlsplit(url or "").hostname or "").lower()
    for old in OLD_HUB_HOSTS:
        if host == old or host.endswith("." + old):
            return host
    return None


def check_destination(url: str, variable: str | None = None) -> None:
    """Refuse ``url`` on the dead hub or over plain HTTP off loopback, before any connection.

    With ``variable`` (the setting that holds ``url``) the refusal is a configuration error
    that names it; without, the error of a request about to be sent.
    """
    host = old_hub_host(url)
    if host and variable:
        raise ConfigError(f"{variable}={url}: {OLD_HUB_MESSAGE.format(host=host)}", hint=OLD_HUB_HINT)
    if host:
        raise ShutDownHubError(OLD_HUB_MESSAGE.format(host=host), hint=OLD_HUB_HINT, url=url)
    parts = urlsplit(url)
    if parts.scheme != "http" or is_loopback_host(parts.hostname):
        return
    if variable:
        raise InsecureTransportError(
            f"{variable}={url} uses plain HTTP: credentials would travel unencrypted to "
            f"{parts.hostname}",
            hint=_PLAIN_HTTP_HINT,
        )
    raise InsecureTransportError(
        f"refusing to send a request over plain HTTP to {parts.hostname}: credentials and "
        "tokens would travel unencrypted",
        hint=_PLAIN_HTTP_HINT,
    )
