"""The live timeline and /metrics of a real `pxeforge serve`, with real clients.

`pxeforge serve` (DHCP full, static ``--kernel``, http_basic API) runs in a server namespace;
busybox udhcpc leases an address in a client namespace, which then fetches pxelinux.0 over TFTP
(curl) and HTTP (curl) from that address. The API (curl inside the server namespace) must show
those DHCP, TFTP and HTTP events under the client's MAC, list it as unknown until a port names
it, then show the node's power action and transitions; ``/metrics`` (parsed with
prometheus_client's parser) must have moved by exactly what the clients did; and
``pxeforge node timeline`` prints the same events.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pxeforge.api.auth import read_credentials

from .dhcp_lab import SERVER_IP, Lab, dhcp_lab, have_netns

prometheus_parser = pytest.importorskip("prometheus_client.parser")

pytestmark = [
    pytest.mark.root,
    pytest.mark.interop,
    pytest.mark.skipif(not have_netns(), reason="needs root and iproute2 (network namespaces)"),
    pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not found"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not found"),
]

PXE_BIOS = "PXEClient:Arch:00000:UNDI:002001"
CLIENT_MAC = "02:00:00:00:aa:01"
LOADER_SIZE = 70_001  # not a multiple of any block size
API = f"http://{SERVER_IP}:6385"


@dataclass
class Served:
    lab: Lab
    tmp: Path
    proc: subprocess.Popen[str]
    user: str
    password: str

    def api(self, path: str, *, auth: bool = True, method: str = "GET", body: Any = None) -> Any:
        status, text = self.api_raw(path, auth=auth, method=method, body=body)
        assert status < 400, (status, text)
        return json.loads(text) if text.strip() else None

    def api_raw(
        self, path: str, *, auth: bool = True, method: str = "GET", body: Any = None
    ) -> tuple[int, str]:
        argv = ["curl", "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}"]
        argv += ["-H", "X-OpenStack-Ironic-API-Version: 1.87"]
        if auth:
            argv += ["-u", f"{self.user}:{self.password}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
        out = self.lab.in_srv(*argv, API + path, timeout=30)
        text, _, code = out.rpartition("\n")
        return int(code), text

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.api_raw("/metrics", auth=False)
        assert status == 200, text
        out = {}
        for family in prometheus_parser.text_string_to_metric_families(text):
            for sample in family.samples:
                out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
        return out

    def events(self, path: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.api(path)["events"]
        return events


def _wait_serving(proc: subprocess.Popen[str], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "pxeforge serving" in log.read_text():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"pxeforge serve did not start:\n{log.read_text()[-3000:]}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(os.urandom(LOADER_SIZE))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0" * 64)
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    with dhcp_lab() as lab:
        argv = [
            "ip", "netns", "exec", lab.srv, "timeout", "300",
            sys.executable, "-m", "pxeforge", "serve",
            "--interface", lab.srv_if, "--dhcp", "full", "--pool", "10.77.0.100-10.77.0.119",
            "--root", str(root), "--data-dir", str(data), "--kernel", str(kernel),
        ]  # fmt: skip
        with log.open("w") as err:
            proc = subprocess.Popen(argv, stderr=err, stdout=err, text=True,
                                    start_new_session=True)  # fmt: skip
        try:
            _wait_serving(proc, log, 60)
            creds = read_credentials(data)
            assert creds is not None
            yield Served(lab, tmp_path, proc, creds.user, creds.password)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


def _udhcpc(lab: Lab, tmp: Path) -> dict[str, str]:
    out = tmp / "lease.env"
    script = tmp / "udhcpc.sh"
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(0o755)
    argv = ["busybox", "udhcpc", "-i", lab.cli_if, "-n", "-q", "-f", "-s", str(script),
            "-t", "3", "-T", "1", "-V", PXE_BIOS, "-x", "0x5d:0000"]  # fmt: skip
    lab.in_cli(*argv, timeout=30)
    env = dict(line.partition("=")[::2] for line in out.read_text().splitlines() if "=" in line)
    return env


def _wait_node(served: Served, uuid: str, check: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        node: dict[str, Any] = served.api(f"/v1/nodes/{uuid}")
        if check(node):
            return node
        assert time.monotonic() < deadline, node
        time.sleep(0.2)


def _delta(after: dict[Any, float], before: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in after, f"{key} not in /metrics"
    return after[key] - before.get(key, 0.0)


def test_timeline_and_metrics_follow_a_pxe_client(served: Served) -> None:
    lab = served.lab
    before = served.metrics()
    # -- the boot plane: DHCP, TFTP (a hit and a miss), HTTP, all from the leased address
    lab.set_client_mac(CLIENT_MAC)
    lease = _udhcpc(lab, served.tmp)
    ip = lease["ip"]
    assert lease["bootfile"] == "pxelinux.0"
    lab.in_cli("ip", "addr", "add", f"{ip}/24", "dev", lab.cli_if)
    fetched = served.tmp / "fetched"
    lab.in_cli("curl", "-sS", "--tftp-blksize", "1468", "-o", str(fetched),
               f"tftp://{SERVER_IP}/pxelinux.0", timeout=30)  # fmt: skip
    assert fetched.stat().st_size == LOADER_SIZE
    miss = subprocess.run(
        ["ip", "netns", "exec", lab.cli, "curl", "-sS", "-o", "/dev/null",
         f"tftp://{SERVER_IP}/pxelinux.cfg/01-02-00-00-00-aa-01"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert miss.returncode != 0  # TFTP "File not found"
    lab.in_cli("curl", "-sS", "-o", str(fetched), f"http://{SERVER_IP}:8080/pxelinux.0")
    assert fetched.stat().st_size == LOADER_SIZE

    # -- the MAC's timeline: what each service saw, in order
    events = served.events(f"/v1/timeline/{CLIENT_MAC.replace(':', '-').upper()}")
    kinds = [(e["source"], e["kind"]) for e in events]
    for wanted in [
        ("dhcp", "discover"), ("dhcp", "offer"), ("dhcp", "request"), ("dhcp", "ack"),
        ("tftp", "started"), ("tftp", "finished"), ("tftp", "refused"), ("http", "fetched"),
    ]:  # fmt: skip
        assert wanted in kinds, (wanted, kinds)
    assert kinds.index(("dhcp", "ack")) < kinds.index(("tftp", "started"))
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert all(e["mac"] == CLIENT_MAC for e in events)
    discover = events[kinds.index(("dhcp", "discover"))]
    assert discover["data"]["vendor_class"] == PXE_BIOS and discover["data"]["arch"] == 0
    ack = events[kinds.index(("dhcp", "ack"))]
    assert ack["data"]["ip"] == ip and ack["data"]["loader"] == "pxelinux.0"
    assert ack["data"]["next_server"] == SERVER_IP
    finished = events[kinds.index(("tftp", "finished"))]
    assert finished["data"]["file"] == "pxelinux.0" and finished["data"]["bytes"] >= LOADER_SIZE
    refused = events[kinds.index(("tftp", "refused"))]
    assert refused["data"]["error"] == "File not found"
    http = events[kinds.index(("http", "fetched"))]
    assert http["data"]["status"] == 200 and http["data"]["bytes"] == LOADER_SIZE
    # since= and limit=
    newer = served.events(f"/v1/timeline/{CLIENT_MAC}?since={events[-3]['seq']}")
    assert [e["seq"] for e in newer] == [e["seq"] for e in events[-2:]]
    assert served.events(f"/v1/timeline/{CLIENT_MAC}?limit=1") == events[-1:]

    # -- unknown: on the wire, named by no port
    unknown = {u["mac"]: u for u in served.api("/v1/timeline/unknown")["unknown"]}
    assert unknown[CLIENT_MAC]["count"] == len(events)
    assert unknown[CLIENT_MAC]["last"] == events[-1]

    # -- auth like the other routes; /metrics is public
    assert served.api_raw("/v1/timeline/unknown", auth=False)[0] == 401
    assert served.api_raw(f"/v1/timeline/{CLIENT_MAC}", auth=False)[0] == 401
    status, text = served.api_raw("/v1/timeline/not-a-mac")
    assert status == 400 and "not a MAC" in text
    status, text = served.api_raw("/v1/nodes/no-such-node/timeline")
    assert status == 404 and "error_message" in json.loads(text)

    # -- enroll it: a node with that port, power on, manage
    node = served.api("/v1/nodes", method="POST", body={
        "driver": "fake-hardware", "name": "rack1-u7", "driver_info": {"fake_id": "n1"},
    })  # fmt: skip
    uuid = node["uuid"]
    served.api("/v1/ports", method="POST", body={"address": CLIENT_MAC, "node_uuid": uuid})
    assert CLIENT_MAC not in {u["mac"] for u in served.api("/v1/timeline/unknown")["unknown"]}
    served.api(f"/v1/nodes/{uuid}/states/power", method="PUT", body={"target": "power on"})
    _wait_node(served, uuid, lambda n: n["target_power_state"] is None and not n["reservation"])
    served.api(f"/v1/nodes/{uuid}/states/provision", method="PUT", body={"target": "manage"})
    _wait_node(served, uuid, lambda n: n["provision_state"] == "manageable")

    node_events = served.events("/v1/nodes/rack1-u7/timeline")
    node_kinds = [(e["source"], e["kind"]) for e in node_events]
    assert node_kinds[: len(kinds)] == kinds  # the boot plane's events come with the node
    power = [e for e in node_events if e["source"] == "power"]
    assert [(p["kind"], p["data"]["result"]) for p in power] == [("on", "power on")]
    transitions = [(e["data"]["from"], e["data"]["to"]) for e in node_events
                   if e["kind"] == "transition"]  # fmt: skip
    assert transitions == [("enroll", "verifying"), ("verifying", "manageable")]
    assert all(e["mac"] == CLIENT_MAC and e["node"] == uuid for e in node_events[len(kinds) :])
    assert served.api(f"/v1/timeline/{CLIENT_MAC}")["node"] == uuid

    # -- /metrics moved by what the clients did
    after = served.metrics()
    requests = "pxeforge_dhcp_requests_total"
    assert _delta(after, before, requests, type="DISCOVER", outcome="offer") >= 1
    assert _delta(after, before, requests, type="REQUEST", outcome="ack") >= 1
    assert after["pxeforge_dhcp_pool_addresses", ()] == 20
    assert _delta(after, before, "pxeforge_dhcp_leases", state="bound") == 1
    assert _delta(after, before, "pxeforge_tftp_transfers_total", outcome="started") == 1
    assert _delta(after, before, "pxeforge_tftp_transfers_total", outcome="completed") == 1
    assert _delta(after, before, "pxeforge_tftp_refused_total") == 1
    retransmits = _delta(after, before, "pxeforge_tftp_retransmits_total")
    sent = _delta(after, before, "pxeforge_tftp_sent_bytes_total")
    assert sent == LOADER_SIZE or (retransmits > 0 and sent > LOADER_SIZE)
    assert _delta(after, before, "pxeforge_http_responses_total", code="200") == 1
    assert _delta(after, before, "pxeforge_http_sent_bytes_total") == LOADER_SIZE
    assert after["pxeforge_nodes", (("provision_state", "manageable"),)] == 1
    assert after["pxeforge_nodes", (("provision_state", "enroll"),)] == 0
    assert _delta(after, before, "pxeforge_power_actions_total", action="on", result="ok") == 1
    for state in ("enroll", "verifying"):
        assert _delta(after, before, "pxeforge_node_state_seconds_count",
                      provision_state=state) == 1  # fmt: skip
        inf = ("pxeforge_node_state_seconds_bucket", (("le", "+Inf"), ("provision_state", state)))
        assert after[inf] == 1
    assert after["pxeforge_timeline_events_total", ()] >= len(node_events)

    # -- the CLI: one line per event; a MAC a port names shows its node's timeline
    cli = ["ip", "netns", "exec", lab.srv, sys.executable, "-m", "pxeforge", "node", "--url",
           API, "--user", served.user, "--password", served.password, "timeline"]  # fmt: skip
    out = subprocess.run([*cli, CLIENT_MAC], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(node_events)
    assert "tftp" in lines[kinds.index(("tftp", "finished"))]
    assert "pxelinux.0" in lines[kinds.index(("tftp", "finished"))]
    assert any("verifying → manageable" in line for line in lines)
    out = subprocess.run([*cli, "rack1-u7", "--json", "--follow", "--timeout", "2.5"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    followed = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["seq"] for e in followed] == [e["seq"] for e in node_events]  # no repeats
