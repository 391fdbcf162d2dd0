"""Issue 3's "Done when": the real ``baremetal`` client drives a node through a kickstart
deploy against a live ``pxeforge serve`` whose boot plane follows the inventory.

enroll → manage (power read through OpenIPMI's ``ipmi_sim`` BMC simulator) → provide →
available → deploy (instance_info: deploy_interface kickstart, installer kernel/initrd) →
wait call-back; then the test plays the booting machine: its pxelinux config over real TFTP
(curl ``tftp://``, and atftp), the installer kernel over TFTP, the per-node kickstart over
HTTP (curl), and the kickstart's own ``%post`` callback line run with ``sh`` → active; the
config is now ``localboot``; undeploy → available. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.interop

PXEFORGE = [sys.executable, "-m", "pxeforge"]
MAC = "52:54:00:6b:73:01"
KERNEL = b"installer-kernel\x00" * 4096
INITRD = b"installer-initrd\x01" * 8192


def _need(tool: str) -> str:
    local = Path(sys.executable).parent / tool
    found = str(local) if local.exists() else shutil.which(tool)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} not installed")
        pytest.skip(f"{tool} not installed")
    return found


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def curl(*args: str) -> bytes:
    return subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "20", *args], check=True, capture_output=True
    ).stdout


class Serve:
    """``pxeforge serve`` without ``--kernel`` (inventory boot) in a subprocess."""

    def __init__(self, tmp: Path, db_url: str | None) -> None:
        self.tmp = tmp
        self.api_port, self.http_port = _free_port(), _free_port()
        self.tftp_port = _free_port(socket.SOCK_DGRAM)
        root = tmp / "root"
        (root / "centos").mkdir(parents=True)
        (root / "centos" / "vmlinuz").write_bytes(KERNEL)
        (root / "centos" / "initrd.img").write_bytes(INITRD)
        args = [
            *PXEFORGE, "serve",
            "--dhcp", "off",
            "--address", "127.0.0.1",
            "--tftp-port", str(self.tftp_port),
            "--http-port", str(self.http_port),
            "--api-port", str(self.api_port),
            "--api-auth", "noauth",
            "--root", str(root),
            "--data-dir", str(tmp / "data"),
            "--no-automated-clean",  # kickstart deploys: no agent ramdisk to clean with
        ]  # fmt: skip
        if db_url is not None:
            args += ["--db", db_url]
        self.log_path = tmp / "serve.log"
        self.log = self.log_path.open("w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while "pxeforge serving" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"pxeforge serve did not start:\n{self.output()}")
            time.sleep(0.1)
        assert "boot answers from the inventory" in self.output()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        self.env.update(HOME=str(tmp), XDG_CACHE_HOME=str(tmp / "cache"))
        self.baremetal = _need("baremetal")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def bm(self, *args: str) -> str:
        argv = [self.baremetal, "--os-endpoint", f"http://127.0.0.1:{self.api_port}",
                "--os-auth-type", "none", *args]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=180)
        assert done.returncode == 0, f"baremetal {' '.join(args)} failed:\n{done.stderr}"
        return done.stdout

    def node(self, ident: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/v1/nodes/{ident}",
            headers={"X-OpenStack-Ironic-API-Version": "latest"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            data: dict[str, Any] = json.loads(reply.read())
            return data

    def wait_for(self, ident: str, state: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (node := self.node(ident))["provision_state"] != state:
            assert time.monotonic() < deadline, f"never {state!r}: {node['provision_state']!r}"
            time.sleep(0.1)
        return node

    def tftp(self, name: str) -> bytes:
        return curl("--tftp-blksize", "1408", f"tftp://127.0.0.1:{self.tftp_port}/{name}")

    def http(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}{path}", timeout=30
            ) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

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
    _need("baremetal")
    serve = Serve(tmp_path, db_url)
    try:
        yield serve
    finally:
        serve.close()
    assert serve.proc.returncode == 0, serve.output()
    assert "Traceback" not in serve.output(), serve.output()


def test_kickstart_deploy_with_baremetal(served: Serve, ipmi_sim: Any) -> None:
    bm = served.bm
    info = ipmi_sim.info()
    args = [arg for k, v in info.items() for arg in ("--driver-info", f"{k}={v}")]
    uuid = json.loads(
        bm("node", "create", "--driver", "ipmi", "--name", "ks1", *args, "-f", "json")
    )["uuid"]
    bm("port", "create", MAC, "--node", uuid)
    config_name = "pxelinux.cfg/01-" + MAC.replace(":", "-")

    # enroll: the boot plane ignores the machine
    assert served.http(f"/{config_name}")[0] == 404

    # manage: verifying reads the power state through the simulated BMC
    ipmi_sim.set_state("power", "0")
    bm("node", "manage", "ks1", "--wait", "60")
    node = served.node(uuid)
    assert (node["provision_state"], node["power_state"]) == ("manageable", "power off")
    assert any(call.startswith("get") and "power" in call for call in ipmi_sim.calls())
    bm("node", "provide", "ks1", "--wait", "60")
    assert served.node(uuid)["provision_state"] == "available"

    # deploy with kickstart
    for item in ("deploy_interface=kickstart", "kernel=centos/vmlinuz",
                 "ramdisk=centos/initrd.img", "root_device=vda"):  # fmt: skip
        bm("node", "set", "ks1", "--instance-info", item)
    bm("node", "deploy", "ks1")
    node = served.wait_for(uuid, "wait call-back")
    assert node["power_state"] == "power on" and ipmi_sim.state("power") == "1"
    assert ipmi_sim.state("boot") == "pxe"

    # the machine boots: its pxelinux config over TFTP (curl, then atftp)
    config = served.tftp(config_name).decode()
    ks_url = f"http://127.0.0.1:{served.http_port}/ks/{uuid}"
    assert "kernel /centos/vmlinuz" in config, config
    assert f"append initrd=/centos/initrd.img inst.ks={ks_url} BOOTIF=01-" in config, config
    if shutil.which("atftp"):
        out = served.tmp / "atftp.cfg"
        subprocess.run(
            ["atftp", "--get", "-r", config_name, "-l", str(out), "127.0.0.1",
             str(served.tftp_port)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        assert out.read_text() == config
    # the kernel it names, byte for byte
    assert served.tftp("centos/vmlinuz") == KERNEL
    # the installer fetches its kickstart over HTTP
    kickstart = curl(ks_url).decode()
    assert f"({uuid})" in kickstart and "node ks1" in kickstart
    assert "ignoredisk --only-use=vda" in kickstart
    assert "s3cret" not in kickstart  # driver_info never reaches a template
    post = kickstart.split("%post --nochroot\n", 1)[1].split("\n%end", 1)[0]
    assert post.startswith(f"curl -fsS -X POST '{ks_url}/done?token=")
    token = post.split("token=", 1)[1].split("'", 1)[0]
    assert len(token) >= 32
    # the API never shows it (it would let anyone finish the deploy)
    shown = bm("node", "show", "ks1", "-f", "json")
    assert token not in shown and '"kickstart_token": "******"' in shown
    # a guessed token is refused and changes nothing
    status, _ = served.http(f"/ks/{uuid}/user-data")
    assert status == 404
    bad = subprocess.run(["curl", "-fsS", "-X", "POST", f"{ks_url}/done?token=guess"],
                         capture_output=True)  # fmt: skip
    assert bad.returncode != 0 and served.node(uuid)["provision_state"] == "wait call-back"

    # %post runs: the node becomes active, the config says localboot
    subprocess.run(["sh", "-c", post], check=True, capture_output=True, timeout=60)
    node = served.node(uuid)
    assert node["provision_state"] == "active" and node["last_error"] is None
    assert ipmi_sim.state("boot") == "default"  # boot device disk: the BMC's default order
    config = served.tftp(config_name).decode()
    assert "localboot 0" in config and "vmlinuz" not in config
    assert served.http(f"/ks/{uuid}")[0] == 404  # no node data once deployed
    subprocess.run(["sh", "-c", post], capture_output=True)  # a replay changes nothing
    assert served.node(uuid)["provision_state"] == "active"

    # undeploy → available (power off through the BMC)
    bm("node", "undeploy", "ks1", "--wait", "60")
    node = served.node(uuid)
    assert node["provision_state"] == "available" and ipmi_sim.state("power") == "0"
    history = bm("node", "history", "list", "ks1", "-f", "json")
    assert "installation complete" in history
