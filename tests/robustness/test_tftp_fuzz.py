"""100,000 mutated TFTP datagrams at the live server, while curl and atftp download through it.

The server (serve_runner.py: `start_tftp` over `BootFiles`, as `pxeforge serve` builds it)
runs in its own process on 127.0.0.1; every datagram comes from 127.0.0.1 and every answer
goes back there. `pxeforge.fuzz.run_fuzz` sends mutants of real requests (the firmware's RRQs
in tests/data and codec-built RRQ/WRQ/ACK/ERROR/OACK) to the listener, paced by a probe RRQ
every 64 datagrams. When a mutated RRQ starts a transfer, its DATA/OACK reveal the transfer's
port and mutated ACK/ERROR/DATA go there from the fuzz socket (the transfer's own TID) and from
a stranger (a wrong TID); the stranger also aims at the real clients' transfers, found in
/proc. Afterwards the transfers the fuzzer left hanging are ended with an ERROR from their
TID (a client may stop a transfer at any time), and everything the server opened must be
closed again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from pxeforge.fuzz import (
    FuzzReport,
    Mutator,
    codec_rejects,
    run_fuzz,
    tftp_probe,
    tftp_request_seeds,
    tftp_transfer_seeds,
)
from pxeforge.protocols.tftp import ReadRequest, WriteRequest, encode_error, parse_packet

from .fuzzlab import ServeProc, fds, rss_kib, tftp_datagrams, udp_ports

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl client"),
]

COUNT = 100_000
SECONDS = 60.0
SEED = 1350
HOST = "127.0.0.1"
FILES = {"small": 700, "medium": 64 * 1024, "big": 2 << 20}
DURING = 8  # real downloads at most while the fuzz runs


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download(port: int, name: str, out: Path, tool: str) -> tuple[int, str]:
    if tool == "curl":
        url = f"tftp://{HOST}:{port}/{name}"
        argv = ["curl", "-sS", "--max-time", "60", "--tftp-blksize", "1468", url, "-o", str(out)]
    else:
        argv = ["atftp", "--option", "blksize 1468", "--option", "windowsize 8"]
        argv += ["-g", "-r", name, "-l", str(out), HOST, str(port)]
    done = subprocess.run(
        ["timeout", "90", *argv], capture_output=True, text=True, timeout=100, check=False
    )
    return done.returncode, done.stderr


def listener_drops(seeds: list[bytes], n: int) -> int:
    """How many of the first ``n`` listener mutants the server must count as dropped: what
    the codec refuses, and valid packets that are not requests."""
    drops = 0
    for mutant in Mutator(seeds, "tftp", seed=SEED).take(n):
        if codec_rejects("tftp", mutant.data):
            drops += 1
        elif not isinstance(parse_packet(mutant.data), ReadRequest | WriteRequest):
            drops += 1
    return drops


def end_transfers(sock: socket.socket, ports: Iterable[int]) -> None:
    """ERROR 0 to each port from the fuzz socket: the TID of the transfers it started."""
    sock.setblocking(True)
    for port in ports:
        sock.sendto(encode_error(0, "fuzz over"), (HOST, port))


def settle(server: ServeProc, fuzz_socket: socket.socket, timeout: float) -> dict[str, int]:
    """End what the fuzzer started until the server holds no transfer socket; its stats.

    ``active`` alone is not enough: see test_tftp_edges.py (a transfer replaced by a newer
    one from the same client address is not counted), so the sockets are watched too."""
    deadline = time.monotonic() + timeout
    while True:
        ports = udp_ports(server.pid) - {server.tftp_port}
        stats = server.stats()
        if (not ports and stats["active"] == 0) or time.monotonic() > deadline:
            return stats
        end_transfers(fuzz_socket, ports)
        time.sleep(0.3)


def test_tftp_server_survives_100k_mutants_and_keeps_serving(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name, size in FILES.items():
        (root / name).write_bytes(os.urandom(size))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"K" * 4096)
    captured = [c.payload for c in tftp_datagrams() if c.dst[1] == 69]
    seeds = tftp_request_seeds(sorted(FILES)) + captured
    server = ServeProc(root, kernel).start()
    fuzz_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fuzz_socket.bind((HOST, 0))
        pid, listener = server.pid, server.tftp_port
        fds_before, rss_before = fds(pid), rss_kib(pid)
        cache: dict[str, object] = {"at": 0.0, "ports": set()}

        def transfer_ports() -> set[int]:  # /proc is read at most 20 times a second
            if time.monotonic() - float(cache["at"]) > 0.05:  # type: ignore[arg-type]
                cache["ports"], cache["at"] = udp_ports(pid) - {listener}, time.monotonic()
            ports: set[int] = cache["ports"]  # type: ignore[assignment]
            return ports

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            future = pool.submit(
                run_fuzz,
                (HOST, listener),
                Mutator(seeds, "tftp", seed=SEED),
                count=COUNT,
                seconds=SECONDS,
                probe=tftp_probe(),
                chase=Mutator(tftp_transfer_seeds(), "tftp", seed=SEED + 1),
                extra_ports=transfer_ports,
                fuzz_socket=fuzz_socket,
            )
            during: list[tuple[str, int, str]] = []
            while not future.done() and len(during) < DURING:
                tool = "curl" if len(during) % 2 == 0 or not shutil.which("atftp") else "atftp"
                out = tmp_path / f"during-{len(during)}"
                code, err = download(listener, "big", out, tool)
                during.append((tool, code, err))
                assert code == 0, f"{tool} failed during the fuzz: {err}"
                assert digest(out) == digest(root / "big"), f"{tool}: corrupt download"
            report: FuzzReport = future.result(timeout=SECONDS + 60)
            fuzz_seconds = time.monotonic() - started
        assert server.alive(), "the server died"
        rss_after = rss_kib(pid)
        hanging = udp_ports(pid) - {listener}
        idle = settle(server, fuzz_socket, timeout=30)
        out = tmp_path / "after"
        code, err = download(listener, "big", out, "curl")
        assert code == 0, f"curl failed after the fuzz: {err}"
        assert digest(out) == digest(root / "big")
        idle = settle(server, fuzz_socket, timeout=10)
        fds_after = fds(pid)
        stats = server.stop()
    finally:
        fuzz_socket.close()
        server.close()
    log = server.log
    expected = listener_drops(seeds, report.to_listener)
    print(
        f"\nfuzz: {report.sent} datagrams in {fuzz_seconds:.1f}s ({report.to_listener} to the "
        f"listener, {report.right_tid} right-TID, {report.wrong_tid} wrong-TID to "
        f"{len(report.transfer_ports)} transfer ports), {report.probes} probes, "
        f"{report.probe_timeouts} probe timeouts; {len(during)} real downloads during it; "
        f"{len(hanging)} transfers ended afterwards\nserver: {stats} (listener drops "
        f"expected {expected}); RSS {rss_before} → {rss_after} KiB; fds {len(fds_before)} → "
        f"{len(fds_after)}"
    )
    assert report.sent >= COUNT and report.send_errors == 0
    assert report.right_tid > 1000 and report.wrong_tid > 1000
    assert len(during) >= 2, "the fuzz ended before two real downloads could run beside it"
    # the server lived, logged no bug, and closed everything it opened
    assert "Traceback" not in log, log[-3000:]
    assert not [line for line in log.splitlines() if line.startswith(("ERROR", "CRITICAL"))]
    assert fds_after == fds_before, "still open after every transfer ended"
    assert rss_after - rss_before < 100 * 1024
    # counters add up
    assert idle["active"] == 0
    outcomes = ("completed", "unconfirmed", "aborted", "failed")  # "unconfirmed": if counted
    assert stats["started"] == sum(stats.get(outcome, 0) for outcome in outcomes)
    assert stats["completed"] >= len(during) + 1
    assert expected <= stats["dropped"] <= expected + report.right_tid
    assert 0 < stats["wrong_tid"] <= report.wrong_tid
    assert stats["refused"] > 0 and stats["duplicate_requests"] > 0
