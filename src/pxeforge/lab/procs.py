"""Child processes of the lab: started in their own session, stopped by PID and waited for.

Theory of operation
-------------------
Every program the lab runs (tcpdump, ``pxeforge serve``, QEMU) is our direct child, started
with ``start_new_session`` so a Ctrl-C at the terminal reaches only the lab, which then stops
them in order. Stopping is always: signal *this* PID, wait with a deadline, then SIGKILL and
wait again, so no zombie is left behind (PID 1 here does not reap orphans, docs/lab.md).
Output goes to a log file, never to a pipe nobody reads.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pxeforge.errors import StartupError

__all__ = ["start", "stop", "tail"]


def start(argv: Sequence[str], log: Path, *, what: str) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout+stderr appended to ``log``; ``what`` names it in errors."""
    with open(log, "ab") as out:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise StartupError(f"lab: cannot start {what}: {argv[0]} is not installed") from None


def stop(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 5.0
) -> int | None:
    """Signal ``proc`` (by its PID), wait up to ``grace`` s, then SIGKILL; return its status."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
        return None


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text log (for error messages); '' when unreadable."""
    try:
        data = path.read_bytes()[-16384:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
