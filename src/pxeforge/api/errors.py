"""API errors and Ironic's error body.

Ironic answers every error with one JSON object whose ``error_message`` is itself a JSON *string*
(python-ironicclient's ``_extract_error_json`` decodes it twice)::

    {"error_message": "{\\"faultstring\\": \\"Node x could not be found.\\",
                        \\"faultcode\\": \\"Client\\", \\"debuginfo\\": null}"}

``faultcode`` is ``Client`` for 4xx (the caller's fault) and ``Server`` for 5xx (ours). Any
exception with an integer ``code`` (inventory errors, driver errors, `ApiError`) becomes such a
body with that status; anything else is a bug: 500, logged with its traceback, and the client
sees only a generic message.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, ClassVar

from pxeforge.errors import PxeforgeError

__all__ = [
    "ApiError",
    "BadRequest",
    "Forbidden",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "ServiceUnavailable",
    "Unauthorized",
    "error_body",
    "status_of",
]


class ApiError(PxeforgeError):
    """An error the API answers with ``code`` and the message as ``faultstring``."""

    code: ClassVar[int] = HTTPStatus.BAD_REQUEST


class BadRequest(ApiError):
    """Malformed request: bad JSON, unknown or read-only field, wrong type (400)."""


class Unauthorized(ApiError):
    code: ClassVar[int] = HTTPStatus.UNAUTHORIZED


class Forbidden(ApiError):
    code: ClassVar[int] = HTTPStatus.FORBIDDEN


class NotFound(ApiError):
    code: ClassVar[int] = HTTPStatus.NOT_FOUND


class MethodNotAllowed(ApiError):
    code: ClassVar[int] = HTTPStatus.METHOD_NOT_ALLOWED


class NotAcceptable(ApiError):
    """The request needs a newer API version (or asked for an unsupported one) (406)."""

    code: ClassVar[int] = HTTPStatus.NOT_ACCEPTABLE

    def __init__(self, message: str = "", *, minimum: int | None = None) -> None:
        if not message:
            message = "Request not acceptable."
            if minimum is not None:
                message += f" The minimal required API version should be 1.{minimum}"
        super().__init__(message)


class ServiceUnavailable(ApiError):
    """No free conductor worker (Ironic's ``NoFreeConductorWorker``) (503)."""

    code: ClassVar[int] = HTTPStatus.SERVICE_UNAVAILABLE


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception asks for (its ``code``), or None for a bug."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 400 <= code <= 599:
        return code
    return None


def error_body(status: int, message: str, debuginfo: Any = None) -> dict[str, str]:
    """Ironic's error document for ``status`` (``error_message`` is a JSON string)."""
    fault = {
        "faultstring": message,
        "faultcode": "Client" if status < 500 else "Server",
        "debuginfo": debuginfo,
    }
    return {"error_message": json.dumps(fault)}
