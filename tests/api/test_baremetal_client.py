"""The real client: python-ironicclient's ``baremetal`` command, unmodified, against a live
``pxeforge serve`` (subprocess, loopback high ports, ``--dhcp off``), on SQLite and PostgreSQL,
with ``noauth`` and with ``http_basic``. Driver ``fake-hardware``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.interop

PXEFORGE = [sys.executable, "-m", "pxeforge"]


def _baremetal() -> str:
    local = Path(sys.executable).parent / "baremetal"
    found = str(local) if local.exists() else shutil.which("baremetal")
    if found is None:
        reason = "python-ironicclient's baremetal not installed (pip install -e .[test])"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``pxeforge serve`` in a subprocess; `bm` runs ``baremetal`` against its API."""

    def __init__(self, tmp: Path, db_url: str | None, auth: str, log: str = "serve.log") -> None:
        self.tmp = tmp
        self.log_path = tmp / log
        self.api_port = _free_port()
        root = tmp / "root"
        root.mkdir(exist_ok=True)
        (tmp / "vmlinuz").write_bytes(b"\x00" * 1024)
        args = [
            *PXEFORGE, "serve",
            "--dhcp", "off",
            "--address", "127.0.0.1",
            "--tftp-port", str(_free_port(socket.SOCK_DGRAM)),
            "--http-port", str(_free_port()),
            "--api-port", str(self.api_port),
            "--api-auth", auth,
            "--root", str(root),
            "--data-dir", str(tmp / "data"),
            "--kernel", str(tmp / "vmlinuz"),
            "--no-automated-clean",  # no agent ramdisk here
        ]  # fmt: skip
        if db_url is not None:
            args += ["--db", db_url]
        self.log = self.log_path.open("w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.auth_args = ["--os-auth-type", "none"]
        self.password: str | None = None
        deadline = time.monotonic() + 60
        while "pxeforge serving" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"pxeforge serve did not start:\n{self.output()}")
            time.sleep(0.1)
        if auth == "http_basic":
            creds = json.loads((tmp / "data" / "api-credentials").read_text())
            self.password = creds["password"]
            self.auth_args = [
                "--os-auth-type", "http_basic",
                "--os-username", creds["user"],
                "--os-password", creds["password"],
            ]  # fmt: skip
        self.env = {
            **os.environ,
            "HOME": str(tmp),  # the client caches the negotiated version under ~/.cache
            "XDG_CACHE_HOME": str(tmp / "cache"),
        }
        for name in list(self.env):
            if name.startswith("OS_"):
                del self.env[name]  # no stray OpenStack credentials from the environment
        self.baremetal = _baremetal()

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def bm(
        self, *args: str, check: bool = True, retries: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``baremetal``; ``retries=False``: no retry of a 409 (it retries 5 times, 2 s)."""
        argv = [
            self.baremetal,
            "--os-endpoint", f"http://127.0.0.1:{self.api_port}",
            *self.auth_args,
            *([] if retries else ["--max-retries", "0"]),
            *args,
        ]  # fmt: skip
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=120)
        print(f"{time.monotonic() - started:6.2f}s baremetal {' '.join(args)}")
        if check and result.returncode != 0:
            raise AssertionError(f"baremetal {' '.join(args)} failed:\n{result.stderr}")
        return result

    def api(self, path: str) -> Any:
        """A direct GET of the API (fast polling; ``baremetal`` takes seconds to start)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            headers={"X-OpenStack-Ironic-API-Version": "latest"},
        )
        if self.password is not None:
            token = base64.b64encode(f"admin:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())

    def wait_for(self, node: str, field: str, value: str | None) -> None:
        deadline = time.monotonic() + 30
        while self.api(f"/v1/nodes/{node}")[field] != value:
            assert time.monotonic() < deadline, f"{node} {field} never became {value!r}"
            time.sleep(0.1)

    def show(self, node: str, *fields: str) -> dict[str, Any]:
        columns = [arg for f in fields for arg in ("-c", f)]
        shown: dict[str, Any] = json.loads(self.bm("node", "show", node, "-f", "json",
                                                   *columns).stdout)  # fmt: skip
        return shown

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Serve]:
    db_url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    _baremetal()
    serve = Serve(tmp_path, db_url, "noauth")
    try:
        yield serve
    finally:
        serve.close()
    assert serve.proc.returncode == 0, serve.output()
    assert "Traceback" not in serve.output()


def test_baremetal_drives_the_lifecycle(served: Serve) -> None:
    bm = served.bm
    created = json.loads(
        bm("node", "create", "--driver", "fake-hardware", "--name", "bm1",
           "--driver-info", "fake_id=bm1", "--resource-class", "baremetal", "-f", "json").stdout
    )  # fmt: skip
    uuid = created["uuid"]
    assert created["provision_state"] == "enroll" and created["resource_class"] == "baremetal"
    listed = json.loads(bm("node", "list", "-f", "json").stdout)
    assert [(n["uuid"], n["name"], n["provision_state"]) for n in listed] == [
        (uuid, "bm1", "enroll")
    ]
    # port create/list (the client sends --node as node_uuid: a UUID)
    bm("port", "create", "52:54:00:12:34:56", "--node", uuid)
    ports = json.loads(bm("port", "list", "--long", "-f", "json").stdout)
    assert [(p["address"], p["node_uuid"]) for p in ports] == [("52:54:00:12:34:56", uuid)]
    assert "52:54:00:12:34:56" in bm("port", "list", "--node", "bm1").stdout
    duplicate = bm("port", "create", "52:54:00:12:34:56", "--node", uuid, check=False,
                   retries=False)  # fmt: skip
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr

    bm("node", "set", "bm1", "--property", "cpus=4", "--extra", "rack=7")
    shown = served.show("bm1", "properties", "extra")
    assert shown == {"properties": {"cpus": 4}, "extra": {"rack": 7}}
    bm("node", "unset", "bm1", "--extra", "rack")
    assert served.api("/v1/nodes/bm1")["extra"] == {}

    bm("node", "manage", "bm1", "--wait", "60")
    node = served.api("/v1/nodes/bm1")
    assert (node["provision_state"], node["power_state"]) == ("manageable", "power off")
    # inspect ends in "inspect wait" until the agent issue; abort it
    bm("node", "inspect", "bm1")
    served.wait_for("bm1", "provision_state", "inspect wait")
    bm("node", "abort", "bm1")
    assert served.api("/v1/nodes/bm1")["provision_state"] == "inspect failed"
    bm("node", "manage", "bm1", "--wait", "60")
    bm("node", "provide", "bm1")  # (--wait polls every 10 s while cleaning: poll directly)
    served.wait_for("bm1", "provision_state", "available")

    # deploy waits for the installer's call-back (the kickstart issue completes it)
    for item in ("deploy_interface=kickstart", "kernel=k", "ramdisk=r"):
        bm("node", "set", "bm1", "--instance-info", item)
    bm("node", "deploy", "bm1")
    served.wait_for("bm1", "provision_state", "wait call-back")
    node = served.api("/v1/nodes/bm1")
    assert (node["power_state"], node["target_provision_state"]) == ("power on", "active")
    refused = bm("node", "delete", "bm1", check=False, retries=False)
    assert refused.returncode != 0 and "Valid provision states" in refused.stderr
    bm("node", "undeploy", "bm1")
    served.wait_for("bm1", "provision_state", "available")

    bm("node", "power", "on", "bm1")
    served.wait_for("bm1", "power_state", "power on")
    served.wait_for("bm1", "reservation", None)
    bm("node", "power", "off", "bm1")
    served.wait_for("bm1", "power_state", "power off")
    served.wait_for("bm1", "reservation", None)

    bm("node", "maintenance", "set", "bm1", "--reason", "swap disk")
    node = served.api("/v1/nodes/bm1")
    assert (node["maintenance"], node["maintenance_reason"]) == (True, "swap disk")
    bm("node", "maintenance", "unset", "bm1")
    assert served.api("/v1/nodes/bm1")["maintenance"] is False

    history = json.loads(bm("node", "history", "list", "bm1", "-f", "json").stdout)
    events = " ".join(item["event"] for item in history)
    assert '"wait call-back" -> "deleting" on "delete"' in events and "power off" in events
    invalid = bm("node", "provide", "bm1", check=False)
    assert invalid.returncode != 0 and 'Allowed in this state: "active", "deploy"' in invalid.stderr
    bm("node", "manage", "bm1")
    served.wait_for("bm1", "provision_state", "manageable")
    bm("node", "delete", "bm1")
    assert json.loads(bm("node", "list", "-f", "json").stdout) == []
    assert json.loads(bm("port", "list", "-f", "json").stdout) == []


def test_baremetal_with_http_basic(tmp_path: Path) -> None:
    _baremetal()
    serve = Serve(tmp_path, None, "http_basic")
    try:
        assert f"password {serve.password}" in serve.output()
        serve.bm("node", "create", "--driver", "manual-management", "--name", "m1")
        serve.bm("node", "manage", "m1", "--wait", "60")
        assert serve.show("m1", "provision_state") == {"provision_state": "manageable"}
        serve.auth_args = ["--os-auth-type", "http_basic", "--os-username", "admin",
                           "--os-password", "wrong"]  # fmt: skip
        denied = serve.bm("node", "list", check=False)
        assert denied.returncode != 0 and "HTTP 401" in denied.stderr
        serve.auth_args = ["--os-auth-type", "none"]
        denied = serve.bm("node", "list", check=False)
        assert denied.returncode != 0 and "HTTP 401" in denied.stderr
    finally:
        serve.close()
    # a restart keeps the credentials and does not print a password again
    assert serve.output().count("shown only this once") == 1
    again = Serve(tmp_path, None, "http_basic", log="again.log")
    try:
        assert "shown only this once" not in again.output()
        assert again.password == serve.password
        assert "m1" in again.bm("node", "list").stdout
    finally:
        again.close()
