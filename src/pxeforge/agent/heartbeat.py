"""Heartbeats: Ironic's interval and the loop that sends them.

Theory of operation: IPA heartbeats every ``heartbeat_timeout`` × a random factor in
[0.3, 0.6] (``ironic_python_agent/agent.py``), so that a few lost heartbeats still fit in the
conductor's timeout and many agents do not beat in step. ``heartbeat_timeout`` comes from the
lookup answer's ``config``. A failed heartbeat is logged and retried at the next interval
(sooner — IPA's ``min_jitter`` — after a failure), never fatal.

While ``busy()`` says a command runs, the interval is at most `PROGRESS_INTERVAL` (the
heartbeat carries the command's progress), and `Heartbeater.wake` sends one at once (the
agent calls it when a command ends, so the conductor learns the outcome without waiting).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["MAX_FACTOR", "MIN_FACTOR", "PROGRESS_INTERVAL", "Heartbeater", "interval"]

log = logging.getLogger("pxeforge.agent")

MIN_FACTOR: Final = 0.3
MAX_FACTOR: Final = 0.6
_RETRY_AFTER_ERROR: Final = 5.0
PROGRESS_INTERVAL: Final = 5.0
"""Seconds between heartbeats while a command runs (docs/agent-protocol.md, "Progress")."""


def interval(heartbeat_timeout: float, rng: random.Random | None = None) -> float:
    """Seconds until the next heartbeat: ``heartbeat_timeout`` × uniform(0.3, 0.6)."""
    r = rng if rng is not None else random
    return heartbeat_timeout * r.uniform(MIN_FACTOR, MAX_FACTOR)


class Heartbeater:
    """Calls ``beat()`` at Ironic's interval until `stop` (or ``limit`` successful beats)."""

    def __init__(
        self,
        beat: Callable[[], object],
        heartbeat_timeout: float,
        *,
        limit: int | None = None,
        rng: random.Random | None = None,
        busy: Callable[[], bool] | None = None,
        busy_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.beat = beat
        self.heartbeat_timeout = heartbeat_timeout
        self.limit = limit
        self.rng = rng
        self.busy = busy
        self.busy_interval = busy_interval
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._signal = threading.Event()  # stop, wake or nudge happened
        self._beat_now = False
        self._nudged = False

    def stop(self) -> None:
        self._stop.set()
        self._signal.set()

    def wake(self) -> None:
        """Beat at once (again, if a beat is being sent right now)."""
        self._beat_now = True
        self._signal.set()

    def nudge(self) -> None:
        """A command started: the next beat comes within ``busy_interval``."""
        self._nudged = True
        self._signal.set()

    def _busy(self) -> bool:
        return self.busy is not None and self.busy()

    def _wait(self, deadline: float) -> bool:
        """Sleep until ``deadline`` or a wake; False when stopped."""
        while not self._stop.is_set():
            if self._beat_now:
                self._beat_now = False
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self._signal.wait(remaining)
            self._signal.clear()
            if self._nudged:
                self._nudged = False
                if self._busy():
                    deadline = min(deadline, time.monotonic() + self.busy_interval)
        return False

    def run(self) -> None:
        """Beat now, then at each interval; returns after `stop` or ``limit`` beats."""
        deadline = time.monotonic()
        while self._wait(deadline):
            try:
                self.beat()
            except Exception as exc:  # the API may be away: try again, never die
                self.failed += 1
                log.warning("heartbeat failed: %s", exc)
                delay = min(_RETRY_AFTER_ERROR, interval(self.heartbeat_timeout, self.rng))
            else:
                self.sent += 1
                if self.limit is not None and self.sent >= self.limit:
                    return
                delay = interval(self.heartbeat_timeout, self.rng)
            if self._busy():
                delay = min(delay, self.busy_interval)
            deadline = time.monotonic() + delay
