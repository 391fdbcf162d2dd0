"""The TFTP transfer thread: every running transfer's socket in one epoll, off the asyncio loop.

Theory of operation
-------------------
A lock-step transfer costs one wake-up per block. Through asyncio that wake-up is ~5 µs of
Python (selector, handle, callback, timer re-arm) before the transfer does anything — more
than tftpd-hpa spends on the whole block. So the transfers run on one dedicated thread,
`TransferEngine`, with a plain loop:

* `select.epoll` (level-triggered) over an eventfd and every transfer's two sockets, sleeping
  until the earliest timer;
* per readable transfer socket, one ``recv_into`` into a preallocated buffer; an ACK is
  decoded with one struct unpack and handed to `ReadTransfer.receive_ack`, anything else to
  `ReadTransfer.receive_datagram`;
* then the transfer's `datagrams_to_send` go out and its timer is re-armed;
* timers live in a heap of ``(when, seq, session)``, kept lazily: a session pushes an entry
  only when its timer moves earlier than the one it has, and an entry that fires early (the
  lock-step deadline moves forward with every ACK) is pushed again at the session's current
  time. A lock-step transfer therefore touches the heap about once per timeout, not per block.

`ReadTransfer` (protocols.tftp) stays the whole protocol: this module only moves bytes and
time. A level-triggered epoll and one datagram per wake-up suit lock-step (the next ACK cannot
be there yet, so a second ``recv`` would only fail) and stay fair in a storm: a busy socket
simply shows up again in the next ``epoll_wait``.

Cheaper system calls. Per block, CPython's system calls cost more than the protocol:

* `transfer_sockets` connects each transfer's socket to its client, so blocks go out with
  ``send`` and ACKs come in with ``recv_into`` (no address to build, parse or compare, no
  route lookup). An unconnected twin bound to the same port gets every datagram from any
  other address (the kernel prefers the exact 4-tuple match) and answers it with ERROR 5
  (RFC 1350 §4), counted in the session's ``wrong_tid``.
* While a single transfer is all there is (one machine booting, or a benchmark), `_solo`
  waits for it in a blocking ``recv`` bounded by ``SO_RCVTIMEO``: one system call per block
  instead of two. It returns to the epoll loop every `_SOLO_WAIT` at most, or as soon as a
  transfer is handed over, so strangers, new transfers and shutdown wait 5 ms at worst.
* While several transfers run and their datagrams come less than `_BUSY_POLL` (0.3 ms) apart,
  the loop busy-polls (``epoll_wait`` with a zero timeout, ``sched_yield`` in between so that
  a client on the same vCPU still runs) for up to that long before it sleeps. A thread that
  sleeps on an idle vCPU of a VM takes a slow cross-vCPU wake-up for the next ACK (peers.md:
  100–300 µs), and in a storm of lock-step clients every block waits for one: busy-polling
  makes the 200-client storm 20–40 % faster for ~8 % more CPU, and leaves the asyncio loop's
  latency as it was (the GIL is released in every poll and yield). Sparse traffic (three
  clients ACKing every 0.5 ms cost 0.07 s of CPU instead of 0.03), a single transfer or an
  idle server do not spin.
* A window's blocks leave in one ``sendmsg`` with ``UDP_SEGMENT`` (UDP GSO, Linux 4.18+): the
  kernel cuts the buffer into the very same datagrams, for one system call and one trip down
  the stack per window. Datagrams above the path MTU make the kernel refuse (EINVAL): that
  session then sends block by block; any other refusal turns GSO off for the process.

Hand-over. The asyncio listener parses the RRQ, opens the file, creates the sockets, builds the
`ReadTransfer`, sends its first datagrams and only then calls `TransferEngine.add` (a deque
append and an eventfd write): from that point only the engine thread touches the transfer and
its sockets. Finished sessions (sockets closed) are handed back in one ``call_soon_threadsafe``
per loop iteration; the server then closes files, counts and emits events on its own loop, so
its statistics and ``active`` count are only ever written by the asyncio thread.

Shutdown. `TransferEngine.stop` asks the thread to cancel every transfer (`ReadTransfer.cancel`:
ERROR 0 to the client), hand them back, and exit; it then joins the thread and closes the epoll
and eventfd. A bug in one session is logged and ends that session only (ERROR 0 "Internal
error"); a bug in the loop itself is logged and the loop goes on.

The GIL is released in ``epoll_wait``, ``recv_into`` and ``send``, so the asyncio thread (DHCP,
HTTP, the API) keeps running while transfers wait; both threads share one interpreter lock, so
CPU-heavy work on the loop delays TFTP blocks and the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

from pxeforge.boot.files import BootFile
from pxeforge.errors import TftpError
from pxeforge.protocols.tftp import ErrorCode, Opcode, ReadTransfer, encode_error

__all__ = ["Session", "TransferEngine", "transfer_sockets"]

log = logging.getLogger(__name__)

Address = tuple[str, int]

_MAX_DATAGRAM = 65536
_unpack_header = struct.Struct("!HH").unpack_from
# UDP generic segmentation offload (linux/udp.h; Linux 4.18+): at most 64 segments and one
# UDP datagram's worth of bytes per send
_SOL_UDP = 17
_UDP_SEGMENT = 103
_GSO_SEGMENTS = 64
_GSO_BYTES = 65000
_NO_GSO_ERRORS = frozenset(
    {errno.EINVAL, errno.EMSGSIZE, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
)
_u16 = struct.Struct("=H").pack
_SOLO_WAIT = 0.005  # seconds: longest blocking wait of a lone transfer (see `_solo`)
_BUSY_POLL = 0.0003  # seconds: busy-poll this long while datagrams come closer than that
_CLOSED = -2  # Session.armed_seq of a closed session
_PAUSE = 0.05  # seconds the thread rests after an unexpected error (no hot error loop)
_ACK = Opcode.ACK.value


class Session:
    """One transfer as the engine drives it: socket, client address, `ReadTransfer`, timer."""

    __slots__ = (
        "addr",
        "armed",
        "armed_seq",
        "dropped",
        "fd",
        "file",
        "gso",
        "lock_step",
        "receive_into",
        "send_datagram",
        "sock",
        "stray",
        "stray_fd",
        "transfer",
        "wrong_tid",
    )
    gso_works = True  # UDP_SEGMENT works on this kernel (cleared on the first failure)

    def __init__(
        self,
        sockets: tuple[socket.socket, socket.socket],
        addr: Address,
        transfer: ReadTransfer,
        file: BootFile,
    ) -> None:
        self.sock, self.stray = sockets
        self.fd = self.sock.fileno()
        self.stray_fd = self.stray.fileno()
        self.addr = addr
        self.transfer = transfer
        # bound once: the hot path calls them per block
        self.receive_into = self.sock.recv_into
        self.send_datagram = self.sock.send
        self.lock_step = transfer.lock_step_ack
        self.file = file  # read by the transfer; closed by the server once handed back
        self.gso = True  # cleared when this path refuses segmentation (datagrams > MTU)
        self.armed: float | None = None  # time of this session's live heap entry
        self.armed_seq = -1
        self.dropped = 0  # malformed datagrams from the client
        self.wrong_tid = 0  # datagrams from another address

    def send_pending(self, now: float) -> None:
        """Send what the transfer has to send (also used before the hand-over)."""
        datagrams = self.transfer.datagrams_to_send(now)
        if datagrams:
            self.send(datagrams)

    def send(self, datagrams: list[bytes]) -> None:
        """Send in order; runs of equal-sized datagrams (a window) go out with UDP GSO."""
        try:
            if len(datagrams) == 1:
                self.sock.send(datagrams[0])
            elif self.gso and Session.gso_works:
                _send_segmented(self.sock, datagrams)
            else:
                for datagram in datagrams:
                    self.sock.send(datagram)
        except _NoGso as exc:
            error, first = exc.args
            if error.errno in (errno.EINVAL, errno.EMSGSIZE):  # datagrams above the path MTU
                log.debug("TFTP %s:%d: no UDP GSO: %s", self.addr[0], self.addr[1], error)
                self.gso = False
            else:  # an old kernel, or a device without UDP GSO: never again
                log.info("TFTP: UDP GSO unavailable (%s); sending datagrams one by one", error)
                Session.gso_works = False
            self.send(datagrams[first:])
        except OSError as exc:  # EAGAIN, or ICMP unreachable: the retransmit timer recovers
            log.debug("TFTP %s:%d: send failed: %s", self.addr[0], self.addr[1], exc)

    def close(self) -> None:
        self.sock.close()
        self.stray.close()


class _NoGso(Exception):
    """UDP_SEGMENT refused: args are (the error, the index of the first datagram unsent)."""


def _send_segmented(sock: socket.socket, datagrams: list[bytes]) -> None:
    """One ``sendmsg`` per run of equal-sized datagrams (a shorter one may end a run), with
    UDP_SEGMENT set to that size: the kernel cuts the run into the same datagrams, for one
    system call and one trip down the stack per window instead of one per block."""
    i, n = 0, len(datagrams)
    while i < n:
        size = len(datagrams[i])
        j, total = i + 1, size
        while j < n and j - i < _GSO_SEGMENTS:
            length = len(datagrams[j])
            if length > size or total + length > _GSO_BYTES:
                break
            total += length
            j += 1
            if length < size:
                break
        if j - i == 1:
            sock.send(datagrams[i])
        else:
            try:
                sock.sendmsg(datagrams[i:j], [(_SOL_UDP, _UDP_SEGMENT, _u16(size))])
            except OSError as exc:
                if exc.errno in _NO_GSO_ERRORS:
                    raise _NoGso(exc, i) from exc
                raise
        i = j


def transfer_sockets(
    family: int, host: str, client: Address, buffers: int
) -> tuple[socket.socket, socket.socket]:
    """A new transfer ID (RFC 1350 §4): a socket on a fresh port of ``host`` connected to
    ``client`` (with ``buffers`` bytes of SO_SNDBUF and SO_RCVBUF; 0: the defaults), and an
    unconnected twin bound to the same port.

    The kernel delivers the client's datagrams to the connected socket (an exact 4-tuple
    match wins) and everything else to the twin, which answers ERROR 5. A connected socket
    costs ~1.5 µs less per block than ``sendto``/``recvfrom`` on this kind of machine (no
    address parsing, no route lookup per datagram). The first socket is bound before it gets
    SO_REUSEADDR, so the port is one nobody else holds; the twin needs it to share the port.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    stray: socket.socket | None = None
    try:
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF) if buffers else ():
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, buffers)
        sock.bind((host, 0))  # without SO_REUSEADDR: the kernel picks a port nobody holds
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stray = socket.socket(family, socket.SOCK_DGRAM)
        stray.setblocking(False)
        stray.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stray.bind(sock.getsockname())
        sock.connect(client)
    except BaseException:
        sock.close()
        if stray is not None:
            stray.close()
        raise
    return sock, stray


class TransferEngine:
    """The thread that runs transfers. ``finished`` is called on ``loop`` with batches of
    sessions that ended (their sockets closed, their files not)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        finished: Callable[[list[Session]], None],
        *,
        name: str = "pxeforge-tftp",
    ) -> None:
        self._loop = loop
        self._finished = finished
        self._name = name
        self._epoll: select.epoll | None = None
        self._wake = -1
        self._incoming: deque[Session] = deque()
        self._sessions: dict[int, Session] = {}  # by socket fd (engine thread only)
        self._strays: dict[int, Session] = {}  # by the fd of the session's stray socket
        self._heap: list[tuple[float, int, Session]] = []
        self._seq = 0
        self._done: list[Session] = []
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None  # stop() waits on it (loop only)
        self._exited = False  # the thread has handed everything back (loop only)
        self._thread: threading.Thread | None = None
        self._buffer = bytearray(_MAX_DATAGRAM)

    # -- the asyncio side -----------------------------------------------------------------

    def start(self) -> None:
        self._epoll = select.epoll()
        try:
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._epoll.register(self._wake, select.EPOLLIN)
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
            self._thread.start()
        except BaseException:
            self._close_fds()
            raise

    def add(self, sessions: list[Session]) -> None:
        """Hand started sessions to the thread (called on the loop)."""
        self._incoming.extend(sessions)
        os.eventfd_write(self._wake, 1)

    async def stop(self) -> None:
        """Cancel every transfer, wait until they are handed back, join the thread."""
        thread = self._thread
        if thread is None:
            return
        if not self._exited:
            self._stopped = self._loop.create_future()
            self._stopping = True
            os.eventfd_write(self._wake, 1)
            await self._stopped
        thread.join()
        self._thread = None
        self._close_fds()

    def _close_fds(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1

    # -- the thread -----------------------------------------------------------------------

    def _main(self) -> None:
        try:
            while not self._stopping:
                try:
                    self._serve()
                except Exception:  # a bug in the loop itself: log it, pause, go on
                    log.exception("TFTP transfer thread: unexpected error")
                    time.sleep(_PAUSE)
        finally:
            now = time.monotonic()
            for session in list(self._incoming) + list(self._sessions.values()):
                with contextlib.suppress(Exception):
                    session.transfer.cancel(now)
                    session.send_pending(now)
                self._close(session)
            self._incoming.clear()
            self._post()
            self._call(self._on_exit)

    def _on_exit(self) -> None:  # on the loop, after the thread's last batch
        self._exited = True
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _serve(self) -> None:
        assert self._epoll is not None
        poll = self._epoll.poll
        sessions = self._sessions
        heap = self._heap
        heappop = heapq.heappop
        clock = time.monotonic
        strays = self._strays
        buffer = self._buffer
        unpack = _unpack_header
        dense = False  # datagrams come less than _BUSY_POLL apart: busy-poll for the next one
        now = clock()
        while not self._stopping:
            # `now` is from before the last round of work: epoll rounds the timeout up to a
            # whole millisecond anyway, and an early wake-up only re-arms
            if heap:
                timeout = heap[0][0] - now
                if timeout < 0.0:
                    timeout = 0.0
            else:
                timeout = -1.0
            if len(sessions) == 1 and not self._incoming and not self._done:
                now = self._solo(next(iter(sessions.values())), now)
                timeout = 0.0
            if dense and len(sessions) > 1:  # busy-poll a little (see _BUSY_POLL)
                events = poll(0.0)
                if not events:
                    spin_end = clock() + _BUSY_POLL
                    while not events and clock() < spin_end:
                        os.sched_yield()  # a client on this vCPU runs now, not after the spin
                        events = poll(0.0)
                    if not events:  # the traffic thinned out: sleep, and spin no more for now
                        dense = False
                        events = poll(timeout)
            else:
                before = clock()
                events = poll(timeout)
                dense = bool(events) and clock() - before < _BUSY_POLL
            now = clock()
            for fd, _ in events:
                session = sessions.get(fd)
                if session is None:
                    if fd in strays:
                        self._stray(strays[fd])
                    else:
                        self._take_incoming(now)
                    continue
                # The storm's hot path, inline: read the ACK, send the next block.
                try:
                    n = session.receive_into(buffer)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:  # an ICMP error (the client is gone?): the timer goes on
                    log.debug("TFTP %s:%d: receive error: %s", *session.addr[:2], exc)
                    continue
                if n >= 4:
                    opcode, block = unpack(buffer)
                    if opcode == _ACK:
                        try:
                            datagram = session.lock_step(block, now)
                        except Exception:
                            self._crash(session, now)
                            continue
                        if datagram is not None:  # the timer only moved later: done here
                            try:
                                session.send_datagram(datagram)
                            except OSError as exc:  # EAGAIN or ICMP: the timer recovers
                                log.debug("TFTP %s:%d: send failed: %s", *session.addr[:2], exc)
                            continue
                if self._received(session, n, now):
                    self._rearm(session)
            while heap and heap[0][0] <= now:
                _, seq, session = heappop(heap)
                if session.armed_seq == seq:
                    self._timer(session, now)
            if self._done:
                self._post()

    def _take_incoming(self, now: float) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake)
        assert self._epoll is not None
        while self._incoming:
            session = self._incoming.popleft()
            if session.transfer.done:  # it ended before the hand-over (a bug on the loop)
                self._close(session)
                continue
            self._sessions[session.fd] = session
            self._strays[session.stray_fd] = session
            self._epoll.register(session.fd, select.EPOLLIN)
            self._epoll.register(session.stray_fd, select.EPOLLIN)
            self._rearm(session)

    def _received(self, session: Session, n: int, now: float) -> bool:
        """``n`` bytes from the client are in the buffer: feed them to the transfer and send
        what it answers (the callers try the lock-step shortcut first). False when the
        transfer ended (the session is closed); else its timer may have moved earlier."""
        transfer = session.transfer
        buffer = self._buffer
        try:
            if n >= 4:
                opcode, block = _unpack_header(buffer)
                if opcode == _ACK:
                    transfer.receive_ack(block, now)
                else:
                    self._other(session, bytes(buffer[:n]), now)
            else:
                self._other(session, bytes(buffer[:n]), now)
            datagrams = transfer.datagrams_to_send(now)
            if len(datagrams) == 1:  # lock-step
                try:
                    session.sock.send(datagrams[0])
                except OSError as exc:  # EAGAIN or ICMP: the retransmit timer recovers
                    log.debug("TFTP %s:%d: send failed: %s", *session.addr[:2], exc)
            elif datagrams:
                session.send(datagrams)
            if transfer.done:
                self._close(session)
                return False
        except Exception:
            self._crash(session, now)
            return False
        return True

    def _solo(self, session: Session, now: float) -> float:
        """While one transfer is all there is, wait for its datagrams in a blocking ``recv``
        (``SO_RCVTIMEO`` bounds the wait): one system call per block instead of
        ``epoll_wait`` + ``recv``, ~15 % of a lock-step block's CPU. The wait is cut every
        `_SOLO_WAIT` seconds at most, to notice new transfers, stray datagrams (a
        zero-timeout epoll round) and shutdown; returns the time it last read."""
        sock = session.sock
        transfer = session.transfer
        buffer = self._buffer
        clock = time.monotonic
        recv_into = session.receive_into
        waiting = -1.0  # the SO_RCVTIMEO in force
        check = True  # ask the transfer for its timer before waiting again
        check_at = now + _SOLO_WAIT
        sock.setblocking(True)
        try:
            while not (self._stopping or self._incoming):
                if check:
                    when = transfer.get_timer()
                    wait = _SOLO_WAIT if when is None else when - now
                    if wait <= 0.0:
                        self._timer(session, now)
                        if session.armed_seq == _CLOSED:
                            return now
                        continue
                    if wait > _SOLO_WAIT:
                        wait = _SOLO_WAIT
                    if wait != waiting:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(wait))
                        waiting = wait
                try:
                    n = recv_into(buffer)
                except (BlockingIOError, InterruptedError):  # SO_RCVTIMEO expired
                    n = -1
                except OSError as exc:  # an ICMP error (the client is gone?)
                    log.debug("TFTP %s:%d: receive error: %s", *session.addr[:2], exc)
                    n = -1
                now = clock()
                check = True
                if n >= 4:
                    opcode, block = _unpack_header(buffer)
                    if opcode == _ACK:  # the lock-step shortcut, as in `_serve`
                        try:
                            datagram = session.lock_step(block, now)
                        except Exception:
                            self._crash(session, now)
                            return now
                        if datagram is not None:
                            try:
                                session.send_datagram(datagram)
                            except OSError as exc:  # EAGAIN or ICMP: the timer recovers
                                log.debug("TFTP %s:%d: send failed: %s", *session.addr[:2], exc)
                            check = False  # the timer only moved later: the same wait does
                            if now >= check_at:
                                return now
                            continue
                if n >= 0 and not self._received(session, n, now):
                    return now
                if now >= check_at:
                    return now  # one epoll round: strays, timers, the eventfd
        finally:
            if session.armed_seq != _CLOSED:
                sock.setblocking(False)
                session.armed = None
                self._rearm(session)
        return now

    def _other(self, session: Session, data: bytes, now: float) -> None:
        try:
            session.transfer.receive_datagram(data, now)
        except TftpError as exc:
            session.dropped += 1
            log.warning("TFTP %s:%d: malformed datagram dropped: %s", *session.addr[:2], exc)

    def _stray(self, session: Session) -> None:
        """A datagram to the transfer's port from another address: ERROR 5 (RFC 1350 §4)."""
        try:
            _, addr = session.stray.recvfrom(_MAX_DATAGRAM)
        except OSError:
            return
        session.wrong_tid += 1
        log.info("TFTP %s:%d: datagram for another transfer ID ignored", addr[0], addr[1])
        with contextlib.suppress(OSError):
            session.stray.sendto(encode_error(ErrorCode.UNKNOWN_TID, "Unknown transfer ID"), addr)

    def _timer(self, session: Session, now: float) -> None:
        session.armed = None
        transfer = session.transfer
        try:
            when = transfer.get_timer()
            if when is None:
                return
            if when > now:
                self._push(session, when)
                return
            transfer.handle_timer(now)
            session.send_pending(now)
            if transfer.done:
                self._close(session)
            else:
                self._rearm(session)
        except Exception:
            self._crash(session, now)

    def _rearm(self, session: Session) -> None:
        when = session.transfer.get_timer()
        if when is not None:
            armed = session.armed
            if armed is None or when < armed:
                self._push(session, when)

    def _push(self, session: Session, when: float) -> None:
        self._seq += 1
        session.armed = when
        session.armed_seq = self._seq
        heapq.heappush(self._heap, (when, self._seq, session))

    def _crash(self, session: Session, now: float) -> None:
        log.exception("TFTP %s:%d: transfer failed", *session.addr[:2])
        with contextlib.suppress(Exception):
            session.transfer.cancel(now, "Internal error")
            session.send_pending(now)
        self._close(session)

    def _close(self, session: Session) -> None:
        if session.armed_seq == _CLOSED:
            return
        session.armed_seq = _CLOSED
        session.armed = None
        if self._sessions.pop(session.fd, None) is not None and self._epoll is not None:
            del self._strays[session.stray_fd]
            for fd in (session.fd, session.stray_fd):
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)
        session.close()
        self._done.append(session)

    def _post(self) -> None:
        if self._done:
            done, self._done = self._done, []
            self._call(self._finished, done)

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.debug("TFTP transfer thread: event loop closed")


def _timeval(seconds: float) -> bytes:
    """struct timeval for SO_RCVTIMEO (at least 1 µs: zero would mean "block forever")."""
    micros = max(1, int(seconds * 1_000_000))
    return struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)
