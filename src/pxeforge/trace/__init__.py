"""`pxeforge trace`: a packet capture of network boots, explained.

Theory of operation
-------------------
One pass, four steps, each its own module:

1. `capture` reads pcap/pcapng (through dpkt) and yields IPv4 UDP datagrams and TCP segments,
   fragments reassembled, lazily — the file is memory-mapped, never loaded.
2. `decode` turns them into DHCP messages (`protocols.dhcp`), TFTP transfers
   (`protocols.tftp`, ports associated the way RFC 1350 assigns them) and HTTP exchanges
   (TCP reassembled per connection).
3. `timeline` groups everything per client MAC into explained events, boot stages and the
   pxelinux/GRUB config searches; `findings` checks the rules that catch broken boots.
4. `report` prints it for people (plain text, colour on a terminal) or as JSON for machines.

``trace_capture(path)`` does 1–3 and returns a `Trace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pxeforge.trace.capture import Capture, CaptureError, CaptureStats
from pxeforge.trace.decode import Decoded, Decoder
from pxeforge.trace.findings import DEFAULT_SILENT_AFTER, Finding, find
from pxeforge.trace.timeline import Client, Event, build

__all__ = [
    "CaptureError",
    "Trace",
    "trace_bytes",
    "trace_capture",
]


@dataclass(frozen=True, slots=True)
class Trace:
    """A capture explained: who booted, how, and what went wrong."""

    name: str
    stats: CaptureStats
    decoded: Decoded
    clients: tuple[Client, ...]
    events: tuple[Event, ...]
    findings: tuple[Finding, ...]

    @property
    def start(self) -> float:
        return self.stats.first_time or 0.0

    @property
    def end(self) -> float:
        return self.stats.last_time or self.start

    def client(self, mac: str) -> Client:
        """The client with this MAC; KeyError if it is not in the capture."""
        for c in self.clients:
            if c.mac == mac:
                return c
        raise KeyError(mac)


def _run(capture: Capture, silent_after: float) -> Trace:
    decoder = Decoder()
    for segment in capture.segments():
        decoder.feed(segment)
    stats = capture.stats
    decoded = decoder.finish(stats.mac_last_seen)
    start = stats.first_time or 0.0
    end = stats.last_time or start
    clients, events = build(decoded, stats.mac_last_seen, start)
    findings = find(decoded, clients, end, silent_after=silent_after, snaplen_cut=stats.snaplen_cut)
    return Trace(capture.name, stats, decoded, tuple(clients), tuple(events), tuple(findings))


def trace_capture(path: str | Path, *, silent_after: float = DEFAULT_SILENT_AFTER) -> Trace:
    """Read and explain a pcap/pcapng file. CaptureError if it is not one."""
    with Capture.open(path) as capture:
        return _run(capture, silent_after)


def trace_bytes(
    data: bytes, name: str = "<capture>", *, silent_after: float = DEFAULT_SILENT_AFTER
) -> Trace:
    """`trace_capture` for a capture already in memory (stdin, tests)."""
    return _run(Capture.from_bytes(data, name), silent_after)
