"""The conductor's agent client against the real agent command server (`pxeforge.agent.server`,
in-process on loopback, with small test commands) and against sockets that misbehave:
refused connections, silence, garbage, oversized answers. The token never shows in errors."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pxeforge.agent.commands import Command, CommandRunner
from pxeforge.agent.errors import CleaningError
from pxeforge.agent.server import AgentServer
from pxeforge.conductor.agent_client import (
    MAX_ANSWER,
    AgentBusy,
    AgentClient,
    AgentConnectionFailed,
    AgentRequestRefused,
    CommandResult,
)

TOKEN = "t" * 128


@pytest.fixture
def agent() -> Iterator[tuple[AgentServer, threading.Event]]:
    release = threading.Event()

    def echo(params: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
        return {"echo": params}

    def slow(params: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
        progress("slow: waiting")
        release.wait(30)
        return {}

    def boom(params: dict[str, Any], progress: Callable[[str], None]) -> None:
        raise CleaningError("disk on fire")

    runner = CommandRunner([
        Command("test.echo", echo),
        Command("test.slow", slow, is_async=True),
        Command("test.boom", boom, is_async=True),
    ])  # fmt: skip
    server = AgentServer(runner, token=TOKEN, host="127.0.0.1", port=0).start()
    try:
        yield server, release
    finally:
        release.set()
        server.close()


def client_of(server: AgentServer, token: str = TOKEN, timeout: float = 10) -> AgentClient:
    host, port = server.address
    return AgentClient(f"http://{host}:{port}", token, timeout=timeout)


def test_commands_against_the_real_agent_server(
    agent: tuple[AgentServer, threading.Event],
) -> None:
    server, release = agent
    client = client_of(server)
    assert set(client.status()) == {"started_at", "version"}
    echoed = client.post_command("test.echo", {"a": 1}, wait=True)
    assert (echoed.name, echoed.status, echoed.result) == ("echo", "SUCCEEDED", {"echo": {"a": 1}})
    slow = client.post_command("test.slow")
    assert slow.status == "RUNNING" and slow.name == "slow"
    with pytest.raises(AgentBusy) as busy:
        client.post_command("test.echo")
    assert busy.value.status == 409 and busy.value.kind == "AgentIsBusy"
    assert client.get_command(slow.id).status == "RUNNING"
    release.set()
    deadline = time.monotonic() + 10
    while client.get_command(slow.id).status == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    boom = client.post_command("test.boom", wait=True)
    assert boom.status == "FAILED"
    assert boom.error_text == "CleaningError: disk on fire"
    assert [c.id for c in client.get_commands()] == [echoed.id, slow.id, boom.id]
    with pytest.raises(AgentRequestRefused) as unknown:
        client.get_command("nope")
    assert unknown.value.status == 404
    with pytest.raises(AgentRequestRefused) as invalid:
        client.post_command("test.missing")
    assert invalid.value.status == 404 and invalid.value.kind == "InvalidCommandError"
    assert "test.missing" in str(invalid.value)


def test_the_agent_refuses_a_wrong_token(agent: tuple[AgentServer, threading.Event]) -> None:
    server, _ = agent
    wrong = "w" * 128
    for client in (client_of(server, wrong), client_of(server, "")):
        with pytest.raises(AgentRequestRefused) as info:
            client.post_command("test.echo", wait=True)
        assert info.value.status == 401 and info.value.kind == "Unauthorized"
        assert wrong not in str(info.value) and TOKEN not in str(info.value)
    assert client_of(server).get_commands() == []  # nothing ran


def _serve_raw(answer: Callable[[socket.socket], None]) -> tuple[str, Callable[[], None]]:
    """A one-shot TCP server running ``answer`` on each connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                answer(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(5)
        listener.close()

    return f"http://127.0.0.1:{listener.getsockname()[1]}", close


def test_connection_failures_name_the_url_not_the_token() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = AgentClient(f"http://127.0.0.1:{port}", TOKEN, timeout=5)
    with pytest.raises(AgentConnectionFailed) as info:
        client.post_command("standby.sync", wait=True)
    text = str(info.value)
    assert f"http://127.0.0.1:{port}/v1/commands/" in text and TOKEN not in text
    with pytest.raises(AgentConnectionFailed):
        AgentClient("ftp://x", TOKEN, timeout=1)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (None, "no answer within 0.5 s"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnotjs", "not JSON"),
        (b"garbage\r\n\r\n", "BadStatusLine"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "without an 'id'"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_ANSWER + 10)
            + b" " * (MAX_ANSWER + 10),
            "larger than",
        ),  # fmt: skip
    ],
)
def test_misbehaving_agents(reply: bytes | None, reason: str) -> None:
    def answer(conn: socket.socket) -> None:
        conn.recv(65536)
        if reply is None:
            time.sleep(1.0)
        else:
            conn.sendall(reply)

    url, close = _serve_raw(answer)
    try:
        client = AgentClient(url, TOKEN, timeout=0.5)
        with pytest.raises(AgentConnectionFailed) as info:
            client.get_command("abc")
        assert reason in str(info.value) and url in str(info.value)
        assert TOKEN not in str(info.value)
    finally:
        close()


def test_command_result_parsing() -> None:
    good = {"id": "1", "command_name": "sync", "command_status": "SUCCEEDED",
            "command_error": None, "command_result": {}}  # fmt: skip
    assert CommandResult.from_json(good).status == "SUCCEEDED"
    for bad in ([], {**good, "id": ""}, {**good, "command_status": "DONE"},
                {**good, "command_result": [1]}, {**good, "command_name": None}):  # fmt: skip
        with pytest.raises(ValueError):
            CommandResult.from_json(bad)
    odd = CommandResult.from_json({**good, "command_status": "FAILED", "command_error": "oops"})
    assert odd.error_text == "Error: oops"
    bare = CommandResult.from_json({**good, "command_status": "FAILED"})
    assert bare.error_text == "Error: no reason given"
