"""`InstallerService`: the HTTP side of installer deploys, behind `servers.http.InstallerHooks`.

Theory of operation
-------------------
The HTTP server knows nothing about the inventory; for ``/ks/…`` it calls this service:

``installer_config(node, name)``
    ``GET /ks/<uuid>`` (``name`` empty) renders the node's template (`TemplateRenderer`);
    ``/ks/<uuid>/user-data`` is the same text (cloud-init NoCloud, autoinstall),
    ``/ks/<uuid>/meta-data`` its meta-data, ``/ks/<uuid>/vendor-data`` empty. Only while
    the node is an installer deploy in ``deploying`` or ``wait call-back``: any other node,
    state or name is a 404 that says nothing about the node (Ironic CVE-2016-4985 leaked
    node data from such an endpoint). The rendered text contains this deploy's callback URL
    with its token, as Ironic's anaconda kickstart does.
``installer_done(node, token)``
    ``POST /ks/<uuid>/done?token=…``: `Conductor.installer_done_sync` (token checked in
    constant time; node → ``active``), then the booter's cache is dropped so the very next
    config request answers local boot. Refusals are 404, as above.

The database and driver calls run in threads (`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pxeforge.config import Settings
from pxeforge.deploy.kickstart import (
    KickstartError,
    TemplateRenderer,
    build_context,
    kind_of,
    meta_data,
)
from pxeforge.inventory.booter import DEPLOY_STATES, installer_url, is_installer_deploy
from pxeforge.inventory.errors import InventoryError, NodeInventoryNotFound, NodeNotFound
from pxeforge.inventory.store import Store

if TYPE_CHECKING:
    from pxeforge.conductor.manager import Conductor
    from pxeforge.inventory.booter import InventoryBooter

__all__ = ["InstallerService"]

log = logging.getLogger(__name__)

NOT_FOUND = (404, "not found\n")
_NAMES = ("", "user-data", "meta-data", "vendor-data")


class InstallerService:
    """Per-node installer files and the installer's final callback (see the docstring)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        booter: InventoryBooter | None = None,
        conductor: Conductor | None = None,
        renderer: TemplateRenderer | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.booter = booter
        self.conductor = conductor  # set once the conductor runs; callbacks wait for it
        self.renderer = renderer or TemplateRenderer(settings.templates_dir)

    # ---- the installer's file -----------------------------------------------------------------

    async def installer_config(self, node: str, name: str) -> tuple[int, str]:
        return await asyncio.to_thread(self.render, node, name)

    def render(self, node: str, name: str = "") -> tuple[int, str]:
        """(HTTP status, body) for ``/ks/<node>[/<name>]``."""
        if name not in _NAMES:
            return NOT_FOUND
        try:
            record = self.store.get_node(node)
        except (NodeNotFound, InventoryError):
            return NOT_FOUND
        if (
            record.uuid != node  # names are not accepted: the URL names the node by UUID
            or record.provision_state not in DEPLOY_STATES
            or not is_installer_deploy(record)
        ):
            return NOT_FOUND
        try:
            kind = kind_of(record.instance_info)
            if name == "meta-data":
                return 200, meta_data(record.uuid, record.name)
            if name == "vendor-data":
                return 200, ""
            if name == "user-data" and kind.name != "autoinstall":
                return NOT_FOUND
            text = self.renderer.render(
                self.renderer.template_for(record.instance_info), self._context(record)
            )
        except KickstartError as exc:
            log.error("installer file of node %s: %s", record.uuid, exc)
            return 500, "installer configuration could not be rendered (see the server log)\n"
        log.info("installer file (%s) served for node %s", kind.name, record.uuid)
        return 200, text

    def _context(self, record: Any) -> dict[str, Any]:
        token = record.driver_internal_info.get("kickstart_token", "")
        url = installer_url(self.settings.http_base, record.uuid)
        ports = self.store.list_ports(node=record.id)
        try:
            inventory: dict[str, Any] | None = self.store.get_inventory(record.id)[0]
        except NodeInventoryNotFound:
            inventory = None
        return build_context(
            {
                "uuid": record.uuid,
                "name": record.name,
                "driver": record.driver,
                "properties": record.properties,
                "instance_info": record.instance_info,
                "extra": record.extra,
                "resource_class": record.resource_class,
            },
            [
                {
                    "address": p.address,
                    "pxe_enabled": p.pxe_enabled,
                    "local_link_connection": p.local_link_connection,
                    "extra": p.extra,
                }
                for p in ports
            ],
            inventory=inventory,
            http_base=self.settings.http_base,
            api_base=self.settings.api_base,
            config_url=url,
            callback_url=f"{url}/done?token={token}",
        )

    # ---- the callback -------------------------------------------------------------------------

    async def installer_done(self, node: str, token: str) -> tuple[int, str]:
        return await asyncio.to_thread(self.done, node, token)

    def done(self, node: str, token: str) -> tuple[int, str]:
        """(HTTP status, body) for ``POST /ks/<node>/done?token=…``."""
        from pxeforge.conductor.manager import InstallerCallbackRefused

        if self.conductor is None:
            return 503, "not ready: try again\n"
        try:
            record = self.store.get_node(node)
            if record.uuid != node:
                return NOT_FOUND
            after = self.conductor.installer_done_sync(record.uuid, token)
        except InstallerCallbackRefused as exc:
            log.warning("installer callback for %s refused: %s", node, exc.why)
            return NOT_FOUND
        except NodeNotFound:
            return NOT_FOUND
        except InventoryError as exc:  # locked for too long, state changed meanwhile…
            log.warning("installer callback for %s failed: %s", node, exc)
            return 409, "try again\n"
        if self.booter is not None:
            macs = [p.address for p in self.store.list_ports(node=after.id)]
            self.booter.invalidate(macs)
        log.info("node %s: installer done, now %s", after.uuid, after.provision_state)
        return 200, f"{after.provision_state}\n"
