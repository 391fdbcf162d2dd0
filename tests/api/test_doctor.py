"""``GET /v1/doctor`` and ``GET /v1/nodes/{ident}/doctor`` over HTTP against the live API.

Nodes and ports are made through the API; the timeline events are recorded into the API's own
`Timeline` (``ApiContext.timeline``) with the vocabulary the services use, as `pxeforge serve`
shares one timeline between its servers and the API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pxeforge.api.doctor import read_arp
from pxeforge.cli.doctor import EXIT_ERRORS, doctor
from pxeforge.config import Settings
from pxeforge.timeline import Timeline

from .conftest import LiveApi

KNOWN = "52:54:00:aa:00:01"
STRANGER = "52:54:00:bb:00:02"


def node_with_port(api: LiveApi, name: str, mac: str) -> dict[str, Any]:
    reply = api.post("/v1/nodes", {"driver": "fake-hardware", "name": name})
    assert reply.status == 201, reply.raw
    node: dict[str, Any] = reply.json
    assert api.post("/v1/ports", {"address": mac, "node_uuid": node["uuid"]}).status == 201
    return node


def fail(api: LiveApi, uuid: str, state: str, error: str) -> None:
    """Put the node in ``state`` with ``last_error`` the way the conductor does (under its
    lock, one transition)."""
    with api.store.lock(uuid, "doctor-test") as record:
        api.store.save_transition(
            uuid,
            holder="doctor-test",
            expected_state=record.provision_state,
            provision_state=state,
            target_provision_state=None,
            last_error=error,
        )


def pxe_discover(tl: Timeline, mac: str, at: float, *, arch: int = 7) -> None:
    tl.record("dhcp", "discover", "DISCOVER", mac=mac, data={"arch": arch}, at=at)


@pytest.fixture
def api(sqlite_api: LiveApi) -> Iterator[LiveApi]:
    yield sqlite_api


def test_a_failed_node_by_name_uuid_and_mac(api: LiveApi) -> None:
    node = node_with_port(api, "n1", KNOWN)
    fail(api, node["uuid"], "deploy failed", "Image checksum bad")
    tl = api.ctx.timeline
    now = time.time()
    pxe_discover(tl, KNOWN, now - 50, arch=0)
    tl.record("dhcp", "offer", "OFFER", mac=KNOWN, data={"loader": "pxelinux.0"}, at=now - 49)
    tl.record("tftp", "refused", "pxelinux.0: not found", mac=KNOWN,
              data={"file": "pxelinux.0", "error": "File not found"}, at=now - 40)  # fmt: skip
    for ident in ("n1", node["uuid"], KNOWN, KNOWN.upper().replace(":", "-")):
        reply = api.get(f"/v1/nodes/{ident}/doctor")
        assert reply.status == 200, (ident, reply.raw)
        doc = reply.json
        assert doc["node"]["uuid"] == node["uuid"] and doc["node"]["name"] == "n1"
        assert doc["macs"] == [KNOWN] and doc["events"] == 3
        codes = [f["code"] for f in doc["findings"]]
        assert codes[0] in ("node-failed", "boot-file-not-found"), codes
        assert {"node-failed", "boot-file-not-found", "offer-without-request"} <= set(codes)
        failed = next(f for f in doc["findings"] if f["code"] == "node-failed")
        assert failed["what"] == "node is in deploy failed: Image checksum bad"
        assert "`pxeforge node deploy n1`" in failed["do"]
        missing = next(f for f in doc["findings"] if f["code"] == "boot-file-not-found")
        assert [e["seq"] for e in missing["evidence"]] == [3]
        assert doc["generated_at"] >= now


def test_unknown_mac_and_everything(api: LiveApi) -> None:
    healthy = node_with_port(api, "healthy", KNOWN)
    broken = node_with_port(api, "broken", "52:54:00:aa:00:03")
    fail(api, broken["uuid"], "clean failed", "erase failed")
    tl = api.ctx.timeline
    now = time.time()
    pxe_discover(tl, STRANGER, now - 5)
    tl.record("dhcp", "ignored", "not for us", mac=STRANGER, data={"why": "not-for-us"})
    pxe_discover(tl, KNOWN, now - 5, arch=0)
    tl.record("dhcp", "offer", "OFFER", mac=KNOWN, data={"loader": "pxelinux.0"}, at=now - 4)
    tl.record("dhcp", "request", "REQUEST", mac=KNOWN, data={"server": "127.0.0.1"})
    tl.record("dhcp", "ack", "ACK", mac=KNOWN, data={"loader": "pxelinux.0"})
    one = api.get(f"/v1/nodes/{STRANGER}/doctor").json
    assert one["node"] is None and one["macs"] == [STRANGER] and one["events"] == 2
    assert [f["code"] for f in one["findings"]] == ["unknown-machine"]
    assert "(arch 7, x64 UEFI) PXE-boots but is not enrolled" in one["findings"][0]["what"]
    everything = api.get("/v1/doctor").json
    assert everything["checked"] == {"nodes": 2, "macs": 2}
    listed = [(m["node"] or {}).get("name") or m["macs"][0] for m in everything["machines"]]
    assert listed == ["broken", STRANGER]  # errors first; the healthy node is not listed
    assert healthy["uuid"] not in str(everything)
    assert api.get(f"/v1/nodes/{healthy['uuid']}/doctor").json["findings"] == []


def test_a_mac_the_agent_taught_the_timeline_counts_for_its_node(api: LiveApi) -> None:
    node = node_with_port(api, "n2", KNOWN)
    fail(api, node["uuid"], "clean failed", "erase failed")
    api.ctx.timeline.record("agent", "lookup", "lookup", mac=STRANGER, node=node["uuid"],
                            data={"found": True})  # fmt: skip
    doc = api.get(f"/v1/nodes/{STRANGER}/doctor").json
    assert doc["node"]["name"] == "n2" and doc["macs"] == sorted([KNOWN, STRANGER])
    everything = api.get("/v1/doctor").json
    assert [m["node"]["name"] for m in everything["machines"]] == ["n2"]


def test_tftp_client_known_by_address_joins_its_mac_through_the_arp_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another DHCP server gave the address: the TFTP events sit under ``ip:<address>`` until
    the kernel's ARP table names the MAC (and the other server, by its MAC)."""
    settings = Settings(address=IPv4Address("10.213.0.1"))
    api = LiveApi(f"sqlite:///{tmp_path / 'x.db'}", settings=settings).start()
    try:
        _arp_join(api, tmp_path, monkeypatch)
    finally:
        api.close()


def _arp_join(api: LiveApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arp = tmp_path / "arp"
    arp.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        f"10.213.0.57      0x1         0x2         {STRANGER}     *        br0\n"
        "10.213.0.2       0x1         0x2         02:00:00:00:00:99     *        br0\n"
    )
    monkeypatch.setattr("pxeforge.api.doctor.ARP_TABLE", arp)
    tl = api.ctx.timeline
    pxe_discover(tl, STRANGER, time.time() - 9)
    tl.record("dhcp", "request", "REQUEST", mac=STRANGER, data={"arch": 7, "server": "10.213.0.2"})
    tl.record("tftp", "started", "TFTP pxelinux.0 started", mac="ip:10.213.0.57",
              data={"file": "pxelinux.0", "bytes": 42000, "ip": "10.213.0.57"})  # fmt: skip
    doc = api.get(f"/v1/nodes/{STRANGER}/doctor").json
    assert doc["events"] == 3
    codes = {f["code"] for f in doc["findings"]}
    assert {"loader-mismatch", "other-dhcp-server", "unknown-machine"} <= codes
    mismatch = next(f for f in doc["findings"] if f["code"] == "loader-mismatch")
    assert "another server, 10.213.0.2 (MAC 02:00:00:00:00:99)" in mismatch["what"]
    everything = api.get("/v1/doctor").json
    assert [m["macs"] for m in everything["machines"]] == [[STRANGER]]
    assert everything["machines"][0]["events"] == 3


def test_unknown_node_is_404_with_ironic_error_body(api: LiveApi) -> None:
    reply = api.get("/v1/nodes/nope/doctor")
    assert reply.status == 404 and "nope" in reply.fault


def test_credentials_are_needed(tmp_path: Path) -> None:
    live = LiveApi(f"sqlite:///{tmp_path / 'x.db'}", data_dir=tmp_path / "data").start()
    try:
        assert live.get("/v1/doctor", auth=None).status == 401
        assert live.get("/v1/doctor").status == 200
    finally:
        live.close()


def test_read_arp(tmp_path: Path) -> None:
    table = tmp_path / "arp"
    table.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "10.213.0.2       0x1         0x2         02:AA:00:00:00:02     *        br0\n"
        "10.213.0.9       0x1         0x0         00:00:00:00:00:00     *        br0\n"
    )
    assert read_arp(table) == {"10.213.0.2": "02:aa:00:00:00:02"}
    assert read_arp(tmp_path / "missing") == {}


# ---- `pxeforge doctor` against this API -----------------------------------------------------


def run_cli(api: LiveApi, tmp_path: Path, *args: str) -> Result:
    url = f"http://127.0.0.1:{api.port}"
    return CliRunner().invoke(doctor, [*args, "--url", url, "--data-dir", str(tmp_path)])


def test_cli_one_node_and_everything(api: LiveApi, tmp_path: Path) -> None:
    node = node_with_port(api, "n1", KNOWN)
    fail(api, node["uuid"], "deploy failed", "Image checksum bad")
    tl = api.ctx.timeline
    now = time.time()
    pxe_discover(tl, STRANGER, now - 5)
    result = run_cli(api, tmp_path, "n1")
    assert result.exit_code == EXIT_ERRORS, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"node n1 ({node['uuid']}): deploy failed — MAC {KNOWN}"
    assert lines[1].split() == "ERROR node is in deploy failed: Image checksum bad".split()
    assert lines[2].strip().startswith("do: fix the cause, then deploy again")
    assert "node" in lines[-1] and "provision_state 'deploy failed'" in result.output
    as_json = run_cli(api, tmp_path, "n1", "--json")
    doc = json.loads(as_json.output)
    assert as_json.exit_code == EXIT_ERRORS and doc["node"]["name"] == "n1"
    everything = run_cli(api, tmp_path)
    assert everything.exit_code == EXIT_ERRORS
    text = everything.output
    assert text.startswith("2 machines with problems (checked 1 nodes and 1 MACs")
    assert text.index("node n1") < text.index(f"machine {STRANGER} (no node has this MAC)")
    assert "WARNING" in text and "PXE-boots but is not enrolled" in " ".join(text.split())


def test_cli_healthy_node_exits_0_and_unreachable_api_exits_1(api: LiveApi, tmp_path: Path) -> None:
    node_with_port(api, "fine", KNOWN)
    result = run_cli(api, tmp_path, "fine")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == "  nothing wrong found (0 timeline events)"
    empty = run_cli(api, tmp_path)
    assert empty.exit_code == 0 and empty.output.startswith("no machines with problems")
    missing = run_cli(api, tmp_path, "nope")
    assert missing.exit_code == 1 and "HTTP 404" in missing.output
    gone = CliRunner().invoke(doctor, ["--url", "http://127.0.0.1:9", "--data-dir", str(tmp_path)])
    assert gone.exit_code == 1 and "cannot reach the pxeforge API" in gone.output
