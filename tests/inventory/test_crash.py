"""kill -9 a process in the middle of its transitions on SQLite; the database must survive.

After each kill: ``PRAGMA integrity_check`` is ok, foreign keys hold, and the node is
consistent — its state, its ``extra["n"]`` counter and its transition history all agree, i.e.
every transition was saved entirely or not at all. The dead process's lock is then recovered and
the node keeps working.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pxeforge.inventory import states as st
from pxeforge.inventory.lifecycle import Outcome, process_event
from pxeforge.inventory.store import Store

WORKER = Path(__file__).with_name("worker.py")


def _spawn(url: str, uuid: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), "churn", url, "churner", uuid, "100000", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_line(proc: subprocess.Popen[str], wanted: str, timeout: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            _out, err = proc.communicate(timeout=10)
            pytest.fail(f"worker exited before {wanted!r}: {err}")
        if line.strip() == wanted:
            return
    pytest.fail(f"worker did not print {wanted!r} within {timeout} s")


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _check_consistent(path: Path, store: Store, uuid: str) -> int:
    """Integrity of the file and of the node; returns the node's transition count."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    node = store.get_node(uuid)
    n = int(node.extra.get("n", 0))
    # n operations alternate provide (2 history records) and manage (1), from manageable
    expected_state = st.MANAGEABLE if n % 2 == 0 else st.AVAILABLE
    assert node.provision_state == expected_state, (n, node.provision_state)
    assert node.target_provision_state is None
    transitions = []
    marker = None
    while page := store.list_history(uuid, marker=marker):
        transitions += [h for h in page if h.event_type == "transition"]
        marker = page[-1].uuid
    assert len(transitions) == (n // 2) * 3 + (n % 2) * 2
    assert all(h.severity == "INFO" for h in transitions)
    return n


def test_kill_during_commit(tmp_path: Path) -> None:
    """Deterministic: killed after the UPDATE and INSERTs ran, before COMMIT."""
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    store = Store.connect(url)
    try:
        uuid = store.create_node("fake", provision_state=st.MANAGEABLE).uuid
        proc = _spawn(url, uuid, "5")  # stall inside the 5th transition's transaction
        try:
            _wait_for_line(proc, "in-commit")
        finally:
            _kill(proc)
        assert _check_consistent(path, store, uuid) == 4  # the 5th never happened
        node = store.get_node(uuid)
        assert node.reservation == "churner"  # it died holding the lock
        [recovery] = store.recover_stuck("tester")
        assert recovery.previous_holder == "churner"
        assert store.get_node(uuid).reservation is None
        after = process_event(
            store, uuid, "provide", holder="tester",
            driver_work=lambda _n, _s: Outcome("done", changes={"extra": {"n": 5}}),
        )  # fmt: skip
        assert after.provision_state == st.AVAILABLE
        assert _check_consistent(path, store, uuid) == 5
    finally:
        store.close()


def test_kill_at_random_moments(tmp_path: Path) -> None:
    """Five kills at random times while a process churns transitions as fast as it can."""
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    rng = random.Random(20260821)
    store = Store.connect(url)
    try:
        uuid = store.create_node("fake", provision_state=st.MANAGEABLE).uuid
        previous = 0
        for _round in range(5):
            proc = _spawn(url, uuid)
            try:
                _wait_for_line(proc, "tick 3")
                time.sleep(rng.uniform(0.0, 0.25))
            finally:
                _kill(proc)
            n = _check_consistent(path, store, uuid)
            assert n >= previous + 3
            previous = n
            store.recover_stuck("tester")
            assert store.get_node(uuid).reservation is None
    finally:
        store.close()
