"""DORA/s benchmark: Kea's perfdhcp against pxeforge (and kea-dhcp4) across two namespaces.

Not a test (pytest does not collect it). Run as root::

    python tests/servers/dhcp_bench.py --rate 2000 --seconds 10 [--commit inline]
        [--db-dir /var/tmp] [--no-db] [--kea] [--repeat 3]

perfdhcp acts as a relay (giaddr = its own address, 10.77.0.2) and simulates 100,000
clients with random MACs; the server's pool is a /16 (64,516 addresses). Each line printed:
server, offered rate, achieved rate, DISCOVER-OFFER and REQUEST-ACK drop ratios and average
latencies. Leases go to an sqlite file in ``--db-dir`` (a real disk, fsync per commit).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from dhcp_lab import Lab, ServerProc, dhcp_lab, full_settings  # type: ignore[import-not-found]  # noqa: E402

CLIENT_IP = "10.77.0.2"


def perfdhcp(lab: Lab, rate: int, seconds: int) -> str:
    argv = ["perfdhcp", "-4", "-l", CLIENT_IP, "-r", str(rate), "-R", "100000"]
    argv += ["-p", str(seconds), "10.77.0.1"]
    done = subprocess.run(
        ["timeout", str(seconds + 60), "ip", "netns", "exec", lab.cli, *argv],
        capture_output=True,
        text=True,
        timeout=seconds + 90,
    )
    return done.stdout


def summary(name: str, rate: int, out: str) -> str:
    achieved = re.search(r"Rate: ([\d.]+)", out)
    drops = re.findall(r"drops ratio: ([\d.]+) ?%", out)
    delays = re.findall(r"avg delay: ([\d.]+) ms", out)
    return (
        f"{name:28s} offered {rate:5d}/s achieved {achieved.group(1) if achieved else '?':>9s}/s"
        f"  drops DO {drops[0] if drops else '?'}% RA {drops[1] if len(drops) > 1 else '?'}%"
        f"  latency DO {delays[0] if delays else '?'} ms"
        f" RA {delays[1] if len(delays) > 1 else '?'} ms"
    )


def run_pxeforge(args: argparse.Namespace, lab: Lab) -> str:
    settings = full_settings(
        subnet="10.77.0.0/16", pool="10.77.1.1-10.77.254.254", netboot_only=False, lease_time=3600
    )
    db = None
    if not args.no_db:
        db = Path(tempfile.mkdtemp(dir=args.db_dir)) / "leases.db"
    server = ServerProc(
        lab, settings, db=db, commit=args.commit, log_level="WARNING", report_events=False
    ).start()
    try:
        out = perfdhcp(lab, args.rate, args.seconds)
    finally:
        stats = server.stop()
    name = f"pxeforge ({'memory' if db is None else args.commit + ' commit'})"
    commits = stats["stats"].get("commits", 0)
    acks = stats["stats"].get("REQUEST:ack", 0)
    extra = f"  [{acks} ACKs in {commits} commits]" if commits else ""
    cpu = stats.get("cpu", {})
    handled = sum(v for k, v in stats["stats"].items() if ":" in k)
    if cpu and handled:
        used = cpu["user"] + cpu["system"]
        per = 1e6 / handled
        extra += (
            f"  [server CPU {used:.1f} s: {used * per:.0f} us per request"
            f" (user {cpu['user'] * per:.0f}, system {cpu['system'] * per:.0f})]"
        )
    return summary(name, args.rate, out) + extra


def run_kea(args: argparse.Namespace, lab: Lab) -> str:
    work = Path(tempfile.mkdtemp(dir=args.db_dir))
    conf = {
        "Dhcp4": {
            "interfaces-config": {"interfaces": ["srv0"], "dhcp-socket-type": "udp"},
            "lease-database": {
                "type": "memfile",
                "persist": True,
                "name": str(work / "leases4.csv"),
                "lfc-interval": 0,
            },
            "valid-lifetime": 3600,
            "subnet4": [
                {
                    "id": 1,
                    "subnet": "10.77.0.0/16",
                    "pools": [{"pool": "10.77.1.1 - 10.77.254.254"}],
                    "option-data": [{"name": "routers", "data": "10.77.0.1"}],
                }
            ],
            "loggers": [
                {
                    "name": "kea-dhcp4",
                    "output_options": [{"output": str(work / "kea.log")}],
                    "severity": "WARN",
                }
            ],
        }
    }
    (work / "kea.json").write_text(json.dumps(conf))
    env = dict(os.environ, KEA_PIDFILE_DIR=str(work), KEA_LOCKFILE_DIR=str(work))
    argv = ["timeout", str(args.seconds + 120), "ip", "netns", "exec", lab.srv]
    kea = subprocess.Popen(
        [*argv, "kea-dhcp4", "-c", str(work / "kea.json")],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        out = perfdhcp(lab, args.rate, args.seconds)
    finally:
        os.killpg(kea.pid, signal.SIGTERM)
        try:
            kea.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(kea.pid, signal.SIGKILL)
            kea.wait()
    return summary("kea-dhcp4 2.2 memfile", args.rate, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--commit", choices=["thread", "inline"], default="thread")
    parser.add_argument("--db-dir", default="/var/tmp")
    parser.add_argument("--no-db", action="store_true")
    parser.add_argument("--kea", action="store_true", help="also run kea-dhcp4 (memfile)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeat):
        with dhcp_lab() as lab:
            lab.in_cli("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", lab.cli_if)
            print(run_pxeforge(args, lab), flush=True)
            if args.kea:
                print(run_kea(args, lab), flush=True)


if __name__ == "__main__":
    main()
