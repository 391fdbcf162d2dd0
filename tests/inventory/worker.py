"""Child process for the contention and crash tests (run as a script, not collected).

worker.py contend URL HOLDER UUIDS_JSON ITERATIONS SEED
    hammer process_event on the given nodes; print one JSON line of counters at the end.
worker.py churn URL HOLDER UUID ITERATIONS [STALL_AT]
    cycle one node manageable → available → manageable…, counting in extra["n"]; print
    "tick N" after each transition. With STALL_AT, the STALL_AT-th transition prints
    "in-commit" inside its transaction (before COMMIT) and sleeps there, to be killed.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

from sqlalchemy import event

from pxeforge.inventory import states as st
from pxeforge.inventory.errors import InvalidTransition, NodeLocked
from pxeforge.inventory.lifecycle import Outcome, process_event
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.store import Store

# state → (event, follow-up): manageable → provide (cleaning) → done → available → manage → …
NEXT: dict[str, tuple[str, str | None]] = {
    st.MANAGEABLE: ("provide", "done"),
    st.AVAILABLE: ("manage", None),
}


def contend(url: str, holder: str, uuids: list[str], iterations: int, seed: int) -> None:
    store = Store.connect(url, migrate=False)
    store.register_conductor(holder)
    rng = random.Random(seed)
    stats = {"ok": 0, "transitions": 0, "locked": 0, "refused": 0, "overlap": 0}
    deadline = time.monotonic() + 120
    try:
        for i in range(iterations):
            if time.monotonic() > deadline:
                break
            uuid = rng.choice(uuids)
            ev, follow = NEXT[store.get_node(uuid).provision_state]
            steps = 1 if follow is None else 2

            def work(node: NodeRecord, _new: str, i: int = i, follow: Any = follow,
                     steps: int = steps) -> str | None:  # fmt: skip
                store.add_history(node.id, f"begin {holder} {i} {steps}", event_type="work",
                                  conductor=holder)  # fmt: skip
                if store.get_node(node.id).reservation != holder:
                    stats["overlap"] += 1
                time.sleep(rng.uniform(0, 0.004))
                return follow  # type: ignore[no-any-return]

            try:
                process_event(store, uuid, ev, holder=holder, driver_work=work)
            except NodeLocked:
                stats["locked"] += 1
            except InvalidTransition:
                stats["refused"] += 1  # the other process moved it between our read and lock
            else:
                stats["ok"] += 1
                stats["transitions"] += steps
    finally:
        store.close()
    print(json.dumps(stats), flush=True)


def churn(url: str, holder: str, uuid: str, iterations: int, stall_at: int | None) -> None:
    store = Store.connect(url, migrate=False)
    done = 0
    if stall_at is not None:

        @event.listens_for(store.engine, "commit")
        def _stall(conn: Any) -> None:
            if done + 1 == stall_at and conn.info.get("transition"):
                print("in-commit", flush=True)
                time.sleep(60)  # killed here, inside the transaction

        @event.listens_for(store.engine, "before_cursor_execute")
        def _mark(conn: Any, _cur: Any, statement: str, *_a: Any) -> None:
            if statement.startswith("UPDATE nodes SET") and "target_provision_state" in statement:
                conn.info["transition"] = True

        @event.listens_for(store.engine, "begin")
        def _reset(conn: Any) -> None:
            conn.info.pop("transition", None)

    try:
        for _ in range(iterations):
            node = store.get_node(uuid)
            ev, follow = NEXT[node.provision_state]
            count = int(node.extra.get("n", 0)) + 1

            def work(_n: NodeRecord, _s: str, f: str | None = follow, c: int = count) -> Outcome:
                return Outcome(f, changes={"extra": {"n": c}})

            process_event(store, uuid, ev, holder=holder, driver_work=work)
            done += 1
            print(f"tick {done}", flush=True)
    finally:
        store.close()


def main(argv: list[str]) -> None:
    mode, url, holder = argv[:3]
    if mode == "contend":
        contend(url, holder, json.loads(argv[3]), int(argv[4]), int(argv[5]))
    elif mode == "churn":
        stall = int(argv[5]) if len(argv) > 5 else None
        churn(url, holder, argv[3], int(argv[4]), stall)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
