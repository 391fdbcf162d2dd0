"""A test peer for the conductor's side of the agent protocol (docs/agent-protocol.md).

It plays a booted agent ramdisk over real HTTP on loopback: looks its node up and heartbeats
to the live API (`boot`), and serves the agent's ``/v1/commands`` API with the token it got
(``standby.prepare_image`` really downloads the image over HTTP, hashes it and writes it to a
regular file standing for the disk; ``clean.execute_clean_step`` really zeroes that file;
``standby.sync``/``run_image``/``power_off`` are recorded). Like the real agent it heartbeats
once more as soon as an asynchronous command ends, and every ``progress_interval`` while one
runs, with ``agent_status_message`` set.

It exists because the real agent's command server had not landed when the conductor side was
written; the tests run against `pxeforge.agent` instead once it has.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
import uuid as uuidlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024


class CommandError(Exception):
    def __init__(self, kind: str, code: int, message: str, details: str = "") -> None:
        super().__init__(details or message)
        self.kind, self.code, self.message, self.details = kind, code, message, details

    def serialize(self) -> dict[str, Any]:
        return {"type": self.kind, "code": self.code, "message": self.message,
                "details": self.details}  # fmt: skip


@dataclass
class Command:
    name: str
    id: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    status: str = "RUNNING"
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def serialize(self) -> dict[str, Any]:
        return {"id": self.id, "command_name": self.name, "command_status": self.status,
                "command_error": self.error, "command_result": self.result}  # fmt: skip


class AgentPeer:
    """One fake-but-real agent; ``disk`` is the file written, ``disk_size`` its capacity."""

    def __init__(self, api_port: int, mac: str, disk: Path, disk_size: int,
                 *, progress_interval: float = 0.2) -> None:  # fmt: skip
        self.api_port = api_port
        self.mac = mac
        self.disk = disk
        self.disk_size = disk_size
        self.progress_interval = progress_interval
        self.token: str | None = None
        self.node: str | None = None
        self.commands: list[Command] = []
        self.events: list[str] = []  # sync, run_image, power_off
        self.heartbeats: list[int] = []  # status of each heartbeat answer
        self.slow_write = 0.0  # seconds to sleep per chunk (progress tests)
        self.dead = False  # closed: the "machine" is gone, its threads stop
        self._lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                peer._handle(self, "GET")

            def do_POST(self) -> None:
                peer._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.dead = True
        self.server.shutdown()
        self.server.server_close()

    # ---- agent → pxeforge -----------------------------------------------------------------

    def _api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            reply = conn.getresponse()
            raw = reply.read()
            return reply.status, json.loads(raw) if raw.strip() else None
        finally:
            conn.close()

    def boot(self) -> str:
        """Look the node up (keeping the token) and heartbeat once; the node's UUID."""
        status, body = self._api("GET", f"/v1/lookup?addresses={self.mac}")
        assert status == 200, (status, body)
        self.node = body["node"]["uuid"]
        token = body["config"]["agent_token"]
        assert token != "******", "the token was handed out before"
        self.token = token
        self.heartbeat()
        assert self.node is not None
        return self.node

    def heartbeat(self, message: str | None = None, *, token: str | None = None) -> int:
        body: dict[str, Any] = {"callback_url": self.url, "agent_version": "peer-1",
                                "agent_token": token or self.token}  # fmt: skip
        if message is not None:
            body["agent_status_message"] = message
        for _ in range(50):  # 409 while the conductor holds the node: retry, as the agent does
            status, _ = self._api("POST", f"/v1/heartbeat/{self.node}", body)
            if status != 409:
                break
            time.sleep(0.1)
        self.heartbeats.append(status)
        return status

    # ---- pxeforge → agent -----------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(req.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        try:
            if parts.path == "/v1/status":
                answer: Any = {"started_at": 0.0, "version": "peer-1"}
            else:
                if self.token is None or query.get("agent_token") != self.token:
                    raise CommandError("Unauthorized", 401, "Invalid or missing agent token")
                answer = self._route(method, parts.path, query, raw)
            self._send(req, 200, answer)
        except CommandError as exc:
            body = {"faultcode": "Client" if exc.code < 500 else "Server",
                    "faultstring": str(exc), **exc.serialize()}  # fmt: skip
            self._send(req, exc.code, body)

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Any:
        if method == "GET" and path.rstrip("/") == "/v1/commands":
            return {"commands": [c.serialize() for c in self.commands]}
        if method == "GET" and path.startswith("/v1/commands/"):
            ident = path.rsplit("/", 1)[-1]
            for command in self.commands:
                if command.id == ident:
                    return command.serialize()
            raise CommandError("RequestedObjectNotFoundError", 404, "Not found", ident)
        if method == "POST" and path.rstrip("/") == "/v1/commands":
            body = json.loads(raw)
            return self._execute(body["name"], body.get("params") or {},
                                 query.get("wait") == "true")  # fmt: skip
        raise CommandError("NotFound", 404, "Not found", path)

    def _execute(self, name: str, params: dict[str, Any], wait: bool) -> dict[str, Any]:
        handlers = {
            "standby.prepare_image": (True, self._prepare_image),
            "standby.sync": (False, lambda p, c: self._record("sync")),
            "standby.run_image": (True, lambda p, c: self._record("run_image")),
            "standby.power_off": (True, lambda p, c: self._record("power_off")),
            "clean.get_clean_steps": (False, self._clean_steps),
            "clean.execute_clean_step": (True, self._clean_step),
        }
        if name not in handlers:
            raise CommandError("InvalidCommandError", 404, "Invalid command", name)
        asynchronous, fn = handlers[name]
        with self._lock:
            if any(c.status == "RUNNING" for c in self.commands):
                raise CommandError("AgentIsBusy", 409, "Agent is busy")
            command = Command(name.split(".", 1)[1])
            self.commands.append(command)

        def run() -> None:
            try:
                command.result = fn(params, command)
                command.status = "SUCCEEDED"
            except CommandError as exc:
                command.error, command.status = exc.serialize(), "FAILED"
            except Exception as exc:  # as the real agent: any error is the command's
                command.error = {"type": type(exc).__name__, "code": 500, "message": str(exc),
                                 "details": str(exc)}  # fmt: skip
                command.status = "FAILED"
            command.done.set()
            if asynchronous and not self.dead:
                try:
                    self.heartbeat()
                except OSError:
                    pass  # pxeforge went away first (end of test)

        if asynchronous:
            threading.Thread(target=run, daemon=True).start()
            if wait:
                command.done.wait(60)
        else:
            run()
        return command.serialize()

    def _record(self, event: str) -> dict[str, Any]:
        self.events.append(event)
        return {}

    def _progress(self, command: Command, text: str, last: list[float]) -> None:
        if time.monotonic() - last[0] >= self.progress_interval and not self.dead:
            last[0] = time.monotonic()
            self.heartbeat(f"{command.name}: {text}")

    def _prepare_image(self, params: dict[str, Any], command: Command) -> dict[str, Any]:
        info = params["image_info"]
        if info.get("disk_format") not in ("raw", "qcow2"):
            raise CommandError("InvalidImageFormat", 500, "format not permitted",
                               str(info.get("disk_format")))  # fmt: skip
        algo, expected = info.get("os_hash_algo"), info.get("os_hash_value")
        if algo not in ("sha256", "sha512") or not expected:
            raise CommandError("ImageChecksumError", 500, "no usable checksum")
        try:
            reply = urllib.request.urlopen(info["urls"][0], timeout=10)
        except (urllib.error.URLError, OSError) as exc:
            raise CommandError("ImageDownloadError", 500, "Error downloading image",
                               f"{info['urls'][0]}: {exc}") from None  # fmt: skip
        with reply:
            size = int(reply.headers.get("Content-Length") or 0)
            if size > self.disk_size:
                raise CommandError("ImageWriteError", 500, "Error writing image to device",
                                   f"image of {size} bytes does not fit the disk "
                                   f"({self.disk_size} bytes)")  # fmt: skip
            digest = hashlib.new(algo)
            written = 0
            last = [0.0]
            with self.disk.open("r+b") as disk:
                while chunk := reply.read(CHUNK):
                    if self.dead:
                        raise CommandError("Killed", 500, "the machine died")
                    disk.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    time.sleep(self.slow_write)
                    self._progress(command, f"{written} bytes written", last)
        actual = digest.hexdigest()
        if actual != expected:
            with self.disk.open("r+b") as disk:
                disk.write(b"\0" * written)
            raise CommandError("ImageChecksumError", 500, "Error verifying image checksum",
                               f"image {info['id']}: expected {algo} {expected}, got "
                               f"{actual}")  # fmt: skip
        return {"root_device": str(self.disk), "bytes_written": written, "image_size": written,
                "os_hash_algo": algo, "os_hash_value": actual}  # fmt: skip

    def _clean_steps(self, params: dict[str, Any], command: Command) -> dict[str, Any]:
        steps = [
            {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
             "reboot_requested": False, "abortable": True},
            {"step": "erase_devices", "priority": 0, "interface": "deploy",
             "reboot_requested": False, "abortable": True},
        ]  # fmt: skip
        return {"clean_steps": {"GenericHardwareManager": steps},
                "hardware_manager_version": {"generic_hardware_manager": "1.2"}}  # fmt: skip

    def _clean_step(self, params: dict[str, Any], command: Command) -> dict[str, Any]:
        step = params["step"]
        if step["step"] == "erase_devices_metadata":
            with self.disk.open("r+b") as disk:
                disk.write(b"\0" * 1024 * 1024)
                disk.seek(max(0, self.disk_size - 1024 * 1024))
                disk.write(b"\0" * 1024 * 1024)
        elif step["step"] == "erase_devices":
            with self.disk.open("r+b") as disk:
                disk.write(b"\0" * self.disk_size)
        else:
            raise CommandError("CleaningError", 500, "Clean step failed",
                               f"unknown step {step['step']}")  # fmt: skip
        return {"clean_result": {}, "clean_step": step}
