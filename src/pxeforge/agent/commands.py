"""The agent's commands: a registry of ``extension.command`` names, their results, one runner.

Theory of operation (ironic-python-agent's ``ExecuteCommandMixin``, reduced):

* A `Command` is a name (``standby.prepare_image``), a function ``run(params, progress)`` that
  returns the command's result (a dict, or None), whether it is **asynchronous**, and an
  optional ``check(params)`` run before anything starts: bad parameters raise
  `InvalidCommandParamsError` and the request is refused (400) with no result recorded.
* `CommandRunner.execute` looks the name up (unknown: `InvalidCommandError`, 404), refuses
  while the last command is still running (`AgentIsBusy`, 409 — only an asynchronous one can
  be), and records a `CommandResult`. A synchronous command runs in the caller's thread and
  its result is final when ``execute`` returns; an asynchronous one runs in its own thread and
  the result says ``RUNNING`` until it ends. A command that raises ends ``FAILED`` with the
  error serialized (`errors.serialize_exception`); the runner itself never raises for it.
* ``progress(text)`` lets a running command publish a one-line progress text
  (`CommandResult.progress`); `CommandRunner.status_message` is what the heartbeat carries as
  ``agent_status_message``. ``on_start`` is called when an asynchronous command starts (the
  agent's heartbeat loop shortens its wait to the progress interval) and ``on_end`` (in the
  command's thread) after each command ends (the agent heartbeats at once).

`CommandResult.serialize` is IPA's ``BaseCommandResult.serialize()``; ``command_name`` is the
method name without its extension, as Ironic's ``agent_base`` expects.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from pxeforge.agent.errors import (
    AgentError,
    AgentIsBusy,
    InvalidCommandError,
    InvalidCommandParamsError,
    serialize_exception,
)

__all__ = [
    "FAILED",
    "RUNNING",
    "SUCCEEDED",
    "Command",
    "CommandResult",
    "CommandRunner",
    "Progress",
]

log = logging.getLogger("pxeforge.agent")

RUNNING: Final = "RUNNING"
SUCCEEDED: Final = "SUCCEEDED"
FAILED: Final = "FAILED"
MAX_RESULTS: Final = 256
"""Finished results kept (oldest dropped first): a ramdisk boot runs a handful of commands."""

Params = dict[str, Any]
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Command:
    """One ``extension.command`` the agent offers."""

    name: str
    run: Callable[[Params, Progress], dict[str, Any] | None]
    is_async: bool = False
    check: Callable[[Params], None] | None = None


class CommandResult:
    """A command's state and outcome; `serialize` is what the API answers."""

    def __init__(self, name: str) -> None:
        self.id = str(uuid.uuid4())
        self.name = name
        self.command_name = name.split(".", 1)[-1]
        self.status = RUNNING
        self.error: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self.progress = ""
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the command ended (True) or ``timeout`` passed (False)."""
        return self._done.wait(timeout)

    def succeed(self, result: dict[str, Any] | None) -> None:
        self.result = result if result is not None else {}
        self.status = SUCCEEDED
        self._done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = serialize_exception(exc)
        self.status = FAILED
        self._done.set()

    def serialize(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "command_name": self.command_name,
            "command_status": self.status,
            "command_error": self.error,
            "command_result": self.result,
        }

    def status_line(self) -> str:
        """One line for ``agent_status_message``: the progress, or the outcome once ended."""
        if self.status == RUNNING:
            return self.progress or f"{self.command_name}: running"
        if self.status == FAILED and self.error is not None:
            text = self.error.get("details") or self.error.get("message") or ""
            return f"{self.command_name}: FAILED: {text}"[:1000]
        return f"{self.command_name}: SUCCEEDED" + (f" ({self.progress})" if self.progress else "")


class CommandRunner:
    """Runs the registered commands, one asynchronous command at a time."""

    def __init__(
        self,
        commands: Iterable[Command],
        *,
        on_start: Callable[[CommandResult], None] | None = None,
        on_end: Callable[[CommandResult], None] | None = None,
    ) -> None:
        self.commands = {c.name: c for c in commands}
        self.on_start = on_start
        self.on_end = on_end
        self._results: dict[str, CommandResult] = {}
        self._async: CommandResult | None = None
        self._lock = threading.Lock()  # the results
        self._sync_lock = threading.Lock()  # one synchronous command at a time

    def execute(self, name: str, params: Params) -> CommandResult:
        """Start ``name`` with ``params``; see the module docstring for the errors.

        Synchronous commands run one after the other (a second caller waits); while an
        asynchronous command runs, every other command is refused with `AgentIsBusy`.
        """
        if not isinstance(params, dict):
            raise InvalidCommandParamsError("'params' must be an object")
        command = self.commands.get(name)
        if command is None:
            known = ", ".join(sorted(self.commands))
            raise InvalidCommandError(f"unknown command {name!r}; this agent offers {known}")
        with self._sync_lock:
            with self._lock:
                running = self._async
                if running is not None and not running.done:
                    raise AgentIsBusy(
                        f"{running.name} (id {running.id}) is still running; {name} was not started"
                    )
                if command.check is not None:
                    command.check(params)
                result = CommandResult(name)
                self._remember(result)
                if command.is_async:
                    self._async = result
                    thread = threading.Thread(
                        target=self._run, args=(command, params, result), name=name, daemon=True
                    )
                    thread.start()
            if command.is_async:
                self._hook(self.on_start, result)
                return result
            self._run(command, params, result)
        return result

    def _hook(self, hook: Callable[[CommandResult], None] | None, result: CommandResult) -> None:
        if hook is None:
            return
        try:
            hook(result)
        except Exception:  # a failing hook must not hide the result
            log.exception("hook after command %s", result.name)

    def _remember(self, result: CommandResult) -> None:
        self._results[result.id] = result
        if len(self._results) > MAX_RESULTS:
            for key, old in list(self._results.items()):
                if old.done and len(self._results) > MAX_RESULTS:
                    del self._results[key]

    def _run(self, command: Command, params: Params, result: CommandResult) -> None:
        def progress(text: str) -> None:
            result.progress = text

        log.info("command %s (%s) started", command.name, result.id)
        try:
            outcome = command.run(params, progress)
        except AgentError as exc:
            log.warning("command %s (%s) failed: %s", command.name, result.id, exc)
            result.fail(exc)
        except Exception as exc:
            log.exception("command %s (%s) failed unexpectedly", command.name, result.id)
            result.fail(exc)
        else:
            log.info("command %s (%s) succeeded", command.name, result.id)
            result.succeed(outcome)
        self._hook(self.on_end, result)

    def list(self) -> list[CommandResult]:
        """Every kept result, oldest first."""
        with self._lock:
            return list(self._results.values())

    def get(self, command_id: str) -> CommandResult | None:
        with self._lock:
            return self._results.get(command_id)

    def busy(self) -> bool:
        """Whether an asynchronous command is running."""
        with self._lock:
            running = self._async
        return running is not None and not running.done

    def status_message(self) -> str | None:
        """The last command's status line (None before the first command)."""
        with self._lock:
            last = next(reversed(self._results.values()), None)
        return None if last is None else last.status_line()
