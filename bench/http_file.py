"""HTTP: one 256 MiB file, pxeforge vs nginx, with one curl and with wrk (16 connections).

Setup: a private network namespace (loopback only). pxeforge runs as
``pxeforge serve --dhcp off`` (its aiohttp boot server: ``web.FileResponse``, i.e. sendfile);
nginx from a temp config: ``worker_processes 1`` (one process serving, like pxeforge),
``sendfile on``, ``tcp_nopush on``, access log on, ``daemon off``, pid and logs in the temp
dir. Nothing is pinned: with sendfile the copy happens in the kernel, and the clients need
the CPU. Both servers are warmed up with one unmeasured download (page cache).

* one curl: ``curl -o /dev/null``, size / ``time_total``; median of ``--runs``;
* wrk: ``wrk -t2 -c16 -d8s``, bytes read / duration (from a Lua ``done`` hook); median of
  ``--runs``. Runs rotate the server order.
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

from benchlib import (
    BenchResult,
    MiB,
    Opts,
    Procs,
    Pxeforge,
    PySpy,
    Row,
    disk_tmpdir,
    inside,
    median,
    netns,
    random_file,
    require,
    standalone,
    summarize_profile,
    tcp_ready,
    wait_for_text,
    wait_until,
)

SIZE = 256 * MiB
FILE = "big256.bin"
HOST = "127.0.0.1"
PORTS = {"pxeforge": 8080, "nginx": 8081}
WRK_SECONDS = 8
TITLE = "HTTP: one 256 MiB file (loopback, unpinned)"
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("PXFB bytes=%d duration_us=%d requests=%d errors=%d\\n",
    summary.bytes, summary.duration, summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def nginx_conf(prefix: Path, root: Path, port: int) -> str:
    return f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/nginx-access.log;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    server {{
        listen {HOST}:{port};
        root {root};
    }}
}}
"""


def start(name: str, procs: Procs, px: Pxeforge, root: Path, tmp: Path) -> subprocess.Popen[bytes]:
    port = PORTS[name]
    if name == "pxeforge":
        state = tmp / "pxeforge-data"
        state.mkdir(exist_ok=True)
        argv = px.argv(
            "serve", "--dhcp", "off", "--address", HOST, "--http-port", str(port),
            "--tftp-port", "6969", "--root", str(root), "--data-dir", str(state),
            "--kernel", str(root / "vmlinuz"),
        )  # fmt: skip
        proc = procs.start(name, argv, env=px.env)
        wait_for_text(procs.logdir / f"{name}.log", "pxeforge serving", proc, timeout=60)
    else:
        prefix = tmp / "nginx"
        prefix.mkdir(exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, root, port))
        argv = ["nginx", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "startup.log")]
        proc = procs.start(name, argv)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited {proc.returncode}; see {procs.logdir}")
        return tcp_ready(HOST, port)

    wait_until(up, timeout=30, what=f"{name} on {HOST}:{port}")
    curl_once(port)  # warm-up, and a check that the file is served whole
    return proc


def curl_once(port: int) -> float:
    """MiB/s of one download (NaN if it failed or was short)."""
    argv = [
        "curl", "-sS", "--max-time", "120", "-o", "/dev/null",
        "-w", "%{http_code} %{size_download} %{time_total}", f"http://{HOST}:{port}/{FILE}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=150)
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 3 or parts[0] != "200" or int(parts[1]) != SIZE:
        print(f"http_file: curl on :{port} failed: {done.stdout} {done.stderr}")
        return math.nan
    return SIZE / MiB / float(parts[2])


def wrk_once(port: int, lua: Path) -> tuple[float, str]:
    argv = [
        "wrk", "-t2", "-c16", f"-d{WRK_SECONDS}s", "--timeout", "60s", "-s", str(lua),
        f"http://{HOST}:{port}/{FILE}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=WRK_SECONDS + 90)
    m = re.search(r"PXFB bytes=(\d+) duration_us=(\d+) requests=(\d+) errors=(\d+)", done.stdout)
    if done.returncode != 0 or not m:
        return math.nan, f"wrk failed: {done.stdout[-300:]} {done.stderr[-300:]}"
    mibps = int(m[1]) / MiB / (int(m[2]) / 1e6)
    return mibps, f"{m[3]} responses, {m[4]} errors"


def _setup(tmp: Path) -> Path:
    root = tmp / "root"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    random_file(root / FILE, SIZE)
    random_file(root / "vmlinuz", 4096)
    (tmp / "report.lua").write_text(WRK_LUA)
    return root


def run(px: Pxeforge, opts: Opts) -> BenchResult:
    require("nginx", "curl", "wrk", "ip")
    result = BenchResult("http_file", TITLE)
    curl: dict[str, list[float]] = {n: [] for n in PORTS}
    wrk: dict[str, list[float]] = {n: [] for n in PORTS}
    notes: list[str] = []
    with disk_tmpdir("http") as tmp, netns("http") as ns:
        root = _setup(tmp)
        procs = Procs(tmp)
        try:
            with inside(ns):
                for name in PORTS:
                    start(name, procs, px, root, tmp)
                names = list(PORTS)
                for i in range(opts.runs):
                    for name in names[i % 2 :] + names[: i % 2]:
                        curl[name].append(curl_once(PORTS[name]))
                for i in range(opts.runs):
                    for name in names[i % 2 :] + names[: i % 2]:
                        v, note = wrk_once(PORTS[name], tmp / "report.lua")
                        wrk[name].append(v)
                        notes.append(f"{name}: {note}")
        finally:
            procs.stop_all()
    for label, figures in (("one curl", curl), ("wrk, 16 connections", wrk)):
        result.rows.append(
            Row(f"HTTP 256 MiB, {label}", "throughput", "MiB/s", median(figures["pxeforge"]),
                "nginx", median(figures["nginx"]), target=0.9)
        )  # fmt: skip
    result.data = {"curl": curl, "wrk": wrk}
    d = result.details
    d.append(f"Median of {opts.runs} runs. Every run (MiB/s):")
    d.append("")
    for label, figures in (("one curl", curl), ("wrk", wrk)):
        for name, vals in figures.items():
            d.append(f"- {label}, {name}: " + ", ".join(f"{v:.0f}" for v in vals))
    d.append("")
    d.append("wrk runs: " + "; ".join(notes))
    return result


def profile(px: Pxeforge, opts: Opts, result: BenchResult) -> list[str]:
    with disk_tmpdir("httpp") as tmp, netns("httpprof") as ns:
        root = _setup(tmp)
        procs = Procs(tmp)
        try:
            with inside(ns):
                proc = start("pxeforge", procs, px, root, tmp)
                spy = PySpy(procs, proc.pid, tmp / "profile-http.txt")
                for _ in range(3):
                    curl_once(PORTS["pxeforge"])
                wrk_once(PORTS["pxeforge"], tmp / "report.lua")
                raw = spy.stop()
        finally:
            procs.stop_all()
        summary = summarize_profile(raw)  # before the temp dir goes
    return ["**3 curl downloads and one wrk run** (py-spy at 250 Hz):", "", *summary]


if __name__ == "__main__":
    standalone(__doc__ or "", run, profile)
