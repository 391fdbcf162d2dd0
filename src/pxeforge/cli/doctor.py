"""`pxeforge doctor [NODE|MAC]`: what is wrong with a machine, and what to do about it.

Theory of operation: one request to a running `pxeforge serve` — ``GET /v1/nodes/{ident}/doctor``
for a node (UUID or name) or a MAC, ``GET /v1/doctor`` for every node and every unknown MAC
the server has seen — through the same client, URL and credentials as `pxeforge node`
(`pxeforge.cli.node.ApiClient`: ``--url``/``$PXEFORGE_URL``, ``--user``/``--password`` or the
``api-credentials`` file in ``--data-dir``). The server does the diagnosis (`pxeforge.doctor`)
from its live timeline; this prints it: per machine, each finding's severity and one line, what
to do, and the timeline events that show it (``#seq`` and local time). ``--json`` prints the
answer as it came.

Exit status: 0 when nothing is at error severity, 3 when something is (so scripts and
monitoring can tell), 1 when the API cannot be reached or refuses.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import click

from pxeforge.cli.node import api_options, client_from

__all__ = ["EXIT_ERRORS", "doctor", "render"]

EXIT_ERRORS: Final = 3
_LABEL: Final = {"error": "ERROR", "warning": "WARNING", "info": "INFO"}
_INDENT: Final = 11  # where a finding's text starts, under its severity


def _clock(at: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) if at is not None else "--:--:--"


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=False,
    ) or [first.rstrip()]


def _title(machine: dict[str, Any]) -> str:
    node = machine.get("node")
    macs = machine.get("macs") or []
    if node is None:
        return f"machine {', '.join(macs) or '?'} (no node has this MAC)"
    name = node.get("name")
    who = f"node {name} ({node['uuid']})" if name else f"node {node['uuid']}"
    state = node.get("provision_state")
    target = node.get("target_provision_state")
    parts = [f"{state} → {target}" if target else str(state)]
    if node.get("power_state"):
        parts.append(f"power {node['power_state']}")
    if node.get("maintenance"):
        parts.append("maintenance")
    mac_text = f" — MAC {', '.join(macs)}" if macs else " — no ports"
    return f"{who}: {', '.join(parts)}{mac_text}"


def render(machine: dict[str, Any], width: int = 100) -> list[str]:
    """One machine of a doctor answer as lines of text."""
    lines = [_title(machine)]
    findings = machine.get("findings") or []
    if not findings:
        lines.append(f"  nothing wrong found ({machine.get('events', 0)} timeline events)")
        return lines
    pad = " " * _INDENT
    for f in findings:
        label = _LABEL.get(f["severity"], f["severity"].upper())
        lines += _wrap(f["what"], width, f"  {label:<{_INDENT - 2}}", pad)
        lines += _wrap(f["do"], width, pad + "do: ", pad + "    ")
        for i, e in enumerate(f.get("evidence") or []):
            seq = f"#{e['seq']}" if e.get("seq") is not None else "node"
            head = (
                pad + "seen: " if i == 0 else pad + "      "
            ) + f"{seq:>6} {_clock(e.get('at'))} "
            lines += _wrap(e["what"], width, head, " " * len(head))
    return lines


@click.command()
@click.argument("ident", required=False)
@click.option("--json", "as_json", is_flag=True, help="The API's answer as JSON.")
@api_options
def doctor(
    ident: str | None,
    as_json: bool,
    url: str,
    user: str | None,
    password: str | None,
    data_dir: Path,
) -> None:
    """Say what is wrong with NODE (UUID or name) or MAC, and what to do.

    Without an argument: every node and every unknown MAC with a problem. Reads the running
    server's live timeline (DHCP, TFTP, HTTP, agent, power, state changes) and the node.
    Exit status 3 when something is at error severity.
    """
    client = client_from(url, user, password, data_dir)
    if ident:
        answer = client.get(f"/v1/nodes/{quote(ident, safe='')}/doctor")
        machines = [answer]
    else:
        answer = client.get("/v1/doctor")
        machines = answer.get("machines") or []
    if as_json:
        click.echo(json.dumps(answer, indent=2, sort_keys=True))
    else:
        width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
        if not ident:
            checked = answer.get("checked") or {}
            count = len(machines)
            click.echo(
                f"{count or 'no'} machine{'s' if count != 1 else ''} with problems "
                f"(checked {checked.get('nodes', 0)} nodes and {checked.get('macs', 0)} MACs "
                "the server has seen)"
            )
        for i, machine in enumerate(machines):
            if i or not ident:
                click.echo("")
            click.echo("\n".join(render(machine, width)))
    errors = any(f["severity"] == "error" for m in machines for f in m.get("findings") or [])
    if errors:
        sys.exit(EXIT_ERRORS)  # not click's Exit: `pxeforge` runs click without standalone mode
