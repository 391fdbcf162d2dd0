"""The agent's command API over real HTTP (urllib and curl): status, token refusal, commands
sync and async, busy, unknown command, bad bodies, IPA's error bodies."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from pxeforge.agent import AGENT_VERSION
from pxeforge.agent.clean import clean_commands
from pxeforge.agent.commands import Command, CommandRunner, Params, Progress
from pxeforge.agent.disks import DiskScope
from pxeforge.agent.errors import CommandExecutionError, InvalidCommandParamsError
from pxeforge.agent.server import AgentServer

TOKEN = "t" * 128


class Agent:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.ended: list[str] = []

        def slow(params: Params, progress: Progress) -> dict[str, Any]:
            progress("slow: halfway")
            if not self.release.wait(30):
                raise CommandExecutionError("never released")
            return {"got": params.get("x")}

        def echo(params: Params, progress: Progress) -> dict[str, Any]:
            return {"echo": params}

        def broken(params: Params, progress: Progress) -> dict[str, Any]:
            raise RuntimeError("a bug")

        def check(params: Params) -> None:
            if "x" in params and not isinstance(params["x"], int):
                raise InvalidCommandParamsError("x must be an integer")

        commands = [
            Command("test.slow", slow, is_async=True, check=check),
            Command("test.echo", echo),
            Command("test.broken", broken),
            *clean_commands(DiskScope(only=frozenset())),
        ]
        self.runner = CommandRunner(commands, on_end=lambda r: self.ended.append(r.id))
        self.server = AgentServer(self.runner, token=TOKEN, host="127.0.0.1", port=0).start()
        self.base = f"http://127.0.0.1:{self.server.address[1]}"

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    try:
        yield a
    finally:
        a.release.set()
        a.server.close()


def _fault(body: dict[str, Any], status: int, kind: str) -> str:
    """IPA's WSME-style error body plus the serialized error."""
    assert body["faultcode"] == ("Client" if status < 500 else "Server")
    assert body["type"] == kind and body["code"] == status
    assert body["faultstring"].startswith(body["message"])
    text: str = body["faultstring"]
    return text


def test_status_needs_no_token(agent: Agent) -> None:
    status, body = agent.call("GET", "/v1/status")
    assert status == 200 and body["version"] == AGENT_VERSION
    assert isinstance(body["started_at"], float)
    assert agent.call("GET", "/status")[0] == 200


def test_token_is_required_everywhere_else(agent: Agent) -> None:
    for method, path, body in (
        ("GET", "/v1/commands/", None),
        ("GET", "/v1/commands", None),
        ("GET", "/v1/commands/some-id", None),
        ("POST", "/v1/commands/", {"name": "test.echo", "params": {}}),
    ):
        for query in ("", "?agent_token=wrong", "?agent_token=" + "t" * 127):
            status, reply = agent.call(method, path + query, body)
            assert status == 401, (method, path, query)
            assert "agent token" in _fault(reply, 401, "Unauthorized").lower()
    assert agent.runner.list() == []  # nothing ran


def test_no_token_at_lookup_refuses_every_command(agent: Agent) -> None:
    agent.server.token = None
    status, reply = agent.call("POST", "/v1/commands/?agent_token=", {"name": "test.echo",
                                                                        "params": {}})  # fmt: skip
    assert status == 401 and "received no token" in _fault(reply, 401, "Unauthorized")


def test_sync_command_answers_its_result(agent: Agent) -> None:
    q = f"?agent_token={TOKEN}"
    status, result = agent.call("POST", "/v1/commands/" + q, {"name": "test.echo",
                                                               "params": {"a": 1}})  # fmt: skip
    assert status == 200
    assert set(result) == {"id", "command_name", "command_status", "command_error",
                           "command_result"}  # fmt: skip
    assert result["command_name"] == "echo"
    assert result["command_status"] == "SUCCEEDED" and result["command_error"] is None
    assert result["command_result"] == {"echo": {"a": 1}}
    assert agent.call("GET", f"/v1/commands/{result['id']}{q}") == (200, result)
    assert agent.call("GET", "/v1/commands/" + q) == (200, {"commands": [result]})
    assert agent.ended == [result["id"]]


def test_async_command_busy_then_done(agent: Agent) -> None:
    q = f"?agent_token={TOKEN}"
    status, first = agent.call("POST", "/v1/commands/" + q, {"name": "test.slow",
                                                              "params": {"x": 5}})  # fmt: skip
    assert status == 200 and first["command_status"] == "RUNNING"
    assert first["command_result"] is None
    # one asynchronous command at a time: everything else is refused with 409 meanwhile
    for name in ("test.slow", "test.echo"):
        status, reply = agent.call("POST", "/v1/commands/" + q, {"name": name, "params": {}})
        assert status == 409
        assert first["id"] in _fault(reply, 409, "AgentIsBusy")
    assert agent.runner.status_message() == "slow: halfway"
    agent.release.set()
    status, done = agent.call("GET", f"/v1/commands/{first['id']}{q}&wait=true")
    assert status == 200 and done["command_status"] == "SUCCEEDED"
    assert done["command_result"] == {"got": 5}
    assert agent.runner.status_message() == "slow: SUCCEEDED (slow: halfway)"
    # free again; wait=true on POST answers the ended command
    status, again = agent.call("POST", "/v1/commands/" + q + "&wait=true",
                               {"name": "test.slow", "params": {}})  # fmt: skip
    assert status == 200 and again["command_status"] == "SUCCEEDED"
    ids = [c["id"] for c in agent.call("GET", "/v1/commands/" + q)[1]["commands"]]
    assert ids == [first["id"], again["id"]]


def test_refused_requests(agent: Agent) -> None:
    q = f"?agent_token={TOKEN}"
    status, reply = agent.call("POST", "/v1/commands/" + q, {"name": "nope.cmd", "params": {}})
    assert status == 404
    text = _fault(reply, 404, "InvalidCommandError")
    assert "nope.cmd" in text and "standby" not in text and "test.echo" in text
    status, reply = agent.call("POST", "/v1/commands/" + q, {"name": "test.slow",
                                                              "params": {"x": "a"}})  # fmt: skip
    assert status == 400 and "x must be" in _fault(reply, 400, "InvalidCommandParamsError")
    for bad in (b"{", b"[]", b'{"name": "test.echo"}', b'{"name": 1, "params": {}}',
                b'{"name": "test.echo", "params": []}'):  # fmt: skip
        status, reply = agent.call("POST", "/v1/commands/" + q, raw=bad)
        assert status == 400, bad
        _fault(reply, 400, "InvalidContentError")
    status, reply = agent.call("GET", f"/v1/commands/unknown-id{q}")
    assert status == 404 and "unknown-id" in _fault(reply, 404, "RequestedObjectNotFoundError")
    assert agent.call("GET", "/v2/other")[0] == 404
    assert agent.call("DELETE", "/v1/commands/" + q)[0] == 405
    assert agent.call("POST", "/v1/status", {})[0] == 405
    assert agent.runner.list() == []
    # a command that raises something unexpected: FAILED with its type, the server goes on
    status, result = agent.call("POST", "/v1/commands/" + q, {"name": "test.broken",
                                                               "params": {}})  # fmt: skip
    assert status == 200 and result["command_status"] == "FAILED"
    assert result["command_error"]["type"] == "RuntimeError"
    assert result["command_error"]["details"] == "a bug"
    assert agent.call("GET", "/v1/status")[0] == 200


def test_clean_steps_and_bad_steps_over_http(agent: Agent) -> None:
    q = f"?agent_token={TOKEN}"
    status, result = agent.call("POST", "/v1/commands/" + q + "&wait=true",
                                {"name": "clean.get_clean_steps",
                                 "params": {"node": {}, "ports": []}})  # fmt: skip
    assert status == 200 and result["command_name"] == "get_clean_steps"
    steps = result["command_result"]["clean_steps"]["GenericHardwareManager"]
    assert [(s["step"], s["priority"], s["interface"]) for s in steps] == [
        ("erase_devices_metadata", 99, "deploy"), ("erase_devices", 0, "deploy")]  # fmt: skip
    version = result["command_result"]["hardware_manager_version"]
    assert version == {"generic_hardware_manager": "1.2"}
    status, reply = agent.call("POST", "/v1/commands/" + q, {
        "name": "clean.execute_clean_step", "params": {"step": {"step": "format_c"}}})  # fmt: skip
    assert status == 400 and "format_c" in _fault(reply, 400, "InvalidCommandParamsError")
    step = {"step": "erase_devices_metadata", "interface": "deploy", "priority": 99}
    status, result = agent.call("POST", "/v1/commands/" + q + "&wait=true", {
        "name": "clean.execute_clean_step",
        "params": {"step": step, "node": {}, "ports": [],
                   "clean_version": {"generic_hardware_manager": "0.9"}}})  # fmt: skip
    assert result["command_status"] == "FAILED"
    assert result["command_error"]["type"] == "CleanVersionMismatch"
    # no disks in scope: the step succeeds and says what it did (nothing)
    status, result = agent.call("POST", "/v1/commands/" + q + "&wait=true", {
        "name": "clean.execute_clean_step",
        "params": {"step": step, "clean_version": version}})  # fmt: skip
    assert result["command_status"] == "SUCCEEDED"
    assert result["command_result"] == {
        "clean_result": {"erased": {}, "skipped_read_only": []}, "clean_step": step}  # fmt: skip


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is missing")
def test_curl_client(agent: Agent) -> None:
    def curl(*args: str) -> tuple[int, Any]:
        done = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        body, _, code = done.stdout.rpartition("\n")
        return int(code), json.loads(body)

    url = f"{agent.base}/v1/commands/?wait=true&agent_token={TOKEN}"
    status, result = curl("-X", "POST", "-H", "Content-Type: application/json",
                          "-d", '{"name": "test.echo", "params": {"k": "v"}}', url)  # fmt: skip
    assert status == 200 and result["command_result"] == {"echo": {"k": "v"}}
    status, reply = curl(f"{agent.base}/v1/commands/")
    assert status == 401 and reply["faultcode"] == "Client"
