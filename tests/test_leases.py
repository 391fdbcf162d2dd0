"""LeasePool (pure allocation) and LeaseStore (sqlite durability)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxeforge.errors import ConfigError, LeaseError
from pxeforge.leases import Lease, LeasePool, LeaseState, LeaseStore, client_key

NET = IPv4Network("10.0.0.0/24")
A = IPv4Address


def mac(n: int) -> str:
    return f"52:54:00:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"


def pool(first: str = "10.0.0.10", last: str = "10.0.0.19", **kw: object) -> LeasePool:
    return LeasePool(A(first), A(last), subnet=NET, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- unit


def test_lowest_free_first_then_sticky() -> None:
    p = pool()
    assert p.offer(mac(1), None, None, 0.0) == A("10.0.0.10")
    assert p.offer(mac(2), None, None, 0.0) == A("10.0.0.11")
    assert p.offer(mac(1), None, None, 1.0) == A("10.0.0.10")  # same offer again
    lease = p.request(mac(1), A("10.0.0.10"), 2.0, 3600)
    assert lease is not None and lease.state is LeaseState.BOUND and lease.expires == 3602.0
    # long after expiry, with fresh addresses left, the client still gets its old one back
    assert p.offer(mac(1), None, None, 100_000.0) == A("10.0.0.10")


def test_requested_address_honoured_when_free() -> None:
    p = pool()
    assert p.offer(mac(1), None, A("10.0.0.15"), 0.0) == A("10.0.0.15")
    # taken by mac 1 (offer held): mac 2 asking for it gets the lowest free instead
    assert p.offer(mac(2), None, A("10.0.0.15"), 0.0) == A("10.0.0.10")
    # outside the range: ignored
    assert p.offer(mac(3), None, A("10.0.0.200"), 0.0) == A("10.0.0.11")


def test_request_nak_cases() -> None:
    p = pool(exclude={A("10.0.0.12")})
    assert p.request(mac(1), A("192.168.1.5"), 0.0, 60) is None  # outside the subnet
    assert p.request(mac(1), A("10.0.0.50"), 0.0, 60) is None  # in subnet, not in the pool
    assert p.request(mac(1), A("10.0.0.12"), 0.0, 60) is None  # excluded
    assert p.request(mac(1), A("10.0.0.13"), 0.0, 60) is not None
    assert p.request(mac(2), A("10.0.0.13"), 1.0, 60) is None  # another client's lease
    assert p.request(mac(2), A("10.0.0.13"), 61.0, 60) is not None  # lapsed: may take it
    assert p.lease_of(mac(1)) is None  # mac 1 lost its memory of it


def test_offer_hold_blocks_others_until_it_lapses() -> None:
    p = pool("10.0.0.10", "10.0.0.10", offer_hold=30.0)
    assert p.offer(mac(1), None, None, 0.0) == A("10.0.0.10")
    with pytest.raises(LeaseError):
        p.offer(mac(2), None, None, 29.0)
    assert p.request(mac(2), A("10.0.0.10"), 29.0, 60) is None
    assert p.offer(mac(2), None, None, 30.0) == A("10.0.0.10")  # hold lapsed → reclaimed


def test_exhaustion_raises_and_expiry_frees() -> None:
    p = pool("10.0.0.10", "10.0.0.12")
    for n in range(3):
        ip = p.offer(mac(n), None, None, 0.0)
        assert p.request(mac(n), ip, 0.0, 100) is not None
    with pytest.raises(LeaseError, match="no free address"):
        p.offer(mac(9), None, None, 50.0)
    ip = p.offer(mac(9), None, None, 100.0)  # the oldest expired one is reused
    assert ip == A("10.0.0.10")
    assert p.lease_of(mac(0)) is None


def test_unused_addresses_preferred_over_remembered_ones() -> None:
    p = pool("10.0.0.10", "10.0.0.12")
    ip = p.offer(mac(1), None, None, 0.0)
    p.request(mac(1), ip, 0.0, 10)
    # mac 1's lease expired; a new client still gets a never-used address
    assert p.offer(mac(2), None, None, 50.0) == A("10.0.0.11")
    assert p.offer(mac(1), None, None, 50.0) == A("10.0.0.10")


def test_release_then_reuse() -> None:
    p = pool("10.0.0.10", "10.0.0.10")
    p.request(mac(1), A("10.0.0.10"), 0.0, 3600)
    assert not p.release(mac(2), A("10.0.0.10"))  # not its address
    assert p.release(mac(1), A("10.0.0.10"), now=5.0)
    lease = p.lookup(A("10.0.0.10"))
    assert lease is not None and lease.state is LeaseState.RELEASED
    assert p.offer(mac(2), None, None, 6.0) == A("10.0.0.10")


def test_decline_quarantines_the_address() -> None:
    p = pool("10.0.0.10", "10.0.0.11", decline_hold=600.0)
    ip = p.offer(mac(1), None, None, 0.0)
    p.request(mac(1), ip, 0.0, 3600)
    assert p.decline(mac(1), ip, 1.0)
    assert p.lease_of(mac(1)) is None
    assert p.offer(mac(1), None, None, 2.0) == A("10.0.0.11")
    with pytest.raises(LeaseError):
        p.offer(mac(2), None, None, 2.0)
    assert p.request(mac(2), ip, 2.0, 60) is None
    assert p.offer(mac(2), None, None, 601.0) == ip  # quarantine over


def test_reservations() -> None:
    res = {mac(1): A("10.0.0.11"), mac(2): A("10.0.0.99")}  # in and outside the range
    p = pool(reservations=res)
    assert p.offer(mac(3), None, None, 0.0) == A("10.0.0.10")
    assert p.offer(mac(4), None, None, 0.0) == A("10.0.0.12")  # .11 skipped
    assert p.offer(mac(4), None, A("10.0.0.11"), 0.0) == A("10.0.0.12")
    assert p.request(mac(4), A("10.0.0.11"), 0.0, 60) is None
    assert p.offer(mac(1), None, None, 0.0) == A("10.0.0.11")
    assert p.offer(mac(2), None, A("10.0.0.15"), 0.0) == A("10.0.0.99")
    assert p.request(mac(2), A("10.0.0.15"), 0.0, 60) is None  # go and get your reservation
    assert p.request(mac(2), A("10.0.0.99"), 0.0, 60) is not None


def test_bad_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        pool("10.0.0.20", "10.0.0.10")
    with pytest.raises(ConfigError):
        LeasePool(A("10.0.0.10"), A("10.0.1.10"), subnet=NET)
    with pytest.raises(ConfigError):
        pool(reservations={mac(1): A("10.9.0.1")})


def test_client_id_keys_the_lease() -> None:
    m = mac(1)
    own = bytes([1]) + bytes.fromhex(m.replace(":", ""))
    assert client_key(m, own) == client_key(m) == "mac:" + m
    assert client_key(m, b"\xff\x01\x02") == "id:ff0102"
    p = pool()
    a = p.offer(m, b"\xffabc", None, 0.0)
    b = p.offer(m, b"\xffxyz", None, 0.0)  # same MAC, another client id: another client
    assert a != b
    assert p.offer(m, own, None, 0.0) != a  # and the bare MAC is a third


def test_network_and_broadcast_never_given() -> None:
    p = LeasePool(A("10.0.0.0"), A("10.0.0.255"), subnet=NET, exclude={A("10.0.0.1")})
    got = {p.offer(mac(n), None, None, 0.0) for n in range(253)}
    assert A("10.0.0.0") not in got and A("10.0.0.255") not in got and A("10.0.0.1") not in got
    assert len(got) == 253 == p.size
    with pytest.raises(LeaseError):
        p.offer(mac(999), None, None, 0.0)


def test_large_pool_stays_fast() -> None:
    """65,000 addresses: every allocation must be O(log n), not a scan of the pool."""
    net = IPv4Network("10.0.0.0/16")
    p = LeasePool(A("10.0.0.2"), A("10.0.253.233"), subnet=net)
    n = 65_000
    assert p.size == n
    t0 = time.perf_counter()
    for i in range(n):
        m = f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
        ip = p.offer(m, None, None, 0.0)
        assert p.request(m, ip, 0.0, 3600) is not None
    full = time.perf_counter() - t0
    with pytest.raises(LeaseError):
        p.offer("02:ff:00:00:00:00", None, None, 1.0)
    # everything expires at once (one pass over the timer heap) ...
    t0 = time.perf_counter()
    assert len(p.expire(5000.0)) == n
    mass_expiry = time.perf_counter() - t0
    # ... then newcomers reclaim the longest-expired addresses one by one
    t0 = time.perf_counter()
    for i in range(5000):
        p.offer(f"04:00:00:00:{i >> 8 & 255:02x}:{i & 255:02x}", None, None, 5000.0)
    reclaim = time.perf_counter() - t0
    # a scan per request would be ~n²/2 = 2·10⁹ steps; the heap version runs in about a
    # second on an idle machine (bounds leave room for a loaded one)
    assert full < 20.0, full
    assert mass_expiry < 10.0, mass_expiry
    assert reclaim < 2.0, reclaim


# ---------------------------------------------------------------- property tests


@dataclass
class Grant:
    client: str
    until: float


CLIENTS = [(mac(n), None if n % 3 else bytes([0xFF, n])) for n in range(12)]
RESERVED = {CLIENTS[0][0]: A("10.0.0.12"), CLIENTS[1][0]: A("10.0.0.40")}

op_strategy = st.lists(
    st.tuples(
        st.sampled_from(["offer", "request", "request_other", "release", "decline"]),
        st.integers(0, len(CLIENTS) - 1),
        st.integers(0, 20),  # time step
        st.integers(8, 16),  # address octet for requests
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=op_strategy, size=st.integers(1, 6))
def test_no_address_is_ever_given_to_two_clients(
    ops: list[tuple[str, int, int, int]], size: int
) -> None:
    first = A("10.0.0.10")
    last = A(int(first) + size - 1)
    p = LeasePool(
        first,
        last,
        subnet=NET,
        reservations=RESERVED,
        exclude={A("10.0.0.11")},
        offer_hold=10.0,
        decline_hold=40.0,
    )
    grants: dict[IPv4Address, Grant] = {}  # what we promised, from the API's answers only
    now = 0.0

    def holder(ip: IPv4Address) -> str | None:
        g = grants.get(ip)
        return g.client if g is not None and g.until > now else None

    def grant(key: str, ip: IPv4Address, until: float) -> None:
        for other in [a for a, g in grants.items() if g.client == key and a != ip]:
            del grants[other]  # a client holds one address: its old one is gone
        g = grants.get(ip)
        if g is not None and g.client == key:
            until = max(until, g.until)
        grants[ip] = Grant(key, until)

    for op, c, step, octet in ops:
        now += step
        m, cid = CLIENTS[c]
        key = client_key(m, cid)
        if op == "offer":
            try:
                ip = p.offer(m, cid, A(f"10.0.0.{octet}"), now)
            except LeaseError:
                # only when every address of the range is promised to someone else
                free = [
                    A(i)
                    for i in range(int(first), int(last) + 1)
                    if A(i) != A("10.0.0.11")
                    and A(i) not in RESERVED.values()
                    and holder(A(i)) in (None, key)
                ]
                assert not free or m in RESERVED, (free, grants)
                continue
            assert holder(ip) in (None, key), f"{ip} offered to {key} but held by {holder(ip)}"
            if m in RESERVED and holder(RESERVED[m]) != "quarantine":
                assert ip == RESERVED[m]
            elif m in RESERVED:
                assert ip != RESERVED[m]
            else:
                assert ip not in RESERVED.values() and ip != A("10.0.0.11")
                assert int(first) <= int(ip) <= int(last)
            grant(key, ip, now + 10.0)
        elif op in ("request", "request_other"):
            lease = p.lease_of(m, cid)
            if op == "request" and lease is not None:
                ip = lease.ip
            else:
                ip = A(f"10.0.0.{octet}")
            got = p.request(m, ip, now, 30.0, client_id=cid)
            if got is None:
                continue
            assert got.ip == ip and got.client == key
            assert holder(ip) in (None, key), f"{ip} bound to {key} but held by {holder(ip)}"
            if m in RESERVED and holder(RESERVED[m]) != "quarantine":
                assert ip == RESERVED[m]
            else:
                assert ip not in RESERVED.values()
            grant(key, ip, got.expires)
        elif op == "release":
            lease = p.lease_of(m, cid)
            if lease is not None and p.release(m, lease.ip, client_id=cid, now=now):
                grants.pop(lease.ip, None)
        else:
            lease = p.lease_of(m, cid)
            if lease is not None and p.decline(m, lease.ip, now, client_id=cid):
                grants[lease.ip] = Grant("quarantine", now + 40.0)
        # the pool's own view agrees: one record per client, one client per address
        seen: set[str] = set()
        for rec in p.leases():
            if rec.client:
                assert rec.client not in seen
                seen.add(rec.client)
                assert p.lease_of(rec.mac, _cid_of(rec.client)) == rec


def _cid_of(key: str) -> bytes | None:
    return bytes.fromhex(key[3:]) if key.startswith("id:") else None


@settings(max_examples=100, deadline=None)
@given(ops=op_strategy)
def test_restore_round_trip_keeps_every_bound_lease(ops: list[tuple[str, int, int, int]]) -> None:
    """drain_changes → write → restore rebuilds the bound leases exactly."""
    p = pool(reservations=RESERVED, exclude={A("10.0.0.11")})
    disk: dict[IPv4Address, Lease] = {}
    now = 0.0
    for op, c, step, octet in ops:
        now += step
        m, cid = CLIENTS[c]
        if op == "offer":
            try:
                p.offer(m, cid, None, now)
            except LeaseError:
                pass
        elif op.startswith("request"):
            p.request(m, A(f"10.0.0.{octet}"), now, 1000.0, client_id=cid)
        elif op == "release":
            lease = p.lease_of(m, cid)
            if lease is not None:
                p.release(m, lease.ip, client_id=cid, now=now)
        upserts, deletes = p.drain_changes()
        for ip in deletes:
            disk.pop(ip, None)
        for lease in upserts:
            disk[lease.ip] = lease
    q = pool(reservations=RESERVED, exclude={A("10.0.0.11")})
    q.restore(disk.values(), now)
    bound = {x.ip: x for x in p.leases() if x.state is LeaseState.BOUND and x.expires > now}
    assert {x.ip: x for x in q.leases() if x.state is LeaseState.BOUND} == bound


# ------------------------------------------------------------------- persistence


def test_store_write_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "leases.db"
    store = LeaseStore(path)
    assert not path.exists()  # constructor does no I/O
    with store:
        assert store.load() == []
        a = Lease(A("10.0.0.10"), "mac:" + mac(1), mac(1), 1e9, LeaseState.BOUND)
        b = Lease(A("10.0.0.11"), "id:ff01", mac(2), 1e9, LeaseState.BOUND)
        store.write([a, b])
        store.write([Lease(A("10.0.0.11"), "id:ff01", mac(2), 2e9, LeaseState.RELEASED)])
        store.write([], [A("10.0.0.10")])
    with LeaseStore(path) as again:
        assert again.load() == [
            Lease(A("10.0.0.11"), "id:ff01", mac(2), 2e9, LeaseState.RELEASED),
        ]
        jm = again._conn().execute("PRAGMA journal_mode").fetchone()[0]
        assert jm == "wal"


def test_pool_survives_restart_through_store(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    p = pool()
    with LeaseStore(path) as store:
        for n in range(5):
            ip = p.offer(mac(n), None, None, 0.0)
            p.request(mac(n), ip, 0.0, 3600)
        p.release(mac(4), A("10.0.0.14"), now=1.0)
        store.write(*p.drain_changes())
    q = pool()
    with LeaseStore(path) as store:
        assert q.restore(store.load(), 10.0) == 5
    for n in range(4):
        lease = q.lease_of(mac(n))
        assert lease is not None and lease.state is LeaseState.BOUND
        assert lease.ip == A(f"10.0.0.{10 + n}")
        assert q.request(mac(9), lease.ip, 10.0, 60) is None  # still protected
    assert q.offer(mac(9), None, None, 10.0) == A("10.0.0.15")
    assert q.offer(mac(4), None, None, 10.0) == A("10.0.0.14")  # remembered after release


_KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    from ipaddress import IPv4Address
    from pxeforge.leases import Lease, LeaseState, LeaseStore
    store = LeaseStore(sys.argv[1]).open()
    n = 0
    for batch in range(100000):
        leases = []
        for _ in range(1 + batch % 7):
            ip = IPv4Address(0x0A000000 + n)
            leases.append(Lease(ip, f"mac:{n}", "02:00:00:00:00:00", 1e10, LeaseState.BOUND))
            n += 1
        store.write(leases)
        sys.stdout.write("".join(f"ACK {x.ip}\\n" for x in leases))
        sys.stdout.flush()
    """
)


def test_sigkill_mid_burst_loses_no_acked_lease(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_CHILD, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        acked: list[str] = []
        deadline = time.monotonic() + 60
        try:
            while len(acked) < 300 + 200 * round_ and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                acked.append(line.split()[1])
            os.kill(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        acked += [line.split()[1] for line in rest.splitlines() if line.startswith("ACK ")]
        assert len(acked) >= 300
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
        with LeaseStore(path) as store:
            on_disk = {str(x.ip) for x in store.load()}
        missing = set(acked) - on_disk
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"


def test_forget_offer_when_the_client_chose_another_server() -> None:
    p = pool("10.0.0.10", "10.0.0.10")
    ip = p.offer(mac(1), None, None, 0.0)
    assert not p.forget_offer(mac(2), 1.0)
    assert p.forget_offer(mac(1), 1.0)
    assert p.offer(mac(2), None, None, 1.0) == ip  # free for others at once
    p.request(mac(2), ip, 1.0, 60)
    assert not p.forget_offer(mac(2), 2.0)  # bound leases are not offers
    assert p.has_changes
    upserts, deletes = p.drain_changes()
    assert [x.ip for x in upserts] == [ip] and deletes == [] and not p.has_changes
