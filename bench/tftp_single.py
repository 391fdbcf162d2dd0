"""TFTP, one 32 MiB file at blksize 1468: pxeforge vs tftpd-hpa and dnsmasq, windowsize 1 and 16.

Setup: a private network namespace (loopback, plus an idle veth holding an address so
``in.tftpd -a 127.0.0.1:PORT`` starts), the three servers running side by side, and each
client run pinned to the same vCPU as the servers (``taskset -c 0``): a lock-step transfer
then measures the server's per-packet cost rather than the cross-vCPU wake-up latency (see
/work/shared/docs/peers.md). Windowsize 1 uses curl ``tftp://`` (it sends blksize, tsize and
timeout, never windowsize); windowsize 16 uses atftp 0.8 (``--option "windowsize 16"``).
tftpd-hpa does not implement RFC 7440, so with atftp it runs lock-step. A third case (for
information, no target) runs atftp on vCPU 1, so client and server work in parallel as two
machines would: that is where a window pays off. The time is the
client process's wall time (fork and exec included, ~2 ms, the same for every server); every
download is compared with the source file. The runs rotate the server order.
"""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
import time
from pathlib import Path

import tftp_servers
from benchlib import (
    BenchResult,
    MiB,
    Opts,
    Procs,
    Pxeforge,
    PySpy,
    Row,
    add_address_holder,
    disk_tmpdir,
    inside,
    median,
    netns,
    random_file,
    require,
    standalone,
    summarize_profile,
)

SIZE = 32 * MiB
BLKSIZE = 1468
FILE = "big.bin"
CPU = 0
TITLE = "TFTP: one 32 MiB file, blksize 1468 (server and client on vCPU 0 unless said)"
# (label, windowsize, client vCPU, target ratio vs tftpd-hpa). The last case (for information)
# lets client and server run in parallel, as two machines would: what a window buys then.
CASES = [
    ("windowsize 1, curl", 1, CPU, 1.0),
    ("windowsize 16, atftp", 16, CPU, 2.0),
    ("windowsize 16, atftp, client on vCPU 1", 16, 1, None),
]
_DONE = re.compile(r"'big\.bin' (\w+): (\d+) bytes in ([\d.]+) s \((\d+) retransmits\)")


def client_argv(windowsize: int, port: int, out: Path, cpu: int = CPU) -> list[str]:
    pin = ["taskset", "-c", str(cpu)]
    if windowsize == 1:
        return pin + [
            "curl", "-sS", "--max-time", "60", "--tftp-blksize", str(BLKSIZE), "-o", str(out),
            f"tftp://{tftp_servers.HOST}:{port}/{FILE}",
        ]  # fmt: skip
    return pin + [
        "atftp", "--option", f"windowsize {windowsize}", "--option", f"blksize {BLKSIZE}",
        "-g", "-r", FILE, "-l", str(out), tftp_servers.HOST, str(port),
    ]  # fmt: skip


def transfer(argv: list[str], out: Path, sha: str) -> tuple[float, str]:
    """(seconds, problem) for one download; seconds is NaN when it failed."""
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        return math.nan, "client timed out (90 s)"
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        return math.nan, f"client exited {done.returncode}: {done.stderr.strip()[-200:]}"
    if not out.exists() or out.stat().st_size != SIZE:
        size = out.stat().st_size if out.exists() else 0
        return math.nan, f"short download ({size} bytes)"
    if hashlib.sha256(out.read_bytes()).hexdigest() != sha:
        return math.nan, "download differs from the file"
    out.unlink()
    return seconds, ""


def _new_log(path: Path, seen: int) -> tuple[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[seen:], len(text)


def run(px: Pxeforge, opts: Opts) -> BenchResult:
    require("in.tftpd", "dnsmasq", "curl", "atftp", "taskset", "ip")
    result = BenchResult("tftp_single", TITLE)
    with disk_tmpdir("tftp1") as tmp, netns("tftp") as ns:
        root = tmp / "root"
        root.mkdir(mode=0o755)
        root.chmod(0o755)
        random_file(root / FILE, SIZE)
        random_file(root / "vmlinuz", 4096)
        sha = hashlib.sha256((root / FILE).read_bytes()).hexdigest()
        add_address_holder(ns)
        procs = Procs(tmp)
        try:
            with inside(ns):
                servers = [
                    tftp_servers.start(n, procs, px, root, tmp, cpu=CPU)
                    for n in tftp_servers.SERVERS
                ]
                grants = {
                    s.name: tftp_servers.granted(
                        s, FILE, {"blksize": str(BLKSIZE), "windowsize": "16", "tsize": "0"}
                    )
                    for s in servers
                }
                seconds: dict[tuple[str, str], list[float]] = {}
                problems: list[str] = []
                pxf_log_seen = 0
                pxf_notes: dict[str, list[str]] = {}
                for label, ws, cpu, _target in CASES:
                    for i in range(opts.runs):
                        order = servers[i % len(servers) :] + servers[: i % len(servers)]
                        for s in order:
                            out = tmp / f"out-{s.name}.bin"
                            argv = client_argv(ws, s.port, out, cpu)
                            t, problem = transfer(argv, out, sha)
                            seconds.setdefault((s.name, label), []).append(t)
                            if problem:
                                problems.append(f"{s.name}, {label}, run {i + 1}: {problem}")
                            if s.name == "pxeforge":
                                new, pxf_log_seen = _new_log(s.log, pxf_log_seen)
                                for m in _DONE.finditer(new):
                                    if m[1] == "probed":  # the OACK probe above
                                        continue
                                    pxf_notes.setdefault(label, []).append(
                                        f"{m[1]} in {float(m[3]):.3f} s, {m[4]} retransmits"
                                    )
        finally:
            procs.stop_all()

    def mibps(name: str, label: str) -> list[float]:
        return [SIZE / MiB / t if t == t else math.nan for t in seconds[(name, label)]]

    for label, _ws, _cpu, target in CASES:
        px_v = median(mibps("pxeforge", label))
        for peer in ("tftpd-hpa", "dnsmasq"):
            result.rows.append(
                Row(
                    bench=f"TFTP 32 MiB, {label}",
                    metric="throughput",
                    unit="MiB/s",
                    pxeforge=px_v,
                    peer=peer,
                    peer_value=median(mibps(peer, label)),
                    target=target if peer == "tftpd-hpa" else None,
                )
            )
    d = result.details
    d.append(f"Median of {opts.runs} runs. Every run (MiB/s):")
    d.append("")
    for label, *_ in CASES:
        for name in tftp_servers.SERVERS:
            runs = ", ".join("failed" if v != v else f"{v:.1f}" for v in mibps(name, label))
            d.append(f"- {label}, {name}: {runs}")
    d.append("")
    d.append("What each server grants to `blksize 1468, windowsize 16, tsize 0` (its OACK):")
    d.append("")
    for name, text in grants.items():
        d.append(f"- {name}: {text}")
    d.append("")
    for label, notes in pxf_notes.items():
        d.append(f"- pxeforge's own log, {label}: " + "; ".join(notes))
    for p in problems:
        d.append(f"- problem: {p}")
    return result


def profile(px: Pxeforge, opts: Opts, result: BenchResult) -> list[str]:
    """Run each missed case against pxeforge alone under py-spy; summarize."""
    missed = {r.bench for r in result.rows if r.met is False} or {r.bench for r in result.rows}
    lines: list[str] = []
    with disk_tmpdir("tftp1p") as tmp, netns("tftpprof") as ns:
        root = tmp / "root"
        root.mkdir(mode=0o755)
        random_file(root / FILE, SIZE)
        random_file(root / "vmlinuz", 4096)
        sha = hashlib.sha256((root / FILE).read_bytes()).hexdigest()
        procs = Procs(tmp)
        try:
            with inside(ns):
                for n, (label, ws, cpu, _) in enumerate(CASES):
                    if f"TFTP 32 MiB, {label}" not in missed:
                        continue
                    s = tftp_servers.start("pxeforge", procs, px, root, tmp, cpu=CPU)
                    spy = PySpy(procs, s.proc.pid, tmp / f"profile-{n}.txt")
                    out = tmp / "out.bin"
                    for _ in range(5):
                        transfer(client_argv(ws, s.port, out, cpu), out, sha)
                    raw = spy.stop()
                    procs.stop(s.proc)
                    lines += [f"**{label}** (5 transfers, py-spy at 250 Hz):", ""]
                    lines += summarize_profile(raw)
                    lines.append("")
        finally:
            procs.stop_all()
    return lines


if __name__ == "__main__":
    standalone(__doc__ or "", run, profile)
