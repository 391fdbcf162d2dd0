"""DHCP address allocation: a pure lease pool, and a durable lease store on sqlite.

Theory of operation
-------------------
`LeasePool` is a sans-I/O state machine over one address range. Every operation takes the
current time (``now``, wall-clock seconds: leases outlive restarts) and answers at once; it
never sleeps, never touches a socket or a disk. It keeps at most one *record* per address:

    OFFERED   held for a client between OFFER and REQUEST (``offer_hold`` seconds)
    BOUND     acknowledged; the client owns the address until ``expires``
    EXPIRED   a lapsed offer or lease, remembered so the same client gets it back
    RELEASED  given back by the client (DHCPRELEASE), remembered likewise
    DECLINED  a client found the address in use (DHCPDECLINE): quarantined ``decline_hold``

and at most one record per client. A client is its option-61 client identifier when it sends
one, else its MAC (RFC 2131 §4.2: "the combination of 'client identifier' or 'chaddr' and
assigned network address constitute a unique identifier for the client's lease"). A client
identifier that is just ``01`` + the MAC is the same client as that MAC, so a machine keeps its
address from the PXE firmware (which sends it) to an installer's dhclient (which does not).

Choosing an address for a DISCOVER (RFC 2131 §4.3.1, in this order):

1. the MAC's reservation, when no other client holds that address;
2. the client's own record (current, offered, expired or released: "sticky" addresses);
3. the address it asks for (option 50), when free;
4. the lowest never-used free address: a min-heap of freed addresses plus a cursor that only
   moves up, so a /16 pool costs O(log n) per allocation, never a scan;
5. the longest-expired address remembered for some other client (RFC 2131 §4.3.1 asks to
   reuse the addresses nobody remembers first).

Timers are a heap of ``(expires, ip)`` with lazy deletion; `expire` runs at the start of every
operation and pops only what is due. An address is never held by two clients: records are
keyed by address, and a REQUEST is granted only for a free address, one of the client's own,
or one whose previous holder's lease has lapsed.

`LeaseStore` persists the records worth keeping (bound, released, declined, deleted) in
sqlite (WAL, ``synchronous=FULL``). The pool journals those changes; the DHCP server drains
the journal, writes one transaction per batch of ACKs (a group commit) and sends the ACKs
only after the commit returned: an ACK on the wire is always a lease on disk. Offers and
passive expiry are not written (a restart just forgets offers; a bound lease whose time has
passed loads as expired).
"""

from __future__ import annotations

import enum
import heapq
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import TracebackType

from pxeforge.errors import ConfigError, LeaseError, StartupError

__all__ = ["Lease", "LeasePool", "LeaseState", "LeaseStore", "client_key"]


class LeaseState(enum.Enum):
    OFFERED = "offered"
    BOUND = "bound"
    EXPIRED = "expired"
    RELEASED = "released"
    DECLINED = "declined"


#: States whose address the previous client may lose to another one (reclaimable memory).
_REMEMBERED = frozenset({LeaseState.EXPIRED, LeaseState.RELEASED})
#: States whose record ends at ``expires`` (kept in the timer heap).
_TIMED = frozenset({LeaseState.OFFERED, LeaseState.BOUND, LeaseState.DECLINED})


@dataclass(frozen=True, slots=True)
class Lease:
    """One address record. ``client`` is the `client_key` ("" for a declined address)."""

    ip: IPv4Address
    client: str
    mac: str
    expires: float
    state: LeaseState


def client_key(mac: str, client_id: bytes | None = None) -> str:
    """The identity a lease belongs to: ``id:<hex>`` for option 61, else ``mac:<mac>``.

    ``mac`` is normalised lower-case ``aa:bb:…``. A client id of type 1 (Ethernet) carrying the
    very same MAC is treated as the MAC itself.
    """
    if client_id:
        if not (len(client_id) == 7 and client_id[0] == 1 and client_id[1:].hex(":") == mac):
            return "id:" + client_id.hex()
    return "mac:" + mac


class LeasePool:
    """Addresses ``first``..``last`` of ``subnet``; pure, time passed in.

    ``reservations`` maps a normalised MAC to its fixed address (inside the subnet, inside or
    outside the range). ``exclude`` lists addresses never handed out (our own, the router); the
    subnet's network and broadcast addresses are always excluded.
    """

    def __init__(
        self,
        first: IPv4Address,
        last: IPv4Address,
        *,
        subnet: IPv4Network,
        reservations: Mapping[str, IPv4Address] | None = None,
        exclude: Iterable[IPv4Address] = (),
        offer_hold: float = 30.0,
        decline_hold: float = 600.0,
    ) -> None:
        if int(last) < int(first):
            raise ConfigError(f"lease pool: {last} comes before {first}")
        if first not in subnet or last not in subnet:
            raise ConfigError(f"lease pool {first}-{last} is not inside subnet {subnet}")
        self.first, self.last, self.subnet = first, last, subnet
        self.offer_hold, self.decline_hold = offer_hold, decline_hold
        self._first, self._last = int(first), int(last)
        self._exclude = {int(ip) for ip in exclude}
        if subnet.prefixlen < 31:
            self._exclude |= {int(subnet.network_address), int(subnet.broadcast_address)}
        self._reservation: dict[str, int] = {}
        self._reserved_for: dict[int, str] = {}
        for mac, ip in (reservations or {}).items():
            if ip not in subnet:
                raise ConfigError(f"reservation {mac} → {ip} is outside subnet {subnet}")
            if int(ip) in self._reserved_for:
                raise ConfigError(f"address {ip} is reserved twice")
            if int(ip) in self._exclude:
                raise ConfigError(f"reservation {mac} → {ip}: that address is excluded")
            self._reservation[mac] = int(ip)
            self._reserved_for[int(ip)] = mac
        self._records: dict[int, Lease] = {}
        self._client_ip: dict[str, int] = {}
        self._timers: list[tuple[float, int]] = []  # OFFERED / BOUND / DECLINED ends
        self._reclaim: list[tuple[float, int]] = []  # EXPIRED / RELEASED, oldest first
        self._freed: list[int] = []  # free addresses below the cursor
        self._cursor = self._first  # every address >= cursor not in _records is free
        self._changes: dict[int, Lease | None] = {}

    # ----------------------------------------------------------------- queries

    @property
    def size(self) -> int:
        """How many addresses the range can hand out dynamically."""
        n = self._last - self._first + 1
        return n - sum(1 for ip in self._exclude | set(self._reserved_for) if self._in_range(ip))

    def __len__(self) -> int:
        """Number of address records (any state)."""
        return len(self._records)

    def leases(self) -> Iterator[Lease]:
        return iter(list(self._records.values()))

    def lookup(self, ip: IPv4Address) -> Lease | None:
        return self._records.get(int(ip))

    def lease_of(self, mac: str, client_id: bytes | None = None) -> Lease | None:
        """The client's record, whatever its state."""
        ip = self._client_ip.get(client_key(mac, client_id))
        return None if ip is None else self._records[ip]

    def inform(self, ip: IPv4Address) -> bool:
        """May we answer a DHCPINFORM from ``ip`` (RFC 2131 §3.4)? Only from our subnet."""
        return ip in self.subnet

    # -------------------------------------------------------------- operations

    def offer(
        self,
        mac: str,
        client_id: bytes | None,
        requested: IPv4Address | None,
        now: float,
    ) -> IPv4Address:
        """Pick and hold an address for a DISCOVER; raises `LeaseError` when none is left."""
        self.expire(now)
        key = client_key(mac, client_id)
        ip = self._choose(key, mac, requested)
        if ip is None:
            raise LeaseError(f"no free address in {self.first}-{self.last} for {mac}")
        rec = self._records.get(ip)
        if (
            rec is not None
            and rec.client == key
            and rec.state is LeaseState.BOUND
            and rec.expires >= now + self.offer_hold
        ):
            return rec.ip  # still bound: offer the same lease, don't shorten it
        if rec is not None and rec.client == key and rec.state is LeaseState.BOUND:
            # about to end: turn it into an offer so the hold covers the next REQUEST
            self._put(replace(rec, state=LeaseState.OFFERED, expires=now + self.offer_hold))
            return rec.ip
        self._put(Lease(IPv4Address(ip), key, mac, now + self.offer_hold, LeaseState.OFFERED))
        return IPv4Address(ip)

    def request(
        self,
        mac: str,
        ip: IPv4Address,
        now: float,
        lease_time: float,
        *,
        client_id: bytes | None = None,
    ) -> Lease | None:
        """Bind ``ip`` to the client (REQUEST); None means NAK.

        Refused: an address outside the subnet or not ours to give (outside the range and not
        this MAC's reservation, excluded), held by another client, quarantined, or another one
        than this MAC's reservation while the reservation is available.
        """
        self.expire(now)
        key = client_key(mac, client_id)
        want = int(ip)
        reserved = self._reservation.get(mac)
        if reserved is not None and reserved != want and self._available(reserved, key, mac):
            return None
        if not self._available(want, key, mac):
            return None
        lease = Lease(IPv4Address(want), key, mac, now + lease_time, LeaseState.BOUND)
        self._put(lease, journal=True)
        return lease

    def renew(
        self,
        mac: str,
        ip: IPv4Address,
        now: float,
        lease_time: float,
        *,
        client_id: bytes | None = None,
    ) -> Lease | None:
        """Extend a lease (RENEWING/REBINDING, or INIT-REBOOT): same rules as `request`.

        A client whose record we lost but whose address is free gets it back: refusing would
        only make it start over from DISCOVER and land on the same address.
        """
        return self.request(mac, ip, now, lease_time, client_id=client_id)

    def release(
        self, mac: str, ip: IPv4Address, *, client_id: bytes | None = None, now: float | None = None
    ) -> bool:
        """DHCPRELEASE: the client gives ``ip`` back; True when it was its address."""
        if now is not None:
            self.expire(now)
        rec = self._records.get(int(ip))
        key = client_key(mac, client_id)
        if rec is None or rec.client != key or rec.state not in _TIMED:
            return False
        expires = rec.expires if now is None else min(rec.expires, now)
        self._put(replace(rec, state=LeaseState.RELEASED, expires=expires), journal=True)
        return True

    def decline(
        self, mac: str, ip: IPv4Address, now: float, *, client_id: bytes | None = None
    ) -> bool:
        """DHCPDECLINE: ``ip`` is in use by someone else; quarantine it (RFC 2131 §4.3.3)."""
        self.expire(now)
        rec = self._records.get(int(ip))
        key = client_key(mac, client_id)
        if rec is None or rec.client != key or rec.state is LeaseState.DECLINED:
            return False
        quarantine = Lease(rec.ip, "", mac, now + self.decline_hold, LeaseState.DECLINED)
        self._put(quarantine, journal=True)
        return True

    def forget_offer(self, mac: str, now: float, *, client_id: bytes | None = None) -> bool:
        """The client chose another server's offer (RFC 2131 §4.3.2 SELECTING): let go of
        ours. Its address stays remembered for it, like a lapsed offer. True when it held one.
        """
        self.expire(now)
        rec = self.lease_of(mac, client_id)
        if rec is None or rec.state is not LeaseState.OFFERED:
            return False
        self._put(replace(rec, state=LeaseState.EXPIRED, expires=now))
        return True

    def expire(self, now: float) -> list[Lease]:
        """Apply every timer due at ``now``; returns the records that changed (new state)."""
        changed: list[Lease] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            expires, ip = heapq.heappop(timers)
            rec = self._records.get(ip)
            if rec is None or rec.expires != expires or rec.state not in _TIMED:
                continue  # stale heap entry
            if rec.state is LeaseState.DECLINED:
                self._drop(ip, journal=True)
                continue
            new = replace(rec, state=LeaseState.EXPIRED)
            self._put(new)
            changed.append(new)
        return changed

    # ------------------------------------------------------------- persistence

    def restore(self, leases: Iterable[Lease], now: float) -> int:
        """Load records from a `LeaseStore` at start; returns how many were kept.

        Records for addresses this configuration no longer hands to that client are skipped;
        a client with several records keeps the one that ends last. Nothing is journaled.
        """
        best: dict[str, Lease] = {}
        declined: list[Lease] = []
        for lease in leases:
            ip = int(lease.ip)
            if lease.state is LeaseState.DECLINED:
                if self._in_range(ip) and lease.expires > now:
                    declined.append(lease)
                continue
            if not self._ours(ip, lease.mac):
                continue
            old = best.get(lease.client)
            if old is None or lease.expires > old.expires:
                best[lease.client] = lease
        kept = 0
        for lease in [*best.values(), *declined]:
            if int(lease.ip) in self._records:
                continue
            state = lease.state
            if state is LeaseState.OFFERED or (state is LeaseState.BOUND and lease.expires <= now):
                state = LeaseState.EXPIRED
            self._put(replace(lease, state=state))
            kept += 1
        return kept

    @property
    def has_changes(self) -> bool:
        """Records changed since the last `drain_changes` (something to write)."""
        return bool(self._changes)

    def drain_changes(self) -> tuple[list[Lease], list[IPv4Address]]:
        """The records to write since the last call: (upserts, deleted addresses)."""
        changes, self._changes = self._changes, {}
        upserts = [lease for lease in changes.values() if lease is not None]
        deletes = [IPv4Address(ip) for ip, lease in changes.items() if lease is None]
        return upserts, deletes

    # ---------------------------------------------------------------- internals

    def _in_range(self, ip: int) -> bool:
        return self._first <= ip <= self._last

    def _dynamic(self, ip: int) -> bool:
        """In the range and free of exclusions and reservations."""
        return self._in_range(ip) and ip not in self._exclude and ip not in self._reserved_for

    def _ours(self, ip: int, mac: str) -> bool:
        """May this MAC ever hold ``ip`` under this configuration?"""
        return self._dynamic(ip) or self._reserved_for.get(ip) == mac

    def _available(self, ip: int, key: str, mac: str) -> bool:
        """Could ``ip`` be given to this client now (possibly taking lapsed memory)?"""
        if not self._ours(ip, mac):
            return False
        rec = self._records.get(ip)
        return rec is None or rec.client == key or rec.state in _REMEMBERED

    def _choose(self, key: str, mac: str, requested: IPv4Address | None) -> int | None:
        reserved = self._reservation.get(mac)
        if reserved is not None and self._available(reserved, key, mac):
            return reserved
        own = self._client_ip.get(key)
        if own is not None and self._ours(own, mac):
            return own
        if requested is not None:
            want = int(requested)
            rec = self._records.get(want)
            if self._ours(want, mac) and (rec is None or rec.client == key):
                return want
        ip = self._lowest_free()
        if ip is None:
            ip = self._oldest_remembered()
        return ip

    def _lowest_free(self) -> int | None:
        freed = self._freed
        while freed and (freed[0] in self._records or not self._dynamic(freed[0])):
            heapq.heappop(freed)
        cursor, records = self._cursor, self._records
        while cursor <= self._last and (cursor in records or not self._dynamic(cursor)):
            cursor += 1
        self._cursor = cursor
        if freed and (cursor > self._last or freed[0] < cursor):
            return heapq.heappop(freed)
        if cursor <= self._last:
            self._cursor = cursor + 1
            return cursor
        return None

    def _oldest_remembered(self) -> int | None:
        reclaim = self._reclaim
        while reclaim:
            expires, ip = heapq.heappop(reclaim)
            rec = self._records.get(ip)
            if (
                rec is not None
                and rec.expires == expires
                and rec.state in _REMEMBERED
                and self._dynamic(ip)
            ):
                return ip
        return None

    def _put(self, lease: Lease, *, journal: bool = False) -> None:
        """Store a record, keeping one record per client and one client per address."""
        ip = int(lease.ip)
        old = self._records.get(ip)
        if old is not None and old.client and old.client != lease.client:
            if self._client_ip.get(old.client) == ip:
                del self._client_ip[old.client]
        if lease.client:
            prev = self._client_ip.get(lease.client)
            if prev is not None and prev != ip:
                self._drop(prev, journal=True)
            self._client_ip[lease.client] = ip
        self._records[ip] = lease
        if lease.state in _TIMED:
            heapq.heappush(self._timers, (lease.expires, ip))
            if len(self._timers) > 4 * len(self._records) + 64:
                self._timers = [
                    (r.expires, i) for i, r in self._records.items() if r.state in _TIMED
                ]
                heapq.heapify(self._timers)
        else:
            heapq.heappush(self._reclaim, (lease.expires, ip))
            if len(self._reclaim) > 4 * len(self._records) + 64:
                self._reclaim = [
                    (r.expires, i) for i, r in self._records.items() if r.state in _REMEMBERED
                ]
                heapq.heapify(self._reclaim)
        if journal:
            self._changes[ip] = lease

    def _drop(self, ip: int, *, journal: bool) -> None:
        old = self._records.pop(ip, None)
        if old is not None and old.client and self._client_ip.get(old.client) == ip:
            del self._client_ip[old.client]
        if ip < self._cursor and self._dynamic(ip):
            heapq.heappush(self._freed, ip)
        if journal:
            self._changes[ip] = None


# ------------------------------------------------------------------ durable store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    ip      TEXT PRIMARY KEY,
    client  TEXT NOT NULL,
    mac     TEXT NOT NULL,
    expires REAL NOT NULL,
    state   TEXT NOT NULL
) WITHOUT ROWID
"""


class LeaseStore:
    """Lease records in an sqlite database (WAL, ``synchronous=FULL``).

    `write` is one transaction and returns once it is durable; it may run in a worker thread
    (calls are serialised by a lock). The constructor does no I/O; `open` does.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.commits = 0  # transactions written (for stats)

    def open(self) -> LeaseStore:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"lease database {self.path}: {exc}") from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            db.close()
            raise StartupError(f"lease database {self.path}: {exc}") from None
        self._db = db
        return self

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("LeaseStore used before open()")
        return self._db

    def load(self) -> list[Lease]:
        with self._lock:
            rows = self._conn().execute("SELECT ip, client, mac, expires, state FROM leases")
            out: list[Lease] = []
            for ip, client, mac, expires, state in rows:
                try:
                    out.append(
                        Lease(IPv4Address(ip), client, mac, float(expires), LeaseState(state))
                    )
                except ValueError:
                    continue  # a row we cannot read is a lease we do not honour
            return out

    def write(self, upserts: Iterable[Lease], deletes: Iterable[IPv4Address] = ()) -> None:
        """Write one batch in one transaction; returns when it is on disk."""
        rows = [(str(x.ip), x.client, x.mac, x.expires, x.state.value) for x in upserts]
        gone = [(str(ip),) for ip in deletes]
        if not rows and not gone:
            return
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                if gone:
                    db.executemany("DELETE FROM leases WHERE ip = ?", gone)
                if rows:
                    db.executemany(
                        "INSERT OR REPLACE INTO leases (ip, client, mac, expires, state)"
                        " VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.commits += 1

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> LeaseStore:
        return self.open() if self._db is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
