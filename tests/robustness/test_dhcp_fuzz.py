"""100,000 mutated DHCP datagrams at the live server, then a real client's DORA.

The server (dhcp_runner.py, full mode, leases in sqlite) runs in one network namespace and
the fuzzer (``python -m pxeforge.fuzz``) in another, joined by a veth pair (dhcp_lab.py). A
namespace is the only safe place: mutated requests carry forged giaddr/ciaddr/yiaddr, and the
server answers those addresses; in the namespace there is no route to them.

The mutants come from the requests real firmware sent (tests/data/*.pcap). The fuzzer paces
itself with a probe DISCOVER every 64 datagrams, so the server's socket buffer never
overflows and every datagram is parsed: the server's counters then account for each one.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from servers.dhcp_lab import SERVER_IP, Lab, ServerProc, dhcp_lab, full_settings, have_netns

from .fuzzlab import dhcp_requests, find_python, rss_kib

pytestmark = [
    pytest.mark.root,
    pytest.mark.interop,
    pytest.mark.skipif(not have_netns(), reason="needs root and iproute2 (network namespaces)"),
    pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox udhcpc"),
]

COUNT = 100_000
SECONDS = 60.0
SEED = 20240601
# Mutants invent clients: ~100 MACs, and ~365 client identifiers (option 61) with seed SEED.
# Each holds an offered address for 30 s, as RFC 2131 §4.3.1 allows: a /24 pool runs dry (a
# DISCOVER flood starves any DHCP server), so the pool spans four /24s of a /16.
SUBNET = "10.77.0.0/16"
POOL = ("10.77.0.10", "10.77.3.250")
CLIENT_IP = "10.77.0.2"  # the fuzzer's address; removed before the real client runs
PXE_BIOS = "PXEClient:Arch:00000:UNDI:002001"


def udhcpc(lab: Lab, tmp: Path) -> dict[str, str] | None:
    """One busybox udhcpc run to a lease; the environment of its ``bound`` call, or None."""
    out = tmp / "bound.env"
    script = tmp / "udhcpc.sh"
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(0o755)
    argv = ["busybox", "udhcpc", "-i", lab.cli_if, "-n", "-q", "-f", "-s", str(script)]
    argv += ["-t", "5", "-T", "1", "-V", PXE_BIOS, "-x", "0x5d:0000"]
    done = subprocess.run(
        ["timeout", "30", "ip", "netns", "exec", lab.cli, *argv],
        capture_output=True,
        text=True,
        timeout=40,
    )
    if done.returncode != 0 or not out.exists():
        return None
    env = {}
    for line in out.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


def fuzz(lab: Lab, seeds: Path) -> dict[str, Any]:
    argv = [
        "ip", "netns", "exec", lab.cli, sys.executable, "-m", "pxeforge.fuzz", "dhcp",
        f"{SERVER_IP}:67", "--count", str(COUNT), "--seconds", str(SECONDS),
        "--seed", str(SEED), "--seeds-hex", str(seeds), "--device", lab.cli_if,
        "--bind", f"{CLIENT_IP}:0",
    ]  # fmt: skip
    done = subprocess.run(
        ["timeout", str(SECONDS + 60), *argv], capture_output=True, text=True, timeout=SECONDS + 90
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_dhcp_server_survives_100k_mutants_then_serves_a_real_client(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.hex"
    requests = dhcp_requests()
    seeds.write_text("".join(c.payload.hex() + "\n" for c in requests))
    db = tmp_path / "leases.db"
    settings = full_settings(pool=f"{POOL[0]}-{POOL[1]}", subnet=SUBNET)
    with dhcp_lab() as lab:
        lab.in_srv("ip", "route", "add", SUBNET, "dev", lab.srv_if)  # unicast to all the pool
        lab.in_cli("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", lab.cli_if)
        server = ServerProc(lab, settings, db=db, log_level="INFO").start()
        try:
            pid = find_python(server.proc.pid if server.proc else 0, "dhcp_runner.py")
            rss_before = rss_kib(pid)
            started = time.monotonic()
            report = fuzz(lab, seeds)
            fuzz_seconds = time.monotonic() - started
            rss_after = rss_kib(pid)
            assert server.proc is not None and server.proc.poll() is None, "the server died"
            lab.in_cli("ip", "addr", "flush", "dev", lab.cli_if)
            client_mac = lab.client_mac()
            env = udhcpc(lab, tmp_path)
            stats = server.stop()
        finally:
            server.close()
    log = server.stderr
    counters: dict[str, int] = stats["stats"]
    decided = sum(n for key, n in counters.items() if ":" in key)
    by_client = sum(1 for e in server.events if e["mac"] == client_mac)  # udhcpc's own
    received = decided + stats["dropped"] - by_client
    sent = report["sent"] + report["probes"]
    print(
        f"\nfuzz: {report['sent']} mutants + {report['probes']} probes in {fuzz_seconds:.1f}s, "
        f"{report['probe_timeouts']} probe timeouts; server received {received}, dropped "
        f"{stats['dropped']} (codec predicts {report['rejected']}); RSS {rss_before} → "
        f"{rss_after} KiB; kinds {report['kinds']}\ncounters {counters}"
    )

    # the run was as big as promised, and the server read every datagram
    assert report["sent"] >= COUNT
    assert report["send_errors"] == 0
    assert received == sent, f"the server read {received} of {sent} datagrams"
    # every datagram our codec refuses was dropped; so were the few whose reply cannot fit the
    # size they allow (option 57) once their own huge client identifier is echoed (RFC 6842)
    assert report["rejected"] > COUNT // 2
    assert stats["dropped"] - report["rejected"] == log.count("even with option overload")
    assert stats["dropped"] - report["rejected"] < COUNT // 100
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert log.count("dropped a malformed datagram") == stats["dropped"]
    # memory: no growth that scales with the datagrams
    assert rss_after - rss_before < 100 * 1024
    # the real client, afterwards
    assert env is not None, f"udhcpc got no lease after the fuzz; log tail:\n{log[-3000:]}"
    assert IPv4Address(POOL[0]) <= IPv4Address(env["ip"]) <= IPv4Address(POOL[1])
    assert env["serverid"] == SERVER_IP and env.get("bootfile") in (None, "pxelinux.0")
    assert env["boot_file"] == "pxelinux.0"
    # the lease database is intact and no address is held twice
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = con.execute("SELECT ip, client, mac, state FROM leases").fetchall()
    con.close()
    bound = [(ip, client, mac) for ip, client, mac, state in rows if state == "bound"]
    assert Counter(ip for ip, _, _ in bound).most_common(1)[0][1] == 1
    assert all(n == 1 for n in Counter(client for _, client, _ in bound).values()), bound
    assert (env["ip"], client_mac) in {(ip, mac) for ip, _, mac in bound}
    acks = [e for e in server.events if e["outcome"] == "ack"]
    holders: dict[str, str] = {}
    for event in acks:  # an ACK never hands a held address to another MAC
        assert holders.setdefault(event["ip"], event["mac"]) == event["mac"], event
