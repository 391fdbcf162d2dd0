"""The TFTP server: the request listener (asyncio) and the bookkeeping of its transfers.

Theory of operation
-------------------
`start_tftp` binds the listener on (host, port). Each datagram there is parsed with
`protocols.tftp.parse_packet`:

* an RRQ opens the file through the `FileSource` (``files.open(name, client_ip)``, run
  inline: it is fast). `FileNotFound` is answered at once with ERROR 1 "File not found" (the
  pxelinux config search depends on fast misses), `AccessViolation` with ERROR 2. Messages are
  fixed strings: a server path never reaches the wire (dnsmasq and fbtftp leak theirs).
  A retransmitted RRQ (the same request from the same address) while its transfer runs is
  ignored: that transfer's own timer answers it. A different request from the same address
  starts a second transfer, with its own TID.
* a WRQ gets ERROR 2 (this server is read-only); a malformed request gets ERROR with the code
  the parser chose; anything else is dropped. Every malformed datagram is counted in
  ``stats.dropped`` and logged with the client address; the listener keeps serving.

A transfer starts right there: its sockets (`tftp_engine.transfer_sockets`: one connected to
the client on a fresh port — the transfer ID of RFC 1350 §4 —, plus an unconnected twin on the
same port that answers strangers with ERROR 5), its `ReadTransfer`, and its first datagram
(OACK or DATA 1). Then it is handed to the `TransferEngine`, a dedicated thread that runs every
transfer with one epoll and a timer heap (see `tftp_engine`: an asyncio callback per block
costs more than tftpd-hpa's whole block). Finished transfers come back to the loop in
batches: the server closes their files, updates `stats` and emits one `TftpEvent` each (cheap
frozen records, for the per-node timeline). `stats` and `active` are only written on the loop.

At most ``config.max_transfers`` run at once; a request beyond that gets ERROR 0 "Server busy"
(counted in ``refused`` and ``busy``), so a storm cannot exhaust file descriptors: each
transfer holds two sockets and its open file.

Transfer sockets ask for 4 MiB send and receive buffers (the kernel caps them at
``net.core.wmem_max`` / ``rmem_max``), so a whole window is queued without EAGAIN. A transfer
socket is bound to the listener's address; with a wildcard listener the kernel picks the
reply's source address by route. Refusals (ERROR 0, 1, 2, 4) are sent from the listener's
port, which clients accept as the server's TID (curl, tftp-hpa, atftp, iPXE, EDK2).

Performance on the project's 2-vCPU VM (same-run medians of 5–7; bench/tftp_single.py,
bench/tftp_storm.py; 32 MiB, client and server pinned to one vCPU): lock-step is 0.9x
tftpd-hpa at blksize 1468 and at 512, with 4.5–4.8 s of server CPU per GiB at 1468 (dnsmasq
3.8; the asyncio version was 9.3 s and 0.56x) and 12 s at 512 (dnsmasq 10.6). A bare blocking
``recv_into``/``send`` loop of 20 lines of Python gets the same 0.9x and 4.5 s/GiB: the rest
is CPython's cost per system call. With windowsize 16 (atftp) a window is one UDP GSO send:
1.3 s/GiB and 2.2–2.4x tftpd-hpa (which has no windowsize). A storm of 200 lock-step clients
x 1 MiB (`pxeforge serve`) runs at ~0.9x dnsmasq (0.70x before) and 1.4x tftpd-hpa.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from pxeforge.boot.files import FileSource
from pxeforge.errors import AccessViolation, BootFileError, FileNotFound, TftpError
from pxeforge.protocols.tftp import (
    ErrorCode,
    Outcome,
    ReadRequest,
    ReadTransfer,
    TransferConfig,
    WriteRequest,
    encode_error,
    parse_packet,
)
from pxeforge.servers.tftp_engine import Session, TransferEngine, transfer_sockets

__all__ = ["EventKind", "TftpEvent", "TftpServer", "TftpStats", "start_tftp"]

log = logging.getLogger(__name__)

_BURST = 64  # datagrams read per wake-up, so one busy socket cannot starve the others
_BUFFER = 4 << 20  # SO_SNDBUF / SO_RCVBUF asked for on transfer sockets
_LISTENER_BUFFER = 1 << 20  # a boot storm's RRQs
_MAX_DATAGRAM = 65536

Address = tuple[str, int]


class EventKind(enum.Enum):
    STARTED = "started"  # a transfer began (bytes: the file size)
    FINISHED = "finished"  # it ended normally: complete, or the client stopped it (probe, abort)
    FAILED = "failed"  # it timed out, the file could not be read, or the server shut down
    REFUSED = "refused"  # the request was answered with an ERROR (error: the message sent)


@dataclass(frozen=True, slots=True)
class TftpEvent:
    kind: EventKind
    client: Address
    file: str
    at: float  # wall-clock time (time.time())
    bytes: int = 0  # STARTED: file size; FINISHED/FAILED: payload bytes sent
    seconds: float = 0.0
    retransmits: int = 0
    outcome: Outcome | None = None
    blksize: int = 0
    windowsize: int = 0
    error: str | None = None  # REFUSED: our message; FINISHED by the client: its message


@dataclass(slots=True)
class TftpStats:
    started: int = 0
    completed: int = 0  # every block acknowledged
    aborted: int = 0  # the client ended it (OVMF's tsize probe, user abort) — not a failure
    failed: int = 0  # timed out, read error, server shutdown
    refused: int = 0  # answered with an ERROR: not found, access violation, write request
    bytes_sent: int = 0  # DATA payload bytes, retransmissions included
    retransmits: int = 0
    unconfirmed: int = 0  # the last block went out and was resent, then silence (see Outcome)
    busy: int = 0  # requests refused because ``max_transfers`` were running (also in refused)
    dropped: int = 0  # malformed datagrams
    wrong_tid: int = 0  # datagrams to a transfer socket from another address
    duplicate_requests: int = 0  # retransmitted RRQs for a running transfer


def _set_buffers(sock: socket.socket, size: int) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def _udp_socket(family: int, address: tuple[str, int], buffers: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _set_buffers(sock, buffers)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _client_ip(host: str) -> IPv4Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, IPv4Address):
        return address
    return address.ipv4_mapped


class TftpServer:
    """A running TFTP server; make one with `start_tftp`."""

    def __init__(
        self,
        sock: socket.socket,
        files: FileSource,
        config: TransferConfig,
        on_event: Callable[[TftpEvent], None] | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._family = sock.family
        self._host = sock.getsockname()[0]
        self.port: int = sock.getsockname()[1]
        self._files = files
        self._config = config
        self._on_event = on_event
        # running transfers by client address and request: one client port may run several
        # (each has its own TID), and a retransmitted RRQ finds its transfer here
        self._sessions: dict[tuple[Address, ReadRequest], Session] = {}
        self._starting: list[Session] = []  # started in this burst, handed over after it
        self.stats = TftpStats()
        self._closed = False
        self._engine = TransferEngine(self._loop, self._finished)
        self._engine.start()
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @property
    def active(self) -> int:
        """Transfers in progress."""
        return len(self._sessions)

    async def close(self) -> None:
        """Stop listening; running transfers are told with ERROR 0 and closed."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        await self._engine.stop()

    # -- the listener ---------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            for _ in range(_BURST):
                try:
                    data, addr = self._sock.recvfrom(_MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    log.debug("TFTP listener: receive error: %s", exc)
                    return
                try:
                    self._on_request(data, addr)
                except Exception:  # a bug must not stop the listener
                    log.exception("TFTP %s:%d: request failed", *addr[:2])
        finally:
            if self._starting:  # one hand-over (one wake-up of the thread) per burst
                self._engine.add(self._starting)
                self._starting = []

    def _on_request(self, data: bytes, addr: Address) -> None:
        try:
            packet = parse_packet(data)
        except TftpError as exc:
            self.stats.dropped += 1
            log.warning("TFTP %s:%d: malformed request dropped: %s", *addr[:2], exc)
            if data[:2] in (b"\0\1", b"\0\2"):  # a request we cannot read: say why
                self._send(encode_error(exc.code, str(exc)), addr)
            return
        if isinstance(packet, WriteRequest):
            self._refuse(addr, packet.filename, ErrorCode.ACCESS_VIOLATION, "Read-only server")
            return
        if not isinstance(packet, ReadRequest):
            self.stats.dropped += 1
            log.info("TFTP %s:%d: %s on the request port dropped", *addr[:2], type(packet).__name__)
            return
        if (addr, packet) in self._sessions:
            self.stats.duplicate_requests += 1
            return
        if len(self._sessions) >= self._config.max_transfers:
            self.stats.busy += 1
            self._refuse(addr, packet.filename, ErrorCode.NOT_DEFINED, "Server busy")
            return
        self._start(packet, addr)

    def _start(self, request: ReadRequest, addr: Address) -> None:
        name = request.filename
        try:
            file = self._files.open(name, _client_ip(addr[0]))
        except FileNotFound:
            self._refuse(addr, name, ErrorCode.FILE_NOT_FOUND, "File not found")
            return
        except AccessViolation:
            self._refuse(addr, name, ErrorCode.ACCESS_VIOLATION, "Access violation")
            return
        except BootFileError:
            self._refuse(addr, name, ErrorCode.ACCESS_VIOLATION, "Access violation")
            return
        except Exception:
            log.exception("TFTP %s:%d: opening %r failed", addr[0], addr[1], name)
            self._refuse(addr, name, ErrorCode.NOT_DEFINED, "Internal error")
            return
        now = time.monotonic()  # the engine's clock
        try:
            transfer = ReadTransfer(request, file, now=now, config=self._config)
            # lock-step needs no big buffers: two fewer system calls per transfer
            buffers = _BUFFER if transfer.windowsize > 1 else 0
            sockets = transfer_sockets(self._family, self._host, addr, buffers)
        except OSError as exc:
            file.close()
            log.error("TFTP %s:%d: cannot start %r: %s", addr[0], addr[1], name, exc)
            self._refuse(addr, name, ErrorCode.NOT_DEFINED, "Server error")
            return
        session = Session(sockets, addr, transfer, file)
        self._sessions[addr, request] = session
        self.stats.started += 1
        stats = transfer.stats
        log.debug(
            "TFTP %s:%d: RRQ %r %s blksize %d windowsize %d",
            addr[0],
            addr[1],
            name,
            request.mode.value,
            stats.blksize,
            stats.windowsize,
        )
        self._emit(
            TftpEvent(
                EventKind.STARTED,
                addr,
                name,
                time.time(),
                bytes=stats.size,
                blksize=stats.blksize,
                windowsize=stats.windowsize,
            )
        )
        try:
            session.send_pending(now)  # OACK or DATA 1 right away, then the thread takes over
        except Exception:  # a bug (in the file's read_at, say): end it, the engine closes it
            log.exception("TFTP %s:%d: starting %r failed", addr[0], addr[1], name)
            transfer.cancel(now, "Internal error")
            session.send_pending(now)
        self._starting.append(session)

    def _refuse(self, addr: Address, name: str, code: ErrorCode, message: str) -> None:
        self.stats.refused += 1
        log.info("TFTP %s:%d: %r refused: %s", addr[0], addr[1], name, message)
        self._send(encode_error(code, message), addr)
        self._emit(TftpEvent(EventKind.REFUSED, addr, name, time.time(), error=message))

    def _send(self, datagram: bytes, addr: Address) -> None:
        try:
            self._sock.sendto(datagram, addr)
        except OSError as exc:
            log.debug("TFTP %s:%d: send failed: %s", *addr[:2], exc)

    # -- bookkeeping ----------------------------------------------------------------------

    def _finished(self, sessions: list[Session]) -> None:
        """Sessions the engine handed back (their sockets are closed)."""
        for session in sessions:
            try:
                session.file.close()
            except Exception:
                log.exception("TFTP %s:%d: closing the file failed", *session.addr[:2])
            key = (session.addr, session.transfer.request)
            if self._sessions.get(key) is session:
                del self._sessions[key]
            self.stats.dropped += session.dropped
            self.stats.wrong_tid += session.wrong_tid
            self._report(session)

    def _report(self, session: Session) -> None:
        transfer = session.transfer
        outcome = transfer.outcome
        stats = transfer.stats
        self.stats.bytes_sent += stats.bytes_sent
        self.stats.retransmits += stats.retransmits
        if outcome is Outcome.COMPLETE:
            self.stats.completed += 1
        elif outcome is Outcome.COMPLETE_UNCONFIRMED:
            self.stats.unconfirmed += 1
        elif outcome is not None and not outcome.failed:
            self.stats.aborted += 1
        else:
            self.stats.failed += 1
        failed = outcome is None or outcome.failed
        seconds = stats.seconds or 0.0
        client_error = transfer.client_error
        log.log(
            logging.WARNING if failed else logging.INFO,
            "TFTP %s:%d: %r %s: %d bytes in %.3f s (%d retransmits)",
            session.addr[0],
            session.addr[1],
            transfer.request.filename,
            outcome.value if outcome is not None else "closed",
            stats.bytes_sent,
            seconds,
            stats.retransmits,
        )
        self._emit(
            TftpEvent(
                EventKind.FAILED if failed else EventKind.FINISHED,
                session.addr,
                transfer.request.filename,
                time.time(),
                bytes=stats.bytes_sent,
                seconds=seconds,
                retransmits=stats.retransmits,
                outcome=outcome,
                blksize=stats.blksize,
                windowsize=stats.windowsize,
                error=client_error.message if client_error is not None else None,
            )
        )

    def _emit(self, event: TftpEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("TFTP event handler failed")


async def start_tftp(
    host: str,
    port: int,
    files: FileSource,
    *,
    config: TransferConfig | None = None,
    on_event: Callable[[TftpEvent], None] | None = None,
) -> TftpServer:
    """Serve ``files`` read-only over TFTP on (host, port); port 0 picks a free one.

    Bind errors (`OSError`: EACCES, EADDRINUSE…) propagate for the caller to explain."""
    loop = asyncio.get_running_loop()
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, host = infos[0][0], str(infos[0][4][0])
    sock = _udp_socket(family, (host, port), _LISTENER_BUFFER)
    try:
        return TftpServer(sock, files, config or TransferConfig(), on_event)
    except BaseException:
        sock.close()
        raise
