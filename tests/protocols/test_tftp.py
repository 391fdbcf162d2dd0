"""protocols.tftp: codec and read transfers driven in memory with a fake clock (no sockets)."""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxeforge.boot.files import MemoryFile
from pxeforge.config import Settings
from pxeforge.errors import ConfigError, TftpError
from pxeforge.protocols.tftp import (
    AckPacket,
    DataPacket,
    ErrorCode,
    ErrorPacket,
    Mode,
    NetasciiReader,
    OackPacket,
    Opcode,
    Outcome,
    Packet,
    ReadRequest,
    ReadTransfer,
    TransferConfig,
    WriteRequest,
    encode_ack,
    encode_data,
    encode_error,
    encode_oack,
    encode_request,
    negotiate,
    parse_packet,
)

# ---------------------------------------------------------------------------------------------
# codec

ROUND_TRIPS: list[tuple[Packet, bytes]] = [
    (ReadRequest("pxelinux.0"), b"\x00\x01pxelinux.0\x00octet\x00"),
    (
        ReadRequest("bootx64.efi", Mode.OCTET, {"tsize": "0", "blksize": "1468"}),
        b"\x00\x01bootx64.efi\x00octet\x00tsize\x000\x00blksize\x001468\x00",
    ),
    (ReadRequest("a.txt", Mode.NETASCII), b"\x00\x01a.txt\x00netascii\x00"),
    (WriteRequest("up"), b"\x00\x02up\x00octet\x00"),
    (DataPacket(1, b"hello"), b"\x00\x03\x00\x01hello"),
    (DataPacket(65535, b""), b"\x00\x03\xff\xff"),
    (AckPacket(0), b"\x00\x04\x00\x00"),
    (AckPacket(258), b"\x00\x04\x01\x02"),
    (ErrorPacket(1, "File not found"), b"\x00\x05\x00\x01File not found\x00"),
    (OackPacket({"blksize": "1468", "tsize": "42"}), b"\x00\x06blksize\x001468\x00tsize\x0042\x00"),
]


@pytest.mark.parametrize(("packet", "wire"), ROUND_TRIPS)
def test_round_trip(packet: Packet, wire: bytes) -> None:
    assert parse_packet(wire) == packet
    assert packet.to_bytes() == wire


def test_encoders_match_dataclasses() -> None:
    assert encode_data(7, b"x") == DataPacket(7, b"x").to_bytes()
    assert encode_ack(7) == b"\x00\x04\x00\x07"
    assert encode_error(ErrorCode.ACCESS_VIOLATION, "no\0pe") == b"\x00\x05\x00\x02no pe\x00"
    assert encode_oack({"windowsize": "4"}) == b"\x00\x06windowsize\x004\x00"
    assert encode_request(Opcode.RRQ, "f", "octet", {"tsize": "0"}) == (
        b"\x00\x01f\x00octet\x00tsize\x000\x00"
    )


def test_options_are_case_insensitive_and_mode_too() -> None:
    packet = parse_packet(b"\x00\x01F\x00OCTET\x00BlkSize\x00512\x00TSIZE\x000\x00")
    assert packet == ReadRequest("F", Mode.OCTET, {"blksize": "512", "tsize": "0"})


def test_request_padding_nuls_are_tolerated() -> None:
    assert parse_packet(b"\x00\x01f\x00octet\x00\x00\x00") == ReadRequest("f")


def test_lenient_ack_and_error() -> None:
    assert parse_packet(b"\x00\x04\x00\x05junk") == AckPacket(5)
    assert parse_packet(b"\x00\x05\x00\x08user abort") == ErrorPacket(8, "user abort")


BAD: list[tuple[bytes, int]] = [
    (b"", ErrorCode.ILLEGAL_OPERATION),
    (b"\x00", ErrorCode.ILLEGAL_OPERATION),
    (b"\x00\x09", ErrorCode.ILLEGAL_OPERATION),  # unknown opcode
    (b"\x00\x01file", ErrorCode.ILLEGAL_OPERATION),  # no NUL at all
    (b"\x00\x01file\x00octet", ErrorCode.ILLEGAL_OPERATION),  # mode not terminated
    (b"\x00\x01file\x00", ErrorCode.ILLEGAL_OPERATION),  # no mode
    (b"\x00\x01file\x00mail\x00", ErrorCode.ILLEGAL_OPERATION),  # obsolete mode
    (b"\x00\x01file\x00binary\x00", ErrorCode.ILLEGAL_OPERATION),  # not a TFTP mode
    (b"\x00\x01f\xff\xfe\x00octet\x00", ErrorCode.ACCESS_VIOLATION),  # not UTF-8
    (b"\x00\x01f\x00oct\xe9t\x00", ErrorCode.ILLEGAL_OPERATION),  # non-ASCII mode
    (b"\x00\x01f\x00octet\x00blksize\x00", ErrorCode.OPTION_REFUSED),  # option without value
    (b"\x00\x01f\x00octet\x00a\x001\x00b\x00", ErrorCode.OPTION_REFUSED),  # dangling option
    (b"\x00\x01f\x00octet\x00tsize\x000\x00TSize\x000\x00", ErrorCode.OPTION_REFUSED),  # twice
    (b"\x00\x01f\x00octet\x00\x00512\x00", ErrorCode.OPTION_REFUSED),  # empty option name
    (b"\x00\x01f\x00octet\x00x\x00" + b"v" * 300 + b"\x00", ErrorCode.OPTION_REFUSED),
    (b"\x00\x01f\x00octet\x00n\xe4me\x001\x00", ErrorCode.OPTION_REFUSED),  # non-ASCII name
    (b"\x00\x03\x00", ErrorCode.ILLEGAL_OPERATION),  # truncated DATA
    (b"\x00\x04\x00", ErrorCode.ILLEGAL_OPERATION),  # truncated ACK
    (b"\x00\x05\x00", ErrorCode.ILLEGAL_OPERATION),  # truncated ERROR
    (b"\x00\x03\x00\x01" + bytes(65465), ErrorCode.ILLEGAL_OPERATION),  # DATA too long
    (b"\x00\x06blksize", ErrorCode.ILLEGAL_OPERATION),
]


@pytest.mark.parametrize(("wire", "code"), BAD)
def test_malformed_raise_tftp_error_with_code(wire: bytes, code: int) -> None:
    with pytest.raises(TftpError) as info:
        parse_packet(wire)
    assert info.value.code == code


def test_unknown_options_are_kept_by_the_parser_but_never_echoed() -> None:
    request = parse_packet(b"\x00\x01f\x00octet\x00rollover\x000\x00blksize\x001024\x00")
    assert isinstance(request, ReadRequest)
    assert request.options == {"rollover": "0", "blksize": "1024"}
    assert negotiate(request.options, 10, TransferConfig()).oack == {"blksize": "1024"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_tftp_error(data: bytes) -> None:
    try:
        parse_packet(data)
    except TftpError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([wire for _, wire in ROUND_TRIPS]), st.data())
def test_any_truncation_or_corruption_raises_only_tftp_error(
    wire: bytes, data: st.DataObject
) -> None:
    for cut in range(len(wire) + 1):  # every truncation
        try:
            parse_packet(wire[:cut])
        except TftpError:
            pass
    index = data.draw(st.integers(0, len(wire) - 1))
    value = data.draw(st.integers(0, 255))
    corrupted = wire[:index] + bytes([value]) + wire[index + 1 :]
    try:
        parse_packet(corrupted)
    except TftpError:
        pass


# ---------------------------------------------------------------------------------------------
# negotiation


def oack_for(options: dict[str, str], size: int = 1000, **config: Any) -> dict[str, str]:
    return dict(negotiate(options, size, TransferConfig(**config)).oack)


@pytest.mark.parametrize(
    ("asked", "granted"),
    [("7", None), ("8", "8"), ("1468", "1468"), ("65464", "65464"), ("65465", "65464")],
)
def test_blksize_edges(asked: str, granted: str | None) -> None:
    assert oack_for({"blksize": asked}).get("blksize") == granted


def test_blksize_is_clamped_to_the_server_maximum() -> None:
    assert oack_for({"blksize": "8192"}, max_blksize=1468) == {"blksize": "1468"}


@pytest.mark.parametrize(
    ("asked", "granted"), [("0", None), ("1", "1"), ("4", "4"), ("64", "64"), ("65535", "64")]
)
def test_windowsize_edges(asked: str, granted: str | None) -> None:
    assert oack_for({"windowsize": asked}).get("windowsize") == granted


@pytest.mark.parametrize(
    ("blksize", "asked", "granted"),
    [("1468", "16", "16"), ("1468", "64", "44"), ("8192", "16", "8"), ("65464", "4", "1")],
)
def test_windowsize_is_clamped_to_window_bytes(blksize: str, asked: str, granted: str) -> None:
    oack = oack_for({"windowsize": asked, "blksize": blksize})  # order does not matter
    assert oack["windowsize"] == granted
    assert list(oack) == ["windowsize", "blksize"]


@pytest.mark.parametrize(
    ("asked", "granted"), [("0", None), ("1", "1"), ("255", "255"), ("256", None)]
)
def test_timeout_edges(asked: str, granted: str | None) -> None:
    assert oack_for({"timeout": asked}).get("timeout") == granted


def test_tsize_answers_the_real_size() -> None:
    assert oack_for({"tsize": "0"}, size=123456) == {"tsize": "123456"}
    assert oack_for({"tsize": "enable"}, size=7) == {"tsize": "7"}  # atftp sends this


@pytest.mark.parametrize(
    "options",
    [
        {"blksize": "abc"},
        {"blksize": "-1"},
        {"blksize": "1e3"},
        {"blksize": "9" * 40},
        {"windowsize": "four"},
        {"timeout": "1.5"},
    ],
)
def test_unusable_option_values_are_ignored(options: dict[str, str]) -> None:
    request = parse_packet(encode_request(Opcode.RRQ, "f", "octet", options))
    assert isinstance(request, ReadRequest) and request.options == options
    assert oack_for(options) == {}
    assert oack_for({"timeout": "\u0661"}) == {}  # a non-ASCII digit (the parser refuses it)


def test_oack_keeps_request_order() -> None:
    options = {"tsize": "0", "blksize": "1468", "windowsize": "4"}
    assert list(oack_for(options)) == ["tsize", "blksize", "windowsize"]


def test_config_validation_and_defaults_match_settings() -> None:
    defaults, s = TransferConfig(), Settings()
    assert defaults.timeout == s.tftp_timeout
    assert defaults.retries == s.tftp_retries
    assert defaults.max_blksize == s.tftp_max_blksize
    assert defaults.max_windowsize == s.tftp_max_windowsize
    assert defaults.max_transfers == s.tftp_max_transfers
    assert defaults.window_bytes // 8192 == 8
    bad: dict[str, Any]
    for bad in (
        {"timeout": 0.0},
        {"retries": -1},
        {"max_blksize": 7},
        {"max_blksize": 65465},
        {"max_windowsize": 0},
        {"backoff": 0.5},
        {"timeout": 10.0, "max_timeout": 5.0},
        {"final_retries": -1},
        {"max_transfers": 0},
    ):
        with pytest.raises(ConfigError):
            TransferConfig(**bad)


# ---------------------------------------------------------------------------------------------
# an in-memory client and a fake clock


@dataclass
class Client:
    """An RFC 7440 receiver acting like EDK2's Mtftp4 (windowsize 1 is RFC 1350 lock-step):
    ACK after ``windowsize`` new blocks or the last block; on an unexpected block, ACK the last
    in-order one at once. ``rollover`` is the block number after 65535."""

    blksize: int = 512
    windowsize: int = 1
    rollover: int = 0
    expected: int = 1  # wire number of the next block wanted
    received: bytearray = field(default_factory=bytearray)
    since_ack: int = 0
    finished: bool = False
    oack: dict[str, str] | None = None

    def on_datagram(self, data: bytes) -> list[bytes]:
        packet = parse_packet(data)
        if isinstance(packet, OackPacket):
            self.oack = dict(packet.options)
            self.blksize = int(packet.options.get("blksize", "512"))
            self.windowsize = int(packet.options.get("windowsize", "1"))
            return [encode_ack(0)]
        assert isinstance(packet, DataPacket), packet
        if self.finished:
            return [encode_ack(packet.block)]  # dallying: re-ACK the final block
        if packet.block != self.expected:
            self.since_ack = 0
            return [encode_ack(self._previous())]
        self.received += packet.payload
        self.expected = self._after(packet.block)
        self.since_ack += 1
        last = len(packet.payload) < self.blksize
        if last:
            self.finished = True
        if last or self.since_ack >= self.windowsize:
            self.since_ack = 0
            return [encode_ack(packet.block)]
        return []

    def on_timeout(self) -> list[bytes]:
        self.since_ack = 0
        return [encode_ack(self._previous())]

    def _after(self, block: int) -> int:
        return self.rollover if block == 0xFFFF else block + 1

    def _previous(self) -> int:
        return 0xFFFF if self.expected == self.rollover else self.expected - 1


# ("data" | "ack", 1-based count of that kind of datagram so far — the OACK counts as "data",
# ACK 0 as "ack" —, the datagram) -> drop it?
Drop = Callable[[str, int, bytes], bool]


@dataclass
class Run:
    client: Client
    transfer: ReadTransfer
    now: float
    sent: list[bytes]  # every datagram the server sent, in order
    wakeups: list[float]  # times the retransmit/pacing timer fired


def run(
    transfer: ReadTransfer,
    client: Client,
    *,
    drop: Drop | None = None,
    now: float = 0.0,
    client_timeout: float | None = None,
    capacity: int | None = None,
    keep_sent: bool = True,
    max_steps: int = 5_000_000,
) -> Run:
    """Move datagrams both ways until the transfer is done. ``capacity`` models the client's
    socket buffer: datagrams sent in one go beyond it are lost (the client drains whenever the
    clock moves). ``client_timeout`` lets the client re-ACK when nothing arrives for that long."""
    sent: list[bytes] = []
    wakeups: list[float] = []
    counters = {"data": 0, "ack": 0}
    last_rx = now
    for _ in range(max_steps):
        out = transfer.datagrams_to_send(now)
        acks: list[bytes] = []
        for i, datagram in enumerate(out):
            if keep_sent:
                sent.append(datagram)
            counters["data"] += 1
            if capacity is not None and i >= capacity:
                continue
            if drop and drop("data", counters["data"], datagram):
                continue
            last_rx = now
            acks += client.on_datagram(datagram)
        for ack in acks:
            counters["ack"] += 1
            if drop and drop("ack", counters["ack"], ack):
                continue
            transfer.receive_datagram(ack, now)
        if transfer.done:
            if keep_sent:
                sent += transfer.datagrams_to_send(now)
            return Run(client, transfer, now, sent, wakeups)
        if out or acks:
            continue
        deadline = transfer.get_timer()
        assert deadline is not None, "a live transfer must have a timer"
        if client_timeout is not None and last_rx + client_timeout < deadline:
            now = last_rx + client_timeout
            last_rx = now
            for ack in client.on_timeout():
                transfer.receive_datagram(ack, now)
            continue
        assert deadline >= now
        now = deadline
        wakeups.append(now)
        transfer.handle_timer(now)
    raise AssertionError("transfer did not finish")


def make(
    data: bytes, options: dict[str, str] | None = None, mode: Mode = Mode.OCTET, **config: Any
) -> ReadTransfer:
    request = ReadRequest("f", mode, options or {})
    return ReadTransfer(request, MemoryFile("f", data), now=0.0, config=TransferConfig(**config))


def payload(n: int) -> bytes:
    return hashlib.shake_256(n.to_bytes(8, "big")).digest(n) if n else b""


def data_blocks(sent: list[bytes]) -> list[tuple[int, int]]:
    """(wire block, payload length) of each DATA sent."""
    return [struct.unpack("!H", d[2:4]) + (len(d) - 4,) for d in sent if d[1] == Opcode.DATA]


# ---------------------------------------------------------------------------------------------
# transfers


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 5000])
def test_lock_step_without_options_sends_data_1_at_once(size: int) -> None:
    data = payload(size)
    first = make(data).datagrams_to_send(0.0)
    assert len(first) == 1 and first[0][:4] == b"\x00\x03\x00\x01"  # no OACK: DATA 1 directly
    transfer = make(data)
    result = run(transfer, Client(), now=0.0)
    assert bytes(result.client.received) == data
    assert transfer.outcome is Outcome.COMPLETE
    blocks = data_blocks(result.sent)
    assert len(blocks) == size // 512 + 1  # exact multiples end with an empty DATA
    assert blocks[-1][1] == size % 512
    assert transfer.stats.retransmits == 0 and transfer.stats.timeouts == 0
    assert transfer.stats.bytes_sent == size


@pytest.mark.parametrize("windowsize", [2, 4, 16])
@pytest.mark.parametrize("size", [0, 1468, 1468 * 16, 1468 * 16 + 1, 100_000])
def test_windowed_transfers(windowsize: int, size: int) -> None:
    data = payload(size)
    options = {"blksize": "1468", "windowsize": str(windowsize), "tsize": "0"}
    result = run(make(data, options), Client())
    assert result.client.oack == {
        "blksize": "1468",
        "windowsize": str(windowsize),
        "tsize": str(size),
    }
    assert bytes(result.client.received) == data
    assert result.transfer.outcome is Outcome.COMPLETE
    assert result.wakeups == []  # no loss, no timer, no pacing needed
    assert result.transfer.stats.retransmits == 0


def test_a_whole_window_goes_out_at_once() -> None:
    transfer = make(payload(100_000), {"blksize": "1024", "windowsize": "8"})
    assert transfer.datagrams_to_send(0.0)[0][1] == Opcode.OACK
    transfer.receive_datagram(encode_ack(0), 0.0)
    window = transfer.datagrams_to_send(0.0)
    assert [b for b, _ in data_blocks(window)] == list(range(1, 9))
    assert transfer.datagrams_to_send(0.0) == []  # nothing more until an ACK or a timeout
    transfer.receive_datagram(encode_ack(8), 0.1)
    assert [b for b, _ in data_blocks(transfer.datagrams_to_send(0.1))] == list(range(9, 17))


@pytest.mark.parametrize(
    ("blksize", "blocks", "extra"),
    [
        (8, 65536, 3),  # past the wrap, short final block
        (8, 65536, 0),  # exactly 65536 full blocks: ends with an empty block numbered 1
        (8, 65535, 0),  # exactly 65535 full blocks: the empty final block is number 0
        (512, 65540, 100),
    ],
)
def test_block_numbers_roll_over_to_zero(blksize: int, blocks: int, extra: int) -> None:
    data = payload(blocks * blksize + extra)
    options = {"blksize": str(blksize)} if blksize != 512 else {}
    client = Client(blksize=blksize)
    result = run(make(data, options), client, keep_sent=False)
    assert hashlib.sha256(result.client.received).digest() == hashlib.sha256(data).digest()
    assert result.transfer.outcome is Outcome.COMPLETE
    assert result.transfer.stats.blocks == blocks + 1


def test_rollover_wire_numbers() -> None:
    data = payload(65537 * 8 + 1)
    transfer = make(data, {"blksize": "8", "windowsize": "4"})
    result = run(transfer, Client())
    numbers = [b for b, _ in data_blocks(result.sent)]
    assert numbers[65533:] == [65534, 65535, 0, 1, 2]  # blocks 65534 … 65538
    assert bytes(result.client.received) == data


def test_lost_data_is_retransmitted_with_backoff_then_given_up() -> None:
    transfer = make(payload(2000), timeout=1.0, retries=5, backoff=2.0, max_timeout=8.0)
    result = run(transfer, Client(), drop=lambda kind, n, d: kind == "data" and n >= 2)
    assert transfer.outcome is Outcome.TIMED_OUT
    # block 2 went out at t=0 and again after 1, 2, 4, 8, 8 s; the 6th expiry gives up
    assert result.wakeups == [1.0, 3.0, 7.0, 15.0, 23.0, 31.0]
    assert [b for b, _ in data_blocks(result.sent)] == [1] + [2] * 6
    assert transfer.stats.retransmits == 5 and transfer.stats.timeouts == 6
    assert transfer.get_timer() is None and transfer.datagrams_to_send(99.0) == []


def test_one_lost_data_then_recovery_resets_the_backoff() -> None:
    transfer = make(payload(3000))
    lost = {2, 3}  # block 2 twice
    result = run(transfer, Client(), drop=lambda kind, n, d: kind == "data" and n in lost)
    assert transfer.outcome is Outcome.COMPLETE
    assert bytes(result.client.received) == payload(3000)
    assert result.wakeups == [1.0, 3.0]
    assert transfer.stats.retransmits == 2


def test_lost_ack_is_recovered_by_retransmitting_data() -> None:
    transfer = make(payload(2000))
    result = run(transfer, Client(), drop=lambda kind, n, d: kind == "ack" and n == 2)
    assert transfer.outcome is Outcome.COMPLETE
    assert bytes(result.client.received) == payload(2000)
    assert transfer.stats.retransmits == 1


def test_duplicate_ack_sends_nothing() -> None:
    transfer = make(payload(5000))
    assert len(transfer.datagrams_to_send(0.0)) == 1
    transfer.receive_datagram(encode_ack(1), 0.0)
    assert len(transfer.datagrams_to_send(0.0)) == 1  # block 2
    for ack in (1, 1, 0, 65535, 2000):  # duplicate, older, never sent
        transfer.receive_datagram(encode_ack(ack), 0.0)
        assert transfer.datagrams_to_send(0.0) == []
    assert transfer.stats.blocks == 2


def test_lost_final_ack_ends_unconfirmed_after_two_resends() -> None:
    """curl and atftp exit right after their final ACK (no dallying): if it is lost, the last
    block is resent twice, then the transfer ends as most likely complete, not failed."""
    data = payload(2000)  # blocks 1-3 full, block 4 short
    transfer = make(data, timeout=1.0, retries=5, backoff=2.0, max_timeout=8.0)
    result = run(transfer, Client(), drop=lambda kind, n, d: d == encode_ack(4))
    assert bytes(result.client.received) == data
    assert transfer.outcome is Outcome.COMPLETE_UNCONFIRMED and not transfer.outcome.failed
    assert result.wakeups == [1.0, 3.0, 7.0]  # resend, resend, give up: 7 s, not 31
    assert [b for b, _ in data_blocks(result.sent)] == [1, 2, 3, 4, 4, 4]
    assert transfer.stats.retransmits == 2 and transfer.stats.finished == 7.0


def test_lost_final_window_ack_ends_unconfirmed() -> None:
    data = payload(10_000)
    transfer = make(data, {"blksize": "1000", "windowsize": "4"})
    result = run(transfer, Client(), drop=lambda kind, n, d: d == encode_ack(11))
    assert bytes(result.client.received) == data
    assert transfer.outcome is Outcome.COMPLETE_UNCONFIRMED
    # (this client re-ACKs the resent blocks it already has, which counts as progress once)
    assert 3 <= transfer.stats.timeouts <= 4 and result.now <= 8.01


@pytest.mark.parametrize("final_retries", [0, 1, 3])
def test_final_retries_sets_how_long_a_silent_end_waits(final_retries: int) -> None:
    transfer = make(payload(100), {"blksize": "512"}, final_retries=final_retries)
    result = run(transfer, Client(), drop=lambda kind, n, d: d == encode_ack(1))
    assert transfer.outcome is Outcome.COMPLETE_UNCONFIRMED
    assert transfer.stats.retransmits == final_retries
    assert len(result.wakeups) == final_retries + 1


def test_a_client_silent_from_the_start_still_times_out() -> None:
    """One block, no options: DATA 1 is also the last block, but nothing was ever
    acknowledged, so nothing says the client is there at all."""
    transfer = make(payload(100))
    result = run(transfer, Client(), drop=lambda kind, n, d: kind == "ack")
    assert transfer.outcome is Outcome.TIMED_OUT and transfer.outcome.failed
    assert result.wakeups[-1] == 31.0


def test_final_ack_after_a_resend_still_completes() -> None:
    transfer = make(payload(2000))
    # the first ACK 4 is lost, the client re-ACKs the resent block 4 (it dallies)
    result = run(transfer, Client(), drop=lambda kind, n, d: d == encode_ack(4) and n == 4)
    assert transfer.outcome is Outcome.COMPLETE and result.wakeups == [1.0]


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 200_000),
    blksize=st.sampled_from([8, 512, 1428, 1468, 8192]),
    losses=st.lists(st.tuples(st.integers(1, 400), st.integers(1, 4)), max_size=6),
    lose_acks=st.booleans(),
)
def test_lock_step_fast_path_matches_the_general_path(
    size: int, blksize: int, losses: list[tuple[int, int]], lose_acks: bool
) -> None:
    """`receive_ack` shortcuts the common lock-step ACK; with the shortcut switched off (a
    private switch, for this comparison only) every datagram, timer and counter is the same.
    Losses come in runs (a block lost again after its resend)."""
    data = payload(size)
    lost = {first + i for first, length in losses for i in range(length)}
    kind = "ack" if lose_acks else "data"
    outcomes = []
    for fast in (True, False):
        transfer = make(data, {"blksize": str(blksize)}, retries=20)
        transfer._lockstep = fast
        result = run(transfer, Client(), drop=lambda k, n, d: k == kind and n in lost)
        outcomes.append((result.sent, result.wakeups, transfer.outcome, transfer.stats))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2] in (Outcome.COMPLETE, Outcome.COMPLETE_UNCONFIRMED)


def test_handle_timer_before_the_deadline_does_nothing() -> None:
    transfer = make(payload(5000))
    transfer.datagrams_to_send(0.0)
    assert transfer.get_timer() == 1.0
    transfer.handle_timer(0.5)
    assert transfer.datagrams_to_send(0.5) == [] and transfer.stats.timeouts == 0


def test_client_timeout_option_sets_the_first_retransmit() -> None:
    transfer = make(payload(5000), {"timeout": "3"})
    assert transfer.datagrams_to_send(0.0)[0] == encode_oack({"timeout": "3"})
    assert transfer.get_timer() == 3.0
    transfer.receive_datagram(encode_ack(0), 0.1)
    transfer.datagrams_to_send(0.1)
    assert transfer.get_timer() == pytest.approx(3.1)


def test_lost_oack_is_resent() -> None:
    transfer = make(payload(100), {"blksize": "1024"})
    oack = transfer.datagrams_to_send(0.0)
    transfer.handle_timer(1.0)
    assert transfer.datagrams_to_send(1.0) == oack
    assert transfer.stats.retransmits == 1
    transfer.receive_datagram(encode_ack(0), 1.5)
    assert data_blocks(transfer.datagrams_to_send(1.5)) == [(1, 100)]


def test_ovmf_size_probe_is_a_normal_outcome() -> None:
    """OVMF: RRQ tsize=0 blksize=1468 windowsize=4 → OACK → ERROR 8, then the real RRQ."""
    data = payload(3_000_000)
    probe = make(data, {"tsize": "0", "blksize": "1468", "windowsize": "4"})
    oack = parse_packet(probe.datagrams_to_send(0.0)[0])
    assert oack == OackPacket({"tsize": "3000000", "blksize": "1468", "windowsize": "4"})
    probe.receive_datagram(
        encode_error(ErrorCode.OPTION_REFUSED, "User aborted the transfer"), 0.01
    )
    assert probe.done and probe.outcome is Outcome.PROBED and not probe.outcome.failed
    assert probe.client_error == ErrorPacket(8, "User aborted the transfer")
    assert probe.datagrams_to_send(0.02) == [] and probe.get_timer() is None
    assert probe.stats.blocks == 0
    real = run(make(data, {"blksize": "1468", "windowsize": "4"}), Client())
    assert bytes(real.client.received) == data
    assert real.transfer.outcome is Outcome.COMPLETE


def test_client_error_mid_transfer_ends_quietly() -> None:
    transfer = make(payload(5000))
    transfer.datagrams_to_send(0.0)
    transfer.receive_datagram(encode_error(ErrorCode.DISK_FULL, "disk full"), 0.1)
    assert transfer.outcome is Outcome.CLIENT_ERROR and transfer.outcome.failed is False
    assert transfer.datagrams_to_send(0.2) == []


def test_partial_window_ack_continues_from_there() -> None:
    transfer = make(payload(100_000), {"blksize": "1000", "windowsize": "8"})
    transfer.datagrams_to_send(0.0)
    transfer.receive_datagram(encode_ack(0), 0.0)
    assert len(transfer.datagrams_to_send(0.0)) == 8  # blocks 1-8
    transfer.receive_datagram(encode_ack(5), 0.001)  # the client missed block 6
    resent = [b for b, _ in data_blocks(transfer.datagrams_to_send(0.001))]
    assert resent == [6, 7, 8, 9]  # a loss halves the burst: the rest follows after `pace`
    transfer.receive_datagram(encode_ack(5), 0.001)  # further copies change nothing
    assert transfer.datagrams_to_send(0.001) == []
    assert transfer.get_timer() == pytest.approx(0.002)
    assert [b for b, _ in data_blocks(transfer.datagrams_to_send(0.002))] == [10, 11, 12, 13]


def test_windowed_loss_in_the_middle_recovers_without_a_timeout() -> None:
    data = payload(200_000)
    result = run(
        make(data, {"blksize": "1000", "windowsize": "16"}),
        Client(),
        drop=lambda kind, n, d: kind == "data" and n in (5, 40, 41),
    )
    assert bytes(result.client.received) == data
    assert result.transfer.stats.timeouts == 0


def test_windowed_tail_loss_is_repaired_by_a_probe_not_a_timeout() -> None:
    data = payload(100_000)
    result = run(
        make(data, {"blksize": "1000", "windowsize": "10"}),
        Client(),
        drop=lambda kind, n, d: kind == "data" and n == 11,  # block 10: the first window's tail
    )
    assert bytes(result.client.received) == data
    stats = result.transfer.stats
    assert stats.timeouts == 0 and stats.probes == 1 and stats.retransmits == 1
    assert result.now == pytest.approx(0.002)  # the probe went out _MIN_PROBE after the window
    assert result.transfer._burst == 10  # noqa: SLF001 - one lost block is no reason to slow down


def test_tail_loss_probe_then_timeout_if_the_client_is_silent() -> None:
    transfer = make(payload(100_000), {"blksize": "1000", "windowsize": "4"})
    transfer.datagrams_to_send(0.0)
    transfer.receive_datagram(encode_ack(0), 0.01)  # OACK round trip: 10 ms
    assert len(transfer.datagrams_to_send(0.01)) == 4
    assert transfer.get_timer() == pytest.approx(0.05)  # probe after 4 × RTT
    transfer.handle_timer(0.05)
    assert data_blocks(transfer.datagrams_to_send(0.05)) == [(4, 1000)]
    assert transfer.get_timer() == pytest.approx(1.01)  # then the retransmit timeout
    transfer.handle_timer(1.01)
    assert [b for b, _ in data_blocks(transfer.datagrams_to_send(1.01))] == [1, 2]  # halved
    assert transfer.stats.timeouts == 1 and transfer.stats.probes == 1


def test_a_loss_splits_the_window_into_paced_bursts() -> None:
    transfer = make(payload(8192 * 64), {"blksize": "8192", "windowsize": "8"}, pace=0.001)
    transfer.datagrams_to_send(0.0)
    transfer.receive_datagram(encode_ack(0), 0.0)
    assert len(transfer.datagrams_to_send(0.0)) == 8  # a whole window at once
    transfer.handle_timer(1.0)  # nothing came back
    assert [b for b, _ in data_blocks(transfer.datagrams_to_send(1.0))] == [1, 2, 3, 4]
    assert transfer.get_timer() == pytest.approx(1.001)
    assert transfer.datagrams_to_send(1.0005) == []
    assert [b for b, _ in data_blocks(transfer.datagrams_to_send(1.001))] == [5, 6, 7, 8]
    transfer.receive_datagram(encode_ack(8), 1.0012)  # the window that lost: no growth
    assert [b for b, _ in data_blocks(transfer.datagrams_to_send(1.0012))] == [9, 10, 11, 12]
    assert len(transfer.datagrams_to_send(1.0022)) == 4
    transfer.receive_datagram(encode_ack(16), 1.0023)  # a clean window: one block more
    assert [b for b, _ in data_blocks(transfer.datagrams_to_send(1.0023))] == [17, 18, 19, 20, 21]


def test_small_client_buffer_does_not_stall_a_big_window() -> None:
    """peers.md: blksize 8192 × windowsize 16 into a ~12-datagram buffer stalls atftpd (each
    window's tail lost, a 1 s timeout per window). Probes + adaptive bursts must converge."""
    data = payload(8192 * 16 * 200)  # 200 windows
    for capacity in (12, 5, 1):
        transfer = make(data, {"blksize": "8192", "windowsize": "16"}, window_bytes=1 << 20)
        result = run(transfer, Client(), capacity=capacity, keep_sent=False)
        assert hashlib.sha256(result.client.received).digest() == hashlib.sha256(data).digest()
        assert transfer.stats.timeouts == 0
        assert transfer._burst <= capacity  # noqa: SLF001 - the adaptation is the subject
        # pacing costs one 1 ms gap per extra burst; a 1 s timeout per window would be 200 s
        assert result.now < 0.1 + 200 * 0.001 * math.ceil(16 / capacity)


def test_burst_shrinks_on_a_multi_block_tail_loss_then_grows_back() -> None:
    data = payload(1000 * 16 * 40)
    lost = {15, 16, 17}  # blocks 14-16, the tail of the first window (datagram 1 is the OACK)
    transfer = make(data, {"blksize": "1000", "windowsize": "16"})
    result = run(transfer, Client(), drop=lambda kind, n, d: kind == "data" and n in lost)
    assert bytes(result.client.received) == data
    # the probe (block 16) came out of order: partial ACK 13 → burst 8, ceiling 15; then one
    # more block per clean window
    assert transfer._burst == 15  # noqa: SLF001 - the adaptation is the subject here
    assert transfer.stats.timeouts == 0 and transfer.stats.probes == 1


def test_read_error_sends_error_0() -> None:
    class Broken(MemoryFile):
        def read_at(self, offset: int, length: int) -> bytes:
            raise OSError(5, "I/O error")

    transfer = ReadTransfer(ReadRequest("f"), Broken("f", b"x" * 100), now=0.0)
    assert parse_packet(transfer.datagrams_to_send(0.0)[0]) == ErrorPacket(0, "Read error")
    assert transfer.outcome is Outcome.READ_ERROR and transfer.outcome.failed


def test_file_shrinking_during_the_transfer_is_an_error() -> None:
    file = MemoryFile("f", payload(200_000))
    transfer = ReadTransfer(ReadRequest("f", Mode.OCTET, {"blksize": "65464"}), file, now=0.0)
    transfer.datagrams_to_send(0.0)  # OACK
    transfer.receive_datagram(encode_ack(0), 0.0)
    assert data_blocks(transfer.datagrams_to_send(0.0)) == [(1, 65464)]
    file.data = file.data[:700]
    transfer.receive_datagram(encode_ack(1), 0.0)
    packet = parse_packet(transfer.datagrams_to_send(0.0)[0])
    assert isinstance(packet, ErrorPacket) and packet.code == 0
    assert transfer.outcome is Outcome.READ_ERROR


def test_reads_ahead_instead_of_one_read_per_block() -> None:
    class Counting(MemoryFile):
        reads = 0

        def read_at(self, offset: int, length: int) -> bytes:
            Counting.reads += 1
            return super().read_at(offset, length)

    data = payload(1_000_000)
    transfer = ReadTransfer(ReadRequest("f"), Counting("f", data), now=0.0)
    result = run(transfer, Client())
    assert bytes(result.client.received) == data
    assert transfer.stats.blocks == 1954
    assert Counting.reads <= 1_000_000 // 65536 + 1


def test_cancel_tells_the_client() -> None:
    transfer = make(payload(5000))
    transfer.datagrams_to_send(0.0)
    transfer.cancel(0.5)
    assert parse_packet(transfer.datagrams_to_send(0.5)[0]) == ErrorPacket(
        0, "Server shutting down"
    )
    assert transfer.outcome is Outcome.CANCELLED and transfer.stats.seconds == 0.5


def test_other_packets_are_ignored_and_garbage_raises() -> None:
    transfer = make(payload(5000))
    transfer.datagrams_to_send(0.0)
    for packet in (encode_data(1, b"x"), encode_request(Opcode.RRQ, "f"), encode_oack({})):
        transfer.receive_datagram(packet, 0.0)
    assert not transfer.done and transfer.datagrams_to_send(0.0) == []
    with pytest.raises(TftpError):
        transfer.receive_datagram(b"\x00\x07", 0.0)


# ---------------------------------------------------------------------------------------------
# netascii


def test_netascii_conversion_and_tsize() -> None:
    text = b"line one\nline two\r\nbare cr\r end"
    expected = b"line one\r\nline two\r\0\r\nbare cr\r\0 end"
    result = run(make(text, {"tsize": "0"}, mode=Mode.NETASCII), Client())
    assert result.client.oack == {"tsize": str(len(expected))}
    assert bytes(result.client.received) == expected


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=3000).map(lambda b: b.replace(b"a", b"\n").replace(b"b", b"\r")),
    st.integers(0, 4000),
    st.integers(0, 4000),
)
def test_netascii_reader_random_access(raw: bytes, offset: int, length: int) -> None:
    class Small(NetasciiReader):
        CHUNK = 7  # many chunk boundaries

    reader = Small(MemoryFile("f", raw))
    whole = NetasciiReader.convert(raw)
    assert reader.size == len(whole)
    assert reader.read_at(offset, length) == whole[offset : offset + length]
