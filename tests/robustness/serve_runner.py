"""Run the TFTP and HTTP servers of `pxeforge serve` until SIGTERM; for the robustness tests.

Usage: ``python serve_runner.py ROOT KERNEL [--log LEVEL] [--lifetime S]``. Both listen on
127.0.0.1, port 0, and read through `BootFiles` over ``ROOT`` with a `StaticBooter` booting
``KERNEL`` (the same file source `pxeforge serve` builds). Prints ``READY <tftp_port>
<http_port>`` once listening, ``STATS <json>`` (the `TftpStats` fields plus ``active``) on
SIGUSR1 and again when stopped. The log goes to stderr. It stops on SIGTERM, when its stdin
reaches end of file (the test that started it is gone) or after ``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path

from pxeforge.boot.booter import StaticBooter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.resolve import BootFiles
from pxeforge.servers.http import start_http
from pxeforge.servers.tftp import TftpServer, start_tftp


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _stats(tftp: TftpServer) -> str:
    stats = dataclasses.asdict(tftp.stats)
    stats["active"] = tftp.active
    return "STATS " + json.dumps(stats)


async def main(args: argparse.Namespace) -> None:
    booter = StaticBooter(Path(args.kernel), (), "console=ttyS0")
    registry = ClientRegistry()
    files = BootFiles(booter, Path(args.root), registry, http_base="http://127.0.0.1:1")
    http = await start_http("127.0.0.1", 0, files, booter=booter, registry=registry)
    tftp = await start_tftp("127.0.0.1", 0, files)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: _emit(_stats(tftp)))
    stdin = sys.stdin.fileno()
    loop.add_reader(stdin, lambda: None if os.read(stdin, 4096) else stop.set())
    loop.call_later(args.lifetime, stop.set)
    _emit(f"READY {tftp.port} {http.port}")
    try:
        await stop.wait()
    finally:
        await tftp.close()
        await http.close()
        _emit(_stats(tftp))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("kernel")
    parser.add_argument("--log", default="INFO")
    parser.add_argument("--lifetime", type=float, default=600.0)
    ns = parser.parse_args()
    logging.basicConfig(
        level=ns.log, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    asyncio.run(main(ns))
