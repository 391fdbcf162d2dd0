"""The three TFTP servers under test, started inside the benchmark's namespace.

pxeforge runs as ``pxeforge serve --dhcp off`` (its TFTP and HTTP servers, default settings),
tftpd-hpa as ``in.tftpd -L`` (standalone, forks one child per transfer), dnsmasq with DNS off
(``--port=0``) and only its TFTP server. dnsmasq's TFTP port is fixed at 69 (it has no option to
change it), which is why the TFTP benchmarks run in a private network namespace; its default
limit of 50 concurrent transfers is raised with ``--tftp-max`` for the storm. All three are
started with ``taskset -c CPU``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchlib import Procs, Pxeforge, wait_for_text, wait_until
from tftp_client import ERROR, probe

HOST = "127.0.0.1"
PORTS = {"pxeforge": 6969, "tftpd-hpa": 6970, "dnsmasq": 69}
SERVERS = tuple(PORTS)


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def start(name: str, procs: Procs, px: Pxeforge, root: Path, work: Path, *, cpu: int) -> Server:
    """Start ``name`` serving ``root`` (state files go in ``work``) and wait until it answers."""
    port = PORTS[name]
    pin = ["taskset", "-c", str(cpu)]
    env = None
    if name == "pxeforge":
        state = work / "pxeforge-data"
        state.mkdir(exist_ok=True)
        argv = pin + px.argv(
            "serve", "--dhcp", "off", "--address", HOST, "--tftp-port", str(port),
            "--http-port", "8080", "--root", str(root), "--data-dir", str(state),
            "--kernel", str(root / "vmlinuz"),
        )  # fmt: skip
        env = px.env
    elif name == "tftpd-hpa":
        argv = pin + ["in.tftpd", "-L", "-s", str(root), "-a", f"{HOST}:{port}"]
    elif name == "dnsmasq":
        argv = pin + [
            "dnsmasq", "--port=0", "--enable-tftp", f"--tftp-root={root}",
            f"--listen-address={HOST}", "--bind-interfaces", "--keep-in-foreground",
            "--conf-file=/dev/null", f"--pid-file={work / 'dnsmasq.pid'}",
            "--user=nobody", "--group=nogroup", "--log-facility=-", "--tftp-max=1000",
        ]  # fmt: skip
    else:
        raise ValueError(name)
    proc = procs.start(name, argv, env=env)
    server = Server(name, port, proc, procs.logdir / f"{name}.log")

    def answering() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited {proc.returncode}: {server.log.read_text(errors='replace')[-1500:]}"
            )
        answer = probe(HOST, port, "no-such-file", {}, wait=0.2)
        return answer is not None and answer[0] == ERROR

    if name == "pxeforge":
        # TFTP answers before `serve` has started everything else (the inventory database,
        # conductor and REST API, credentials hashed with bcrypt): wait for all of it, so
        # that no measurement shares the CPU with start-up work.
        wait_for_text(server.log, "pxeforge serving", proc, timeout=60)
    wait_until(answering, timeout=30, what=f"{name} to answer TFTP on {HOST}:{port}")
    return server


def granted(server: Server, filename: str, options: dict[str, str]) -> str:
    """What the server grants of ``options`` (its OACK), as text for the report."""
    answer = probe(HOST, server.port, filename, options)
    if answer is None:
        return "no answer"
    op, opts = answer
    if op == ERROR:
        return f"ERROR {opts.get('error', '')}"
    keys = ("blksize", "windowsize", "tsize")
    got = ", ".join(f"{k} {opts[k]}" for k in keys if k in opts)
    return got or "no OACK (plain DATA, 512-byte blocks)"
