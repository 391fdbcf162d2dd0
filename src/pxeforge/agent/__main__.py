"""``python3 -m pxeforge.agent``: look the node up, heartbeat, inspect or take commands.

Theory of operation (ironic-python-agent's start-up, reduced to what pxeforge uses):

1. read ``/proc/cmdline`` (`config.parse_cmdline`) and collect the inventory (its MACs are
   the lookup keys);
2. ``GET /v1/lookup`` until the node is found (404 while pxeforge is not expecting this
   machine: retried every ``--lookup-interval`` seconds), keeping the agent token it returns
   (only the first lookup of a boot sees it);
   — except when the kernel command line has ``ipa-inspection-callback-url`` and the first
   lookup is a 404: the machine is unknown and was booted for **discovery**, so the agent
   posts its inventory (``POST /v1/continue_inspection`` without a node) and exits 0 once
   pxeforge enrolled it (404 there too — discovery is off: it goes on looking itself up);
3. when the lookup's ``config`` names an ``inspection_callback_url`` (the node is being
   inspected) or the kernel command line has ``ipa-inspection-callback-url``: one heartbeat
   (pxeforge records ``callback_url``, ``agent_version`` and the time), then post the
   inventory (``POST /v1/continue_inspection``) and exit 0 — pxeforge powers the machine off;
4. otherwise start the command API (`server.AgentServer` on ``0.0.0.0:9999`` with the standby
   and clean commands — docs/agent-protocol.md), then heartbeat at Ironic's interval
   (`heartbeat.interval`; the first at once) until killed: every
   `heartbeat.PROGRESS_INTERVAL` seconds while a command runs and at once when one ends,
   each heartbeat carrying the last command's status line as ``agent_status_message``.

Exit status: 0 done, 2 bad command line, 1 the API refused us or the command API could not
listen (the reason is printed). Test options: ``--cmdline FILE`` and ``--root DIR`` read
another command line and /sys+/proc tree; ``--mac`` presents the boot NIC with another MAC;
``--heartbeats N`` stops after N; ``--listen HOST:PORT`` serves the command API there;
``--disks a,b`` works only on these /sys/block names (loop devices, say) and
``--min-root-size BYTES`` lowers the 4 GiB root device minimum; ``--power-log FILE`` appends
``reboot``/``poweroff`` to FILE instead of doing it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pxeforge.agent import AGENT_VERSION
from pxeforge.agent.clean import clean_commands
from pxeforge.agent.client import ApiClient, ApiError
from pxeforge.agent.commands import CommandRunner
from pxeforge.agent.config import ConfigError, normalize_mac, parse_cmdline
from pxeforge.agent.disks import MIN_ROOT_SIZE, DiskScope
from pxeforge.agent.heartbeat import Heartbeater
from pxeforge.agent.inventory import collect, override_mac, read_network_file
from pxeforge.agent.server import AgentServer
from pxeforge.agent.standby import PowerAction, power_action, standby_commands

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
    p.add_argument("--listen", default=f"0.0.0.0:{AGENT_PORT}", help="HOST:PORT of the API")
    p.add_argument("--disks", help="comma-separated /sys/block names to work on (tests)")
    p.add_argument("--min-root-size", type=int, default=MIN_ROOT_SIZE, help="bytes (tests)")
    p.add_argument("--power-log", help="append reboot/poweroff to this file instead (tests)")
    return p


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _power(log_file: str | None) -> PowerAction:
    if log_file is None:
        return power_action

    def record(action: str) -> None:
        with open(log_file, "a") as f:
            f.write(action + "\n")

    return record


def _callback_url(root: Path, inventory: dict[str, Any], port: int = AGENT_PORT) -> str:
    ip = read_network_file(root).get("ip")
    if not ip:
        pxe = inventory["boot"].get("pxe_interface")
        for iface in inventory["interfaces"]:
            if iface["mac_address"] == pxe and iface.get("ipv4_address"):
                ip = iface["ipv4_address"]
    return f"http://{ip or '127.0.0.1'}:{port}"


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


def _discover(
    client: ApiClient, macs: list[str], inventory: dict[str, Any]
) -> tuple[dict[str, Any] | None, bool]:
    """One lookup; for an unknown machine, post the inventory for discovery.

    ``(lookup answer or None, enrolled)``: the answer of a known node is kept (its token is
    handed out only once); ``enrolled`` True means pxeforge created a node from the inventory."""
    try:
        return client.lookup(macs), False
    except ApiError as exc:
        if exc.status != 404:
            return None, False  # the lookup loop retries and reports
    try:
        answer = client.continue_inspection(inventory)
    except ApiError as exc:
        if exc.status != 404:
            raise
        log.warning("%s: unknown to pxeforge and discovery is off; waiting to be enrolled",
                    ",".join(macs))  # fmt: skip
        return None, False
    node = (answer.get("node") or {}).get("uuid")
    log.info("unknown machine: inventory posted for discovery; enrolled as node %s", node)
    return None, True


def _serve(
    args: argparse.Namespace,
    client: ApiClient,
    node: str,
    token: str | None,
    callback: str,
    settings: dict[str, Any],
    listen: tuple[str, int],
) -> int:
    """The command API and the heartbeat loop, until ``--heartbeats`` ends it (or forever)."""
    only = frozenset(n for n in (args.disks or "").split(",") if n) or None
    scope = DiskScope(Path(args.root), only=only, min_root_size=args.min_root_size)
    commands = [*standby_commands(scope, power=_power(args.power_log)), *clean_commands(scope)]
    runner = CommandRunner(commands)

    def beat() -> None:
        client.heartbeat(
            node,
            callback_url=callback,
            agent_token=token,
            agent_version=AGENT_VERSION,
            agent_status_message=runner.status_message(),
        )

    limit = None if args.heartbeats is None else max(1, args.heartbeats)
    timeout = float(settings.get("heartbeat_timeout") or 300)
    heart = Heartbeater(beat, timeout, limit=limit, busy=runner.busy)
    runner.on_start = lambda _: heart.nudge()
    runner.on_end = lambda _: heart.wake()
    try:
        server = AgentServer(runner, token=token, host=listen[0], port=listen[1]).start()
    except OSError as exc:
        print(f"pxeforge-agent: cannot serve on {listen[0]}:{listen[1]}: {exc}", file=sys.stderr)
        return 1
    log.info("node %s: command API on %s:%d", node, *server.address)
    try:
        heart.run()
    finally:
        server.close()
    return 0


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = parse_cmdline(Path(args.cmdline).read_text())
        mac = normalize_mac(args.mac) if args.mac else None
        listen = _listen(args.listen)
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
        found = None
        if config.inspection_callback_url:
            found, enrolled = _discover(client, macs, inventory)
            if enrolled:
                return 0
        if found is None:
            found = _lookup(client, macs, args.lookup_attempts, args.lookup_interval)
        node = found["node"]["uuid"]
        settings = found.get("config") or {}
        token = settings.get("agent_token")
        if token == "******":
            log.error("node %s: its agent token was handed out before (an earlier agent run); "
                      "heartbeats and commands will be refused until the node is rebooted",
                      node)  # fmt: skip
            token = None
        callback = args.callback_url or _callback_url(root, inventory, listen[1])
        log.info("node %s found; callback_url %s", node, callback)
        if settings.get("inspection_callback_url") or config.inspection_callback_url:
            client.heartbeat(
                node, callback_url=callback, agent_token=token, agent_version=AGENT_VERSION
            )
            client.continue_inspection(inventory, node_uuid=node)
            log.info("node %s: inventory sent", node)
            return 0
        return _serve(args, client, node, token, callback, settings, listen)
    except ApiError as exc:
        print(f"pxeforge-agent: {exc}", file=sys.stderr)
        return 1


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="pxeforge-agent: %(message)s")
    sys.exit(run())


if __name__ == "__main__":
    main()
