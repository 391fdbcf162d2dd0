"""`pxeforge node …` with click's CliRunner against a live `pxeforge serve` (http_basic, the
credentials read from --data-dir as an operator on the same host would)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pxeforge.cli.node import node


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A `pxeforge serve` with http_basic on loopback: (API URL, data dir)."""
    (tmp_path / "root").mkdir()
    (tmp_path / "vmlinuz").write_bytes(b"\x00" * 512)
    api_port = _free_port()
    data = tmp_path / "data"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pxeforge", "serve",
            "--dhcp", "off", "--address", "127.0.0.1",
            "--tftp-port", str(_free_port(socket.SOCK_DGRAM)),
            "--http-port", str(_free_port()),
            "--api-port", str(api_port),
            "--root", str(tmp_path / "root"),
            "--data-dir", str(data),
            "--no-automated-clean",  # no agent ramdisk here
            "--kernel", str(tmp_path / "vmlinuz"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "pxeforge serving" not in (tmp_path / "serve.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "serve.log"
            ).read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{api_port}", data
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    assert proc.returncode == 0


def run(server: tuple[str, Path], *args: str, code: int = 0) -> Result:
    url, data = server
    result = CliRunner().invoke(node, ["--url", url, "--data-dir", str(data), *args])
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def show(server: tuple[str, Path], ident: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(run(server, "show", ident, "--json").output)
    return shown


def test_node_cli(server: tuple[str, Path]) -> None:
    created = run(server, "create", "--driver", "fake-hardware", "--name", "c1",
                  "--driver-info", "fake_id=c1", "--property", "cpus=8", "--json")  # fmt: skip
    node = json.loads(created.output)
    assert node["name"] == "c1" and node["properties"] == {"cpus": 8}
    listed = run(server, "list").output
    assert "c1" in listed and "enroll" in listed and node["uuid"] in listed
    table = run(server, "show", "c1").output
    assert "provision_state" in table and "fake-hardware" in table

    run(server, "set", "c1", "--property", "ram=4096", "--extra", "rack=r1",
        "--resource-class", "gold")  # fmt: skip
    shown = show(server, "c1")
    assert shown["properties"] == {"cpus": 8, "ram": 4096}
    assert shown["extra"] == {"rack": "r1"} and shown["resource_class"] == "gold"

    run(server, "port", "create", "52:54:00:00:c1:01", "--node", "c1")
    assert "52:54:00:00:c1:01" in run(server, "port", "list", "--node", "c1").output
    ports = json.loads(run(server, "port", "list", "--json").output)
    assert [p["node_uuid"] for p in ports] == [node["uuid"]]
    dup = run(server, "port", "create", "52:54:00:00:c1:01", "--node", "c1", code=1)
    assert "already exists. (HTTP 409)" in dup.output

    waited = run(server, "manage", "c1", "--wait")
    assert "manageable" in waited.output
    run(server, "provide", "c1", "--wait")
    assert show(server, "c1")["provision_state"] == "available"
    run(server, "set", "c1", "--instance-info", "deploy_interface=kickstart",
        "--instance-info", "kernel=k", "--instance-info", "ramdisk=r")  # fmt: skip
    run(server, "deploy", "c1")  # waits for the installer's call-back: no --wait here
    deadline = time.monotonic() + 20
    while show(server, "c1")["provision_state"] != "wait call-back":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    run(server, "undeploy", "c1", "--wait")
    assert show(server, "c1")["provision_state"] == "available"

    assert "power on" in run(server, "power", "on", "c1", "--wait").output
    assert "power off" in run(server, "power", "off", "c1", "--wait").output

    run(server, "maintenance", "set", "c1", "--reason", "fan")
    shown = show(server, "c1")
    assert shown["maintenance"] is True and shown["maintenance_reason"] == "fan"
    assert "c1" in run(server, "list", "--maintenance").output
    run(server, "maintenance", "unset", "c1")
    assert show(server, "c1")["maintenance"] is False

    refused = run(server, "deploy", "nope", code=1)
    assert "Node nope could not be found. (HTTP 404)" in refused.output
    bad = run(server, "provide", "c1", code=1)
    assert 'Allowed in this state: "active", "deploy"' in bad.output
    run(server, "manage", "c1", "--wait")
    run(server, "delete", "c1")
    assert json.loads(run(server, "list", "--json").output) == []


def test_wait_fails_on_bad_credentials(server: tuple[str, Path]) -> None:
    run(server, "create", "--driver", "fake-hardware", "--name", "bad",
        "--driver-info", "fake_fail=auth")  # fmt: skip
    result = run(server, "manage", "bad", "--wait", code=1)
    assert "Failed to get power state" in result.output
    # a failure state ends the wait too (deploy failed keeps its target, "active")
    run(server, "create", "--driver", "fake-hardware", "--name", "d1")
    run(server, "manage", "d1", "--wait")
    run(server, "provide", "d1", "--wait")
    run(server, "set", "d1", "--driver-info", "fake_fail=BMC on fire", "--instance-info",
        "deploy_interface=kickstart", "--instance-info", "kernel=k", "--instance-info",
        "ramdisk=r")  # fmt: skip
    result = run(server, "deploy", "d1", "--wait", "--timeout", "30", code=1)
    assert "BMC on fire" in result.output and "deploy failed" in result.output


def test_auth_and_connection_errors(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _data = server
    runner = CliRunner()
    empty = tmp_path / "no-credentials"
    result = runner.invoke(node, ["--url", url, "--data-dir", str(empty), "list"])
    assert result.exit_code == 1 and "HTTP 401" in result.output
    result = runner.invoke(
        node, ["--url", url, "--user", "admin", "--password", "wrong", "--data-dir", str(empty),
               "list"]
    )  # fmt: skip
    assert result.exit_code == 1 and "HTTP 401" in result.output
    result = runner.invoke(
        node, ["--url", f"http://127.0.0.1:{_free_port()}", "--data-dir", str(empty), "list"]
    )
    assert result.exit_code == 1 and "cannot reach the pxeforge API" in result.output


def test_wait_timeout_exits_2_through_the_pxeforge_command(server: tuple[str, Path]) -> None:
    """The real entry point (not CliRunner) keeps `--wait`'s exit status: 2 on timeout."""
    run(server, "create", "--driver", "fake-hardware", "--name", "t1", "--driver-info",
        "fake_id=t1")  # fmt: skip
    run(server, "manage", "t1", "--wait")
    run(server, "provide", "t1", "--wait")
    run(server, "set", "t1", "--instance-info", "deploy_interface=kickstart",
        "--instance-info", "kernel=k", "--instance-info", "ramdisk=r")  # fmt: skip
    url, data = server
    proc = subprocess.run(
        [sys.executable, "-m", "pxeforge", "node", "--url", url, "--data-dir", str(data),
         "deploy", "t1", "--wait", "--timeout", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "wait call-back" in proc.stdout + proc.stderr
