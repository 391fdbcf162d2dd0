"""A small asyncio TFTP read client for the boot-storm benchmark, and an option probe.

Theory of operation: N clients in one process, one UDP socket each, all started at once.
Each socket is read with ``loop.add_reader`` (a callback, no coroutine per packet), so the
client spends a few microseconds per DATA block and one process can keep up with a C server.
A client sends RRQ (octet, ``blksize``, ``tsize 0``), answers OACK with ACK 0 and DATA n with
ACK n (lock-step, RFC 1350/2347/2348), re-ACKs a duplicate of the last block, and on silence
retransmits its last packet after ``timeout`` seconds, at most ``retries`` times in a row; the
whole storm is cut off after ``cap`` seconds. Completion times are measured from the moment
the first RRQ is sent. The payload is checked (length and CRC-32 against the expected ones).

Run as a script it prints one JSON object (used by tftp_storm.py, which runs it in the
benchmark's namespace pinned to its own vCPU)::

    python bench/tftp_client.py --port 69 --file storm.bin --clients 200 --size 1048576
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6


@dataclass
class Fetch:
    ok: bool = False
    seconds: float = 0.0  # since the storm started
    bytes: int = 0
    crc: int = 0
    retransmits: int = 0
    duplicates: int = 0
    error: str = ""


def rrq(filename: str, options: dict[str, str]) -> bytes:
    parts = [filename.encode(), b"octet"]
    for k, v in options.items():
        parts += [k.encode(), v.encode()]
    return struct.pack("!H", RRQ) + b"\0".join(parts) + b"\0"


def parse_oack(data: bytes) -> dict[str, str]:
    items = data[2:].split(b"\0")
    return {
        items[i].decode(errors="replace").lower(): items[i + 1].decode(errors="replace")
        for i in range(0, len(items) - 1, 2)
    }


class _Client:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: tuple[str, int],
        request: bytes,
        blksize: int,
        timeout: float,
        retries: int,
        t0: float,
    ) -> None:
        self.loop = loop
        self.server = server
        self.tid: tuple[str, int] | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))
        self.wanted_blksize = blksize
        self.blksize = 512
        self.timeout = timeout
        self.retries = retries
        self.t0 = t0
        self.next_block = 1
        self.last_sent = request
        self.last_dest = server
        self.in_a_row = 0
        self.progress = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.result = Fetch()
        self.done: asyncio.Future[Fetch] = loop.create_future()

    def start(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self.on_readable)
        self.progress = self.loop.time()
        self.send(self.last_sent, self.server)
        self.timer = self.loop.call_at(self.progress + self.timeout, self.on_timer)

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        self.last_sent, self.last_dest = data, dest
        try:
            self.sock.sendto(data, dest)
        except OSError:
            pass  # the timer retransmits

    def finish(self, ok: bool, error: str = "") -> None:
        if self.done.done():
            return
        r = self.result
        r.ok, r.error = ok, error
        r.seconds = time.perf_counter() - self.t0
        if self.timer is not None:
            self.timer.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.done.set_result(r)

    def on_timer(self) -> None:
        self.timer = None
        if self.done.done():
            return
        now = self.loop.time()
        due = self.progress + self.timeout
        if now < due:  # progress since the timer was armed: sleep again
            self.timer = self.loop.call_at(due, self.on_timer)
            return
        self.in_a_row += 1
        if self.in_a_row > self.retries:
            self.finish(False, f"timed out at block {self.next_block}")
            return
        self.result.retransmits += 1
        self.progress = now
        self.send(self.last_sent, self.last_dest)
        self.timer = self.loop.call_at(now + self.timeout, self.on_timer)

    def on_readable(self) -> None:
        for _ in range(16):
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.finish(False, f"receive: {exc}")
                return
            if self.tid is None:
                if addr[0] != self.server[0]:
                    continue
                self.tid = addr
            elif addr != self.tid:
                continue
            self.datagram(data)
            if self.done.done():
                return

    def datagram(self, data: bytes) -> None:
        if len(data) < 4:
            return
        op = (data[0] << 8) | data[1]
        r = self.result
        assert self.tid is not None
        if op == DATA:
            block = (data[2] << 8) | data[3]
            if block == self.next_block & 0xFFFF:
                payload = data[4:]
                r.bytes += len(payload)
                r.crc = zlib.crc32(payload, r.crc)
                self.send(b"\0\4" + data[2:4], self.tid)
                self.next_block += 1
                self.in_a_row = 0
                self.progress = self.loop.time()
                if len(payload) < self.blksize:
                    self.finish(True)
            elif block == (self.next_block - 1) & 0xFFFF:
                r.duplicates += 1
                self.send(struct.pack("!HH", ACK, block), self.tid)
        elif op == OACK and self.next_block == 1:
            options = parse_oack(data)
            self.blksize = int(options.get("blksize", "512"))
            self.in_a_row = 0
            self.progress = self.loop.time()
            self.send(struct.pack("!HH", ACK, 0), self.tid)
        elif op == ERROR:
            self.finish(False, "ERROR " + data[4:].rstrip(b"\0").decode(errors="replace"))


async def storm(
    host: str,
    port: int,
    filename: str,
    clients: int,
    *,
    blksize: int = 1468,
    timeout: float = 1.0,
    retries: int = 5,
    cap: float = 60.0,
) -> tuple[list[Fetch], float]:
    """Run the storm; returns the per-client results and the client's CPU seconds."""
    loop = asyncio.get_running_loop()
    request = rrq(filename, {"blksize": str(blksize), "tsize": "0"})
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    everyone = [
        _Client(loop, (host, port), request, blksize, timeout, retries, t0) for _ in range(clients)
    ]
    for c in everyone:
        c.start()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.done for c in everyone)), timeout=cap)
    except TimeoutError:
        for c in everyone:
            c.finish(False, f"storm cap of {cap:.0f} s reached")
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return [c.result for c in everyone], cpu


def probe(
    host: str, port: int, filename: str, options: dict[str, str], wait: float = 2.0
) -> tuple[int, dict[str, str]] | None:
    """Send one RRQ, read the first answer, abort the transfer. (opcode, OACK options) or None.

    For an ERROR the dict holds ``{"error": message}``; for DATA (no options) it is empty."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(wait)
        sock.sendto(rrq(filename, options), (host, port))
        try:
            data, addr = sock.recvfrom(65536)
        except (TimeoutError, ConnectionRefusedError):
            return None
        op = (data[0] << 8) | data[1]
        if op in (OACK, DATA):
            sock.sendto(struct.pack("!HH", ERROR, 0) + b"probe done\0", addr)
        if op == OACK:
            return op, parse_oack(data)
        if op == ERROR:
            return op, {"error": data[4:].rstrip(b"\0").decode(errors="replace")}
        return op, {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--blksize", type=int, default=1468)
    ap.add_argument("--size", type=int, required=True, help="expected file size")
    ap.add_argument("--crc", type=int, default=None, help="expected CRC-32")
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--cap", type=float, default=60.0)
    a = ap.parse_args()
    results, cpu = asyncio.run(
        storm(
            a.host,
            a.port,
            a.file,
            a.clients,
            blksize=a.blksize,
            timeout=a.timeout,
            retries=a.retries,
            cap=a.cap,
        )
    )
    for r in results:
        if r.ok and (r.bytes != a.size or (a.crc is not None and r.crc != a.crc)):
            r.ok, r.error = False, f"wrong payload: {r.bytes} bytes, crc {r.crc:#x}"
    json.dump({"client_cpu": cpu, "results": [asdict(r) for r in results]}, sys.stdout)


if __name__ == "__main__":
    main()
