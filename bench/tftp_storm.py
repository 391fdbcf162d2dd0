"""TFTP boot storm: 200 clients fetch the same 1 MiB file at once, blksize 1468.

pxeforge vs dnsmasq (the target) and tftpd-hpa. Setup: a private network namespace, the
servers pinned to vCPU 0, the client on vCPU 1: one Python process (bench/tftp_client.py)
running all 200 clients on asyncio, each with its own socket, a 1 s retransmit timeout,
at most 5 retransmits in a row, and a 60 s cap on the whole storm. (200 curl processes on two
vCPUs would measure the scheduler more than the server.) Measured per storm:

* aggregate MiB/s: the bytes of every complete, verified download divided by the time from
  the first RRQ to the last client's completion;
* p99 completion time: the 198th of the 200 completion times (a failed client counts with
  the time it gave up);
* server CPU seconds: utime + stime of the server process and its reaped children
  (``/proc/PID/stat`` fields 14-17) before and after the storm. Not for tftpd-hpa: it forks
  a child per transfer and ignores SIGCHLD, so the kernel reaps the children and their CPU
  time is added to no parent's cutime (shown as "—").

Each server serves the storm ``--runs`` times (rotating the order); the table gives medians.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import tftp_servers
from benchlib import (
    BENCH,
    BenchResult,
    MiB,
    Opts,
    Procs,
    Pxeforge,
    PySpy,
    Row,
    add_address_holder,
    cpu_seconds,
    disk_tmpdir,
    fmt,
    inside,
    median,
    netns,
    percentile,
    random_file,
    require,
    standalone,
    summarize_profile,
)

CLIENTS = 200
SIZE = 1 * MiB
BLKSIZE = 1468
FILE = "storm.bin"
SERVER_CPU, CLIENT_CPU = 0, 1
CAP = 60.0
TITLE = f"TFTP boot storm: {CLIENTS} clients x 1 MiB, blksize 1468 (server vCPU 0, client vCPU 1)"


def storm(port: int, crc: int) -> dict[str, Any]:
    """One storm against the server on ``port``; the figures of that storm."""
    argv = [
        "taskset", "-c", str(CLIENT_CPU), sys.executable, str(BENCH / "tftp_client.py"),
        "--port", str(port), "--file", FILE, "--clients", str(CLIENTS),
        "--blksize", str(BLKSIZE), "--size", str(SIZE), "--crc", str(crc), "--cap", str(CAP),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CAP + 30)
    if done.returncode != 0:
        raise RuntimeError(f"storm client exited {done.returncode}: {done.stderr[-1500:]}")
    data = json.loads(done.stdout)
    results = data["results"]
    ok = [r for r in results if r["ok"]]
    errors = sorted({r["error"] for r in results if not r["ok"]})
    times = [r["seconds"] for r in results]
    makespan = max((r["seconds"] for r in ok), default=math.nan)
    return {
        "agg": sum(r["bytes"] for r in ok) / MiB / makespan if ok else math.nan,
        "p99": percentile(times, 99),
        "p50": percentile(times, 50),
        "failed": len(results) - len(ok),
        "retransmits": sum(r["retransmits"] for r in results),
        "client_cpu": data["client_cpu"],
        "errors": "; ".join(errors)[:300],
    }


def _setup(tmp: Path, ns: str) -> tuple[Path, int]:
    root = tmp / "root"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    random_file(root / FILE, SIZE)
    random_file(root / "vmlinuz", 4096)
    add_address_holder(ns)
    return root, zlib.crc32((root / FILE).read_bytes())


def run(px: Pxeforge, opts: Opts) -> BenchResult:
    require("in.tftpd", "dnsmasq", "taskset", "ip")
    result = BenchResult("tftp_storm", TITLE)
    figures: dict[str, list[dict[str, Any]]] = {n: [] for n in tftp_servers.SERVERS}
    with disk_tmpdir("storm") as tmp, netns("storm") as ns:
        root, crc = _setup(tmp, ns)
        procs = Procs(tmp)
        try:
            with inside(ns):
                servers = [
                    tftp_servers.start(n, procs, px, root, tmp, cpu=SERVER_CPU)
                    for n in tftp_servers.SERVERS
                ]
                for i in range(opts.runs):
                    order = servers[i % len(servers) :] + servers[: i % len(servers)]
                    for s in order:
                        before = cpu_seconds(s.proc.pid)
                        f = storm(s.port, crc)
                        time.sleep(0.5)  # let tftpd-hpa reap its children
                        # tftpd-hpa ignores SIGCHLD: its children are reaped by the kernel
                        # and their CPU time reaches no cutime, so it cannot be read here
                        cpu = cpu_seconds(s.proc.pid) - before
                        f["server_cpu"] = math.nan if s.name == "tftpd-hpa" else cpu
                        figures[s.name].append(f)
                        time.sleep(1.0)  # let the sockets drain before the next storm
        finally:
            procs.stop_all()

    def med(name: str, key: str) -> float:
        return median([f[key] for f in figures[name]])

    bench = f"TFTP storm, {CLIENTS} x 1 MiB"
    for peer, target in (("dnsmasq", 1.0), ("tftpd-hpa", None)):
        result.rows += [
            Row(bench, "aggregate", "MiB/s", med("pxeforge", "agg"), peer, med(peer, "agg"),
                target=target),
            Row(bench, "p99 completion", "s", med("pxeforge", "p99"), peer, med(peer, "p99"),
                higher_is_better=False, target=target),
            Row(bench, "server CPU", "s", med("pxeforge", "server_cpu"), peer,
                med(peer, "server_cpu"), higher_is_better=False),
        ]  # fmt: skip
    d = result.details
    d.append(
        f"Median of {opts.runs} storms per server. Every storm: aggregate MiB/s / p50 s / "
        "p99 s / server CPU s / failed clients / client retransmits / client CPU s:"
    )
    d.append("")
    for name, runs in figures.items():
        for f in runs:
            d.append(
                f"- {name}: {f['agg']:.1f} / {f['p50']:.2f} / {f['p99']:.2f} / "
                f"{fmt(f['server_cpu'])} / {f['failed']:.0f} / {f['retransmits']:.0f} / "
                f"{f['client_cpu']:.2f}" + (f" ({f['errors']})" if f["errors"] else "")
            )
    d.append("")
    d.append(
        "The client's CPU time stays below the storm's duration (it is not the bottleneck) "
        "as long as client CPU s < total bytes / aggregate rate."
    )
    return result


def profile(px: Pxeforge, opts: Opts, result: BenchResult) -> list[str]:
    with disk_tmpdir("stormp") as tmp, netns("stormprof") as ns:
        root, crc = _setup(tmp, ns)
        procs = Procs(tmp)
        try:
            with inside(ns):
                s = tftp_servers.start("pxeforge", procs, px, root, tmp, cpu=SERVER_CPU)
                spy = PySpy(procs, s.proc.pid, tmp / "profile-storm.txt")
                f = storm(s.port, crc)
                raw = spy.stop()
        finally:
            procs.stop_all()
        lines = [
            f"**storm** (one storm under py-spy at 250 Hz: {f['agg']:.1f} MiB/s, "
            f"p99 {f['p99']:.2f} s):",
            "",
        ]
        return lines + summarize_profile(raw) + [""]


if __name__ == "__main__":
    standalone(__doc__ or "", run, profile)
