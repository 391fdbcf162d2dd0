"""The conductor's client of the agent ramdisk's HTTP API (port 9999, docs/agent-protocol.md).

Theory of operation (Ironic's ``drivers/modules/agent_client.py``, reduced): the conductor's
worker threads call the agent at the ``callback_url`` it announced in its heartbeats, with the
node's agent token as the ``agent_token`` query parameter. Calls are **synchronous and
bounded** (`http.client`, one connection per call, every socket operation under
``timeout`` — `Settings.agent_command_timeout`), like the power drivers', so a worker never
hangs on a dead machine.

* `AgentClient.post_command` starts ``"<extension>.<command>"`` (``wait=false``: answered at
  once with the command RUNNING; ``wait=true``: answered when it ended) and returns the
  agent's `CommandResult`;
* `AgentClient.get_command` / `get_commands` read results back (the conductor keeps the id of
  the command it started and asks for that one on every heartbeat).

Errors, all `AgentClientError` (a `DriverError`, so the conductor's generic handling applies):

* `AgentConnectionFailed` — nothing answered, the connection broke, or the answer was not
  HTTP/JSON; names the URL (without the token) and the reason;
* `AgentRequestRefused` — the agent answered 4xx/5xx; carries ``status``, the error ``type``
  (``InvalidCommandError``, ``AgentIsBusy``…) and its message; `AgentBusy` for 409.

The token never appears in an error message or a log line.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final
from urllib.parse import quote, urlencode, urlsplit

from pxeforge.drivers.base import DriverError

__all__ = [
    "FAILED",
    "MAX_ANSWER",
    "RUNNING",
    "SUCCEEDED",
    "AgentBusy",
    "AgentClient",
    "AgentClientError",
    "AgentConnectionFailed",
    "AgentRequestRefused",
    "CommandResult",
]

RUNNING: Final = "RUNNING"
SUCCEEDED: Final = "SUCCEEDED"
FAILED: Final = "FAILED"
_STATUSES: Final = frozenset({RUNNING, SUCCEEDED, FAILED})

MAX_ANSWER: Final = 4 * 1024 * 1024
"""Largest answer read from an agent (command lists are a few KiB)."""


class AgentClientError(DriverError):
    """Talking to the agent failed (base class)."""


class AgentConnectionFailed(AgentClientError):
    """No usable answer from the agent at ``url``."""

    code: ClassVar[int] = 504

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Failed to connect to the agent at {url}: {reason}")
        self.url = url
        self.reason = reason


class AgentRequestRefused(AgentClientError):
    """The agent answered with an error status."""

    code: ClassVar[int] = 502

    def __init__(self, url: str, status: int, kind: str, message: str) -> None:
        super().__init__(f"The agent at {url} refused the request (HTTP {status} {kind}): "
                         f"{message}")  # fmt: skip
        self.url = url
        self.status = status
        self.kind = kind
        self.message = message


class AgentBusy(AgentRequestRefused):
    """409: an asynchronous command is still running."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """One command as the agent reports it (IPA's ``BaseCommandResult.serialize()``)."""

    id: str
    name: str
    status: str
    error: Mapping[str, Any] | None
    result: Mapping[str, Any] | None

    @classmethod
    def from_json(cls, data: Any) -> CommandResult:
        """Parse and check one result; `ValueError` naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a command result must be a JSON object")
        ident, name, status = data.get("id"), data.get("command_name"), data.get("command_status")
        if not isinstance(ident, str) or not ident:
            raise ValueError("command result without an 'id'")
        if not isinstance(name, str):
            raise ValueError(f"command {ident}: no 'command_name'")
        if status not in _STATUSES:
            raise ValueError(f"command {ident}: unknown command_status {status!r}")
        error, result = data.get("command_error"), data.get("command_result")
        if error is not None and not isinstance(error, dict):
            error = {"type": "Error", "message": str(error)}
        if result is not None and not isinstance(result, dict):
            raise ValueError(f"command {ident}: command_result is not an object")
        return cls(ident, name, status, error, result)

    @property
    def error_text(self) -> str:
        """The failure in one line: ``"<type>: <details or message>"`` (Ironic shows details)."""
        error = self.error or {}
        kind = str(error.get("type") or "Error")
        text = str(error.get("details") or error.get("message") or "no reason given")
        return f"{kind}: {text}"


def _error_fields(raw: bytes) -> tuple[str, str]:
    """(type, message) from an agent's error body (IPA's faultstring shape), best effort."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "Error", raw[:200].decode(errors="replace").strip() or "(no message)"
    if not isinstance(body, dict):
        return "Error", str(body)[:200]
    kind = str(body.get("type") or body.get("faultcode") or "Error")
    message = body.get("faultstring") or body.get("details") or body.get("message") or body
    return kind, str(message)


class AgentClient:
    """Calls one agent at ``url`` (its ``callback_url``) with the node's ``token``."""

    def __init__(self, url: str, token: str, *, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AgentConnectionFailed(url, "not an http(s) URL")
        self.url = url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def request(
        self, method: str, path: str, *, query: Mapping[str, str] | None = None, body: Any = None
    ) -> Any:
        """One call; the decoded JSON answer (2xx) or an `AgentClientError`."""
        shown = f"{self.url}{path}"  # what errors name: never the token
        params = dict(query or {})
        params["agent_token"] = self.token
        target = f"{self._prefix}{path}?{urlencode(params)}"
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {self.timeout:g} s"
            elif isinstance(exc, http.client.HTTPException):
                reason = f"not an HTTP answer ({type(exc).__name__}: {str(exc).strip()[:100]!r})"
            else:
                reason = str(exc) or type(exc).__name__
            raise AgentConnectionFailed(shown, reason) from None
        finally:
            conn.close()
        if len(raw) > MAX_ANSWER:
            raise AgentConnectionFailed(shown, f"answer larger than {MAX_ANSWER} bytes")
        if response.status >= 400:
            kind, message = _error_fields(raw)
            cls = AgentBusy if response.status == 409 else AgentRequestRefused
            raise cls(shown, response.status, kind, message)
        try:
            return json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            raise AgentConnectionFailed(shown, "the answer is not JSON") from None

    def _result(self, path: str, data: Any) -> CommandResult:
        try:
            return CommandResult.from_json(data)
        except ValueError as exc:
            raise AgentConnectionFailed(f"{self.url}{path}", f"unreadable answer: {exc}") from None

    def status(self) -> dict[str, Any]:
        """``GET /v1/status`` (``started_at``, ``version``)."""
        data = self.request("GET", "/v1/status")
        return data if isinstance(data, dict) else {}

    def post_command(
        self, name: str, params: Mapping[str, Any] | None = None, *, wait: bool = False
    ) -> CommandResult:
        """Start ``name`` (``"standby.prepare_image"``…); its result (final when ``wait``)."""
        path = "/v1/commands/"
        data = self.request(
            "POST",
            path,
            query={"wait": "true" if wait else "false"},
            body={"name": name, "params": dict(params or {})},
        )
        return self._result(path, data)

    def get_command(self, ident: str) -> CommandResult:
        """One command's result (`AgentRequestRefused` with status 404 when unknown)."""
        path = f"/v1/commands/{quote(ident, safe='')}"
        return self._result(path, self.request("GET", path))

    def get_commands(self) -> list[CommandResult]:
        """Every command the agent ran since it started, oldest first."""
        path = "/v1/commands/"
        data = self.request("GET", path)
        items = data.get("commands") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise AgentConnectionFailed(f"{self.url}{path}", "no 'commands' list in the answer")
        return [self._result(path, item) for item in items]
