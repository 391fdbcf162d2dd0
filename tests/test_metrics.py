"""`pxeforge.metrics`: the text format, read back with prometheus_client's own parser."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pxeforge.inventory.records import HistoryRecord
from pxeforge.inventory.store import HistoryNotice
from pxeforge.metrics import Family, Histogram, Metrics, render

parser = pytest.importorskip("prometheus_client.parser")


def _parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_render_is_valid_exposition_text() -> None:
    text = render(
        [
            Family(
                "x_total",
                "counter",
                "A help\\with a\nnewline.",
                [("", (("why", 'quote " back\\ nl\n'),), 3)],
            ),  # fmt: skip
            Family("g", "gauge", "g.", [("", (), 0.25)]),
            Family("empty_total", "counter", "no samples yet."),
        ]
    )
    assert text.endswith("\n")
    parsed = _parse(text)
    assert parsed["x_total", (("why", 'quote " back\\ nl\n'),)] == 3
    assert parsed["g", ()] == 0.25
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert families["x"].documentation == "A help\\with a\nnewline."


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram([1.0, 10.0])
    for value in (0.5, 1.0, 5.0, 50.0):
        h.observe("deploying", value)
    parsed = _parse(render([Family("t_seconds", "histogram", "t.", h.samples("state"))]))
    bucket = "t_seconds_bucket"
    assert parsed[bucket, (("le", "1.0"), ("state", "deploying"))] == 2  # le is inclusive
    assert parsed[bucket, (("le", "10.0"), ("state", "deploying"))] == 3
    assert parsed[bucket, (("le", "+Inf"), ("state", "deploying"))] == 4
    assert parsed["t_seconds_count", (("state", "deploying"),)] == 4
    assert parsed["t_seconds_sum", (("state", "deploying"),)] == 56.5


def test_history_feeds_state_times_and_power_actions() -> None:
    def record(text: str, event_type: str, severity: str = "INFO") -> HistoryRecord:
        return HistoryRecord(1, "h", 1, datetime.now(UTC), text, event_type, severity, None, None)

    metrics = Metrics()
    metrics.observe_history(
        HistoryNotice(
            "u",
            (record('"deploying" -> "active" on "done"', "transition"),),
            from_state="deploying",
            to_state="active",
            seconds_in_state=90.0,
        )
    )
    metrics.observe_history(
        HistoryNotice(
            "u",
            (record('Power state changed from "a" to "b" ("power off" asked)', "provisioning"),),
        )  # fmt: skip
    )
    metrics.observe_history(
        HistoryNotice(
            "u",
            (
                record(
                    "Failed to change power state to 'power on' by 'power on'. Error: no BMC",
                    "provisioning",
                    "ERROR",
                ),
            ),
        )  # fmt: skip
    )
    metrics.count_agent("heartbeat", "ok")
    parsed = _parse(metrics.render({"active": 2}))
    assert parsed["pxeforge_node_state_seconds_count", (("provision_state", "deploying"),)] == 1
    assert parsed["pxeforge_node_state_seconds_sum", (("provision_state", "deploying"),)] == 90
    assert parsed["pxeforge_power_actions_total", (("action", "off"), ("result", "ok"))] == 1
    assert parsed["pxeforge_power_actions_total", (("action", "on"), ("result", "error"))] == 1
    assert parsed["pxeforge_agent_requests_total", (("call", "heartbeat"), ("result", "ok"))] == 1
    assert parsed["pxeforge_nodes", (("provision_state", "active"),)] == 2
    assert parsed["pxeforge_nodes", (("provision_state", "enroll"),)] == 0
