"""The agent's errors, in ironic-python-agent's shapes.

Theory of operation: every error the agent reports is an `AgentError` with an HTTP ``code``,
a short generic ``message`` (IPA's wording where IPA has the same error) and ``details`` that
say what exactly went wrong. They travel two ways:

* as a **failed command's** ``command_error`` — `AgentError.serialize` gives IPA's
  ``RESTError.serialize()`` shape ``{"type", "code", "message", "details"}``; Ironic's
  ``agent_client.get_command_error`` shows ``details`` (else ``message``) as the node's
  ``last_error``;
* as the **answer to a request** the API refuses — `error_body` gives the WSME-style body IPA
  answers with, ``{"faultcode": "Client"|"Server", "faultstring": …}`` (what Ironic's agent
  client reads), plus the serialized fields above so a caller also sees the error's ``type``.

Exception tree::

    AgentError (500)
    ├── InvalidContentError (400) ── InvalidCommandParamsError (400)
    ├── InvalidCommandError (404)     unknown extension or command
    ├── RequestedObjectNotFoundError (404)
    ├── Unauthorized (401)
    ├── AgentIsBusy, CleanVersionMismatch (409)
    ├── CommandExecutionError, CleaningError (500)
    ├── DeviceNotFound (404)          no disk matches the root device hints
    └── ImageDownloadError, ImageChecksumError, ImageWriteError, InvalidImageFormat (500)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AgentError",
    "AgentIsBusy",
    "CleanVersionMismatch",
    "CleaningError",
    "CommandExecutionError",
    "DeviceNotFound",
    "ImageChecksumError",
    "ImageDownloadError",
    "ImageWriteError",
    "InvalidCommandError",
    "InvalidCommandParamsError",
    "InvalidContentError",
    "InvalidImageFormat",
    "RequestedObjectNotFoundError",
    "Unauthorized",
    "error_body",
    "serialize_exception",
]


class AgentError(Exception):
    """An error the agent reports: ``code``, generic ``message``, specific ``details``."""

    code: ClassVar[int] = 500
    message: ClassVar[str] = "An error occurred"

    def __init__(self, details: str = "") -> None:
        super().__init__(f"{self.message}: {details}" if details else self.message)
        self.details = details

    def serialize(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "code": self.code,
            "message": self.message,
            "details": self.details,
        }


class InvalidContentError(AgentError):
    code = 400
    message = "Invalid request body"


class InvalidCommandParamsError(InvalidContentError):
    message = "Invalid command parameters"


class InvalidCommandError(AgentError):
    code = 404
    message = "Invalid command"


class RequestedObjectNotFoundError(AgentError):
    code = 404
    message = "Requested object not found"


class Unauthorized(AgentError):
    code = 401
    message = "Invalid or missing agent token"


class AgentIsBusy(AgentError):
    code = 409
    message = "Agent is busy"


class CommandExecutionError(AgentError):
    message = "Command execution failed"


class CleaningError(AgentError):
    message = "Clean step failed"


class CleanVersionMismatch(AgentError):
    code = 409
    message = "Clean step versions changed since cleaning started"


class DeviceNotFound(AgentError):
    code = 404
    message = "Error finding the disk or partition device to deploy the image onto"


class ImageDownloadError(AgentError):
    message = "Error downloading image"


class ImageChecksumError(AgentError):
    message = "Error verifying image checksum"


class ImageWriteError(AgentError):
    message = "Error writing image to device"


class InvalidImageFormat(AgentError):
    message = "The image format is not permitted or does not match the image"


def serialize_exception(exc: BaseException) -> dict[str, Any]:
    """A command's ``command_error``: an `AgentError` as it is, anything else as a 500."""
    if isinstance(exc, AgentError):
        return exc.serialize()
    return {"type": type(exc).__name__, "code": 500, "message": str(exc), "details": str(exc)}


def error_body(exc: AgentError) -> dict[str, Any]:
    """The body of a refused request: IPA's faultcode/faultstring and the serialized error."""
    return {
        "faultcode": "Client" if exc.code < 500 else "Server",
        "faultstring": str(exc),
        **exc.serialize(),
    }
