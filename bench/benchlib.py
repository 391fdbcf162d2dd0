"""Shared plumbing for the benchmarks: processes, namespaces, timing, tables.

Every process a benchmark starts goes through `Procs.start` and is stopped by its PID in a
``finally`` (SIGTERM, then SIGKILL; each process runs in its own session, so a forking server's
children are cleaned up with it). Every namespace comes from `netns` and is deleted on the way
out. Every command runs with a timeout. Nothing here talks to any address but 127.0.0.1 or the
benchmark's own namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import io
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NS_PREFIX = f"pxfb-{os.getpid()}"
_ns_counter = itertools.count()
_CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20


# ----------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the results table: pxeforge against one peer on one metric."""

    bench: str
    metric: str
    unit: str
    pxeforge: float
    peer: str
    peer_value: float
    higher_is_better: bool = True
    target: float | None = None  # required ratio (pxeforge relative to peer), None = info only
    note: str = ""

    @property
    def ratio(self) -> float:
        a, b = self.pxeforge, self.peer_value
        if not (a > 0 and b > 0) or math.isnan(a) or math.isnan(b):
            return math.nan
        return a / b if self.higher_is_better else b / a

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return not math.isnan(self.ratio) and self.ratio >= self.target


@dataclass
class BenchResult:
    name: str  # the script's name: tftp_single, tftp_storm, dhcp_dora, http_file
    title: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown lines
    profile: list[str] = field(default_factory=list)  # markdown lines (py-spy summary)
    data: dict[str, Any] = field(default_factory=dict)  # raw figures (results.json)

    def missed(self) -> bool:
        return any(r.met is False for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        rows = [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in self.rows]
        return {"name": self.name, "title": self.title, "rows": rows, "data": self.data}


def fmt(value: float) -> str:
    if math.isnan(value):
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: Sequence[Row]) -> list[str]:
    out = [
        "| benchmark | metric | pxeforge | peer | peer value | ratio | target | met? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "—" if math.isnan(r.ratio) else f"{r.ratio:.2f}×"
        target = "—" if r.target is None else f"≥ {r.target:.1f}×"
        met = {None: "(info)", True: "yes", False: "**no**"}[r.met]
        out.append(
            f"| {r.bench} | {r.metric} ({r.unit}) | {fmt(r.pxeforge)} | {r.peer} | "
            f"{fmt(r.peer_value)} | {ratio} | {target} | {met} |"
        )
    return out


def median(values: Sequence[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return statistics.median(good) if good else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# ----------------------------------------------------------------------------- commands


def sh(argv: Sequence[str], *, timeout: float = 30, check: bool = True) -> str:
    """Run a short command; stdout (stderr folded in on failure)."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def version_of(argv: Sequence[str], pattern: str = r"\d+\.\d+(?:\.\d+)?(?:[-+~][\w.+~]+)?") -> str:
    """First version-looking token of a tool's version output ('missing' if absent)."""
    if shutil.which(argv[0]) is None:
        return "missing"
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(pattern, done.stdout + done.stderr)
    return m.group(0) if m else "unknown"


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (run bench/setup.sh)")


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of a process (children count once reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17
    return sum(int(x) for x in fields[11:15]) / _CLK_TCK


# ----------------------------------------------------------------------------- processes


class Procs:
    """Processes started by one benchmark; `stop_all` (in a finally) stops them by PID."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "ab")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=grace)
        # the process led its own session: leftovers (a forking server's children) share its
        # process group id, which is its PID
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop pid {proc.pid}: {exc}", file=sys.stderr)


def wait_until(pred: Callable[[], bool], *, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    def seen() -> bool:
        if proc.poll() is not None:
            tail = path.read_text(errors="replace")[-2000:] if path.exists() else ""
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}:\n{tail}")
        return path.exists() and text in path.read_text(errors="replace")

    wait_until(seen, timeout=timeout, what=f"{text!r} in {path}")


def tcp_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- pxeforge


class Pxeforge:
    """How to run pxeforge: from a git ref exported to a temp dir, or from the working tree."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.env = dict(os.environ)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if ref == "worktree":
            self.commit = _git("rev-parse", "HEAD").strip() + "+worktree"
            return
        self.commit = _git("rev-parse", ref).strip()
        self._tmp = tempfile.TemporaryDirectory(prefix="pxfb-src-")
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", self.commit, "src"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(self._tmp.name, filter="data")
        src = str(Path(self._tmp.name) / "src")
        self.env["PYTHONPATH"] = src + os.pathsep + self.env.get("PYTHONPATH", "")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pxeforge", *args]

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _git(*args: str) -> str:
    return sh(["git", "-C", str(REPO), *args], timeout=30)


# ----------------------------------------------------------------------------- files


def _fs_type(path: Path) -> str:
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mount = parts[1].replace("\\040", " ")
        target = str(path.resolve())
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(
            best
        ):
            best, kind = mount, parts[2]
    return kind


@contextlib.contextmanager
def disk_tmpdir(tag: str) -> Iterator[Path]:
    """A temp dir on a real disk (/var/tmp), refusing tmpfs: leases must really hit a disk."""
    base = Path(os.environ.get("PXFB_TMP", "/var/tmp"))
    kind = _fs_type(base)
    if kind in ("tmpfs", "ramfs"):
        raise SystemExit(f"{base} is {kind}; set PXFB_TMP to a directory on a real disk")
    path = Path(tempfile.mkdtemp(prefix=f"pxfb-{tag}-", dir=base))
    path.chmod(0o755)  # in.tftpd (user tftp), dnsmasq and nginx workers (nobody) read from it
    try:
        yield path
    finally:
        if os.environ.get("PXFB_KEEP"):
            print(f"bench: kept {path} (PXFB_KEEP)", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def fs_type(path: Path) -> str:
    return _fs_type(path)


def random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = min(left, 4 * MiB)
            f.write(os.urandom(chunk))
            left -= chunk
    path.chmod(0o644)


# ----------------------------------------------------------------------------- namespaces

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def netns(tag: str) -> Iterator[str]:
    """A fresh network namespace ``pxfb-<pid>-<n>-<tag>`` with lo up; always deleted."""
    name = f"{NS_PREFIX}-{next(_ns_counter)}-{tag}"
    sh(["ip", "netns", "add", name])
    try:
        sh(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        sh(["ip", "netns", "del", name], check=False)


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Move this (single-threaded) process into ``ns``; children started meanwhile inherit it."""
    with open("/proc/self/ns/net", "rb") as home, open(f"/run/netns/{ns}", "rb") as there:
        if _libc.setns(there.fileno(), _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns(back): {os.strerror(err)}")


def add_address_holder(ns: str) -> None:
    """A veth pair inside ``ns`` with a private address: glibc's AI_ADDRCONFIG sees a
    non-loopback IPv4 address, so ``in.tftpd -a 127.0.0.1:PORT`` does not exit 66. No traffic
    is sent over it (both ends stay in ``ns``)."""
    sh(["ip", "-n", ns, "link", "add", "hold0", "type", "veth", "peer", "name", "hold1"])
    sh(["ip", "-n", ns, "addr", "add", "192.168.254.1/30", "dev", "hold0"])
    sh(["ip", "-n", ns, "link", "set", "hold0", "up"])
    sh(["ip", "-n", ns, "link", "set", "hold1", "up"])


# ----------------------------------------------------------------------------- profiling


class PySpy:
    """``py-spy record`` attached to a PID; `stop` ends it (SIGINT) and returns the raw file."""

    def __init__(self, procs: Procs, pid: int, out: Path, rate: int = 250) -> None:
        if shutil.which("py-spy") is None:
            raise SystemExit("py-spy is missing: pip install py-spy")
        self.out = out
        self.procs = procs
        argv = ["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                "--output", str(out), "--nonblocking"]  # fmt: skip
        for attempt in range(3):  # attaching right after start sometimes fails: retry
            self.proc = procs.start(f"py-spy-{pid}-{attempt}", argv)
            time.sleep(1.5)
            if self.proc.poll() is None:
                return
        log = procs.logdir / f"py-spy-{pid}-2.log"
        raise RuntimeError(f"py-spy could not attach to {pid}: {log.read_text()[-500:]}")

    def stop(self) -> Path:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        self.procs.stop(self.proc)
        return self.out


_BUCKETS = {  # label: a marker in the stack text
    "logging": "(logging/__init__.py",
    "thread-pool hand-offs": "(concurrent/futures/",
    "epoll wait (selectors)": "(selectors.py",
    "dataclass __init__": "__create_fn__",
    "ipaddress": "(ipaddress.py",
}
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str, *, line: bool) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m["file"]
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m['fn']} ({file}{':' + m['line'] if line and m['line'] else ''})"


def summarize_profile(raw: Path, top: int = 8) -> list[str]:
    """Markdown lines: the hottest functions by own time (with their hottest line) and the
    hottest pxeforge/aiohttp functions by inclusive time."""
    own: dict[str, int] = {}
    own_line: dict[tuple[str, str], int] = {}
    incl: dict[str, int] = {}
    bucket = dict.fromkeys(_BUCKETS, 0)
    total = 0
    if not raw.exists():
        return [f"(no profile: {raw.name} missing)"]
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f]
        while frames and frames[0].startswith(("process ", "thread ")):
            frames = frames[1:]
        if not frames:
            continue
        total += count
        leaf = _short(frames[-1], line=False)
        own[leaf] = own.get(leaf, 0) + count
        m = _FRAME.match(frames[-1].strip())
        key = (leaf, (m["line"] or "?") if m else "?")
        own_line[key] = own_line.get(key, 0) + count
        for name in {_short(f, line=False) for f in frames}:
            incl[name] = incl.get(name, 0) + count
        for label, marker in _BUCKETS.items():
            if marker in stack:
                bucket[label] += count
    if not total:
        return ["(profile empty)"]

    def pct(n: int) -> str:
        return f"{100 * n / total:4.1f} %"

    out = [f"{total} samples (on-CPU, all threads). Own time:", ""]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines = sorted(
            ((ln, c) for (f, ln), c in own_line.items() if f == name), key=lambda x: -x[1]
        )
        hot = f" — line {lines[0][0]}: {pct(lines[0][1]).strip()}" if len(lines) > 1 else ""
        out.append(f"- {pct(n)} `{name}`{hot}")
    out += ["", "Inclusive time (pxeforge and aiohttp functions below the CLI):", ""]
    wanted = [
        (n, c)
        for n, c in incl.items()
        if ("pxeforge/" in n or "aiohttp/" in n)
        and "pxeforge/cli/" not in n
        and "pxeforge/__main__" not in n
    ]
    for name, n in sorted(wanted, key=lambda kv: -kv[1])[:top]:
        out.append(f"- {pct(n)} `{name}`")
    buckets = [f"{label} {pct(n).strip()}" for label, n in bucket.items() if n]
    if buckets:
        out += ["", "Inclusive time in the standard library: " + ", ".join(buckets) + "."]
    return out


# ----------------------------------------------------------------------------- facts


def machine_facts(px: Pxeforge) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pxeforge": px.commit[:12] + (f" ({px.ref})" if px.ref != "worktree" else ""),
        "tftpd-hpa": version_of(["in.tftpd", "-V"]),
        "dnsmasq": version_of(["dnsmasq", "--version"]),
        "kea-dhcp4": version_of(["kea-dhcp4", "-v"]),
        "perfdhcp": version_of(["perfdhcp", "-v"]),
        "nginx": version_of(["nginx", "-v"]),
        "curl": version_of(["curl", "--version"]),
        "atftp": version_of(["atftp", "--version"]),
        "wrk": version_of(["wrk", "-v"]),
        "tmp filesystem": fs_type(Path(os.environ.get("PXFB_TMP", "/var/tmp"))),
    }


def dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


# ----------------------------------------------------------------------------- entry points


@dataclass
class Opts:
    ref: str = "main"  # git ref of pxeforge to run, or "worktree"
    runs: int = 3
    profile: bool = False  # profile pxeforge with py-spy even when every target is met


def parse_opts(doc: str, argv: Sequence[str] | None = None) -> Opts:
    import argparse

    ap = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    ap.add_argument(
        "--ref",
        default="main",
        help="git ref of pxeforge to benchmark (exported to a temp dir), or 'worktree' for "
        "the working tree as it is (default: main)",
    )
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument(
        "--profile", action="store_true", help="profile pxeforge even if no target is missed"
    )
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks need root (network namespaces, taskset of servers)")
    return Opts(ref=a.ref, runs=max(1, a.runs), profile=a.profile)


def report(result: BenchResult) -> str:
    lines = [f"## {result.title}", "", *table(result.rows), "", *result.details]
    if result.profile:
        lines += ["", "### Where the time goes (py-spy, pxeforge)", "", *result.profile]
    return "\n".join(lines) + "\n"


def standalone(
    doc: str,
    run_fn: Callable[[Pxeforge, Opts], BenchResult],
    profile_fn: Callable[[Pxeforge, Opts, BenchResult], list[str]],
) -> None:
    """``python bench/<name>.py``: measure, profile when a target is missed, print markdown."""
    opts = parse_opts(doc)
    px = Pxeforge(opts.ref)
    try:
        result = run_fn(px, opts)
        if opts.profile or result.missed():
            result.profile = profile_fn(px, opts, result)
        print(report(result))
    finally:
        px.close()
