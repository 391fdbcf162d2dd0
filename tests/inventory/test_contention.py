"""Two OS processes on one PostgreSQL database hammer process_event on the same nodes.

Each worker, inside its lock (in its driver work), writes a "begin HOLDER I STEPS" history record
and checks that the database names it as the lock holder; the transition records follow in the
final transaction. If two processes ever worked on a node at once, another record would land
between a "begin" and its transition records. We also check that every transition the workers
report is in the history (and no other), and that NodeLocked was really exercised.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from pxeforge.inventory import states as st
from pxeforge.inventory.errors import InvalidTransition, NodeLocked
from pxeforge.inventory.lifecycle import process_event
from pxeforge.inventory.machine import advance
from pxeforge.inventory.records import HistoryRecord, NodeRecord
from pxeforge.inventory.store import Store

WORKER = Path(__file__).with_name("worker.py")
ITERATIONS = 150
NEXT: dict[str, tuple[str, str | None]] = {  # the same cycle as worker.py
    st.MANAGEABLE: ("provide", "done"),
    st.AVAILABLE: ("manage", None),
}


def _all_history(store: Store, uuid: str) -> list[HistoryRecord]:
    records: list[HistoryRecord] = []
    while page := store.list_history(uuid, marker=records[-1].uuid if records else None):
        records += page
    return records


def _check_history(history: list[HistoryRecord]) -> tuple[int, int]:
    """Assert no interleaving; return (operations, transitions) seen."""
    operations = transitions = 0
    i = 0
    while i < len(history):
        record = history[i]
        if record.event_type == "work":
            _begin, holder, _n, steps = record.event.split()
            following = history[i + 1 : i + 1 + int(steps)]
            assert len(following) == int(steps), record.event
            for step in following:
                assert (step.event_type, step.conductor, step.severity) == (
                    "transition", holder, "INFO",
                ), f"{record.event} interleaved with {step}"  # fmt: skip
            operations += 1
            transitions += int(steps)
            i += 1 + int(steps)
        else:
            # only refusals stand alone: an operation's transitions always follow its "begin"
            assert record.severity == "ERROR" and "can not be performed" in record.event, record
            i += 1
    return operations, transitions


def test_two_processes_never_work_on_one_node_at_once(pg_url: str) -> None:
    store = Store.connect(pg_url)
    try:
        uuids = [store.create_node("fake", provision_state=st.MANAGEABLE).uuid for _ in range(2)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    "contend",
                    pg_url,
                    holder,
                    json.dumps(uuids),
                    str(ITERATIONS),
                    str(seed),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for seed, holder in enumerate(("conductor-a", "conductor-b"))
        ]
        results: list[dict[str, int]] = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=240)
            finally:
                proc.kill()
                proc.wait()
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        total = {k: sum(r[k] for r in results) for k in results[0]}
        assert total["overlap"] == 0
        assert total["ok"] + total["locked"] + total["refused"] == 2 * ITERATIONS
        assert total["locked"] > 0, f"no lock contention was produced: {results}"
        assert all(r["ok"] > 0 for r in results), results

        operations = transitions = 0
        for uuid in uuids:
            node = store.get_node(uuid)
            assert node.reservation is None
            history = _all_history(store, uuid)
            ops, steps = _check_history(history)
            operations += ops
            transitions += steps
            # replaying the recorded transitions from the start reaches the node's state
            state = st.MANAGEABLE
            for record in history:
                if record.event_type == "transition" and record.severity == "INFO":
                    src, _arrow, dst, _on, event = record.event.replace('"', "").split(" ", 4)
                    assert src == state
                    state = advance(state, event)
                    assert state == dst
            assert state == node.provision_state
        assert operations == total["ok"]
        assert transitions == total["transitions"]
    finally:
        store.close()


def test_threads_on_sqlite(tmp_path: Path) -> None:
    """The same with four threads on one SQLite file: no "database is locked", no overlap."""
    store = Store.connect(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        uuid = store.create_node("fake", provision_state=st.MANAGEABLE).uuid
        counts = {"ok": 0, "transitions": 0, "locked": 0, "refused": 0}
        errors: list[BaseException] = []
        guard = threading.Lock()

        def run(holder: str) -> None:
            for i in range(60):
                ev, follow = NEXT[store.get_node(uuid).provision_state]
                steps = 1 if follow is None else 2

                def work(node: NodeRecord, _s: str, i: int = i, follow: str | None = follow,
                         steps: int = steps) -> str | None:  # fmt: skip
                    store.add_history(node.id, f"begin {holder} {i} {steps}",
                                      event_type="work", conductor=holder)  # fmt: skip
                    return follow

                try:
                    process_event(store, uuid, ev, holder=holder, driver_work=work)
                    key = "ok"
                except NodeLocked:
                    key = "locked"
                except InvalidTransition:
                    key = "refused"
                except BaseException as exc:  # anything else fails the test
                    errors.append(exc)
                    return
                with guard:
                    counts[key] += 1
                    counts["transitions"] += steps if key == "ok" else 0

        threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        assert counts["ok"] + counts["locked"] + counts["refused"] == 240
        assert counts["ok"] > 0 and counts["locked"] > 0
        assert _check_history(_all_history(store, uuid)) == (counts["ok"], counts["transitions"])
        assert store.get_node(uuid).reservation is None
    finally:
        store.close()
