"""``python3 -m pxeforge.agent``: look the node up, heartbeat, inspect.

Theory of operation (ironic-python-agent's start-up, reduced to what pxeforge uses):

1. read ``/proc/cmdline`` (`config.parse_cmdline`) and collect the inventory (its MACs are
   the lookup keys);
2. ``GET /v1/lookup`` until the node is found (404 while pxeforge is not expecting this
   machine: retried every ``--lookup-interval`` seconds), keeping the agent token it returns
   (only the first lookup of a boot sees it);
3. one heartbeat at once (pxeforge records ``callback_url``, ``agent_version`` and the time);
4. when the lookup's ``config`` names an ``inspection_callback_url`` (the node is being
   inspected) or the kernel command line has ``ipa-inspection-callback-url``: post the
   inventory (``POST /v1/continue_inspection``) and exit 0 — pxeforge powers the machine off;
5. otherwise heartbeat at Ironic's interval (`heartbeat.interval`) until killed.

Exit status: 0 done, 2 bad command line, 1 the API refused us (the reason is printed).
Test options: ``--cmdline FILE`` and ``--root DIR`` read another command line and /sys+/proc
tree; ``--mac`` presents the boot NIC with another MAC; ``--heartbeats N`` stops after N.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pxeforge.agent import AGENT_VERSION
from pxeforge.agent.client import ApiClient, ApiError
from pxeforge.agent.config import ConfigError, normalize_mac, parse_cmdline
from pxeforge.agent.heartbeat import Heartbeater
from pxeforge.agent.inventory import collect, override_mac, read_network_file

log = logging.getLogger("pxeforge.agent")

AGENT_PORT = 9999  # IPA's API port, announced in callback_url


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m pxeforge.agent", description=__doc__)
    p.add_argument("--cmdline", default="/proc/cmdline", help="kernel command line file")
    p.add_argument("--root", default="/", help="root of the /proc and /sys tree to inspect")
    p.add_argument("--mac", help="present the boot NIC with this MAC")
    p.add_argument("--callback-url", help="callback_url to announce (default: lease IP:9999)")
    p.add_argument("--heartbeats", type=int, default=None, help="stop after N heartbeats")
    p.add_argument("--lookup-attempts", type=int, default=0, help="0: forever")
    p.add_argument("--lookup-interval", type=float, default=10.0)
    return p


def _callback_url(root: Path, inventory: dict[str, Any]) -> str:
    ip = read_network_file(root).get("ip")
    if not ip:
        pxe = inventory["boot"].get("pxe_interface")
        for iface in inventory["interfaces"]:
            if iface["mac_address"] == pxe and iface.get("ipv4_address"):
                ip = iface["ipv4_address"]
    return f"http://{ip or '127.0.0.1'}:{AGENT_PORT}"


def _lookup(client: ApiClient, macs: list[str], attempts: int, every: float) -> dict[str, Any]:
    tried = 0
    while True:
        tried += 1
        try:
            return client.lookup(macs)
        except ApiError as exc:
            if attempts and tried >= attempts:
                raise
            log.warning("lookup of %s: %s; again in %.0f s", ",".join(macs), exc, every)
        time.sleep(every)


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = parse_cmdline(Path(args.cmdline).read_text())
        mac = normalize_mac(args.mac) if args.mac else None
    except (ConfigError, ValueError, OSError) as exc:
        print(f"pxeforge-agent: {exc}", file=sys.stderr)
        return 2
    root = Path(args.root)
    inventory = collect(root, bootif=config.bootif)
    if mac is not None:
        override_mac(inventory, mac)
    macs = [i["mac_address"] for i in inventory["interfaces"]]
    client = ApiClient(config.api_url, insecure=config.insecure)
    try:
        found = _lookup(client, macs, args.lookup_attempts, args.lookup_interval)
        node = found["node"]["uuid"]
        settings = found.get("config") or {}
        token = settings.get("agent_token")
        if token == "******":
            log.error("node %s: its agent token was handed out before (an earlier agent run); "
                      "heartbeats will be refused until the node is rebooted", node)  # fmt: skip
            token = None
        callback = args.callback_url or _callback_url(root, inventory)
        log.info("node %s found; callback_url %s", node, callback)

        def beat() -> None:
            client.heartbeat(
                node, callback_url=callback, agent_token=token, agent_version=AGENT_VERSION
            )

        beat()
        if settings.get("inspection_callback_url") or config.inspection_callback_url:
            client.continue_inspection(inventory, node_uuid=node)
            log.info("node %s: inventory sent", node)
            return 0
        limit = None if args.heartbeats is None else max(0, args.heartbeats - 1)
        if limit != 0:
            Heartbeater(beat, float(settings.get("heartbeat_timeout") or 300), limit=limit).run()
    except ApiError as exc:
        print(f"pxeforge-agent: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="pxeforge-agent: %(message)s")
    sys.exit(run())


if __name__ == "__main__":
    main()
