"""pxeforge.fuzz: the mutator is pure and seeded, and each mutation does what it says."""

from __future__ import annotations

from collections import Counter

import pytest

from pxeforge.fuzz import (
    Mutation,
    Mutator,
    codec_rejects,
    dhcp_option_spans,
    dhcp_probe,
    dhcp_seeds,
    tftp_probe,
    tftp_request_seeds,
    tftp_transfer_seeds,
)
from pxeforge.protocols.dhcp import HEADER_SIZE, parse
from pxeforge.protocols.tftp import parse_packet

from .fuzzlab import dhcp_requests

CAPTURED = [c.payload for c in dhcp_requests()]


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a = [m.data for m in Mutator(CAPTURED, "dhcp", seed=3).take(300)]
    b = [m.data for m in Mutator(CAPTURED, "dhcp", seed=3).take(300)]
    c = [m.data for m in Mutator(CAPTURED, "dhcp", seed=4).take(300)]
    assert a == b
    assert a != c


def test_every_kind_is_used_and_mutants_stay_bounded() -> None:
    mutants = Mutator(CAPTURED, "dhcp", seed=1, max_size=700).take(3000)
    kinds = Counter(k for m in mutants for k in m.kinds)
    assert set(kinds) == set(Mutation)
    assert all(len(m.data) <= 700 for m in mutants)
    assert [m.index for m in mutants] == list(range(3000))
    # a splice at matching offsets or a bit flipped twice can give the seed back: rarely
    assert sum(m.data == CAPTURED[m.seed] for m in mutants) < 30


@pytest.mark.parametrize("dialect", ["dhcp", "tftp"])
@pytest.mark.parametrize("kind", list(Mutation))
def test_each_kind_alone_changes_the_datagram(dialect: str, kind: Mutation) -> None:
    seeds = CAPTURED if dialect == "dhcp" else tftp_request_seeds(["pxelinux.0"])
    m = Mutator(seeds, dialect, seed=9, kinds=[kind], stack=1)  # type: ignore[arg-type]
    mutants = m.take(200)
    assert all(x.kinds == (kind,) for x in mutants)
    changed = sum(x.data != seeds[x.seed] for x in mutants)
    assert changed >= 150, (kind, changed)  # a splice at matching offsets may rebuild a seed


def test_dhcp_option_spans_walk_the_captured_options() -> None:
    data = CAPTURED[0]
    spans = dhcp_option_spans(data)
    assert spans[0][0] == HEADER_SIZE and data[HEADER_SIZE] == 53  # message type first
    assert len(spans) == len(parse(data).options)


def test_length_lies_and_duplicates_hit_the_dhcp_options() -> None:
    seed = CAPTURED[0]
    for kind in (Mutation.LENGTH_LIE, Mutation.DUPLICATE):
        mutants = Mutator([seed], "dhcp", seed=5, kinds=[kind], stack=1).take(200)
        # the header is left alone: only the option area changes
        assert all(m.data[:HEADER_SIZE] == seed[:HEADER_SIZE] for m in mutants)
    lies = Mutator([seed], "dhcp", seed=5, kinds=[Mutation.LENGTH_LIE], stack=1).take(200)
    assert sum(codec_rejects("dhcp", m.data) for m in lies) > 100


def test_codec_rejects_agrees_with_the_codecs() -> None:
    assert not codec_rejects("dhcp", CAPTURED[0])
    assert codec_rejects("dhcp", CAPTURED[0][:100])
    assert codec_rejects("dhcp", bytes([1, 6, 6, 0]) + CAPTURED[0][4:])  # htype 6: no MAC
    assert not codec_rejects("tftp", b"\0\4\0\1")
    assert codec_rejects("tftp", b"\0\4\0")


def test_built_seeds_and_probes_are_valid() -> None:
    for data in dhcp_seeds():
        assert parse(data).mac
    for data in tftp_request_seeds(["a", "b"]) + tftp_transfer_seeds():
        parse_packet(data)
    probe = dhcp_probe(1068)
    assert probe.bind == ("0.0.0.0", 1068)
    first, second = probe.make(0), probe.make(1)
    assert parse(first).broadcast and first[4:8] != second[4:8]
    assert probe.matches(1, second) and not probe.matches(0, second)
    assert tftp_probe().matches(0, b"\0\5\0\1File not found\0")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Mutator([], "dhcp", seed=1)
    with pytest.raises(ValueError):
        Mutator(CAPTURED, "dhcp", seed=1, kinds=[])
