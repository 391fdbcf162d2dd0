"""The agent's calls in the live timeline (api.timeline's middleware) and the node view of it,
against a live API: a real store, conductor and HTTP; the agent's requests over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeforge.agent.inventory import collect, override_mac
from pxeforge.recording import HistoryRecorder

from .conftest import LiveApi

MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:00:00:99"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveApi]:
    api = LiveApi(f"sqlite:///{tmp_path / 'pxeforge.db'}", data_dir=tmp_path).start()
    api.store.observers.append(HistoryRecorder(api.ctx.timeline, api.store))
    api.store.observers.append(api.ctx.metrics.observe_history)
    try:
        yield api
    finally:
        api.close()


def _agent(api: LiveApi, method: str, path: str, body: Any = None) -> Any:
    return api.request(method, path, body, auth=False)


def _events(api: LiveApi, path: str) -> list[dict[str, Any]]:
    reply = api.get(path)
    assert reply.status == 200, reply.raw
    events: list[dict[str, Any]] = reply.json["events"]
    return events


def test_agent_calls_and_transitions_land_on_the_nodes_timeline(live: LiveApi) -> None:
    # a machine no node owns looks itself up: filed under its MAC, an unknown machine
    assert _agent(live, "GET", f"/v1/lookup?addresses={OTHER}").status == 404
    stray = _events(live, f"/v1/timeline/{OTHER}")
    assert [(e["source"], e["kind"], e["data"]["found"]) for e in stray] == [
        ("agent", "lookup", False)
    ]
    assert OTHER in {u["mac"] for u in live.get("/v1/timeline/unknown").json["unknown"]}

    node = live.post("/v1/nodes", {"driver": "fake-hardware", "name": "n1"}).json
    uuid = node["uuid"]
    assert live.post("/v1/ports", {"node_uuid": uuid, "address": MAC}).status == 201
    for target in ("manage", "inspect"):
        assert live.put(f"/v1/nodes/{uuid}/states/provision", {"target": target}).status == 202
        live.wait_idle()
    lookup = _agent(live, "GET", f"/v1/lookup?addresses={MAC}")
    token = lookup.json["config"]["agent_token"]
    url = "http://192.0.2.10:9999"
    wrong = {"callback_url": url, "agent_token": "x" * 128}
    assert _agent(live, "POST", f"/v1/heartbeat/{uuid}", wrong).status == 400
    beat = {"callback_url": url, "agent_token": token, "agent_version": "9.9",
            "agent_status_message": "collecting inventory"}  # fmt: skip
    assert _agent(live, "POST", f"/v1/heartbeat/{uuid}", beat).status == 202
    inventory = override_mac(collect("/"), MAC)
    done = _agent(live, "POST", "/v1/continue_inspection", {"inventory": inventory})
    assert done.status == 202, done.raw
    live.wait_idle()
    assert live.node(uuid)["provision_state"] == "manageable"

    events = _events(live, f"/v1/nodes/{uuid}/timeline")
    assert all(e["mac"] == MAC and e["node"] == uuid for e in events)
    seen = [(e["source"], e["kind"]) for e in events]
    agent = [k for s, k in seen if s == "agent"]
    assert agent == ["lookup", "refused", "heartbeat", "inventory"]
    transitions = [(e["data"]["from"], e["data"]["to"]) for e in events
                   if e["kind"] == "transition"]  # fmt: skip
    assert transitions == [
        ("enroll", "verifying"), ("verifying", "manageable"), ("manageable", "inspecting"),
        ("inspecting", "inspect wait"), ("inspect wait", "inspecting"),
        ("inspecting", "manageable"),
    ]  # fmt: skip
    by_kind = {e["kind"]: e for e in events if e["source"] == "agent"}
    assert by_kind["lookup"]["data"]["found"] is True
    assert by_kind["refused"]["data"]["call"] == "heartbeat"
    assert "agent token" in by_kind["refused"]["data"]["why"]
    assert by_kind["heartbeat"]["data"] == {
        "version": "9.9", "status_message": "collecting inventory",
    }  # fmt: skip
    assert MAC in by_kind["inventory"]["data"]["interfaces"]
    assert token not in json.dumps(events)  # the agent token never reaches the timeline
    assert MAC not in {u["mac"] for u in live.get("/v1/timeline/unknown").json["unknown"]}
    # since= pages, the name works like the UUID, an unknown node is Ironic's 404
    tail = _events(live, f"/v1/nodes/n1/timeline?since={events[-3]['seq']}")
    assert tail == events[-2:]
    assert live.get("/v1/nodes/nope/timeline").status == 404
    assert live.get(f"/v1/nodes/{uuid}/timeline?limit=0").status == 400
    assert live.get(f"/v1/nodes/{uuid}/timeline?since=x").status == 400
    assert live.get(f"/v1/nodes/{uuid}/timeline?bogus=1").status == 400
    # the calls counted in /metrics, which needs no credentials
    metrics = live.get("/metrics", auth=False)
    assert metrics.status == 200
    text = metrics.raw.decode()
    assert 'pxeforge_agent_requests_total{call="lookup",result="not-found"} 1' in text
    assert 'pxeforge_agent_requests_total{call="lookup",result="ok"} 1' in text
    assert 'pxeforge_agent_requests_total{call="heartbeat",result="refused"} 1' in text
    assert 'pxeforge_agent_requests_total{call="continue_inspection",result="ok"} 1' in text
    assert 'pxeforge_node_state_seconds_count{provision_state="inspect wait"} 1' in text
