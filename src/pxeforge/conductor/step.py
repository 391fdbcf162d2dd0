"""`Step`: how one piece of conductor work ended (shared by the manager and the agent flows).

Theory of operation: work that runs under a node's lock never saves the node itself; it
returns a `Step` — the event to apply (``done``, ``wait``, ``fail``, ``resume``…), the
``last_error`` to record with ``fail``, the node fields the work produced and notes for the
node's history — and `Conductor._finish` saves all of it as one transition in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Step"]


@dataclass(frozen=True, slots=True)
class Step:
    """How a piece of driver work ended: the event to apply and what to save with it."""

    event: str
    last_error: str | None = None
    changes: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
