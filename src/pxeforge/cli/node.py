"""`pxeforge node …`: nodes and ports through the REST API, from the command line.

Theory of operation: every command is one or a few HTTP requests to a running `pxeforge serve`
(``--url``, ``$PXEFORGE_URL``, default ``http://127.0.0.1:6385``), with HTTP Basic credentials
from ``--user``/``--password`` (``$PXEFORGE_USER``/``$PXEFORGE_PASSWORD``) or, failing those,
the ``api-credentials`` file `pxeforge serve` wrote in ``--data-dir`` on first start. It speaks
the API at a fixed microversion (`CLI_VERSION`), so its output does not change when the server
is upgraded. Errors print the server's message (Ironic's ``faultstring``) and exit 1.

``--wait`` (on the provisioning verbs) shows a live status line until the node is in a stable
state — exit 0 in the expected one, 1 in a failure state or with ``last_error`` set, 2 on
``--timeout``.

``node timeline NODE|MAC`` prints the live timeline (`pxeforge.timeline`), one line per event
like a packet capture: time, source, summary. A MAC some port names shows that node's
timeline; any other MAC (an unknown machine) its own. ``--follow`` polls with ``since=`` the
last event's ``seq`` every `FOLLOW_INTERVAL` seconds until Ctrl-C (or ``--timeout``).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pxeforge.api.auth import read_credentials
from pxeforge.boot.machine import normalize_mac
from pxeforge.config import Settings
from pxeforge.inventory.states import FAILURE_STATES, STABLE_STATES

__all__ = ["CLI_VERSION", "ApiClient", "node"]

CLI_VERSION: Final = "1.87"
"""The API microversion this CLI speaks."""

DEFAULT_URL: Final = f"http://127.0.0.1:{Settings().api_port}"
POLL_INTERVAL: Final = 0.5
FOLLOW_INTERVAL: Final = 1.0

_EXPECTED: Final[dict[str, str]] = {
    "manage": "manageable",
    "provide": "available",
    "inspect": "manageable",
    "deploy": "active",
    "undeploy": "available",
    "clean": "manageable",
    "adopt": "active",
    "rescue": "rescue",
    "unrescue": "active",
}
"""Where each verb should end (what ``--wait`` waits for)."""


class ApiFailure(click.ClickException):
    """The server refused the request (its message), or could not be reached."""


@dataclass
class ApiClient:
    """A tiny synchronous client of the pxeforge/Ironic REST API."""

    url: str
    user: str | None = None
    password: str | None = None
    timeout: float = 60.0

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        request.add_header("X-OpenStack-Ironic-API-Version", CLI_VERSION)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.user is not None and self.password is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as exc:
            raise ApiFailure(f"{_fault(exc.read())} (HTTP {exc.code})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiFailure(
                f"cannot reach the pxeforge API at {self.url}: {reason} (is `pxeforge serve` "
                "running? set --url or PXEFORGE_URL)"
            ) from None
        return json.loads(raw) if raw.strip() else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)


def _fault(raw: bytes) -> str:
    """The message of an Ironic error body (``error_message`` is JSON inside JSON)."""
    try:
        body = json.loads(raw)
        inner = json.loads(body["error_message"])
        return str(inner.get("faultstring") or inner)
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip() or "(no message)"


def _q(ident: str) -> str:
    return quote(ident, safe="")


def _pairs(items: Iterable[str], option: str) -> dict[str, Any]:
    """``k=v`` items → dict; values that parse as JSON (numbers, true, lists…) are decoded."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


pass_client = click.make_pass_decorator(ApiClient)


F = TypeVar("F", bound=Callable[..., Any])


def api_options(fn: F) -> F:
    """The options every API command takes: ``--url``, ``--user``, ``--password``,
    ``--data-dir`` (where `pxeforge serve` wrote ``api-credentials``)."""
    for option in reversed(
        [
            click.option("--url", envvar="PXEFORGE_URL", default=DEFAULT_URL, show_default=True,
                         help="The pxeforge API (env PXEFORGE_URL)."),
            click.option("--user", envvar="PXEFORGE_USER", help="API user (env PXEFORGE_USER)."),
            click.option("--password", envvar="PXEFORGE_PASSWORD",
                         help="API password (env PXEFORGE_PASSWORD)."),
            click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
                         default=Settings().data_dir, show_default=True,
                         help="Where `pxeforge serve` keeps api-credentials (used when no "
                              "user/password given)."),
        ]
    ):  # fmt: skip
        fn = option(fn)
    return fn


def client_from(url: str, user: str | None, password: str | None, data_dir: Path) -> ApiClient:
    """An `ApiClient`; credentials not given come from ``data_dir``'s api-credentials."""
    if user is None or password is None:
        creds = read_credentials(data_dir)
        if creds is not None:
            user = user if user is not None else creds.user
            password = password if password is not None else creds.password
    return ApiClient(url, user, password)


@click.group()
@api_options
@click.pass_context
def node(
    ctx: click.Context, url: str, user: str | None, password: str | None, data_dir: Path
) -> None:
    """Manage nodes and ports through the pxeforge REST API."""
    ctx.obj = client_from(url, user, password, data_dir)


# ---- output ---------------------------------------------------------------------------------


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False, width=200 if not _tty() else None)


def _tty() -> bool:
    return os.isatty(1)


def _show(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _print_record(record: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    table = Table("Field", "Value", show_lines=False)
    for key in sorted(record):
        if key not in ("links", "ports", "states", "portgroups", "volume"):
            table.add_row(key, Text(_show(record[key])))
    _console().print(table)


# ---- nodes ----------------------------------------------------------------------------------


@node.command("list")
@click.option("--provision-state", help="Only nodes in this provision state.")
@click.option(
    "--maintenance/--no-maintenance", default=None, help="Only nodes (not) in maintenance."
)
@click.option("--driver", help="Only nodes with this driver.")
@click.option("--limit", type=int, help="At most this many nodes.")
@click.option("--long", "detail", is_flag=True, help="More columns.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@pass_client
def list_nodes(
    client: ApiClient,
    provision_state: str | None,
    maintenance: bool | None,
    driver: str | None,
    limit: int | None,
    detail: bool,
    as_json: bool,
) -> None:
    """List nodes (all pages)."""
    query: dict[str, str] = {}
    if provision_state:
        query["provision_state"] = provision_state
    if maintenance is not None:
        query["maintenance"] = str(maintenance).lower()
    if driver:
        query["driver"] = driver
    if limit:
        query["limit"] = str(limit)
    path = "/v1/nodes/detail" if detail else "/v1/nodes"
    nodes: list[dict[str, Any]] = []
    url: str | None = path + (f"?{urlencode(query)}" if query else "")
    while url is not None:
        page = client.get(url)
        nodes += page["nodes"]
        nxt = page.get("next")
        url = None if (nxt is None or limit) else "/v1/" + nxt.split("/v1/", 1)[1]
    if as_json:
        click.echo(json.dumps(nodes, indent=2, sort_keys=True))
        return
    columns = ["uuid", "name", "power_state", "provision_state", "maintenance"]
    if detail:
        columns += ["driver", "target_provision_state", "last_error"]
    table = Table(*[c.replace("_", " ").title() for c in columns])
    for item in nodes:
        table.add_row(*[Text(_show(item.get(c))) for c in columns])
    _console().print(table)


@node.command("show")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@pass_client
def show_node(client: ApiClient, ident: str, as_json: bool) -> None:
    """Show one node (UUID or name)."""
    _print_record(client.get(f"/v1/nodes/{_q(ident)}"), as_json)


@node.command("create")
@click.option("--driver", required=True, help="Driver: ipmi, redfish, manual-management…")
@click.option("--name", help="Unique name.")
@click.option("--uuid", help="UUID (default: a new one).")
@click.option("--driver-info", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--extra", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--resource-class", help="Resource class.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@pass_client
def create_node(
    client: ApiClient,
    driver: str,
    name: str | None,
    uuid: str | None,
    driver_info: tuple[str, ...],
    properties: tuple[str, ...],
    extra: tuple[str, ...],
    resource_class: str | None,
    as_json: bool,
) -> None:
    """Enroll a node."""
    body: dict[str, Any] = {"driver": driver}
    for key, value in (("name", name), ("uuid", uuid), ("resource_class", resource_class)):
        if value is not None:
            body[key] = value
    for key, items, option in (
        ("driver_info", driver_info, "--driver-info"),
        ("properties", properties, "--property"),
        ("extra", extra, "--extra"),
    ):
        if items:
            body[key] = _pairs(items, option)
    _print_record(client.request("POST", "/v1/nodes", body), as_json)


@node.command("set")
@click.argument("ident")
@click.option("--name", help="New name.")
@click.option("--driver", help="New driver.")
@click.option("--resource-class", help="Resource class.")
@click.option("--description", help="Free text.")
@click.option("--driver-info", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--extra", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--instance-info", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@pass_client
def set_node(
    client: ApiClient,
    ident: str,
    name: str | None,
    driver: str | None,
    resource_class: str | None,
    description: str | None,
    driver_info: tuple[str, ...],
    properties: tuple[str, ...],
    extra: tuple[str, ...],
    instance_info: tuple[str, ...],
) -> None:
    """Change fields of a node (one JSON-Patch request: all or nothing)."""
    patch: list[dict[str, Any]] = []
    for key, value in (
        ("name", name),
        ("driver", driver),
        ("resource_class", resource_class),
        ("description", description),
    ):
        if value is not None:
            patch.append({"op": "replace", "path": f"/{key}", "value": value})
    for field, items, option in (
        ("driver_info", driver_info, "--driver-info"),
        ("properties", properties, "--property"),
        ("extra", extra, "--extra"),
        ("instance_info", instance_info, "--instance-info"),
    ):
        for key, value in _pairs(items, option).items():
            pointer = key.replace("~", "~0").replace("/", "~1")
            patch.append({"op": "add", "path": f"/{field}/{pointer}", "value": value})
    if not patch:
        raise click.UsageError("nothing to set")
    client.request("PATCH", f"/v1/nodes/{_q(ident)}", patch)


@node.command("delete")
@click.argument("idents", nargs=-1, required=True)
@pass_client
def delete_node(client: ApiClient, idents: tuple[str, ...]) -> None:
    """Delete nodes (only in enroll, manageable or adopt failed, or in maintenance)."""
    for ident in idents:
        client.request("DELETE", f"/v1/nodes/{_q(ident)}")
        click.echo(f"Deleted node {ident}")


def _status_line(record: Mapping[str, Any], started: float) -> Text:
    state = record.get("provision_state")
    target = record.get("target_provision_state")
    text = Text()
    text.append(f"{record.get('name') or record.get('uuid')}: ", style="bold")
    text.append(str(state), style="red" if state in FAILURE_STATES else "cyan")
    if target:
        text.append(f" → {target}")
    text.append(f"  power {record.get('power_state')}  {time.monotonic() - started:5.1f}s")
    return text


def _wait(client: ApiClient, ident: str, verb: str, timeout: float) -> None:
    """Poll until the node is stable; exit 1 on failure, 2 on timeout."""
    expected = _EXPECTED.get(verb)
    started = time.monotonic()
    console = Console(stderr=True, highlight=False)
    record: dict[str, Any] = {}
    with Live(Text(""), console=console, transient=True, refresh_per_second=8) as live:
        while True:
            record = client.get(f"/v1/nodes/{_q(ident)}")
            live.update(_status_line(record, started))
            state = record["provision_state"]
            if state in FAILURE_STATES:
                break
            if state in STABLE_STATES and not record.get("target_provision_state"):
                break
            if timeout and time.monotonic() - started > timeout:
                console.print(_status_line(record, started))
                raise click.exceptions.Exit(2)
            time.sleep(POLL_INTERVAL)
    state = record["provision_state"]
    console.print(_status_line(record, started))
    failed = state in FAILURE_STATES or state == "error"
    if expected is not None and state != expected:
        failed = True
    if failed:
        reason = record.get("last_error") or f'ended in "{state}", not "{expected}"'
        raise ApiFailure(f"node {ident}: {reason}")


def _verb(name: str, summary: str) -> click.Command:
    @click.command(name, help=summary)
    @click.argument("ident")
    @click.option("--wait", is_flag=True, help="Show the state live until it is stable.")
    @click.option("--timeout", type=float, default=3600.0, show_default=True,
                  help="Give up waiting after this many seconds (0: never).")  # fmt: skip
    @pass_client
    def command(client: ApiClient, ident: str, wait: bool, timeout: float) -> None:
        client.request("PUT", f"/v1/nodes/{_q(ident)}/states/provision", {"target": name})
        if wait:
            _wait(client, ident, name, timeout)

    return command


for _name, _summary in (
    ("manage", "Verify the power credentials: enroll → manageable."),
    ("provide", "Make a manageable node available (cleaning)."),
    ("inspect", "Inspect the hardware (needs the agent ramdisk)."),
    ("deploy", "Install the node: available → active."),
    ("undeploy", "Tear the instance down: active → available."),
    ("abort", "Abort a waiting operation."),
):
    node.add_command(_verb(_name, _summary))


@node.command("power")
@click.argument("action", type=click.Choice(["on", "off", "reboot"]))
@click.argument("ident")
@click.option("--wait", is_flag=True, help="Wait until the power state is reached.")
@pass_client
def power(client: ApiClient, action: str, ident: str, wait: bool) -> None:
    """Power a node on, off, or reboot it."""
    target = {"on": "power on", "off": "power off", "reboot": "rebooting"}[action]
    client.request("PUT", f"/v1/nodes/{_q(ident)}/states/power", {"target": target})
    if wait:
        deadline = time.monotonic() + 300
        while True:
            record = client.get(f"/v1/nodes/{_q(ident)}")
            if record.get("target_power_state") is None and record.get("reservation") is None:
                break
            if time.monotonic() > deadline:
                raise click.exceptions.Exit(2)
            time.sleep(POLL_INTERVAL)
        if record.get("last_error") and "power" in str(record.get("last_error")):
            raise ApiFailure(f"node {ident}: {record['last_error']}")
        click.echo(f"{ident}: {record.get('power_state')}")


@node.group("maintenance")
def maintenance() -> None:
    """Put nodes in or out of maintenance."""


@maintenance.command("set")
@click.argument("ident")
@click.option("--reason", help="Why (shown in the node).")
@pass_client
def maintenance_set(client: ApiClient, ident: str, reason: str | None) -> None:
    """Set maintenance mode."""
    client.request("PUT", f"/v1/nodes/{_q(ident)}/maintenance", {"reason": reason})


@maintenance.command("unset")
@click.argument("ident")
@pass_client
def maintenance_unset(client: ApiClient, ident: str) -> None:
    """Leave maintenance mode."""
    client.request("DELETE", f"/v1/nodes/{_q(ident)}/maintenance")


# ---- ports ----------------------------------------------------------------------------------


@node.group("port")
def port() -> None:
    """Network ports (MAC addresses) of nodes."""


@port.command("create")
@click.argument("address")
@click.option("--node", "ident", required=True, help="The node (UUID or name).")
@click.option("--no-pxe", is_flag=True, help="This port does not PXE boot.")
@pass_client
def port_create(client: ApiClient, address: str, ident: str, no_pxe: bool) -> None:
    """Add a port with MAC ADDRESS to a node."""
    uuid = client.get(f"/v1/nodes/{_q(ident)}?fields=uuid")["uuid"]
    body = {"address": address, "node_uuid": uuid, "pxe_enabled": not no_pxe}
    created = client.request("POST", "/v1/ports", body)
    click.echo(f"Created port {created['uuid']} {created['address']} on node {uuid}")


@port.command("list")
@click.option("--node", "ident", help="Only this node's ports.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@pass_client
def port_list(client: ApiClient, ident: str | None, as_json: bool) -> None:
    """List ports."""
    path = f"/v1/nodes/{_q(ident)}/ports/detail" if ident else "/v1/ports/detail"
    ports: list[dict[str, Any]] = []
    url: str | None = path
    while url is not None:
        page = client.get(url)
        ports += page["ports"]
        nxt = page.get("next")
        url = None if nxt is None else "/v1/" + nxt.split("/v1/", 1)[1]
    if as_json:
        click.echo(json.dumps(ports, indent=2, sort_keys=True))
        return
    table = Table("UUID", "Address", "Node UUID", "PXE")
    for item in ports:
        table.add_row(item["uuid"], item["address"], item["node_uuid"], _show(item["pxe_enabled"]))
    _console().print(table)


# ---- the live timeline ------------------------------------------------------------------------


def _timeline_path(client: ApiClient, ident: str) -> str:
    """The API path of ``ident``'s timeline: its node's if a port names the MAC, else the MAC's."""
    if ident.lower().startswith("ip:"):
        return f"/v1/timeline/{_q(ident.lower())}"
    try:
        mac = normalize_mac(ident)
    except ValueError:
        return f"/v1/nodes/{_q(ident)}/timeline"
    ports = client.get(f"/v1/ports?{urlencode({'address': mac, 'fields': 'node_uuid'})}")["ports"]
    if ports:
        return f"/v1/nodes/{_q(ports[0]['node_uuid'])}/timeline"
    return f"/v1/timeline/{_q(mac)}"


def _event_line(event: Mapping[str, Any], with_mac: bool) -> str:
    at = datetime.datetime.fromtimestamp(float(event["at"]))
    line = f"{at:%H:%M:%S.%f} {event['source']:<6} "
    if with_mac:
        line += f"{event.get('mac') or event.get('node') or '-':<17} "
    line += str(event["summary"])
    if event.get("level") in ("warning", "error"):
        line += f"  [{event['level']}]"
    return line


@node.command("timeline")
@click.argument("ident")
@click.option("--follow", is_flag=True, help="Keep printing new events (Ctrl-C stops).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N events first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.option("--timeout", type=float, default=0.0, help="With --follow: stop after S seconds.")
@pass_client
def timeline(
    client: ApiClient, ident: str, follow: bool, limit: int | None, as_json: bool, timeout: float
) -> None:
    """What the services saw of a node (NODE: UUID or name) or of any MAC, oldest first."""
    path = _timeline_path(client, ident)
    since = 0
    query: dict[str, Any] = {"limit": limit} if limit else {}
    deadline = time.monotonic() + timeout if timeout > 0 else None
    with_mac: bool | None = None
    try:
        while True:
            page = client.get(f"{path}?{urlencode({**query, 'since': since})}")
            events = page["events"]
            if with_mac is None:  # a node with several NICs: say which one
                with_mac = len(page.get("macs", ())) > 1
            for event in events:
                click.echo(json.dumps(event, sort_keys=True) if as_json else
                           _event_line(event, with_mac))  # fmt: skip
                since = max(since, int(event["seq"]))
            if not follow or (deadline is not None and time.monotonic() >= deadline):
                return
            query = {}
            time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        return
