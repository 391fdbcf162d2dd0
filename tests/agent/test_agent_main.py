"""``python -m pxeforge.agent`` end to end: lookup, command API, a real image written to a loop
device from a real HTTP server, progress heartbeats every 5 s while it runs, a heartbeat at
once when it ends, then run_image.

pxeforge's side is a small recording stand-in (lookup + heartbeat) rather than the real API:
the point here is *what the agent sends and when* — every heartbeat body with its time —
which the real API does not keep; the real API and this agent meet in
tests/api/test_ramdisk_api.py (inspection) and the lab's deploy test.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pxeforge.agent import AGENT_VERSION

from .conftest import MIB, ImageServer, read, sys_name

NODE = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
TOKEN = "k" * 128
MAC = "52:54:00:12:34:56"


class FakeApi:
    """Answers lookup for MAC with the token; records every heartbeat (time, body)."""

    def __init__(self) -> None:
        self.heartbeats: list[tuple[float, dict[str, Any]]] = []
        self.lookups = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                addresses = urllib.parse.parse_qs(url.query).get("addresses", [""])[0]
                if url.path == "/v1/lookup" and MAC in addresses.split(","):
                    api.lookups += 1
                    token = TOKEN if api.lookups == 1 else "******"
                    self._reply(200, {"node": {"uuid": NODE, "properties": {},
                                               "instance_info": {}, "driver_internal_info": {}},
                                      "config": {"agent_token": token,
                                                 "heartbeat_timeout": 300}})  # fmt: skip
                else:
                    self._reply(404, {"error_message": json.dumps({"faultstring": "Not found"})})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == f"/v1/heartbeat/{NODE}":
                    api.heartbeats.append((time.monotonic(), body))
                    self._reply(202)
                else:
                    self._reply(404, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, what: Callable[[dict[str, Any]], bool], timeout: float) -> float:
        """The time of the first heartbeat matching ``what`` (waits up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, body in list(self.heartbeats):
                if what(body):
                    return at
            time.sleep(0.05)
        raise AssertionError(f"no such heartbeat within {timeout} s: {self.heartbeats}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    try:
        yield api
    finally:
        api.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _status(message: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: str(body.get("agent_status_message", "")).startswith(message)


def test_agent_deploys_an_image_and_reboots(
    fake_api: FakeApi,
    image_server: ImageServer,
    loop_device: Callable[..., str],
    tmp_path: Path,
) -> None:
    data = random.Random(11).randbytes(8 * MIB)
    image_server.add("disk.raw", data)
    dev = loop_device(16 * MIB, fill=b"\x99")
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        f"ipa-api-url=http://127.0.0.1:{fake_api.port} BOOTIF=01-{MAC.replace(':', '-')}\n"
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    power_log = tmp_path / "power.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pxeforge.agent", "--cmdline", str(cmdline), "--mac", MAC,
         "--listen", f"127.0.0.1:{port}", "--callback-url", base, "--disks", sys_name(dev),
         "--min-root-size", str(MIB), "--power-log", str(power_log),
         "--lookup-attempts", "3", "--lookup-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        fake_api.wait(lambda b: True, 60)
        first = fake_api.heartbeats[0][1]
        assert first == {"callback_url": base, "agent_token": TOKEN,
                         "agent_version": AGENT_VERSION}  # fmt: skip
        status, info = _call(base, "GET", "/v1/status")
        assert status == 200 and info["version"] == AGENT_VERSION
        q = f"?agent_token={TOKEN}"
        image_info = {"id": "img", "urls": [image_server.url("disk.raw", "slow")],
                      "disk_format": "raw", "os_hash_algo": "sha256",
                      "os_hash_value": hashlib.sha256(data).hexdigest(),
                      "image_type": "whole-disk", "stream_raw_images": True}  # fmt: skip
        started = time.monotonic()
        status, result = _call(base, "POST", "/v1/commands/" + q, {
            "name": "standby.prepare_image", "params": {"image_info": image_info}})  # fmt: skip
        assert status == 200 and result["command_status"] == "RUNNING", result
        assert _call(base, "POST", "/v1/commands/" + q,
                     {"name": "standby.sync", "params": {}})[0] == 409  # fmt: skip
        # progress heartbeats while it runs (every 5 s, not Ironic's 90-180 s) ...
        at = fake_api.wait(_status("prepare_image: "), 20)
        # (8 MiB with a Content-Length fit the scratch budget: downloaded and checked first)
        running = [b for _, b in fake_api.heartbeats if "MiB downloaded" in
                   b.get("agent_status_message", "")]  # fmt: skip
        assert running, fake_api.heartbeats
        assert " MiB downloaded (" in running[0]["agent_status_message"]
        assert at - started <= 5 + 2
        # ... and one at once when it ends
        ended = fake_api.wait(_status("prepare_image: SUCCEEDED"), 60)
        status, done = _call(base, "GET", f"/v1/commands/{result['id']}{q}")
        assert done["command_status"] == "SUCCEEDED", done
        assert done["command_result"] == {"root_device": dev, "bytes_written": len(data),
                                          "image_size": len(data), "os_hash_algo": "sha256",
                                          "os_hash_value": image_info["os_hash_value"]}  # fmt: skip
        assert read(dev, 0, len(data)) == data and read(dev, len(data)) == b"\x99" * 8 * MIB
        before = [t for t, b in fake_api.heartbeats if t < ended]
        assert ended - before[-1] < 5.5  # not the next scheduled beat: the end's own
        # sync, then run_image: answered first, then the (recorded) reboot
        status, synced = _call(base, "POST", "/v1/commands/?wait=true&" + q[1:],
                               {"name": "standby.sync", "params": {}})  # fmt: skip
        assert synced["command_status"] == "SUCCEEDED" and synced["command_name"] == "sync"
        status, reboot = _call(base, "POST", "/v1/commands/" + q,
                               {"name": "standby.run_image", "params": {}})  # fmt: skip
        assert status == 200 and reboot["command_status"] == "RUNNING"
        fake_api.wait(_status("run_image: SUCCEEDED"), 30)
        assert power_log.read_text() == "reboot\n"
        names = [c["command_name"] for c in _call(base, "GET", "/v1/commands/" + q)[1]["commands"]]
        assert names == ["prepare_image", "sync", "run_image"]
        assert all(b["agent_token"] == TOKEN for _, b in fake_api.heartbeats)
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out


def test_bad_listen_address_and_busy_port(fake_api: FakeApi, tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"ipa-api-url=http://127.0.0.1:{fake_api.port}\n")
    base = [sys.executable, "-m", "pxeforge.agent", "--cmdline", str(cmdline), "--mac", MAC,
            "--lookup-attempts", "1"]  # fmt: skip
    done = subprocess.run([*base, "--listen", "nowhere"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2 and "HOST:PORT" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*base, "--listen", f"127.0.0.1:{port}"], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "cannot serve" in done.stderr
