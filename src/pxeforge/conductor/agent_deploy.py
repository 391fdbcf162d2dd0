"""Image deploy and cleaning through the agent ramdisk: what the conductor does on heartbeats.

Theory of operation (Ironic's ``agent_base.HeartbeatMixin`` and ``agent.AgentDeploy``, reduced
to whole-disk images; the protocol is docs/agent-protocol.md):

* **The verb** (`check_deploy`, `check_clean_steps`) refuses at once what cannot work: an
  ``instance_info`` without an http(s) ``image_source``, without a sha256/sha512 checksum
  (mandatory: Ironic CVE-2024-47211), or in a format the agent does not write
  (`PERMITTED_FORMATS`); manual clean steps that do not run in the agent; any of these when no
  agent ramdisk is configured (`Settings.deploy_kernel`).
* **The first work** (``deploying``/``cleaning`` in the manager) boots the ramdisk (boot device
  pxe, power on or reboot), forgets the previous agent (its token, URL, command —
  `fresh_agent`: a new ramdisk looks the node up again and must get a new token) and waits
  (``wait call-back`` / ``clean wait``).
* **Each heartbeat** (`AgentFlows.on_heartbeat`, in a conductor worker, under the node's lock)
  asks the agent about the command the conductor started last (its id is kept in
  ``driver_internal_info.agent_command``) and acts on its status — `ACTIONS`, the table of the
  spec:

  ==============  ===========  ============================================================
  node state      command      conductor
  ==============  ===========  ============================================================
  wait call-back  none         resume → deploying: POST ``standby.prepare_image``; → wait
  wait call-back  RUNNING      nothing (the API stored the agent's progress message)
  wait call-back  SUCCEEDED    resume → deploying: boot device disk (persistent),
                               ``standby.sync``, power off; → active; power on — or, when the
                               driver has no power control, ``standby.run_image`` (the agent
                               reboots the machine)
  wait call-back  FAILED       → deploy failed, ``last_error`` = the agent's error
  clean wait      none         resume → cleaning: ``clean.get_clean_steps``, plan the steps,
                               POST ``clean.execute_clean_step`` (the first); → clean wait
  clean wait      RUNNING      nothing
  clean wait      SUCCEEDED    resume → cleaning: the next step (→ clean wait), or, after the
                               last, power off (driver, else ``standby.power_off``) → available
                               (automated) / manageable (manual)
  clean wait      FAILED       → clean failed, ``last_error`` names the step and the error
  ==============  ===========  ============================================================

  A command the agent no longer knows (404: the ramdisk restarted) fails the operation; an
  agent that cannot be reached for a status check is retried at the next heartbeat (the wait
  timeout, `Store.expire_waits`, catches an agent that is gone for good: heartbeats refresh
  ``provision_updated_at``, so only silence counts).
* **Which clean steps** (`plan_clean_steps`): automated cleaning runs the agent's steps of
  priority > 0, highest first (``erase_devices_metadata``, 99); manual cleaning runs the
  verb's steps in order, each of which the agent must offer (``erase_devices`` has priority 0:
  manual only), with the verb's ``args``. Whether automated cleaning runs at all is Ironic's
  rule (`automated_clean_enabled`): the node's ``automated_clean`` when set, else
  `Settings.automated_clean`.

Everything that talks to the agent or the BMC runs in `AgentFlows` (worker threads, node
locked); the rest of this module is pure.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from pxeforge.conductor.agent_client import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    AgentBusy,
    AgentClient,
    AgentClientError,
    AgentConnectionFailed,
    AgentRequestRefused,
    CommandResult,
)
from pxeforge.conductor.step import Step
from pxeforge.config import Settings
from pxeforge.drivers.base import BootDevice, Driver, DriverError, PowerState
from pxeforge.inventory.booter import is_installer_deploy
from pxeforge.inventory.errors import InvalidParameterValue
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.states import (
    CLEANWAIT,
    DEPLOYWAIT,
    MANAGEABLE,
    POWER_OFF,
    POWER_ON,
    SEVERITY_ERROR,
    Event,
    HistoryType,
)
from pxeforge.inventory.store import Store

__all__ = [
    "ACTIONS",
    "AGENT_COMMAND",
    "AGENT_KEYS",
    "AGENT_WAIT_STATES",
    "CLEAN_KEYS",
    "DEPLOY_RESULT",
    "HASH_LENGTHS",
    "PERMITTED_FORMATS",
    "AgentFlows",
    "automated_clean_enabled",
    "check_clean_steps",
    "check_deploy",
    "fresh_agent",
    "image_info",
    "is_agent_deploy",
    "plan_clean_steps",
    "require_ramdisk",
]

log = logging.getLogger(__name__)

PERMITTED_FORMATS: Final = ("raw", "qcow2")
"""Image formats the agent writes (Ironic's ``permitted_image_formats``, without iso)."""

HASH_LENGTHS: Final = {"sha256": 64, "sha512": 128}
"""Accepted checksum algorithms and the length of their hex digest."""

TOKEN_KEY: Final = "agent_secret_token"
AGENT_COMMAND: Final = "agent_command"
"""driver_internal_info: ``{"id", "name"}`` of the agent command the conductor started last."""
DEPLOY_RESULT: Final = "deploy_result"
"""driver_internal_info: the agent's ``prepare_image`` result (root device, bytes, hash)."""
CLEAN_STEPS: Final = "clean_steps"
CLEAN_STEP: Final = "clean_step"
CLEAN_STEP_INDEX: Final = "clean_step_index"
CLEAN_VERSION: Final = "clean_version"

AGENT_KEYS: Final = (TOKEN_KEY, "agent_url", "agent_version", "agent_last_heartbeat",
                     "agent_status_message", AGENT_COMMAND)  # fmt: skip
"""What belongs to one boot of the agent: forgotten when the machine boots a new one."""
CLEAN_KEYS: Final = (CLEAN_STEPS, CLEAN_STEP, CLEAN_STEP_INDEX, CLEAN_VERSION)
"""Cleaning's progress: forgotten when cleaning ends or starts again."""

AGENT_WAIT_STATES: Final = frozenset({DEPLOYWAIT, CLEANWAIT})
"""States in which a heartbeat makes the conductor talk to the agent."""

START: Final = "start"
PROGRESS: Final = "progress"
NEXT: Final = "next"
FAIL: Final = "fail"
ACTIONS: Final[Mapping[str | None, str]] = {
    None: START,  # no command started yet in this wait: start one
    RUNNING: PROGRESS,  # it runs: nothing to do
    SUCCEEDED: NEXT,  # it ended well: resume and go on
    FAILED: FAIL,  # it failed: the operation fails
}
"""The spec's table: the status of the conductor's last command → what to do."""

_ID_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]")
_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_MANUAL_STEP_KEYS: Final = frozenset({"interface", "step", "args"})

# --------------------------------------------------------------------------------------------
# Pure checks
# --------------------------------------------------------------------------------------------


def is_agent_deploy(node: NodeRecord) -> bool:
    """True unless the node deploys with an installer (kickstart / anaconda)."""
    return not is_installer_deploy(node)


def require_ramdisk(settings: Settings, what: str) -> None:
    """`InvalidParameterValue` when no agent ramdisk is configured to do ``what``."""
    if settings.deploy_kernel is None:
        raise InvalidParameterValue(
            f"{what} needs the agent ramdisk, and none is configured: start `pxeforge serve` "
            "with --deploy-kernel and --deploy-ramdisk (build them with `pxeforge ramdisk "
            "build`)"
        )


def _checksum(info: Mapping[str, Any]) -> tuple[str, str]:
    algo, value = info.get("image_os_hash_algo"), info.get("image_os_hash_value")
    legacy = info.get("image_checksum")
    if algo is None and value is None:
        if legacy is None:
            raise InvalidParameterValue(
                "instance_info has no image checksum, and it is mandatory: set "
                "image_os_hash_algo (sha256 or sha512) and image_os_hash_value (hex), or "
                'image_checksum "sha256:<hex>"'
            )
        if not isinstance(legacy, str) or ":" not in legacy:
            raise InvalidParameterValue(
                'instance_info.image_checksum must name its algorithm: "sha256:<hex>" or '
                '"sha512:<hex>" (md5 and checksum-file URLs are not accepted)'
            )
        algo, _, value = legacy.partition(":")
        where = "instance_info.image_checksum"
    else:
        where = "instance_info.image_os_hash_algo/image_os_hash_value"
        if not isinstance(algo, str) or not isinstance(value, str):
            raise InvalidParameterValue(
                "instance_info needs both image_os_hash_algo and image_os_hash_value (strings)"
            )
    algo = algo.strip().lower()
    value = value.strip().lower()
    if algo not in HASH_LENGTHS:
        raise InvalidParameterValue(
            f"{where}: checksum algorithm {algo!r} is not accepted; use {' or '.join(HASH_LENGTHS)}"
        )
    if len(value) != HASH_LENGTHS[algo] or not _HEX.fullmatch(value):
        raise InvalidParameterValue(
            f"{where}: a {algo} checksum is {HASH_LENGTHS[algo]} hex digits, got {value[:140]!r}"
        )
    return algo, value


def image_info(node: NodeRecord) -> dict[str, Any]:
    """The ``image_info`` of ``standby.prepare_image`` from ``node.instance_info``; refuses
    (`InvalidParameterValue`, 400 at the verb) what the agent could not deploy safely."""
    info = node.instance_info
    source = info.get("image_source")
    if not isinstance(source, str) or not source.strip():
        raise InvalidParameterValue(
            "instance_info.image_source is required for an image deploy: the http(s) URL of a "
            "whole-disk image (`pxeforge image upload` prints one); installer deploys set "
            "deploy_interface kickstart instead"
        )
    source = source.strip()
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameterValue(
            f"instance_info.image_source must be an http:// or https:// URL, got {source[:200]!r}"
        )
    fmt = info.get("image_disk_format")
    if fmt is None:
        raise InvalidParameterValue(
            f"instance_info.image_disk_format is required: one of {', '.join(PERMITTED_FORMATS)}"
        )
    if fmt not in PERMITTED_FORMATS:
        raise InvalidParameterValue(
            f"instance_info.image_disk_format {fmt!r} is not permitted; permitted formats: "
            f"{', '.join(PERMITTED_FORMATS)}"
        )
    kind = info.get("image_type", "whole-disk")
    if kind != "whole-disk":
        raise InvalidParameterValue(
            f"instance_info.image_type {kind!r} is not supported: only whole-disk images"
        )
    algo, value = _checksum(info)
    size = info.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise InvalidParameterValue("instance_info.image_size must be a positive integer (bytes)")
    name = _ID_CHARS.sub("_", parts.path.rsplit("/", 1)[-1]) or "image"
    image: dict[str, Any] = {
        "id": name,
        "urls": [source],
        "disk_format": fmt,
        "os_hash_algo": algo,
        "os_hash_value": value,
        "image_type": "whole-disk",
        "stream_raw_images": True,
    }
    if size is not None:
        image["image_size"] = size
    return image


def check_deploy(node: NodeRecord, settings: Settings) -> None:
    """The deploy/rebuild verb's checks for an image (agent) deploy: 400 with the reason."""
    image_info(node)
    require_ramdisk(settings, "An image deploy")
    hints = node.properties.get("root_device")
    if hints is not None and not isinstance(hints, dict):
        raise InvalidParameterValue("properties.root_device must be an object of hints")


def check_clean_steps(steps: Sequence[Any]) -> list[dict[str, Any]]:
    """The clean verb's steps, checked: each ``{"interface": "deploy", "step": …, "args": {…}}``
    (pxeforge runs clean steps in the agent only)."""
    checked: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise InvalidParameterValue(f"clean_steps[{i}] must be an object")
        unknown = sorted(set(step) - _MANUAL_STEP_KEYS)
        if unknown:
            raise InvalidParameterValue(
                f"clean_steps[{i}]: unknown key(s) {', '.join(unknown)} (allowed: interface, "
                "step, args)"
            )
        name, interface = step.get("step"), step.get("interface")
        if not isinstance(name, str) or not name:
            raise InvalidParameterValue(f"clean_steps[{i}] needs a 'step' name")
        if interface != "deploy":
            raise InvalidParameterValue(
                f"clean_steps[{i}]: interface {interface!r} is not supported; pxeforge runs "
                "clean steps in the agent ramdisk (interface 'deploy': erase_devices, "
                "erase_devices_metadata)"
            )
        args = step.get("args", {})
        if not isinstance(args, dict):
            raise InvalidParameterValue(f"clean_steps[{i}].args must be an object")
        checked.append({"interface": interface, "step": name, "args": args})
    return checked


def automated_clean_enabled(node: NodeRecord, settings: Settings) -> bool:
    """Ironic's rule: the node's ``automated_clean`` when set, else the setting."""
    if node.automated_clean is not None:
        return bool(node.automated_clean)
    return settings.automated_clean


def offered_steps(result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The steps of a ``get_clean_steps`` result, all hardware managers, each once."""
    managers = (result or {}).get("clean_steps")
    if not isinstance(managers, dict):
        raise ValueError("get_clean_steps answered without a 'clean_steps' object")
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []
    for steps in managers.values():
        if not isinstance(steps, list):
            raise ValueError("get_clean_steps: each manager's steps must be a list")
        for step in steps:
            if not isinstance(step, dict) or not isinstance(step.get("step"), str):
                raise ValueError(f"get_clean_steps: malformed step {step!r}")
            priority = step.get("priority", 0)
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise ValueError(f"get_clean_steps: step {step['step']} has a bad priority")
            key = (str(step.get("interface", "deploy")), step["step"])
            if key not in seen:
                seen.add(key)
                out.append({**step, "interface": key[0], "priority": priority})
    return out


def plan_clean_steps(
    offered: Iterable[Mapping[str, Any]], manual: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """The steps to run: automated (``manual`` None) — priority > 0, highest first; manual —
    the requested steps in order, each offered by the agent (`ValueError` otherwise)."""
    steps = [dict(s) for s in offered]
    if manual is None:
        chosen = [s for s in steps if s["priority"] > 0]
        chosen.sort(key=lambda s: -int(s["priority"]))  # stable: the agent's order on ties
        return [{**s, "args": dict(s.get("args") or {})} for s in chosen]
    by_key = {(s["interface"], s["step"]): s for s in steps}
    plan: list[dict[str, Any]] = []
    for want in manual:
        found = by_key.get((want["interface"], want["step"]))
        if found is None:
            names = ", ".join(f"{i}.{n}" for i, n in by_key) or "none"
            raise ValueError(
                f"clean step {want['interface']}.{want['step']} is not offered by the agent "
                f"(offered: {names})"
            )
        plan.append({**found, "args": dict(want.get("args") or {})})
    return plan


def fresh_agent(internal: Mapping[str, Any], *also: str) -> dict[str, Any]:
    """``driver_internal_info`` without the previous agent's keys (and ``also``)."""
    drop = {*AGENT_KEYS, *also}
    return {k: v for k, v in internal.items() if k not in drop}


def _step_name(step: Mapping[str, Any] | None) -> str:
    if not step:
        return "(unknown step)"
    return f"{step.get('interface', 'deploy')}.{step.get('step')}"


def _node_param(node: NodeRecord) -> dict[str, Any]:
    """What the agent is told about the node (no secrets)."""
    return {"uuid": node.uuid, "properties": dict(node.properties)}


# --------------------------------------------------------------------------------------------
# The flows (worker threads, node locked)
# --------------------------------------------------------------------------------------------

Finish = Callable[[NodeRecord, Step], NodeRecord]
"""Save a `Step` as one transition of the locked node; returns the node as saved."""


class AgentFlows:
    """Acts on heartbeats of nodes in ``wait call-back`` (image deploy) and ``clean wait``.

    ``finish`` is the conductor's transition saver; ``driver`` finds a node's driver. Every
    method runs with the node locked by ``holder``."""

    def __init__(
        self,
        store: Store,
        *,
        holder: str,
        settings: Settings,
        driver: Callable[[NodeRecord], Driver],
        finish: Finish,
        client: Callable[[str, str, float], AgentClient] | None = None,
    ) -> None:
        self.store = store
        self.holder = holder
        self.settings = settings
        self.driver = driver
        self.finish = finish
        self._client_factory = client or (lambda url, token, t: AgentClient(url, token, timeout=t))

    # ---- helpers ------------------------------------------------------------------------

    def _client(self, node: NodeRecord) -> AgentClient:
        internal = node.driver_internal_info
        url, token = internal.get("agent_url"), internal.get(TOKEN_KEY)
        if not isinstance(url, str) or not url:
            raise AgentConnectionFailed("(none)", "the agent has not announced a callback_url")
        if not isinstance(token, str) or not token:
            raise AgentConnectionFailed(url, "the node has no agent token")
        return self._client_factory(url, token, self.settings.agent_command_timeout)

    def _note(self, node: NodeRecord, text: str, *, error: bool = False) -> None:
        self.store.add_history(
            node.id,
            text,
            event_type=HistoryType.PROVISIONING,
            severity=SEVERITY_ERROR if error else "INFO",
            conductor=self.holder,
        )

    def _current(self, node: NodeRecord, client: AgentClient) -> CommandResult | None | str:
        """The conductor's last command as the agent sees it; None: none started; a string:
        why it cannot be told now (retried at the next heartbeat)."""
        started = node.driver_internal_info.get(AGENT_COMMAND)
        if not isinstance(started, dict) or not isinstance(started.get("id"), str):
            return None
        try:
            return client.get_command(started["id"])
        except AgentRequestRefused as exc:
            if exc.status == 404:
                raise AgentClientError(
                    f"the agent at {client.url} no longer knows command {started.get('name')} "
                    f"({started['id']}): did the ramdisk restart?"
                ) from None
            raise
        except AgentConnectionFailed as exc:
            return str(exc)

    def on_heartbeat(self, node: NodeRecord) -> None:
        """The agent of ``node`` (locked) heartbeated: act per `ACTIONS`."""
        if node.provision_state == DEPLOYWAIT and is_agent_deploy(node):
            self._deploy(node)
        elif node.provision_state == CLEANWAIT:
            self._clean(node)

    # ---- deploy -------------------------------------------------------------------------

    def _deploy(self, node: NodeRecord) -> None:
        try:
            client = self._client(node)
            current = self._current(node, client)
        except AgentClientError as exc:
            self.finish(node, Step(Event.FAIL, last_error=f"Deploy failed: {exc}"))
            return
        if isinstance(current, str):
            log.warning("node %s: %s (trying again at the next heartbeat)", node.uuid, current)
            return
        action = ACTIONS[None if current is None else current.status]
        if action == PROGRESS:
            return
        if action == FAIL:
            assert current is not None
            self.finish(node, Step(Event.FAIL, last_error=self._deploy_error(current)))
            return
        node = self.finish(node, Step(Event.RESUME))  # → deploying
        if action == START:
            self._write_image(node, client)
        else:
            assert current is not None
            self._boot_instance(node, client, current)

    @staticmethod
    def _deploy_error(result: CommandResult) -> str:
        return f"Deploy failed: the agent's {result.name} failed: {result.error_text}"

    def _write_image(self, node: NodeRecord, client: AgentClient) -> None:
        try:
            image = image_info(node)
            params: dict[str, Any] = {"image_info": image}
            hints = node.properties.get("root_device")
            if isinstance(hints, dict):
                params["root_device_hints"] = hints
            result = client.post_command("standby.prepare_image", params)
        except AgentBusy as exc:
            self.finish(node, Step(Event.WAIT, notes=(f"{exc}; trying at the next heartbeat",)))
            return
        except (AgentClientError, InvalidParameterValue) as exc:
            self.finish(
                node,
                Step(Event.FAIL, last_error=f"Deploy failed: could not start prepare_image: {exc}"),
            )
            return
        if result.status == FAILED:
            self.finish(node, Step(Event.FAIL, last_error=self._deploy_error(result)))
            return
        if result.status == SUCCEEDED:  # finished before we asked: go on at once
            self._boot_instance(node, client, result)
            return
        internal = dict(node.driver_internal_info)
        internal[AGENT_COMMAND] = {"id": result.id, "name": result.name}
        note = (
            f"The agent writes {image['urls'][0]} ({image['disk_format']}, "
            f"{image['os_hash_algo']} checked) to the root disk (prepare_image {result.id})"
        )
        self.finish(
            node, Step(Event.WAIT, changes={"driver_internal_info": internal}, notes=(note,))
        )

    def _boot_instance(self, node: NodeRecord, client: AgentClient, done: CommandResult) -> None:
        """deploying, the image written: disk boot, sync, → active, boot the instance."""
        written = dict(done.result or {})
        notes = [
            "Image written to {dev}: {n} bytes, {algo} {value} verified".format(
                dev=written.get("root_device", "the root disk"),
                n=written.get("bytes_written", "?"),
                algo=written.get("os_hash_algo", ""),
                value=str(written.get("os_hash_value", ""))[:16] + "…",
            )
        ]
        driver = self.driver(node)
        try:
            note = driver.set_boot_device(node.driver_info, BootDevice.DISK, True)
            notes.append(note or "Boot device set to disk (persistent)")
            synced = client.post_command("standby.sync", wait=True)
            if synced.status != SUCCEEDED:
                raise AgentClientError(f"standby.sync failed: {synced.error_text}")
            powered = driver.get_power_state(node.driver_info) is not None
            if powered:
                note = driver.set_power_state(node.driver_info, PowerState.POWER_OFF)
                notes.append(note or "Powered off to boot the instance")
        except (DriverError, AgentClientError) as exc:
            self.finish(
                node,
                Step(
                    Event.FAIL,
                    last_error=f"Deploy failed after the image was written: {exc}",
                    notes=tuple(notes),
                ),
            )
            return
        internal = fresh_agent(node.driver_internal_info)
        internal[DEPLOY_RESULT] = written
        changes: dict[str, Any] = {"driver_internal_info": internal}
        if powered:
            changes["power_state"] = POWER_OFF
        node = self.finish(node, Step(Event.DONE, changes=changes, notes=tuple(notes)))
        # active: the boot plane now answers "local disk" for this machine
        if powered:
            try:
                note = driver.set_power_state(node.driver_info, PowerState.POWER_ON)
                self.store.update_node(node.id, {"power_state": POWER_ON}, holder=self.holder)
                self._note(node, note or "Powered on: the machine boots the instance")
            except DriverError as exc:
                message = f"Deployed, but powering the machine on failed: {exc}"
                self.store.update_node(node.id, {"last_error": message}, holder=self.holder)
                self._note(node, message, error=True)
            return
        try:
            client.post_command("standby.run_image")
            self._note(node, "The agent reboots the machine into the instance (run_image)")
        except AgentClientError as exc:
            message = f"Deployed, but the agent could not reboot the machine ({exc}): reboot it"
            self.store.update_node(node.id, {"last_error": message}, holder=self.holder)
            self._note(node, message, error=True)

    # ---- cleaning -----------------------------------------------------------------------

    def _clean(self, node: NodeRecord) -> None:
        internal = node.driver_internal_info
        step = internal.get(CLEAN_STEP)
        try:
            client = self._client(node)
            current = self._current(node, client)
        except AgentClientError as exc:
            where = f" on step {_step_name(step)}" if step else ""
            self.finish(node, Step(Event.FAIL, last_error=f"Cleaning failed{where}: {exc}"))
            return
        if isinstance(current, str):
            log.warning("node %s: %s (trying again at the next heartbeat)", node.uuid, current)
            return
        action = ACTIONS[None if current is None else current.status]
        if action == PROGRESS:
            return
        if action == FAIL:
            assert current is not None
            self.finish(
                node,
                Step(
                    Event.FAIL,
                    last_error=f"Clean step {_step_name(step)} failed: {current.error_text}",
                ),
            )
            return
        node = self.finish(node, Step(Event.RESUME))  # → cleaning
        if action == START:
            self._start_cleaning(node, client)
            return
        index = internal.get(CLEAN_STEP_INDEX)
        following = index + 1 if isinstance(index, int) else 0
        self._run_step(node, client, following, (f"Clean step {_step_name(step)} done",))

    def _start_cleaning(self, node: NodeRecord, client: AgentClient) -> None:
        manual = node.target_provision_state == MANAGEABLE
        requested = node.driver_internal_info.get(CLEAN_STEPS) if manual else None
        wanted = check_clean_steps(requested) if isinstance(requested, list) else []
        try:
            answer = client.post_command(
                "clean.get_clean_steps", {"node": _node_param(node), "ports": []}, wait=True
            )
            if answer.status != SUCCEEDED:
                raise ValueError(f"get_clean_steps failed: {answer.error_text}")
            offered = offered_steps(answer.result)
            steps = plan_clean_steps(offered, wanted if manual else None)
        except (AgentClientError, ValueError, InvalidParameterValue) as exc:
            self.finish(node, Step(Event.FAIL, last_error=f"Cleaning failed: {exc}"))
            return
        internal = dict(node.driver_internal_info)
        internal[CLEAN_STEPS] = steps
        version = (answer.result or {}).get("hardware_manager_version")
        internal[CLEAN_VERSION] = version if isinstance(version, dict) else {}
        internal.pop(CLEAN_STEP, None)
        internal.pop(CLEAN_STEP_INDEX, None)
        node = self.store.update_node(node.id, {"driver_internal_info": internal},
                                      holder=self.holder)  # fmt: skip
        names = ", ".join(_step_name(s) for s in steps) or "none"
        kind = "Manual" if manual else "Automated"
        self._run_step(node, client, 0, (f"{kind} cleaning: steps {names}",))

    def _run_step(
        self, node: NodeRecord, client: AgentClient, index: int, notes: tuple[str, ...]
    ) -> None:
        """cleaning: start step ``index`` (→ clean wait), or end cleaning after the last."""
        internal = dict(node.driver_internal_info)
        steps = internal.get(CLEAN_STEPS) or []
        if index >= len(steps):
            self._end_cleaning(node, client, notes)
            return
        step = steps[index]
        try:
            result = client.post_command(
                "clean.execute_clean_step",
                {
                    "step": step,
                    "node": _node_param(node),
                    "ports": [],
                    "clean_version": internal.get(CLEAN_VERSION) or {},
                },
            )
        except AgentClientError as exc:
            self.finish(
                node,
                Step(
                    Event.FAIL,
                    last_error=f"Clean step {_step_name(step)} could not be started: {exc}",
                    notes=notes,
                ),
            )
            return
        if result.status == FAILED:
            self.finish(
                node,
                Step(
                    Event.FAIL,
                    last_error=f"Clean step {_step_name(step)} failed: {result.error_text}",
                    notes=notes,
                ),
            )
            return
        internal[CLEAN_STEP] = step
        internal[CLEAN_STEP_INDEX] = index
        internal[AGENT_COMMAND] = {"id": result.id, "name": result.name}
        started = f"Clean step {_step_name(step)} started ({index + 1}/{len(steps)})"
        self.finish(
            node,
            Step(Event.WAIT, changes={"driver_internal_info": internal}, notes=(*notes, started)),
        )

    def _end_cleaning(self, node: NodeRecord, client: AgentClient, notes: Iterable[str]) -> None:
        """cleaning, every step done: power off, → available (automated) / manageable."""
        texts = list(notes)
        manual = node.target_provision_state == MANAGEABLE
        driver = self.driver(node)
        try:
            if driver.get_power_state(node.driver_info) is not None:
                note = driver.set_power_state(node.driver_info, PowerState.POWER_OFF)
                texts.append(note or "Powered off after cleaning")
            else:
                client.post_command("standby.power_off")
                texts.append("The agent powers the machine off (power_off)")
        except (DriverError, AgentClientError) as exc:
            self.finish(
                node,
                Step(
                    Event.FAIL,
                    last_error=f"Cleaning done, but powering off failed: {exc}",
                    notes=tuple(texts),
                ),
            )
            return
        internal = fresh_agent(node.driver_internal_info, *CLEAN_KEYS)
        changes = {"driver_internal_info": internal, "power_state": POWER_OFF}
        event = Event.MANAGE if manual else Event.DONE
        self.finish(node, Step(event, changes=changes, notes=tuple(texts)))
