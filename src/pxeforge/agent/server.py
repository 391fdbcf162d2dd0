"""The agent's HTTP API (port 9999): status, and the commands pxeforge sends.

Theory of operation (docs/agent-protocol.md; ironic-python-agent's ``api/app.py``): a
``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1 keep-alive) in front of a
`CommandRunner`. Routes:

* ``GET /v1/status`` — ``{"started_at", "version"}``, no token;
* ``GET /v1/commands/`` — ``{"commands": [<result>…]}``, oldest first;
* ``GET /v1/commands/{id}`` — one result (404 when unknown), ``?wait=true`` waits for its end;
* ``POST /v1/commands/`` with ``{"name": "ext.cmd", "params": {…}}`` — starts the command
  (`CommandRunner.execute`) and answers its result; ``?wait=true`` answers when it ended.

Every path but the status needs ``?agent_token=`` equal to the token the agent received at
lookup (constant-time compare); missing or wrong → 401. An agent that has no token (a second
lookup only sees ``******``) refuses every command: it cannot tell pxeforge from anyone else.
Errors are `AgentError`\\ s answered with `errors.error_body`; anything else is a bug: 500,
logged with its traceback, and the server keeps serving. The paths without ``/v1`` that IPA
also accepts (``/status``, ``/commands/``) are served the same way.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from pxeforge.agent import AGENT_VERSION
from pxeforge.agent.commands import CommandRunner
from pxeforge.agent.errors import (
    AgentError,
    InvalidContentError,
    RequestedObjectNotFoundError,
    Unauthorized,
    error_body,
)

__all__ = ["MAX_BODY", "WAIT_LIMIT", "AgentServer"]

log = logging.getLogger("pxeforge.agent")

MAX_BODY: Final = 1024 * 1024
"""Largest request body accepted (a command's parameters are a few KiB)."""
WAIT_LIMIT: Final = 3600.0
"""Longest a ``wait=true`` request waits before answering the command as it is."""


class _MethodNotAllowed(AgentError):
    code = 405
    message = "Method not allowed"


class _TooLarge(AgentError):
    code = 413
    message = "Request body too large"


class AgentServer:
    """The API on ``host:port`` (port 0: any free port), served by a background thread."""

    def __init__(
        self,
        runner: CommandRunner,
        *,
        token: str | None,
        host: str = "0.0.0.0",
        port: int = 9999,
        wait_limit: float = WAIT_LIMIT,
    ) -> None:
        self.runner = runner
        self.token = token
        self.started_at = time.time()
        self.wait_limit = wait_limit
        handler = type("_BoundHandler", (_Handler,), {"agent": self})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> AgentServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="agent-api", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10)
        self._httpd.server_close()

    # ---- the routes, called by the handler --------------------------------------------------

    def check_token(self, query: dict[str, str]) -> None:
        given = query.get("agent_token")
        if self.token is None or given is None:
            raise Unauthorized(
                "the request has no agent_token"
                if given is None
                else "this agent received no token at lookup"
            )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise Unauthorized("the agent_token does not match")

    def status(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "version": AGENT_VERSION}

    def list_commands(self) -> dict[str, Any]:
        return {"commands": [r.serialize() for r in self.runner.list()]}

    def get_command(self, command_id: str, wait: bool) -> dict[str, Any]:
        result = self.runner.get(command_id)
        if result is None:
            raise RequestedObjectNotFoundError(f"no command with id {command_id!r}")
        if wait:
            result.join(self.wait_limit)
        return result.serialize()

    def run_command(self, body: Any, wait: bool) -> dict[str, Any]:
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("name"), str)
            or not isinstance(body.get("params"), dict)
        ):
            raise InvalidContentError("Missing or invalid name or params")
        result = self.runner.execute(body["name"], body["params"])
        if wait:
            result.join(self.wait_limit)
        return result.serialize()


def _true(value: str | None) -> bool:
    return value is not None and value.lower() == "true"


class _Handler(BaseHTTPRequestHandler):
    agent: AgentServer
    protocol_version = "HTTP/1.1"
    server_version = "pxeforge-agent"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise InvalidContentError("bad Content-Length") from None
        if length < 0:
            raise InvalidContentError("bad Content-Length")
        if length > MAX_BODY:
            self.close_connection = True  # the body is not read: the connection is spent
            raise _TooLarge(f"{length} bytes; at most {MAX_BODY}")
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        try:
            raw = self._body()
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            status, data = self._route(method, url.path, query, raw)
        except AgentError as exc:
            status, data = exc.code, error_body(exc)
        except Exception as exc:
            log.exception("agent API: %s %s", method, self.path)
            status, data = 500, error_body(AgentError(f"internal error: {type(exc).__name__}"))
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        agent = self.agent
        if path.startswith("/v1/"):
            path = path[3:]
        if path == "/status":
            if method != "GET":
                raise _MethodNotAllowed(f"{method} {path}")
            return 200, agent.status()
        if path in ("/commands", "/commands/"):
            if method not in ("GET", "POST"):
                raise _MethodNotAllowed(f"{method} {path}")
            agent.check_token(query)
            if method == "GET":
                return 200, agent.list_commands()
            try:
                body = json.loads(raw) if raw.strip() else None
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidContentError(f"malformed JSON: {exc}") from None
            return 200, agent.run_command(body, _true(query.get("wait")))
        if path.startswith("/commands/") and "/" not in path[len("/commands/") :]:
            if method != "GET":
                raise _MethodNotAllowed(f"{method} {path}")
            agent.check_token(query)
            return 200, agent.get_command(path[len("/commands/") :], _true(query.get("wait")))
        raise RequestedObjectNotFoundError(f"no such path: {path}")
