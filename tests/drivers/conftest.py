"""Fixtures of the driver tests: real BMC simulators on 127.0.0.1, started and stopped by PID.

`ipmi_sim` — OpenIPMI's BMC simulator (Debian package ``openipmi``) on a free UDP port, with
user ``admin`` / ``s3cret`` (ADMINISTRATOR) and ``watcher`` / ``peek`` (USER only). Its chassis
is `CHASSIS_SCRIPT`: ipmi_sim runs it for every chassis command (``<script> get power``,
``<script> set boot "pxe"`` …, lan.conf ``chassis_control``), and it keeps the state in files
of the simulator's directory, so tests can read what the BMC did (`IpmiSim.state`).

`sushy` — sushy-tools' Redfish emulator (``sushy-emulator`` from PyPI, the test extra) with its
fake systems driver and HTTP basic auth (a bcrypt htpasswd file), see `Sushy`.

Missing binaries skip these tests locally and fail them when $CI is set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def need(what: str, found: bool, install: str) -> None:
    if not found:
        reason = f"{what} not found ({install})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Terminate our child by PID and reap it (SIGKILL after ``grace``)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout=grace)


# ---- ipmi_sim -------------------------------------------------------------------------------

CHASSIS_SCRIPT = r"""#!/bin/sh
# ipmi_sim chassis_control program: "<this> get name..." prints name:value lines,
# "<this> set name value..." changes them. State lives in files beside this script.
dir=$(dirname "$0")
op=$1; shift
echo "$op $*" >> "$dir/calls.log"
case $op in
get)
    for p in "$@"; do
        case $p in boot) d=default ;; *) d=0 ;; esac
        v=$(cat "$dir/$p" 2>/dev/null || echo "$d")
        echo "$p:$v"
    done ;;
set)
    [ -e "$dir/stuck" ] && exit 0   # a chassis that ignores orders
    while [ $# -ge 2 ]; do
        case $1 in
            reset) echo "$(( $(cat "$dir/resets" 2>/dev/null || echo 0) + 1 ))" > "$dir/resets" ;;
            shutdown) echo 0 > "$dir/power" ;;   # an OS that shuts down at once
            *) echo "$2" > "$dir/$1" ;;
        esac
        shift 2
    done ;;
esac
"""

LAN_CONF = """\
name "pxeforge-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{script}"
  user 2 true "admin" "s3cret" admin 10 none md2 md5 straight
  user 3 true "watcher" "peek" user 10 none md2 md5 straight
"""

EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
"""


@dataclass
class IpmiSim:
    dir: Path
    port: int

    def info(self, **changes: Any) -> dict[str, Any]:
        info: dict[str, Any] = {
            "ipmi_address": "127.0.0.1",
            "ipmi_port": self.port,
            "ipmi_username": "admin",
            "ipmi_password": "s3cret",
            # ipmi_sim offers cipher suite 3 and does not answer "Get Channel Cipher Suites":
            # without this, ipmitool waits 1 s for that answer on every call.
            "ipmi_cipher_suite": 3,
        }
        info.update(changes)
        return info

    def state(self, name: str) -> str | None:
        try:
            return (self.dir / name).read_text().strip()
        except FileNotFoundError:
            return None

    def set_state(self, name: str, value: str) -> None:
        (self.dir / name).write_text(value + "\n")

    def calls(self) -> list[str]:
        try:
            return (self.dir / "calls.log").read_text().splitlines()
        except FileNotFoundError:
            return []


def _wait_for_ipmi(sim: IpmiSim, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    env = dict(os.environ, IPMI_PASSWORD="s3cret")
    argv = ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(sim.port), "-U", "admin",
            "-E", "-C", "3", "-R", "1", "-N", "1", "mc", "info"]  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = (sim.dir / "sim.log").read_text(errors="replace")
            pytest.fail(f"ipmi_sim exited with {proc.returncode}: {out[-2000:]}")
        done = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=10)  # fmt: skip
        if done.returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail("ipmi_sim did not answer within 10 s")


@pytest.fixture
def ipmi_sim() -> Iterator[IpmiSim]:
    need("ipmi_sim", shutil.which("ipmi_sim") is not None, "apt-get install openipmi")
    need("ipmitool", shutil.which("ipmitool") is not None, "apt-get install ipmitool")
    root = Path(tempfile.mkdtemp(prefix="pxeforge-ipmisim-"))
    try:
        script = root / "chassis.sh"
        script.write_text(CHASSIS_SCRIPT)
        script.chmod(0o755)
        (root / "state").mkdir()
        (root / "sim.emu").write_text(EMU)
        port = free_port(socket.SOCK_DGRAM)
        (root / "lan.conf").write_text(LAN_CONF.format(port=port, script=script))
        sim = IpmiSim(root, port)
        with open(root / "sim.log", "wb") as out:
            proc = subprocess.Popen(
                ["ipmi_sim", "-c", str(root / "lan.conf"), "-f", str(root / "sim.emu"),
                 "-s", str(root / "state"), "-n"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_for_ipmi(sim, proc)
            yield sim
        finally:
            stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- sushy-tools ----------------------------------------------------------------------------

SUSHY_USER, SUSHY_PASSWORD = "admin", "s3cret"


@dataclass
class Sushy:
    dir: Path
    port: int
    systems: list[dict[str, Any]]
    tls: bool = False

    @property
    def address(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def certificate(self) -> Path:
        """The emulator's self-signed certificate (with ``tls``), usable as a CA bundle."""
        return self.dir / "cert.pem"

    def info(self, **changes: Any) -> dict[str, Any]:
        info: dict[str, Any] = {
            "redfish_address": self.address,
            "redfish_username": SUSHY_USER,
            "redfish_password": SUSHY_PASSWORD,
        }
        info.update(changes)
        return info

    def log(self) -> str:
        return (self.dir / "emulator.log").read_text(errors="replace")


def fake_system(n: int, power: str = "Off") -> dict[str, Any]:
    return {
        "uuid": f"27946b59-9e44-4fa7-8e91-f3527a1ef{n:03d}",
        "name": f"node-{n}",
        "power_state": power,
        "external_notifier": False,
        "nics": [{"mac": f"52:54:00:00:00:{n:02x}", "ip": f"192.0.2.{n + 10}"}],
    }


@contextmanager
def sushy_emulator(systems: list[dict[str, Any]], tls: bool = False) -> Iterator[Sushy]:
    """sushy-emulator with its fake driver on 127.0.0.1, basic auth, state in a temp dir.

    ``tls``: serve HTTPS with a fresh self-signed certificate for 127.0.0.1 (openssl).
    """
    need(
        "sushy-tools",
        importlib.util.find_spec("sushy_tools") is not None,
        "pip install -e '.[test]'",
    )
    import bcrypt  # a dependency of sushy-tools

    root = Path(tempfile.mkdtemp(prefix="pxeforge-sushy-"))
    try:
        digest = bcrypt.hashpw(SUSHY_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        (root / "htpasswd").write_text(f"{SUSHY_USER}:{digest}\n")
        port = free_port()
        config: dict[str, Any] = {
            "SUSHY_EMULATOR_LISTEN_IP": "127.0.0.1",
            "SUSHY_EMULATOR_LISTEN_PORT": port,
            "SUSHY_EMULATOR_FAKE_DRIVER": True,
            "SUSHY_EMULATOR_FAKE_SYSTEMS": systems,
            "SUSHY_EMULATOR_AUTH_FILE": str(root / "htpasswd"),
            "SUSHY_EMULATOR_STATE_DIR": str(root / "state"),  # else it persists in /tmp
        }
        sushy = Sushy(root, port, systems, tls)
        if tls:
            need("openssl", shutil.which("openssl") is not None, "apt-get install openssl")
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-keyout", str(root / "key.pem"), "-out", str(sushy.certificate),
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            config["SUSHY_EMULATOR_SSL_CERT"] = str(sushy.certificate)
            config["SUSHY_EMULATOR_SSL_KEY"] = str(root / "key.pem")
        (root / "emulator.conf").write_text(
            "".join(f"{key} = {value!r}\n" for key, value in config.items())
        )
        with open(root / "emulator.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sushy_tools.emulator.main",
                 "--config", str(root / "emulator.conf")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"sushy-emulator exited with {proc.returncode}: {sushy.log()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"sushy-emulator did not listen within 30 s: {sushy.log()}")
                    time.sleep(0.1)
            yield sushy
        finally:
            stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sushy() -> Iterator[Sushy]:
    with sushy_emulator([fake_system(1)]) as emulator:
        yield emulator
