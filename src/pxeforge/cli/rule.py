"""`pxeforge rule …`: inspection rules (``/v1/inspection_rules``) from the command line.

Theory of operation: the same client, options and credentials as `pxeforge node`
(`pxeforge.cli.node.ApiClient`: ``--url``/``$PXEFORGE_URL``, ``--user``/``--password`` or the
``api-credentials`` file in ``--data-dir``). ``rule create`` takes the rule as JSON — a file
(``-`` for stdin), or ``--conditions``/``--actions`` JSON strings with ``--priority`` and the
other fields as options; the server checks it (`pxeforge.inspection_rules.validate_rule`) and
its 400 message is printed. ``rule list`` shows every page; ``rule show``, ``rule delete``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from pxeforge.cli.node import (
    ApiClient,
    _console,
    _print_record,
    _q,
    _show,
    api_options,
    client_from,
)

__all__ = ["rule"]

pass_client = click.make_pass_decorator(ApiClient)


@click.group()
@api_options
@click.pass_context
def rule(
    ctx: click.Context, url: str, user: str | None, password: str | None, data_dir: Path
) -> None:
    """Manage inspection rules (conditions on the inventory → actions on the node)."""
    ctx.obj = client_from(url, user, password, data_dir)


def _json_option(value: str | None, option: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None


@rule.command("create")
@click.argument("file", type=click.File("r"), required=False)
@click.option("--conditions", help='JSON list, e.g. \'[{"op": "ge", "args": {...}}]\'.')
@click.option("--actions", help='JSON list, e.g. \'[{"op": "add-trait", "args": {...}}]\'.')
@click.option("--priority", type=int, help="0–9999; higher runs first.")
@click.option("--description", help="What the rule is for.")
@click.option("--uuid", help="UUID (default: a new one).")
@click.option("--sensitive", is_flag=True, default=None, help="Hide conditions and actions.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@pass_client
def create_rule(
    client: ApiClient,
    file: Any,
    conditions: str | None,
    actions: str | None,
    priority: int | None,
    description: str | None,
    uuid: str | None,
    sensitive: bool | None,
    as_json: bool,
) -> None:
    """Create a rule from FILE (JSON; - for stdin) and/or the options (options win)."""
    body: dict[str, Any] = {}
    if file is not None:
        try:
            body = json.load(file)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="FILE") from None
        if not isinstance(body, dict):
            raise click.BadParameter("the file must hold one JSON object", param_hint="FILE")
    given = {
        "conditions": _json_option(conditions, "--conditions"),
        "actions": _json_option(actions, "--actions"),
        "priority": priority,
        "description": description,
        "uuid": uuid,
        "sensitive": sensitive,
    }
    body.update({k: v for k, v in given.items() if v is not None})
    if not body:
        raise click.UsageError("give a rule: a JSON FILE, or at least --actions")
    _print_record(client.request("POST", "/v1/inspection_rules", body), as_json)


@rule.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@pass_client
def list_rules(client: ApiClient, as_json: bool) -> None:
    """List rules in the order they run (highest priority first), all pages."""
    rules: list[dict[str, Any]] = []
    url: str | None = "/v1/inspection_rules?detail=true"
    while url is not None:
        page = client.get(url)
        rules += page["inspection_rules"]
        nxt = page.get("next")
        url = None if nxt is None else "/v1/" + nxt.split("/v1/", 1)[1]
    rules.sort(key=lambda r: -int(r.get("priority") or 0))
    if as_json:
        click.echo(json.dumps(rules, indent=2, sort_keys=True))
        return
    table = Table("UUID", "Priority", "Phase", "Description", "Conditions", "Actions")
    for item in rules:
        ops = [
            ", ".join(str(x.get("op")) for x in item.get(key) or []) or "—"
            if item.get(key) is not None or not item.get("sensitive")
            else "(sensitive)"
            for key in ("conditions", "actions")
        ]
        table.add_row(item["uuid"], str(item["priority"]), item["phase"],
                      Text(_show(item.get("description"))), Text(ops[0]), Text(ops[1]))  # fmt: skip
    _console().print(table)


@rule.command("show")
@click.argument("uuid")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@pass_client
def show_rule(client: ApiClient, uuid: str, as_json: bool) -> None:
    """Show one rule."""
    _print_record(client.get(f"/v1/inspection_rules/{_q(uuid)}"), as_json)


@rule.command("delete")
@click.argument("uuids", nargs=-1, required=True)
@pass_client
def delete_rule(client: ApiClient, uuids: tuple[str, ...]) -> None:
    """Delete rules."""
    for uuid in uuids:
        client.request("DELETE", f"/v1/inspection_rules/{_q(uuid)}")
        click.echo(f"Deleted inspection rule {uuid}")
