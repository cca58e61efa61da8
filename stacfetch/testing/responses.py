"""Error bodies in the service's own shapes, raised anywhere inside the emulator.

* Process API and token-protected endpoints: ``{"error": {status, reason, message, code}}``
  (the OpenAPI ``RestErrorWrapper``/``Boom``).
* Catalog: ``CatalogException`` ``{"code": <status>, "description": ...}`` (a real 404 answers
  ``{"code": 404, "description": "Collection not found."}``).
* Token endpoint: Keycloak's ``{"error": ..., "error_description": ...}``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

UNAUTHORIZED_MESSAGE = (
    "You are not authorized! Please provide a valid access token within the header "
    "[Authorization: Bearer <accessToken>] of your request."
)
RATE_LIMIT_MESSAGE = "You have exceeded your rate limit"


class ApiError(Exception):
    """An HTTP error answer: status, JSON body and extra headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def sh_error(status: int, message: str, code: str, **extra: Any) -> ApiError:
    """``{"error": {status, reason, message, code}}``."""
    body = {"error": {"status": status, "reason": reason(status), "message": message, "code": code}}
    body["error"].update(extra)
    return ApiError(status, body)


def bad_payload(message: str) -> ApiError:
    return sh_error(400, message, "COMMON_BAD_PAYLOAD")


def renderer_error(message: str) -> ApiError:
    return sh_error(400, message, "RENDERER_EXCEPTION")


def unauthorized() -> ApiError:
    return sh_error(401, UNAUTHORIZED_MESSAGE, "COMMON_UNAUTHORIZED")


def rate_limited(retry_after_ms: int) -> ApiError:
    err = sh_error(429, RATE_LIMIT_MESSAGE, "RATE_LIMIT_EXCEEDED")
    err.headers["Retry-After"] = str(int(retry_after_ms))
    return err


def server_error(status: int) -> ApiError:
    messages = {
        500: ("Internal server error, please try again later", "COMMON_EXCEPTION"),
        502: ("Bad gateway: upstream renderer did not answer", "COMMON_EXCEPTION"),
        503: ("Service temporarily unavailable, please try again later", "COMMON_EXCEPTION"),
        504: ("Gateway timeout", "COMMON_EXCEPTION"),
    }
    message, code = messages.get(status, ("Server error", "COMMON_EXCEPTION"))
    return sh_error(status, message, code)


def catalog_error(status: int, description: str) -> ApiError:
    """Catalog ``CatalogException``: ``{"code": <int status>, "description": ...}``."""
    return ApiError(status, {"code": status, "description": description})


def fault_error(status: int, retry_after_ms: int, code: str | None = None) -> ApiError:
    """The body a forced ``status`` gets: 429/5xx/401 in their real shapes, others generic.

    ``code`` RATE_LIMIT_TOKEN_COUNT_EXCEEDS_CAPACITY: a 429 no wait can cure (no Retry-After).
    """
    if status == 429 and code == "RATE_LIMIT_TOKEN_COUNT_EXCEEDS_CAPACITY":
        return sh_error(429, "The request costs more processing units than your rate limit "
                        "allows in a minute; request a smaller area", code)
    if status == 429:
        return rate_limited(retry_after_ms)
    if status >= 500:
        return server_error(status)
    if status == 401:
        return unauthorized()
    if status == 403:
        return sh_error(403, "Insufficient permissions", "COMMON_INSUFFICIENT_PERMISSIONS")
    if status == 404:
        return sh_error(404, "Not found", "COMMON_NOT_FOUND")
    return sh_error(status, reason(status), "COMMON_BAD_PAYLOAD" if status == 400 else "COMMON_EXCEPTION")
