"""`InventoryBooter`: the boot plane follows the node's provision state.

Theory of operation
-------------------
``boot_spec(machine)`` maps the machine's MAC to its port and that port's node (a port with
``pxe_enabled`` false does not boot) and the node's state to an answer:

==========================================  ======================================================
state                                       boot
==========================================  ======================================================
inspecting, inspect wait, cleaning, clean   the agent ramdisk (`Settings.deploy_kernel` /
wait, rescuing, rescue wait, rescue;        ``deploy_ramdisk``, served as ``_pxeforge/deploy-…``)
deploying, wait call-back (agent deploy)    with ``ipa-api-url`` and ``BOOTIF``
deploying, wait call-back (deploy_interface the installer (``instance_info.kernel``/``ramdisk``,
kickstart / anaconda)                       URLs or root-relative refs) with ``inst.ks=<http>/ks/
                                            <uuid>`` (see `pxeforge.deploy.kickstart`)
active                                      local disk (pxelinux ``localboot 0``, GRUB chain,
                                            iPXE ``sanboot``/``exit``)
enroll, manageable, available               `Settings.idle_boot`: nothing (default) or local disk
anything else (failed, hold, verifying…)    nothing
unknown MAC                                 nothing; with `Settings.discovery` the agent ramdisk
                                            with the inspection callback (below); else with
                                            `Settings.auto_enroll` a node is created in ``enroll``
                                            (driver manual-management) first
==========================================  ======================================================

"Nothing" is None: the DHCP server stays silent, per-machine config names are 404/ERROR 1.

Agent command line: ``ipa-api-url=<Settings.api_base> BOOTIF=01-<mac>`` (Ironic Python
Agent's parameter names; ``ipa-inspection-callback-url`` is added while inspecting),
then `Settings.agent_cmdline`, then the node's ``driver_info.kernel_append_params``. Every
piece goes through `check_cmdline`; a node whose parameters are refused boots nothing and the
reason is logged (Ironic CVE-2026-46447: boot scripts were injected through those params).

Cost. DHCP asks on every packet and each config request asks again, so answers are cached per
MAC for `Settings.boot_cache_ttl` seconds (1 s; negative answers too), and `invalidate` drops
entries when pxeforge itself changes a node (the kickstart callback). A state change made
elsewhere (the API, another process) is seen within the TTL, well inside a machine's reboot.
The lookup is one indexed query (ports by MAC, then the node by id).

Discovery (Ironic's ``[auto_discovery]``): with `Settings.discovery` an unknown MAC boots the
agent ramdisk with ``ipa-api-url``, ``BOOTIF`` and ``ipa-inspection-callback-url`` but no
node; the agent's lookup is a 404, so it posts its inventory to ``/v1/continue_inspection``,
where pxeforge enrolls the machine (`Conductor.discover_sync`: driver
`Settings.discovery_driver`, properties, ports, inspection rules, state ``enroll``). Nothing is
written here at DHCP time, so discovery *supersedes* `Settings.auto_enroll` (which only makes
an empty ``enroll`` node with a port): with both on, discovery alone acts. Once enrolled, the
MAC is a port of an ``enroll`` node and boots what idle nodes boot. ``check_settings`` refuses
discovery without an agent ramdisk. The ``discovery`` hook (a callable, for embedding) is asked
for unknown MACs when `Settings.discovery` is off, after the optional auto-enrollment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pxeforge.boot.booter import REF_PREFIX
from pxeforge.boot.files import BootFile, DiskFile
from pxeforge.boot.machine import BootSpec, Machine, normalize_mac
from pxeforge.boot.render import check_cmdline, check_ref
from pxeforge.config import IdleBoot, Settings
from pxeforge.deploy.kickstart import KickstartError, installer_args
from pxeforge.errors import ConfigError
from pxeforge.inventory.errors import MACAlreadyExists, NodeNotFound
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.states import (
    ACTIVE,
    AVAILABLE,
    CLEANING,
    CLEANWAIT,
    DEPLOYING,
    DEPLOYWAIT,
    ENROLL,
    INSPECTING,
    INSPECTWAIT,
    MANAGEABLE,
    RESCUE,
    RESCUEWAIT,
    RESCUING,
    HistoryType,
)
from pxeforge.inventory.store import Store

__all__ = [
    "AGENT_STATES",
    "DEPLOY_KERNEL_REF",
    "DEPLOY_RAMDISK_REF",
    "DEPLOY_STATES",
    "INSTALLER_INTERFACES",
    "InventoryBooter",
    "check_settings",
    "installer_url",
    "is_installer_deploy",
]

log = logging.getLogger(__name__)

DEPLOY_KERNEL_REF: Final = REF_PREFIX + "deploy-kernel"
DEPLOY_RAMDISK_REF: Final = REF_PREFIX + "deploy-ramdisk"
AUTO_ENROLL_DRIVER: Final = "manual-management"

#: States in which the machine runs the agent ramdisk (deploying only for agent deploys).
AGENT_STATES: Final = frozenset(
    {INSPECTING, INSPECTWAIT, CLEANING, CLEANWAIT, RESCUING, RESCUEWAIT, RESCUE}
)
DEPLOY_STATES: Final = frozenset({DEPLOYING, DEPLOYWAIT})
IDLE_STATES: Final = frozenset({ENROLL, MANAGEABLE, AVAILABLE})
#: deploy_interface names meaning "boot an installer with a kickstart" (Ironic's is anaconda).
INSTALLER_INTERFACES: Final = frozenset({"kickstart", "anaconda"})

LOCALBOOT: Final = BootSpec(kernel="", localboot=True)

Discovery = Callable[[Machine], BootSpec | None]


def is_installer_deploy(node: NodeRecord) -> bool:
    """True when ``node`` deploys with an installer (node or instance_info deploy_interface)."""
    wanted = node.instance_info.get("deploy_interface") or node.deploy_interface
    return wanted in INSTALLER_INTERFACES


def installer_url(http_base: str, node_uuid: str) -> str:
    """Where the installer fetches its per-node configuration."""
    return f"{http_base.rstrip('/')}/ks/{node_uuid}"


def check_settings(settings: Settings) -> None:
    """`ConfigError` naming the first problem with the agent ramdisk settings (at start-up)."""
    given = [p for p in (settings.deploy_kernel, settings.deploy_ramdisk) if p is not None]
    if len(given) == 1:
        raise ConfigError("--deploy-kernel and --deploy-ramdisk go together: give both")
    for flag, path in (
        ("--deploy-kernel", settings.deploy_kernel),
        ("--deploy-ramdisk", settings.deploy_ramdisk),
    ):
        if path is None:
            continue
        if not path.is_file():
            raise ConfigError(f"{flag} {path}: no such file (or not a regular file)")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{flag} {path}: not readable by this user")
    if settings.discovery and not given:
        raise ConfigError(
            "--discovery boots unknown machines into the agent ramdisk: give --deploy-kernel "
            "and --deploy-ramdisk"
        )
    try:
        check_cmdline(settings.agent_cmdline)
    except ValueError as exc:
        raise ConfigError(f"--agent-cmdline: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    spec: BootSpec | None


class InventoryBooter:
    """Boot answers from the inventory (see the module docstring). Thread-safe."""

    per_machine: bool = True

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        discovery: Discovery | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.discovery = discovery
        self.clock = clock
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._files = {
            ref: path
            for ref, path in (
                (DEPLOY_KERNEL_REF, settings.deploy_kernel),
                (DEPLOY_RAMDISK_REF, settings.deploy_ramdisk),
            )
            if path is not None
        }
        self.lookups = 0  # database lookups made (cache misses): tests and benchmarks

    def validate(self) -> None:
        """`check_settings` of this booter's settings."""
        check_settings(self.settings)

    # ---- Booter ------------------------------------------------------------------------------

    def open_file(self, ref: str) -> BootFile | None:
        path = self._files.get(ref)
        return DiskFile.open(ref, path) if path is not None else None

    def boot_spec(self, machine: Machine) -> BootSpec | None:
        if not machine.mac:
            return None  # "default" asked by an address nobody knows: not a machine we can name
        try:
            mac = normalize_mac(machine.mac)
        except ValueError:
            return None
        now = self.clock()
        entry = self._cache.get(mac)
        if entry is not None and entry.expires > now:
            return entry.spec
        spec = self._answer(mac, machine)
        with self._lock:
            if len(self._cache) > 100_000:  # bounded: a flood of random MACs cannot grow it
                self._cache.clear()
            self._cache[mac] = _Entry(now + self.settings.boot_cache_ttl, spec)
        return spec

    def invalidate(self, macs: list[str] | None = None) -> None:
        """Forget cached answers (for ``macs``, or all) after pxeforge changed a node."""
        with self._lock:
            if macs is None:
                self._cache.clear()
                return
            for mac in macs:
                try:
                    self._cache.pop(normalize_mac(mac), None)
                except ValueError:
                    continue

    # ---- the answer ----------------------------------------------------------------------------

    def _answer(self, mac: str, machine: Machine) -> BootSpec | None:
        self.lookups += 1
        try:
            ports = self.store.list_ports(address=mac, limit=1)
            if not ports:
                return self._unknown(mac, machine)
            if not ports[0].pxe_enabled:
                return None
            node = self.store.get_node(ports[0].node_id)
        except NodeNotFound:  # deleted between the two reads
            return None
        except Exception:  # the database is down: boot nothing, never kill the server loop
            log.exception("boot lookup of %s failed", mac)
            return None
        try:
            return self.spec_for(node, mac)
        except (ValueError, KickstartError) as exc:
            log.error("node %s (%s): boot refused: %s", node.uuid, mac, exc)
            return None

    def spec_for(self, node: NodeRecord, mac: str) -> BootSpec | None:
        """The answer for ``node`` booting from ``mac`` (pure, given the node).

        Raises `ValueError` (or `KickstartError`) when the node's data would make an unsafe
        or impossible boot configuration.
        """
        state = node.provision_state
        if state == ACTIVE:
            return LOCALBOOT
        if state in IDLE_STATES:
            return LOCALBOOT if self.settings.idle_boot is IdleBoot.LOCAL else None
        if state in DEPLOY_STATES:
            if is_installer_deploy(node):
                return self._installer(node, mac)
            return self._agent(node, mac)
        if state in AGENT_STATES:
            return self._agent(node, mac)
        return None

    def _node_append(self, node: NodeRecord) -> str:
        extra = node.driver_info.get("kernel_append_params", "")
        if not isinstance(extra, str):
            raise ValueError("driver_info.kernel_append_params must be a string")
        check_cmdline(extra, "driver_info.kernel_append_params")
        return extra

    def _agent(self, node: NodeRecord, mac: str) -> BootSpec | None:
        if not self._files:
            log.warning(
                "node %s (%s) is %s and needs the agent ramdisk, but no --deploy-kernel/"
                "--deploy-ramdisk is configured: nothing to boot",
                node.uuid, mac, node.provision_state,
            )  # fmt: skip
            return None
        words = [f"ipa-api-url={self.settings.api_base}", f"BOOTIF=01-{mac.replace(':', '-')}"]
        if node.provision_state in (INSPECTING, INSPECTWAIT):
            words.append(
                f"ipa-inspection-callback-url={self.settings.api_base}/v1/continue_inspection"
            )
        words += [self.settings.agent_cmdline.strip(), self._node_append(node).strip()]
        cmdline = " ".join(w for w in words if w)
        check_cmdline(cmdline)
        return BootSpec(
            kernel=DEPLOY_KERNEL_REF,
            initrds=(DEPLOY_RAMDISK_REF,) if DEPLOY_RAMDISK_REF in self._files else (),
            cmdline=cmdline,
            message=f"pxeforge: agent ramdisk for node {node.uuid} ({node.provision_state})",
        )

    def _discovery_agent(self, mac: str) -> BootSpec | None:
        """The agent ramdisk for an unknown machine: it inspects itself and is enrolled."""
        if not self._files:
            log.warning("%s is unknown and discovery is on, but no --deploy-kernel/"
                        "--deploy-ramdisk is configured: nothing to boot", mac)  # fmt: skip
            return None
        api = self.settings.api_base
        words = [f"ipa-api-url={api}", f"BOOTIF=01-{mac.replace(':', '-')}",
                 f"ipa-inspection-callback-url={api}/v1/continue_inspection",
                 self.settings.agent_cmdline.strip()]  # fmt: skip
        cmdline = " ".join(w for w in words if w)
        check_cmdline(cmdline)
        return BootSpec(
            kernel=DEPLOY_KERNEL_REF,
            initrds=(DEPLOY_RAMDISK_REF,) if DEPLOY_RAMDISK_REF in self._files else (),
            cmdline=cmdline,
            message=f"pxeforge: agent ramdisk for discovery of unknown machine {mac}",
        )

    def _installer(self, node: NodeRecord, mac: str) -> BootSpec:
        info = node.instance_info
        kernel, ramdisk = info.get("kernel"), info.get("ramdisk")
        if not isinstance(kernel, str) or not isinstance(ramdisk, str):
            raise ValueError("instance_info needs 'kernel' and 'ramdisk' (URLs or root paths)")
        check_ref(kernel, "instance_info.kernel")
        check_ref(ramdisk, "instance_info.ramdisk")
        url = installer_url(self.settings.http_base, node.uuid)
        args, extra = installer_args(info, url)
        append = info.get("kernel_append_params", "")
        if not isinstance(append, str):
            raise ValueError("instance_info.kernel_append_params must be a string")
        words = [args, f"BOOTIF=01-{mac.replace(':', '-')}", append, self._node_append(node)]
        cmdline = " ".join(w.strip() for w in words if w.strip())
        check_cmdline(cmdline)
        return BootSpec(
            kernel=kernel,
            initrds=(ramdisk,),
            cmdline=cmdline,
            extra={**extra, "label": "install"},
        )

    def _unknown(self, mac: str, machine: Machine) -> BootSpec | None:
        if self.settings.discovery:
            return self._discovery_agent(mac)
        if self.settings.auto_enroll:
            self._enroll(mac)
        if self.discovery is not None:
            return self.discovery(machine)
        return None

    def _enroll(self, mac: str) -> None:
        """Create a node in ``enroll`` with one port for ``mac`` (a race loser does nothing)."""
        node = self.store.create_node(
            AUTO_ENROLL_DRIVER,
            extra={"auto_enrolled": True},
            properties={},
        )
        try:
            self.store.create_port(node.uuid, mac, pxe_enabled=True)
        except MACAlreadyExists:  # another process enrolled it first
            self.store.delete_node(node.uuid)
            return
        self.store.add_history(
            node.uuid,
            f"Auto-enrolled: PXE boot request from unknown MAC {mac}",
            event_type=HistoryType.PROVISIONING,
        )
        log.info("auto-enrolled %s as node %s", mac, node.uuid)
