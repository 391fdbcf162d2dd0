"""The conductor: API verbs → state-machine events → driver work, and the periodic tasks.

Theory of operation (Ironic's ``conductor/manager.py`` and ``task_manager.py``, reshaped):

* **A verb is answered fast.** `Conductor.provision` checks what can be checked at once (verb
  known, parameters, maintenance, a free worker, the driver's ``driver_info``, an image
  deploy's ``instance_info`` and manual clean steps — `agent_deploy`), then applies the
  verb's event through `lifecycle.process_event` — lock, transition, save, history, unlock — and
  returns the node *already in its in-progress state* (``verifying``, ``deploying``…), which
  the API answers with 202. A refused verb is `InvalidTransition` (400, naming the allowed
  verbs); a locked node is `NodeLocked` (409).
* **The slow part runs in a worker thread, under the node's lock.** For each in-progress state
  that has work (`_WORK`), a worker takes the lock again, checks the node is still where it was
  left, runs the driver calls (never on the event loop: drivers block), and ends the step with
  ``done``, ``wait`` or ``fail`` as Ironic does — saving the new state, the fields the work
  produced, the driver's notes and ``last_error`` in one transaction. It continues while the
  new state has work too (``deleting`` → ``cleaning`` → ``available``). An exception from the
  driver is a ``fail`` with the error as ``last_error``.
* **What each state does** (the agent ramdisk's part is `pxeforge.conductor.agent_deploy`):

  ===============  ==============================================================  ============
  state            work                                                            then
  ===============  ==============================================================  ============
  verifying        validate ``driver_info``, read the power state                  done / fail
  cleaning         automated (provide, tear-down; `automated_clean_enabled`) or    wait / done
                   manual (clean steps): boot the agent ramdisk; off / no steps:   / fail
                   nothing to do; no ramdisk configured: fail
  inspecting       boot device pxe, power on (or reboot): the agent reports        wait
  deploying        image deploy: boot the agent ramdisk (the verb checked the      wait / fail
                   image); installer deploy: boot the installer with a callback
                   token
  deleting         power off, forget the instance                                  clean
  adopting         validate, read the power state                                  done / fail
  rescuing         boot device pxe, power on (or reboot)                           wait
  unrescuing       boot device disk, reboot                                        done
  servicing        no service steps without the agent                              done / fail
  ===============  ==============================================================  ============

  Booting a ramdisk forgets the previous agent (token, URL, command): the new one looks the
  node up and gets a new token.
* **Agent heartbeats** (`agent_heartbeat`, called by the API once it recorded one) are handed
  to a worker that takes the node's lock and runs `AgentFlows.on_heartbeat`: in ``wait
  call-back`` and ``clean wait`` it asks the agent about the command it started and moves the
  node on (the table in `agent_deploy`). One worker per node at a time; a heartbeat arriving
  meanwhile makes it look once more.
* **Power and boot device** (`set_power_state`, `set_boot_device`) lock the node in the request
  (409 if someone holds it) and hand the lock to the worker, which releases it when the driver
  is done — Ironic's lock hand-over. Each power action is written to the node's history.
* **Periodic tasks** (`start`): heartbeat the conductor row every ``heartbeat_interval``, and
  every ``check_provision_state_interval`` fail nodes that waited too long (`Store.expire_waits`
  with the configured `WaitTimeouts`). `start` first registers the conductor and runs
  `Store.recover_stuck` (nodes a dead conductor left in a ``…ing`` state are failed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from pxeforge.conductor import agent_deploy
from pxeforge.conductor.agent_deploy import (
    AGENT_WAIT_STATES,
    CLEAN_KEYS,
    DEPLOY_RESULT,
    AgentFlows,
    automated_clean_enabled,
    fresh_agent,
)
from pxeforge.conductor.step import Step
from pxeforge.config import Settings
from pxeforge.drivers.base import (
    BootDevice,
    BootSetting,
    Driver,
    DriverError,
    PowerState,
)
from pxeforge.drivers.registry import get_driver
from pxeforge.inventory.booter import is_installer_deploy
from pxeforge.inventory.errors import (
    InvalidParameterValue,
    InvalidState,
    InvalidTransition,
    NodeLocked,
    NodeNotFound,
)
from pxeforge.inventory.lifecycle import Outcome, process_event
from pxeforge.inventory.machine import advance, allowed_verbs, next_target
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.states import (
    ADOPTING,
    CLEANING,
    CLEANWAIT,
    DELETING,
    DEPLOYING,
    DEPLOYWAIT,
    INSPECTING,
    MANAGEABLE,
    POWER_OFF,
    POWER_ON,
    POWER_STATES,
    REBOOT,
    RESCUING,
    SERVICING,
    SEVERITY_ERROR,
    SEVERITY_INFO,
    SOFT_POWER_OFF,
    UNRESCUING,
    VERBS,
    VERIFYING,
    Event,
    HistoryType,
)
from pxeforge.inventory.store import HistoryEntry, Recovery, Store, WaitTimeouts

__all__ = [
    "BOOT_DEVICES",
    "Conductor",
    "DriverLookup",
    "InstallerCallbackRefused",
    "KICKSTART_TOKEN",
    "NoFreeWorker",
    "NodeInMaintenance",
    "Step",
    "default_drivers",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DriverLookup = Callable[[str], Driver]
"""``name → driver``; raises `pxeforge.drivers.base.UnknownDriver` (400) for an unknown name."""

BOOT_DEVICES: Final = tuple(d.value for d in BootDevice if d is not BootDevice.SAFE)
"""Boot devices offered by ``…/management/boot_device/supported`` (``safe`` is IPMI-only)."""

_MAINTENANCE_OK: Final = frozenset({"manage", "abort", "unhold"})
"""Verbs allowed while a node is in maintenance (the rest would touch the machine)."""

KICKSTART_TOKEN: Final = "kickstart_token"
"""driver_internal_info key of the per-deploy secret the installer's callback must present."""

_LOCK_ATTEMPTS: Final = 50
_LOCK_INTERVAL: Final = 0.1


class NodeInMaintenance(InvalidParameterValue):
    """A verb that would touch the machine, on a node in maintenance (Ironic: 400)."""

    def __init__(self, node: str, action: str) -> None:
        super().__init__(
            f'The requested action "{action}" can not be performed on node "{node}" while it '
            "is in maintenance mode."
        )


class NoFreeWorker(InvalidState):
    """Every worker is busy (Ironic's ``NoFreeConductorWorker``): retry later (503)."""

    code = 503

    def __init__(self) -> None:
        super().__init__("Requested action cannot be performed due to lack of free conductor "
                         "workers.")  # fmt: skip


class InstallerCallbackRefused(NodeNotFound):
    """An installer callback for a node not waiting for one, or with a wrong token.

    Both are answered alike (404, nothing said about the node) so a caller cannot probe
    which nodes exist or are deploying (cf. Ironic CVE-2016-4985)."""

    def __init__(self, node: str, why: str) -> None:
        super().__init__(node)
        self.why = why


def default_drivers(name: str) -> Driver:
    """The driver registry's lookup (`pxeforge.drivers.registry.get_driver`)."""
    return get_driver(name)


def _power(value: PowerState | str | None) -> str | None:
    return None if value is None else str(value)


class Conductor:
    """Drives nodes through the state machine with their drivers (see the module docstring).

    ``holder`` is this conductor's name in the database (its node locks and heartbeat).
    Every public coroutine runs the blocking work in threads; the sync ``*_sync`` methods are
    the same operations for callers already off the event loop.
    """

    def __init__(
        self,
        store: Store,
        drivers: DriverLookup = default_drivers,
        *,
        holder: str,
        settings: Settings | None = None,
        workers: int = 16,
    ) -> None:
        self.store = store
        self.drivers = drivers
        self.holder = holder
        self.settings = settings if settings is not None else Settings()
        self.timeouts = WaitTimeouts(
            deploy_callback_timeout=self.settings.deploy_callback_timeout,
            inspect_wait_timeout=self.settings.inspect_wait_timeout,
            clean_callback_timeout=self.settings.clean_callback_timeout,
        )
        self.workers = workers
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="conductor"
        )
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._futures: set[concurrent.futures.Future[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._work: dict[str, Callable[[NodeRecord], Step]] = {
            VERIFYING: self._verify,
            CLEANING: self._clean,
            INSPECTING: self._inspect,
            DEPLOYING: self._deploy,
            DELETING: self._tear_down,
            ADOPTING: self._adopt,
            RESCUING: self._rescue,
            UNRESCUING: self._unrescue,
            SERVICING: self._service,
        }
        self._agent = AgentFlows(
            store, holder=holder, settings=self.settings, driver=self._driver, finish=self._finish
        )
        self._agent_lock = threading.Lock()
        self._agent_nodes: dict[str, bool] = {}  # node → heartbeat arrived while working

    # ---- life cycle -----------------------------------------------------------------------

    async def start(self) -> list[Recovery]:
        """Register, recover what a dead conductor left, start the periodic tasks."""
        recovered = await self._call(self._startup)
        for item in recovered:
            log.warning(
                "node %s: %s -> %s at start-up (lock of %s)",
                item.uuid,
                item.previous_state,
                item.provision_state,
                item.previous_holder,
            )
        self._tasks = [
            asyncio.create_task(
                self._every(self.settings.heartbeat_interval, self._heartbeat), name="heartbeat"
            ),
            asyncio.create_task(
                self._every(self.settings.check_provision_state_interval, self.expire_waits),
                name="expire-waits",
            ),
        ]
        return recovered

    def _startup(self) -> list[Recovery]:
        self.store.register_conductor(self.holder)
        return self.store.recover_stuck(
            self.holder, heartbeat_timeout=self.settings.heartbeat_timeout
        )

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the periodic tasks, wait a little for workers, go offline (locks released)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        pending = [asyncio.wrap_future(f) for f in list(self._futures)]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, self.store.unregister_conductor, self.holder
            )
        except Exception:  # the database may be gone on shutdown; locks then wait for recovery
            log.exception("could not unregister conductor %s", self.holder)

    async def _every(self, interval: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._call(job)
            except Exception:  # a periodic task never dies: log and try again next time
                log.exception("periodic task %s failed", getattr(job, "__name__", job))

    def _heartbeat(self) -> None:
        self.store.heartbeat(self.holder)

    def expire_waits(self) -> list[Recovery]:
        """Fail nodes that waited longer than the configured timeouts (a periodic task)."""
        done = self.store.expire_waits(holder=self.holder, timeouts=self.timeouts)
        for item in done:
            log.warning("node %s: %s timed out -> %s", item.uuid, item.previous_state,
                        item.provision_state)  # fmt: skip
        return done

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until no background work is running (tests, benchmarks)."""
        concurrent.futures.wait(list(self._futures), timeout=timeout)

    # ---- workers --------------------------------------------------------------------------

    def _reserve_worker(self) -> None:
        with self._busy_lock:
            if self._busy >= self.workers:
                raise NoFreeWorker()
            self._busy += 1

    def _release_worker(self) -> None:
        with self._busy_lock:
            self._busy -= 1

    def _spawn(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on a reserved worker (the caller reserved it)."""

        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("conductor worker failed")
            finally:
                self._release_worker()

        try:
            future = self._pool.submit(run)
        except RuntimeError:  # shutting down
            self._release_worker()
            raise NoFreeWorker() from None
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    def _driver(self, node: NodeRecord) -> Driver:
        return self.drivers(node.driver)

    # ---- provisioning ---------------------------------------------------------------------

    async def provision(self, node: str, verb: str, **params: Any) -> NodeRecord:
        """Apply a provision verb (``PUT …/states/provision``); see `provision_sync`."""
        return await self._call(self.provision_sync, node, verb, **params)

    def provision_sync(
        self,
        node: str,
        verb: str,
        *,
        user: str | None = None,
        configdrive: Any = None,
        clean_steps: list[Any] | None = None,
        deploy_steps: list[Any] | None = None,
        service_steps: list[Any] | None = None,
        rescue_password: str | None = None,
        disable_ramdisk: bool | None = None,
    ) -> NodeRecord:
        """Move ``node`` with ``verb``; returns it in its new (often in-progress) state."""
        event = VERBS.get(verb)
        if event is None:
            raise InvalidParameterValue(
                f'"{verb}" is not a valid provision target; valid targets: {", ".join(VERBS)}'
            )
        before = self.store.get_node(node)
        if before.maintenance and verb not in _MAINTENANCE_OK:
            raise NodeInMaintenance(before.uuid, verb)
        try:
            advance(before.provision_state, event)
        except InvalidTransition as exc:
            # refuse early, naming the *verbs* allowed (process_event would name events)
            raise exc.with_node(before.uuid, allowed_verbs(before.provision_state)) from None
        if event == Event.CLEAN and clean_steps is None:
            raise InvalidParameterValue(
                'Manual cleaning ("clean") needs "clean_steps", a list of steps'
            )
        if event == Event.SERVICE and service_steps is None:
            raise InvalidParameterValue('Servicing ("service") needs "service_steps"')
        if event == Event.RESCUE and not rescue_password:
            raise InvalidParameterValue('"rescue" needs a non-empty "rescue_password"')
        if configdrive is not None and event not in (Event.DEPLOY, Event.REBUILD):
            raise InvalidParameterValue(
                "Adding a config drive is only supported when setting provision state to "
                "active, rebuild"
            )
        if event in (Event.DEPLOY, Event.REBUILD, Event.ADOPT):
            self._driver(before).validate(before.driver_info)  # 400 before anything moves
        else:
            self._driver(before)  # unknown driver: 400
        if event in (Event.DEPLOY, Event.REBUILD) and agent_deploy.is_agent_deploy(before):
            agent_deploy.check_deploy(before, self.settings)  # 400: image, checksum, format
        if event == Event.CLEAN and clean_steps:
            clean_steps = agent_deploy.check_clean_steps(clean_steps)
            agent_deploy.require_ramdisk(self.settings, "Manual cleaning")
        self._reserve_worker()
        spawned = False
        try:
            changes: dict[str, Any] = {}
            internal = dict(before.driver_internal_info)
            if clean_steps is not None:
                internal["clean_steps"] = clean_steps
            if service_steps is not None:
                internal["service_steps"] = service_steps
            if deploy_steps is not None:
                internal["deploy_steps"] = deploy_steps
            if disable_ramdisk is not None:
                internal["disable_ramdisk"] = bool(disable_ramdisk)
            if internal != before.driver_internal_info:
                changes["driver_internal_info"] = internal
            if configdrive is not None or rescue_password is not None:
                info = dict(before.instance_info)
                if configdrive is not None:
                    info["configdrive"] = configdrive
                if rescue_password is not None:
                    info["rescue_password"] = rescue_password
                changes["instance_info"] = info

            def record(_node: NodeRecord, _new: str) -> Outcome:
                return Outcome(changes=changes)

            after = process_event(
                self.store,
                before.uuid,
                event,
                holder=self.holder,
                driver_work=record if changes else None,
                target=MANAGEABLE if event == Event.CLEAN else None,
                user=user,
            )
            if after.provision_state in self._work:
                state = after.provision_state
                self._spawn(lambda: self._continue(after.uuid, state))
                spawned = True
            return after
        finally:
            if not spawned:
                self._release_worker()

    def _continue(self, uuid: str, state: str) -> None:
        """Worker: run the work of ``state`` (and of the states it leads to) under the lock."""
        try:
            with self.store.lock(
                uuid, self.holder, attempts=_LOCK_ATTEMPTS, interval=_LOCK_INTERVAL
            ) as node:
                while node.provision_state == state and state in self._work:
                    step = self._run_work(node)
                    node = self._finish(node, step)
                    if node.provision_state == state:
                        break
                    state = node.provision_state
        except NodeLocked as exc:
            log.error("node %s: could not continue %s: %s", uuid, state, exc)

    def _run_work(self, node: NodeRecord) -> Step:
        try:
            return self._work[node.provision_state](node)
        except Exception as exc:
            if not isinstance(exc, DriverError | InvalidParameterValue):
                log.exception("node %s: %s failed", node.uuid, node.provision_state)
            return Step(
                Event.FAIL,
                last_error=f"{node.provision_state} failed: {type(exc).__name__}: {exc}",
            )

    def _finish(self, node: NodeRecord, step: Step) -> NodeRecord:
        """Save ``step`` (event, fields, notes, error) as one transition of a locked node."""
        old = node.provision_state
        new = advance(old, step.event)
        target = next_target(node.target_provision_state, step.event, new)
        history = [HistoryEntry(note, HistoryType.PROVISIONING) for note in step.notes]
        text = f'"{old}" -> "{new}" on "{step.event}"'
        if step.last_error:
            history.append(
                HistoryEntry(f"{text}: {step.last_error}", HistoryType.TRANSITION, SEVERITY_ERROR)
            )
        else:
            history.append(HistoryEntry(text, HistoryType.TRANSITION, SEVERITY_INFO))
        last_error: Any = step.last_error if step.event == Event.FAIL else None
        return self.store.save_transition(
            node.id,
            holder=self.holder,
            expected_state=old,
            provision_state=new,
            target_provision_state=target,
            history=history,
            last_error=last_error,
            changes=dict(step.changes),
        )

    # ---- the work of each state (worker threads, node locked) ------------------------------

    def _verify(self, node: NodeRecord) -> Step:
        driver = self._driver(node)
        try:
            driver.validate(node.driver_info)
            state = driver.get_power_state(node.driver_info)
        except DriverError as exc:
            return Step(
                Event.FAIL,
                last_error=f"Failed to get power state for node {node.uuid}. Error: {exc}",
            )
        return Step(Event.DONE, changes={"power_state": _power(state)})

    def _clean(self, node: NodeRecord) -> Step:
        """cleaning (from the verb or tear-down): boot the agent, or nothing to do."""
        manual = node.target_provision_state == MANAGEABLE
        steps = node.driver_internal_info.get("clean_steps") if manual else None
        internal = fresh_agent(node.driver_internal_info, *CLEAN_KEYS)
        if manual and not steps:
            note = "Manual cleaning with no steps: nothing to do"
            return Step(Event.MANAGE, changes={"driver_internal_info": internal}, notes=(note,))
        if not manual and not automated_clean_enabled(node, self.settings):
            why = "the node's automated_clean" if node.automated_clean is False else "settings"
            note = f"Automated cleaning is disabled ({why}): nothing to clean"
            return Step(Event.DONE, changes={"driver_internal_info": internal}, notes=(note,))
        what = "Manual cleaning" if manual else "Automated cleaning"
        try:
            agent_deploy.require_ramdisk(self.settings, what)
        except InvalidParameterValue as exc:
            hint = (
                ""
                if manual
                else " (or disable automated cleaning: automated_clean = false in the "
                "settings, or the node's automated_clean field)"
            )
            return Step(
                Event.FAIL,
                last_error=f"Cleaning node {node.uuid} failed: {exc}{hint}",
                changes={"driver_internal_info": internal},
            )
        if manual:
            internal["clean_steps"] = steps
        power, notes = self._boot_network(node)
        notes.append(f"{what}: waiting for the agent ramdisk to call back")
        return Step(
            Event.WAIT,
            changes={"power_state": power, "driver_internal_info": internal},
            notes=tuple(notes),
        )

    def _boot_network(self, node: NodeRecord) -> tuple[str | None, list[str]]:
        """Boot ``node`` from the network now: boot device pxe, then power on or reboot."""
        driver = self._driver(node)
        notes: list[str] = []
        note = driver.set_boot_device(node.driver_info, BootDevice.PXE, False)
        notes.append('Boot device set to "pxe"')  # the history (and timeline) see each action
        if note:
            notes.append(note)
        current = driver.get_power_state(node.driver_info)
        if current == PowerState.POWER_ON:
            asked = REBOOT
            note = driver.reboot(node.driver_info)
        else:
            asked = POWER_ON
            note = driver.set_power_state(node.driver_info, PowerState.POWER_ON)
        after = driver.get_power_state(node.driver_info)
        new = _power(after) if after is not None else POWER_ON
        notes.append(f'Power state changed from "{_power(current)}" to "{new}" ("{asked}" asked)')
        if note:
            notes.append(note)
        return new, notes

    def _inspect(self, node: NodeRecord) -> Step:
        internal = fresh_agent(node.driver_internal_info)  # the new ramdisk gets a new token
        power, notes = self._boot_network(node)
        notes.append("Waiting for the agent ramdisk to report the hardware inventory")
        return Step(
            Event.WAIT,
            changes={"power_state": power, "driver_internal_info": internal},
            notes=tuple(notes),
        )

    def _deploy(self, node: NodeRecord) -> Step:
        if not is_installer_deploy(node):
            # Image deploy: boot the agent; its heartbeats drive the rest (agent_heartbeat).
            try:
                agent_deploy.check_deploy(node, self.settings)
            except InvalidParameterValue as exc:
                return Step(Event.FAIL, last_error=f"Deploy of node {node.uuid} failed: {exc}")
            internal = fresh_agent(node.driver_internal_info, DEPLOY_RESULT)
            power, notes = self._boot_network(node)
            notes.append("Waiting for the agent ramdisk to call back and write the image")
            return Step(
                Event.WAIT,
                changes={"power_state": power, "driver_internal_info": internal},
                notes=tuple(notes),
            )
        # Installer deploy (kickstart / preseed / autoinstall): the boot plane serves the
        # installer while the node is deploying/wait call-back; its final callback must carry
        # this deploy's token (see installer_done_sync).
        info = node.instance_info
        missing = [k for k in ("kernel", "ramdisk") if not isinstance(info.get(k), str)]
        if missing:
            return Step(
                Event.FAIL,
                last_error=(
                    f"Installer deploy of node {node.uuid} needs instance_info "
                    f"{' and '.join(missing)} (the installer's kernel and initrd: URLs or "
                    "paths under the boot root)"
                ),
            )
        internal = dict(node.driver_internal_info)
        internal[KICKSTART_TOKEN] = secrets.token_urlsafe(32)
        power, notes = self._boot_network(node)
        notes.append("Waiting for the installer's final callback (kickstart %post)")
        return Step(
            Event.WAIT,
            changes={"power_state": power, "driver_internal_info": internal},
            notes=tuple(notes),
        )

    # ---- installer callback ------------------------------------------------------------------

    def installer_done_sync(self, node: str, token: str) -> NodeRecord:
        """The installer finished: ``wait call-back`` → (resume) deploying → (done) active.

        Refused with `InstallerCallbackRefused` unless the node is an installer deploy in
        ``wait call-back`` and ``token`` is this deploy's (compared in constant time). The
        boot device is set to disk (persistently) on the way; a driver that cannot is noted in
        the history, not fatal: the boot plane answers local boot for ``active`` nodes anyway.
        """
        record = self.store.get_node(node)

        def check(current: NodeRecord) -> None:
            expected = current.driver_internal_info.get(KICKSTART_TOKEN)
            if current.provision_state != DEPLOYWAIT or not is_installer_deploy(current):
                raise InstallerCallbackRefused(node, f'node is "{current.provision_state}"')
            if not isinstance(expected, str) or not hmac.compare_digest(
                expected.encode(), token.encode()
            ):
                raise InstallerCallbackRefused(node, "wrong token")

        check(record)  # refuse before locking or writing anything

        def finish(before: NodeRecord, _new: str) -> Outcome:
            check(before)  # again, under the lock
            notes = ["The installer called back: installation complete"]
            try:
                note = self._driver(before).set_boot_device(
                    before.driver_info, BootDevice.DISK, True
                )
                notes.append(note or "Boot device set to disk (persistent)")
            except DriverError as exc:
                notes.append(f"Could not set the boot device to disk: {exc}")
            for text in notes:
                self.store.add_history(
                    before.id, text, event_type=HistoryType.PROVISIONING, conductor=self.holder
                )
            internal = {
                k: v for k, v in before.driver_internal_info.items() if k != KICKSTART_TOKEN
            }
            return Outcome(event=Event.DONE, changes={"driver_internal_info": internal})

        return process_event(
            self.store,
            record.uuid,
            Event.RESUME,
            holder=self.holder,
            driver_work=finish,
            lock_attempts=_LOCK_ATTEMPTS,
            lock_interval=_LOCK_INTERVAL,
        )

    def _rescue(self, node: NodeRecord) -> Step:
        internal = fresh_agent(node.driver_internal_info)
        power, notes = self._boot_network(node)
        notes.append("Waiting for the rescue ramdisk to call back")
        return Step(
            Event.WAIT,
            changes={"power_state": power, "driver_internal_info": internal},
            notes=tuple(notes),
        )

    def _tear_down(self, node: NodeRecord) -> Step:
        driver = self._driver(node)
        note = driver.set_power_state(node.driver_info, PowerState.POWER_OFF)
        state = driver.get_power_state(node.driver_info)
        internal = fresh_agent(
            node.driver_internal_info,
            "deploy_steps",
            "disable_ramdisk",
            KICKSTART_TOKEN,
            DEPLOY_RESULT,
            *CLEAN_KEYS,
        )
        changes = {
            "power_state": _power(state) if state is not None else POWER_OFF,
            "instance_info": {},
            "instance_uuid": None,
            "driver_internal_info": internal,
        }
        return Step(Event.CLEAN, changes=changes, notes=(note,) if note else ())

    def _adopt(self, node: NodeRecord) -> Step:
        driver = self._driver(node)
        driver.validate(node.driver_info)
        state = driver.get_power_state(node.driver_info)
        return Step(Event.DONE, changes={"power_state": _power(state)})

    def _unrescue(self, node: NodeRecord) -> Step:
        driver = self._driver(node)
        notes = [driver.set_boot_device(node.driver_info, BootDevice.DISK, True)]
        notes.append(driver.reboot(node.driver_info))
        info = {k: v for k, v in node.instance_info.items() if k != "rescue_password"}
        return Step(
            Event.DONE,
            changes={"power_state": POWER_ON, "instance_info": info},
            notes=tuple(n for n in notes if n),
        )

    def _service(self, node: NodeRecord) -> Step:
        steps = node.driver_internal_info.get("service_steps")
        internal = {k: v for k, v in node.driver_internal_info.items() if k != "service_steps"}
        if steps:
            return Step(
                Event.FAIL,
                last_error=(
                    f"Servicing node {node.uuid} failed: service steps run in the agent "
                    "ramdisk, which pxeforge does not provide yet"
                ),
                changes={"driver_internal_info": internal},
            )
        return Step(Event.DONE, changes={"driver_internal_info": internal})

    # ---- the agent's heartbeats (image deploy and cleaning) ----------------------------------

    def agent_heartbeat(self, node: str, state: str | None = None) -> None:
        """The agent of ``node`` heartbeated (the API recorded it): act on it in a worker.

        Returns at once. ``state`` is the node's state as the API saw it; heartbeats of nodes
        in other states than ``wait call-back``/``clean wait`` need no work. A heartbeat that
        arrives while a worker already works for the node makes that worker look once more
        when it is done (the agent's "command ended" heartbeat is never lost). `NoFreeWorker`
        (503) when every worker is busy: the agent retries."""
        if state is not None and state not in AGENT_WAIT_STATES:
            return
        with self._agent_lock:
            if node in self._agent_nodes:
                self._agent_nodes[node] = True
                return
            self._reserve_worker()
            self._agent_nodes[node] = False
        try:
            self._spawn(lambda: self._agent_worker(node))
        except BaseException:
            with self._agent_lock:
                self._agent_nodes.pop(node, None)
            raise

    def _agent_worker(self, uuid: str) -> None:
        try:
            for _ in range(100):  # bounded: each round answers at least one heartbeat
                try:
                    with self.store.lock(
                        uuid, self.holder, attempts=_LOCK_ATTEMPTS, interval=_LOCK_INTERVAL
                    ) as node:
                        self._agent_step(node)
                except (NodeLocked, NodeNotFound) as exc:
                    log.warning("node %s: heartbeat not processed: %s", uuid, exc)
                with self._agent_lock:
                    if not self._agent_nodes.get(uuid):
                        return
                    self._agent_nodes[uuid] = False
        finally:
            with self._agent_lock:
                self._agent_nodes.pop(uuid, None)

    def _agent_step(self, node: NodeRecord) -> None:
        """One heartbeat's work on the locked ``node``; a bug fails the operation (logged)."""
        try:
            self._agent.on_heartbeat(node)
        except Exception as exc:
            log.exception("node %s: heartbeat processing failed", node.uuid)
            current = self.store.get_node(node.id)
            if current.provision_state in (DEPLOYING, DEPLOYWAIT, CLEANING, CLEANWAIT):
                self._finish(
                    current,
                    Step(
                        Event.FAIL,
                        last_error=f"{current.provision_state} failed: {type(exc).__name__}: {exc}",
                    ),
                )

    # ---- inspection (the agent's POST /v1/continue_inspection) ------------------------------

    async def continue_inspection(
        self, node: str, inventory: Mapping[str, Any], plugin_data: Mapping[str, Any]
    ) -> NodeRecord:
        """The agent's inventory: see `continue_inspection_sync`."""
        return await self._call(self.continue_inspection_sync, node, inventory, plugin_data)

    def continue_inspection_sync(
        self, node: str, inventory: Mapping[str, Any], plugin_data: Mapping[str, Any]
    ) -> NodeRecord:
        """``inspect wait`` → ``inspecting`` (resume) → ``manageable``: store the inventory,
        set ``properties`` (cpus, memory_mb, local_gb, cpu_arch), add the boot NIC's port,
        apply the inspection rules (`_process_inventory`), power the machine off (Ironic's
        ``[inspector]power_off``) and forget the agent's token. A rule's ``fail`` (or a rule
        that cannot apply) ends in ``inspect failed`` with its message as ``last_error``
        instead; the inventory and ports are kept. Still ``inspecting`` (the conductor is
        booting it): `NodeLocked` (409, the agent retries); any other state: `NodeNotFound`
        (404, as Ironic: the caller learns nothing)."""
        from pxeforge.inventory.states import INSPECTWAIT

        record = self.store.get_node(node)
        if record.provision_state == INSPECTING:
            raise NodeLocked(record.uuid, record.reservation or self.holder)
        if record.provision_state != INSPECTWAIT:
            raise NodeNotFound(node)

        failure: list[str] = []  # what the rules said, from the first step to the second

        def work(before: NodeRecord, _new: str) -> Outcome:
            if before.provision_state != INSPECTWAIT:
                raise InvalidState(f"Node {before.uuid} left inspect wait meanwhile")
            changes, failed, notes = self._process_inventory(before, inventory, plugin_data)
            internal = {
                k: v
                for k, v in before.driver_internal_info.items()
                if k not in ("agent_secret_token", "agent_url")
            }
            changes["driver_internal_info"] = internal
            try:
                driver = self._driver(before)
                note = driver.set_power_state(before.driver_info, PowerState.POWER_OFF)
                if note:
                    notes.append((note, SEVERITY_INFO))
                changes["power_state"] = POWER_OFF
            except DriverError as exc:
                notes.append((f"Could not power the node off after inspection: {exc}",
                              SEVERITY_INFO))  # fmt: skip
            self._introspection_history(before.id, notes)
            if failed is not None:
                failure.append(failed)
            return Outcome(changes=changes)

        # Two steps, as Ironic: resume into "inspecting" with the inventory processed, then
        # done or fail (one saved transition each: the history and the timeline show both).
        process_event(self.store, record.uuid, Event.RESUME, holder=self.holder,
                      driver_work=work, lock_attempts=_LOCK_ATTEMPTS,
                      lock_interval=_LOCK_INTERVAL)  # fmt: skip
        if failure:
            return process_event(
                self.store, record.uuid, Event.FAIL, holder=self.holder,
                driver_work=lambda _node, _new: Outcome(last_error=failure[0]),
                lock_attempts=_LOCK_ATTEMPTS, lock_interval=_LOCK_INTERVAL,
            )  # fmt: skip
        return process_event(self.store, record.uuid, Event.DONE, holder=self.holder,
                             lock_attempts=_LOCK_ATTEMPTS,
                             lock_interval=_LOCK_INTERVAL)  # fmt: skip

    async def discover(
        self, inventory: Mapping[str, Any], plugin_data: Mapping[str, Any]
    ) -> NodeRecord:
        """An unknown machine's inventory: see `discover_sync`."""
        return await self._call(self.discover_sync, inventory, plugin_data)

    def discover_sync(
        self, inventory: Mapping[str, Any], plugin_data: Mapping[str, Any]
    ) -> NodeRecord:
        """Enroll an unknown machine from its inventory (Ironic's ``[auto_discovery]``).

        A node is created in ``enroll`` with `Settings.discovery_driver` and ``extra.
        auto_discovered`` (Ironic puts the flag in plugin data — so does this, for rules:
        ``{plugin_data[auto_discovered]}``); then the inventory is processed as in inspection
        (properties, the boot NIC's port, inspection rules: typically ``driver``/``driver_info``
        from ``{inventory[bmc_address]}``). The node stays in ``enroll`` — ``manage`` verifies
        what the rules set; a failing rule leaves its message in ``last_error`` (the node is
        kept, as in Ironic). The machine is not powered off: nothing verified its power
        credentials yet. A machine some port already names (the agent posted twice) is not
        enrolled again: that node is returned (two posts at the same instant may still make
        two nodes, as in Ironic)."""
        from pxeforge.conductor import inspection

        self.drivers(self.settings.discovery_driver)  # an unknown driver: refuse before writing
        macs = inspection.inventory_macs(inventory)
        try:
            return self.store.lookup_node(macs)  # enrolled meanwhile (the agent posted twice)
        except NodeNotFound:
            pass
        bmc = [a for a in (inventory.get("bmc_address"), inventory.get("bmc_v6address")) if a]
        record = self.store.create_node(
            self.settings.discovery_driver, extra={"auto_discovered": True}, properties={}
        )
        plugin = {**plugin_data, "auto_discovered": True}
        with self.store.lock(record.uuid, self.holder) as before:
            changes, failure, notes = self._process_inventory(before, inventory, plugin)
            if failure is not None:
                changes["last_error"] = failure
            self.store.update_node(before.id, changes, holder=self.holder)
            first = (
                f"Discovered: an unknown machine (MACs {', '.join(macs) or 'none'}; BMC "
                f"{', '.join(bmc) or 'unknown'}) posted its inventory; enrolled with driver "
                f"{self.settings.discovery_driver}"
            )
            self._introspection_history(before.id, [(first, SEVERITY_INFO), *notes])
        log.info("discovered %s as node %s", ",".join(macs), record.uuid)
        return self.store.get_node(record.uuid)

    def _introspection_history(self, node_id: int, notes: list[tuple[str, str]]) -> None:
        for text, severity in notes:
            self.store.add_history(
                node_id,
                text,
                event_type=HistoryType.INTROSPECTION,
                severity=severity,
                conductor=self.holder,
            )

    def _process_inventory(
        self, before: NodeRecord, inventory: Mapping[str, Any], plugin_data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str | None, list[tuple[str, str]]]:
        """Inventory → node, under ``before``'s lock: ``(changes to save, failure, notes)``.

        Stores the inventory, creates the boot NIC's port, computes the properties, then
        applies the inspection rules of phase ``main`` by priority (`pxeforge.inspection_rules`)
        to the node as it would be: their node fields join ``changes``, their traits and port
        changes are saved here, their ``log`` lines and what each rule did become history
        ``notes``. A rule's ``fail`` (or error) is ``failure``: nothing of the rules is kept
        then, the properties neither."""
        from dataclasses import asdict

        from pxeforge.conductor import inspection
        from pxeforge.inspection_rules import apply_rules
        from pxeforge.inventory.errors import MACAlreadyExists

        notes: list[tuple[str, str]] = [("Inventory received from the agent", SEVERITY_INFO)]
        for mac in inspection.port_macs(inventory):
            try:
                self.store.create_port(before.id, mac, pxe_enabled=True)
                notes.append((f"Port {mac} created from the inventory", SEVERITY_INFO))
            except MACAlreadyExists:
                pass  # already this node's port (or another node's: left alone)
        props = dict(before.properties)
        props.update(inspection.properties(inventory))
        plugin = inspection.plugin_data(inventory, plugin_data)
        rules = [r.as_rule() for r in self.store.list_inspection_rules(phase="main", limit=0)]
        if not rules:
            self.store.save_inventory(before.id, inventory, plugin)
            return {"properties": props}, None, notes
        node = {**asdict(before), "properties": props}
        traits = self.store.get_traits(before.id)
        ports = [
            {"uuid": p.uuid, "address": p.address, "pxe_enabled": p.pxe_enabled,
             "extra": p.extra, "local_link_connection": p.local_link_connection}
            for p in self.store.list_ports(node=before.id)
        ]  # fmt: skip
        result = apply_rules(rules, node, inventory, plugin, traits=traits, ports=ports)
        failure = result.failure
        if failure is None:
            failure = self._check_rule_changes(before, result.node_changes, result.applied)
        self.store.save_inventory(
            before.id, inventory, result.plugin_data if failure is None else plugin
        )
        for line in result.log:
            severity = SEVERITY_ERROR if line.level == "error" else SEVERITY_INFO
            notes.append((f"Inspection rule {line.rule}: {line.text}", severity))
        if failure is not None:
            notes.append((f"Inspection failed: {failure}", SEVERITY_ERROR))
            return {}, failure, notes
        for uuid in result.applied:
            notes.append((f"Inspection rule {uuid} applied", SEVERITY_INFO))
        if result.traits is not None:
            self.store.set_traits(before.id, result.traits)
        for port_uuid, port_changes in result.port_changes.items():
            self.store.update_port(port_uuid, port_changes, holder=self.holder)
        changes: dict[str, Any] = {"properties": props}
        changes.update(result.node_changes)
        return changes, None, notes

    def _check_rule_changes(
        self, node: NodeRecord, changes: Mapping[str, Any], applied: list[str]
    ) -> str | None:
        """Why the rules' node ``changes`` cannot be saved (an unknown driver, a taken name)."""
        from pxeforge.drivers.base import UnknownDriver

        who = f"Inspection rule(s) {', '.join(applied)}" if applied else "Inspection rules"
        if "driver" in changes:
            try:
                self.drivers(changes["driver"])
            except UnknownDriver as exc:
                return f"{who} set driver {changes['driver']!r}: {exc}"
        if changes.get("name"):
            try:
                other = self.store.get_node(changes["name"])
            except NodeNotFound:
                other = None
            if other is not None and other.uuid != node.uuid:
                return f"{who} set name {changes['name']!r}, which node {other.uuid} has"
        return None

    # ---- power, boot device, validation ------------------------------------------------------

    async def set_power_state(
        self, node: str, target: str, timeout: float | None = None, *, user: str | None = None
    ) -> NodeRecord:
        """``PUT …/states/power``: lock, set ``target_power_state``, act in a worker."""
        return await self._call(self.set_power_state_sync, node, target, timeout, user=user)

    def set_power_state_sync(
        self, node: str, target: str, timeout: float | None = None, *, user: str | None = None
    ) -> NodeRecord:
        if target not in POWER_STATES:
            raise InvalidParameterValue(
                f'Invalid power target "{target}"; valid targets: {", ".join(POWER_STATES)}'
            )
        record = self.store.get_node(node)
        driver = self._driver(record)
        driver.validate(record.driver_info)
        self._reserve_worker()
        locked = False
        try:
            if not self.store.acquire(record.uuid, self.holder):
                current = self.store.get_node(record.uuid)
                raise NodeLocked(current.uuid, current.reservation)
            locked = True
            record = self.store.update_node(
                record.uuid, {"target_power_state": target}, holder=self.holder
            )
            uuid = record.uuid
            self._spawn(lambda: self._power_worker(uuid, driver, target, timeout, user))
            locked = False  # the worker owns the lock now
            return record
        except BaseException:
            if locked:
                self.store.release(record.uuid, self.holder)
            self._release_worker()
            raise

    def _power_worker(
        self, uuid: str, driver: Driver, target: str, timeout: float | None, user: str | None
    ) -> None:
        try:
            node = self.store.get_node(uuid)
            old = node.power_state
            try:
                if target == REBOOT:
                    note = driver.reboot(node.driver_info, timeout)
                else:
                    note = driver.set_power_state(node.driver_info, PowerState(target), timeout)
                read = driver.get_power_state(node.driver_info)
                if read is None:  # nobody can tell (manual-management): assume it was done
                    state = POWER_OFF if target in (POWER_OFF, SOFT_POWER_OFF) else POWER_ON
                else:
                    state = str(read)
                message = f'Power state changed from "{old}" to "{state}" ("{target}" asked)'
                if note:
                    message += f"; {note}"
                changes: dict[str, Any] = {
                    "power_state": state,
                    "target_power_state": None,
                }
                severity = SEVERITY_INFO
            except DriverError as exc:
                message = f"Failed to change power state to '{target}' by '{target}'. Error: {exc}"
                changes = {"target_power_state": None, "last_error": message}
                severity = SEVERITY_ERROR
            self.store.update_node(uuid, changes, holder=self.holder)
            self.store.add_history(
                uuid,
                message,
                event_type=HistoryType.PROVISIONING,
                severity=severity,
                user=user,
                conductor=self.holder,
            )
        finally:
            self.store.release(uuid, self.holder)

    async def set_boot_device(
        self, node: str, device: str, persistent: bool = False, *, user: str | None = None
    ) -> None:
        """``PUT …/management/boot_device``: synchronous under the node's lock (409)."""
        await self._call(self.set_boot_device_sync, node, device, persistent, user=user)

    def set_boot_device_sync(
        self, node: str, device: str, persistent: bool = False, *, user: str | None = None
    ) -> None:
        if device not in BOOT_DEVICES:
            raise InvalidParameterValue(
                f'Invalid boot device "{device}"; supported: {", ".join(BOOT_DEVICES)}'
            )
        with self.store.lock(node, self.holder) as record:
            note = self._driver(record).set_boot_device(
                record.driver_info, BootDevice(device), persistent
            )
            text = f'Boot device set to "{device}"' + (" (persistent)" if persistent else "")
            self.store.add_history(
                record.id,
                f"{text}; {note}" if note else text,
                event_type=HistoryType.PROVISIONING,
                user=user,
                conductor=self.holder,
            )

    async def get_boot_device(self, node: str) -> BootSetting:
        """The boot device the driver reports (no lock: a read)."""
        return await self._call(self.get_boot_device_sync, node)

    def get_boot_device_sync(self, node: str) -> BootSetting:
        record = self.store.get_node(node)
        return self._driver(record).get_boot_device(record.driver_info)

    async def validate(self, node: str) -> dict[str, dict[str, Any]]:
        """``GET …/validate``: per interface, ``{"result": bool|None, "reason": str|None}``."""
        return await self._call(self.validate_sync, node)

    def validate_sync(self, node: str) -> dict[str, dict[str, Any]]:
        record = self.store.get_node(node)
        unsupported: dict[str, Any] = {"result": None, "reason": "not supported"}
        try:
            self._driver(record).validate(record.driver_info)
            power: dict[str, Any] = {"result": True, "reason": None}
        except DriverError as exc:
            power = {"result": False, "reason": str(exc)}
        ports = self.store.list_ports(node=record.id, pxe_enabled=True, limit=1)
        if ports:
            boot: dict[str, Any] = {"result": True, "reason": None}
        else:
            boot = {
                "result": False,
                "reason": "Node has no PXE-enabled port: pxeforge cannot tell its DHCP "
                "requests from other machines'",
            }
        deploy: dict[str, Any] = {"result": True, "reason": None}
        if agent_deploy.is_agent_deploy(record):
            try:
                agent_deploy.check_deploy(record, self.settings)
            except InvalidParameterValue as exc:
                deploy = {"result": False, "reason": str(exc)}
        return {
            "bios": dict(unsupported),
            "boot": boot,
            "console": dict(unsupported),
            "deploy": deploy,
            "firmware": dict(unsupported),
            "inspect": {
                "result": None,
                "reason": "inspection needs the agent ramdisk (not available yet)",
            },
            "management": dict(power),
            "network": {"result": True, "reason": None},
            "power": power,
            "raid": dict(unsupported),
            "rescue": dict(unsupported),
            "storage": {"result": True, "reason": None},
        }

    async def set_maintenance(
        self, node: str, on: bool, reason: str | None = None, *, user: str | None = None
    ) -> NodeRecord:
        """``PUT``/``DELETE …/maintenance`` (409 while someone holds the node's lock)."""
        return await self._call(self.set_maintenance_sync, node, on, reason, user=user)

    def set_maintenance_sync(
        self, node: str, on: bool, reason: str | None = None, *, user: str | None = None
    ) -> NodeRecord:
        changes: dict[str, Any] = {"maintenance": on, "maintenance_reason": reason if on else None}
        if not on:
            changes["fault"] = None
        record = self.store.update_node(node, changes)
        text = "Maintenance mode set" if on else "Maintenance mode unset"
        if on and reason:
            text += f": {reason}"
        self.store.add_history(
            record.id, text, event_type=HistoryType.PROVISIONING, user=user, conductor=self.holder
        )
        return record
