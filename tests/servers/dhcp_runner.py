"""Run `start_dhcp` in this process until SIGTERM/SIGINT; for tests and benchmarks.

Usage: ``python dhcp_runner.py SETTINGS_JSON [--db PATH] [--commit thread|inline]
[--ignore MAC]... [--events]``. SETTINGS_JSON holds `Settings` fields as in a TOML config
(``{"address": "10.77.0.1", "pool": "10.77.0.100-10.77.0.150", ...}``).

Prints ``READY <port> <proxy_port>`` once listening, ``EVENT <json>`` per decision when
``--events`` is given, and ``STATS <json>`` (counters, dropped) when stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.files import BootFile
from pxeforge.boot.machine import BootSpec, Machine
from pxeforge.config import Settings, _coerce
from pxeforge.leases import LeaseStore
from pxeforge.servers.dhcp import DhcpEvent, start_dhcp


class TinyBooter:
    """Everybody boots ``vmlinuz`` except the MACs listed in ``ignore``."""

    per_machine = False

    def __init__(self, ignore: set[str]) -> None:
        self.ignore = ignore

    def boot_spec(self, machine: Machine) -> BootSpec | None:
        return None if machine.mac in self.ignore else BootSpec(kernel="vmlinuz")

    def open_file(self, ref: str) -> BootFile | None:
        return None


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _event_json(event: DhcpEvent) -> str:
    d: dict[str, Any] = asdict(event)
    d["ip"] = None if event.ip is None else str(event.ip)
    return json.dumps(d)


async def main(args: argparse.Namespace) -> None:
    raw = json.loads(args.settings)
    settings = Settings(**{k: _coerce(k, v) for k, v in raw.items()})
    store = LeaseStore(Path(args.db)) if args.db else None
    on_event = (lambda e: _emit("EVENT " + _event_json(e))) if args.events else None
    server = await start_dhcp(
        settings,
        TinyBooter(set(args.ignore)),
        ClientRegistry(),
        pool=None,
        store=store,
        on_event=on_event,
        commit=args.commit,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _emit(f"READY {server.port} {server.proxy_port}")
    try:
        await stop.wait()
    finally:
        await server.close()
        t = os.times()
        cpu = {"user": t.user, "system": t.system}
        _emit(
            "STATS "
            + json.dumps({"stats": dict(server.stats), "dropped": server.dropped, "cpu": cpu})
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("settings")
    parser.add_argument("--db")
    parser.add_argument("--commit", default="thread", choices=["thread", "inline"])
    parser.add_argument("--ignore", action="append", default=[])
    parser.add_argument("--events", action="store_true")
    parser.add_argument("--log", default="WARNING")
    ns = parser.parse_args()
    logging.basicConfig(level=ns.log, stream=sys.stderr, format="%(levelname)s %(message)s")
    asyncio.run(main(ns))
