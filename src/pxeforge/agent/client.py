"""The pxeforge API as the agent uses it: lookup, heartbeat, continue_inspection.

Theory of operation: one small JSON-over-HTTP client on ``urllib.request`` (standard library
only; the ramdisk has no third-party packages). Each call is one request; transport failures
(refused, reset, timeouts) and 5xx/409/503 answers are retried with exponential backoff
(``backoff`` × 2ⁿ, capped at ``max_backoff``) up to ``attempts`` times — the API may be
restarting, the node locked by the conductor for a moment. Other 4xx answers are final and
raised as `ApiError` with the status and Ironic's ``faultstring``.

Requests carry ``X-OpenStack-Ironic-API-Version`` (the lookup and continue_inspection shapes
used here are those of API 1.84+).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["API_VERSION", "ApiClient", "ApiError"]

API_VERSION: Final = "1.87"
_RETRY_STATUSES: Final = frozenset({409, 500, 502, 503, 504})


class ApiError(Exception):
    """The API answered with an error status (or could not be reached: ``status`` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


def _fault(raw: bytes) -> str:
    """Ironic's error body → its faultstring (the body itself when it is something else)."""
    text = raw.decode(errors="replace")
    try:
        inner = json.loads(json.loads(text)["error_message"])
        return str(inner["faultstring"])
    except (ValueError, KeyError, TypeError):
        return text.strip()[:500]


class ApiClient:
    """JSON calls to the pxeforge API at ``base_url`` (``http://host:6385``)."""

    def __init__(
        self,
        base_url: str,
        *,
        insecure: bool = False,
        timeout: float = 30.0,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self._context: ssl.SSLContext | None = None
        if insecure:
            self._context = ssl.create_default_context()
            self._context.check_hostname = False
            self._context.verify_mode = ssl.CERT_NONE

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``(status, decoded JSON or None)``; retries as described in the module docstring."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "X-OpenStack-Ironic-API-Version": API_VERSION}
        if data is not None:
            headers["Content-Type"] = "application/json"
        last: ApiError | None = None
        for attempt in range(max(1, self.attempts)):
            if attempt:
                self.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
            req = urllib.request.Request(
                self.base_url + path, data=data, headers=headers, method=method
            )
            try:
                with urllib.request.urlopen(
                    req, timeout=self.timeout, context=self._context
                ) as resp:
                    raw = resp.read()
                    return resp.status, json.loads(raw) if raw.strip() else None
            except urllib.error.HTTPError as exc:
                with exc:
                    raw = exc.read()
                last = ApiError(exc.code, _fault(raw))
                if exc.code not in _RETRY_STATUSES:
                    raise last from None
            except (OSError, ValueError) as exc:  # URLError, resets, timeouts, bad JSON
                reason = getattr(exc, "reason", exc)
                last = ApiError(0, f"{method} {self.base_url}{path}: {reason}")
        assert last is not None
        raise last

    def lookup(self, addresses: Iterable[str], node_uuid: str | None = None) -> dict[str, Any]:
        """``GET /v1/lookup``: ``{"node": {...}, "config": {...}}`` (404: not found/allowed)."""
        query = {"addresses": ",".join(addresses)}
        if node_uuid:
            query["node_uuid"] = node_uuid
        _, body = self.request("GET", "/v1/lookup?" + urllib.parse.urlencode(query))
        if not isinstance(body, dict) or "node" not in body:
            raise ApiError(200, f"lookup answered something else than a node: {body!r}")
        return body

    def heartbeat(
        self,
        node: str,
        *,
        callback_url: str,
        agent_token: str | None,
        agent_version: str | None = None,
        agent_status_message: str | None = None,
    ) -> int:
        """``POST /v1/heartbeat/{node}``: the status (202)."""
        body: dict[str, Any] = {"callback_url": callback_url}
        if agent_token is not None:
            body["agent_token"] = agent_token
        if agent_version is not None:
            body["agent_version"] = agent_version
        if agent_status_message is not None:
            body["agent_status_message"] = agent_status_message
        status, _ = self.request("POST", f"/v1/heartbeat/{urllib.parse.quote(node)}", body)
        return status

    def continue_inspection(
        self, inventory: dict[str, Any], node_uuid: str | None = None, **plugin_data: Any
    ) -> dict[str, Any]:
        """``POST /v1/continue_inspection``: the lookup-style answer."""
        path = "/v1/continue_inspection"
        if node_uuid:
            path += "?" + urllib.parse.urlencode({"node_uuid": node_uuid})
        _, body = self.request("POST", path, {"inventory": inventory, **plugin_data})
        return body if isinstance(body, dict) else {}
