"""Heartbeats: Ironic's interval and the loop that sends them.

Theory of operation: IPA heartbeats every ``heartbeat_timeout`` × a random factor in
[0.3, 0.6] (``ironic_python_agent/agent.py``), so that a few lost heartbeats still fit in the
conductor's timeout and many agents do not beat in step. ``heartbeat_timeout`` comes from the
lookup answer's ``config``. A failed heartbeat is logged and retried at the next interval
(sooner — IPA's ``min_jitter`` — after a failure), never fatal.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["MAX_FACTOR", "MIN_FACTOR", "Heartbeater", "interval"]

log = logging.getLogger("pxeforge.agent")

MIN_FACTOR: Final = 0.3
MAX_FACTOR: Final = 0.6
_RETRY_AFTER_ERROR: Final = 5.0


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
    ) -> None:
        self.beat = beat
        self.heartbeat_timeout = heartbeat_timeout
        self.limit = limit
        self.rng = rng
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Beat now, then at each interval; returns after `stop` or ``limit`` beats."""
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.beat()
            except Exception as exc:  # the API may be away: try again, never die
                self.failed += 1
                log.warning("heartbeat failed: %s", exc)
                delay = min(_RETRY_AFTER_ERROR, interval(self.heartbeat_timeout, self.rng))
                continue
            self.sent += 1
            if self.limit is not None and self.sent >= self.limit:
                return
            delay = interval(self.heartbeat_timeout, self.rng)
