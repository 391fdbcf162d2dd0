"""Prometheus metrics of one ``pxeforge serve``, in the text exposition format (0.0.4).

Theory of operation
-------------------
Most figures already exist as the services' own counters — `DhcpServer.stats` and
``dropped``, `TftpServer.stats`, `HttpServer.stats`, the lease pool, the timeline — so nothing
on a hot path counts twice: a scrape reads them (`Metrics.families`, on the event loop that
owns them) and renders text (`render`, a pure function). What no service counts is kept here:

* the **time spent in each provision state** (`Metrics.observe_history`, a `Store` observer):
  each transition observes how long the node was in the state it left, from the node's
  ``provision_updated_at`` — a histogram per state (`STATE_SECONDS_BUCKETS`);
* **power actions** by kind and result, from the same history records;
* the **agent's calls** (lookup, heartbeat, continue_inspection) by result, counted by the
  API's agent middleware (`count_agent`).

Nodes by provision state are read from the store at scrape time (one ``SELECT``, off the loop,
by the API handler). The format is written here rather than with ``prometheus_client``: it is
a few lines of text, and its global registry and collector classes would bring nothing to one
process whose counters already live elsewhere.

``/metrics`` is public on the API port (`pxeforge.api.metrics`): Prometheus scrapers usually
have no credentials, and the figures name no node, MAC or address — counts only.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pxeforge.inventory.states import ALL_STATES

__all__ = [
    "CONTENT_TYPE",
    "STATE_SECONDS_BUCKETS",
    "Family",
    "Histogram",
    "Metrics",
    "render",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
STATE_SECONDS_BUCKETS: Final = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)
"""Upper bounds of the time-in-state histogram, seconds (a PXE boot to a day in ``active``)."""

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its samples are ``(suffix, labels, value)``."""

    name: str
    type: str  # counter, gauge, histogram
    help: str
    samples: Sequence[tuple[str, Labels, float]] = ()


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The text exposition format of ``families`` (HELP, TYPE, then the samples)."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for suffix, labels, value in family.samples:
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            lines.append(
                f"{family.name}{suffix}{{{text}}} {_number(value)}"
                if text
                else f"{family.name}{suffix} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


class Histogram:
    """Cumulative-bucket histograms by one label value; safe from any thread."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._series: dict[str, tuple[list[int], list[float]]] = {}  # counts, [sum]

    def observe(self, key: str, value: float) -> None:
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            total[0] += value

    def samples(self, label: str) -> list[tuple[str, Labels, float]]:
        out: list[tuple[str, Labels, float]] = []
        with self._lock:
            series = {k: (list(c), t[0]) for k, (c, t) in self._series.items()}
        for key in sorted(series):
            counts, total = series[key]
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                out.append(("_bucket", ((label, key), ("le", _le(bound))), running))
            out.append(("_sum", ((label, key),), total))
            out.append(("_count", ((label, key),), running))
        return out


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


@dataclass
class Metrics:
    """The process's metrics: collectors over the services plus what only it counts."""

    state_seconds: Histogram = field(default_factory=lambda: Histogram(STATE_SECONDS_BUCKETS))
    power_actions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, result)
    agent_calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (call, result)
    collectors: list[Callable[[], Iterable[Family]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- counting ------------------------------------------------------------------------------

    def observe_history(self, notice: Any) -> None:
        """A `Store` observer (`pxeforge.inventory.store.HistoryNotice`)."""
        from pxeforge.recording import classify_history

        if notice.from_state is not None and notice.seconds_in_state is not None:
            if notice.from_state != notice.to_state:
                self.state_seconds.observe(notice.from_state, notice.seconds_in_state)
        for record in notice.records:
            if notice.from_state is not None and record.event_type == "transition":
                continue
            classified = classify_history(record)
            if classified.source == "power":
                result = "error" if classified.level == "error" else "ok"
                with self._lock:
                    self.power_actions[classified.kind, result] += 1

    def count_agent(self, call: str, result: str) -> None:
        with self._lock:
            self.agent_calls[call, result] += 1

    # ---- reading -------------------------------------------------------------------------------

    def watch(self, services: Any) -> None:
        """Collect from a `pxeforge.servers.run.Services`' DHCP, TFTP, HTTP and timeline."""
        self.collectors.append(lambda: _service_families(services))

    def families(self, node_states: Mapping[str, int] | None = None) -> list[Family]:
        """Every family; ``node_states`` (from the store) adds nodes by provision state."""
        out: list[Family] = []
        for collect in self.collectors:
            out.extend(collect())
        if node_states is not None:
            counts = {state: 0 for state in sorted(ALL_STATES)}
            counts.update(node_states)
            out.append(
                Family(
                    "pxeforge_nodes",
                    "gauge",
                    "Nodes by provision state.",
                    [("", (("provision_state", s),), n) for s, n in sorted(counts.items())],
                )
            )
        with self._lock:
            power = sorted(self.power_actions.items())
            agent = sorted(self.agent_calls.items())
        out.append(
            Family(
                "pxeforge_power_actions_total",
                "counter",
                "Power actions recorded in node history, by kind (on, off, reboot, boot-device) "
                "and result (ok, error).",
                [("", (("action", k), ("result", r)), n) for (k, r), n in power],
            )
        )
        out.append(
            Family(
                "pxeforge_agent_requests_total",
                "counter",
                "Agent ramdisk calls (lookup, heartbeat, continue_inspection) by result "
                "(ok, not-found, refused, error).",
                [("", (("call", c), ("result", r)), n) for (c, r), n in agent],
            )
        )
        out.append(
            Family(
                "pxeforge_node_state_seconds",
                "histogram",
                "Time nodes spent in a provision state, observed when they leave it.",
                self.state_seconds.samples("provision_state"),
            )
        )
        return out

    def render(self, node_states: Mapping[str, int] | None = None) -> str:
        return render(self.families(node_states))


# ---- the services' own counters -------------------------------------------------------------


def _counter(name: str, help: str, value: float) -> Family:
    return Family(name, "counter", help, [("", (), value)])


def _gauge(name: str, help: str, value: float) -> Family:
    return Family(name, "gauge", help, [("", (), value)])


_DHCP_GLUE_KEYS: Final = frozenset({"sent", "send-error", "commits", "commit-error"})


def _service_families(services: Any) -> list[Family]:
    out: list[Family] = []
    dhcp = services.dhcp
    if dhcp is not None and dhcp.responder is not None:
        stats = dict(dhcp.stats)
        requests = []
        for key, n in sorted(stats.items()):
            if key in _DHCP_GLUE_KEYS:
                continue
            mtype, _, outcome = key.partition(":")
            requests.append(("", (("type", mtype), ("outcome", outcome)), n))
        out.append(
            Family(
                "pxeforge_dhcp_requests_total",
                "counter",
                "DHCP requests by message type and outcome (offer, ack, nak, ignored:<why>…).",
                requests,
            )
        )
        out.append(
            _counter("pxeforge_dhcp_replies_sent_total", "DHCP replies sent.", stats.get("sent", 0))
        )
        out.append(
            _counter(
                "pxeforge_dhcp_send_errors_total",
                "DHCP replies that failed to send.",
                stats.get("send-error", 0),
            )
        )
        out.append(
            _counter(
                "pxeforge_dhcp_lease_commits_total",
                "Lease database group commits.",
                stats.get("commits", 0),
            )
        )
        out.append(
            _counter(
                "pxeforge_dhcp_lease_commit_errors_total",
                "Lease database commits that failed (their ACKs withheld).",
                stats.get("commit-error", 0),
            )
        )
        out.append(
            _counter(
                "pxeforge_dhcp_dropped_total", "Malformed DHCP datagrams dropped.", dhcp.dropped
            )
        )
        pool = dhcp.responder.pool
        if pool is not None:
            out.append(
                _gauge("pxeforge_dhcp_pool_addresses", "Addresses in the DHCP pool.", pool.size)
            )
            states = Counter(lease.state.value for lease in pool.leases())
            out.append(
                Family(
                    "pxeforge_dhcp_leases",
                    "gauge",
                    "Lease records by state (bound: in use; offered: held for a client).",
                    [
                        ("", (("state", s),), states.get(s, 0))
                        for s in ("bound", "declined", "expired", "offered", "released")
                    ],
                )
            )
    tftp = services.tftp
    if tftp is not None:
        t = tftp.stats
        out.append(
            Family(
                "pxeforge_tftp_transfers_total",
                "counter",
                "TFTP transfers by outcome (started counts every transfer begun).",
                [
                    ("", (("outcome", name),), getattr(t, name))
                    for name in ("started", "completed", "unconfirmed", "aborted", "failed")
                ],
            )
        )
        out.append(
            _counter(
                "pxeforge_tftp_refused_total",
                "TFTP requests answered with an ERROR (not found, access violation, "
                "busy, write request).",
                t.refused,
            )
        )
        out.append(
            _counter(
                "pxeforge_tftp_busy_total",
                "TFTP requests refused because max transfers were running.",
                t.busy,
            )
        )
        out.append(
            _counter(
                "pxeforge_tftp_sent_bytes_total",
                "TFTP DATA payload bytes sent, retransmissions included.",
                t.bytes_sent,
            )
        )
        out.append(
            _counter(
                "pxeforge_tftp_retransmits_total",
                "TFTP DATA and OACK datagrams sent again.",
                t.retransmits,
            )
        )
        out.append(
            _counter("pxeforge_tftp_dropped_total", "Malformed TFTP datagrams dropped.", t.dropped)
        )
        out.append(
            _counter(
                "pxeforge_tftp_wrong_tid_total",
                "Datagrams to a TFTP transfer from another address.",
                t.wrong_tid,
            )
        )
        out.append(
            _gauge("pxeforge_tftp_active_transfers", "TFTP transfers running now.", tftp.active)
        )
    http = services.http
    if http is not None:
        h = http.stats
        out.append(
            Family(
                "pxeforge_http_responses_total",
                "counter",
                "Boot-plane HTTP responses by status code.",
                [("", (("code", str(code)),), n) for code, n in sorted(h.responses.items())],
            )
        )
        out.append(
            _counter(
                "pxeforge_http_sent_bytes_total",
                "Boot-plane HTTP response body bytes sent.",
                h.bytes_sent,
            )
        )
    timeline = services.timeline
    out.append(
        _counter(
            "pxeforge_timeline_events_total",
            "Events recorded in the live timeline.",
            timeline.recorded,
        )
    )
    out.append(
        _counter(
            "pxeforge_timeline_evicted_keys_total",
            "MACs and nodes evicted from the timeline (max keys reached).",
            timeline.evicted_keys,
        )
    )
    return out
