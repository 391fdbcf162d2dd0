"""`pxeforge rule …` with click's CliRunner against a live `pxeforge serve` (http_basic, the
credentials read from --data-dir as the CLI does)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from test_node_cli import server  # noqa: F401  (the fixture: a real pxeforge serve)

from pxeforge.cli.rule import rule

RULE = {
    "description": "big machines",
    "conditions": [{"op": "ge", "args": {"values": ["{inventory[cpu][count]}", 64]}}],
    "actions": [{"op": "add-trait", "args": {"name": "CUSTOM_BIG"}}],
}


def run(server: tuple[str, Path], *args: str, code: int = 0, stdin: str | None = None) -> Result:  # noqa: F811
    url, data = server
    result = CliRunner().invoke(rule, ["--url", url, "--data-dir", str(data), *args], input=stdin)
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def test_rule_cli(server: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "rule.json"
    path.write_text(json.dumps(RULE))
    big = json.loads(run(server, "create", str(path), "--priority", "20", "--json").output)
    assert big["priority"] == 20 and big["actions"] == RULE["actions"]
    small = json.loads(run(server, "create", "-", "--json", stdin=json.dumps({
        "actions": [{"op": "fail", "args": {"msg": "too small"}}],
        "conditions": [{"op": "lt", "args": {"values": ["{inventory[cpu][count]}", 2]}}],
    })).output)  # fmt: skip
    fail = json.loads(run(server, "create", "--actions",
                          '[{"op": "log", "args": {"msg": "seen {node.uuid}"}}]',
                          "--priority", "99", "--sensitive", "--json").output)  # fmt: skip
    assert fail["sensitive"] is True and fail["actions"] is None

    listed = json.loads(run(server, "list", "--json").output)
    assert [r["uuid"] for r in listed] == [fail["uuid"], big["uuid"], small["uuid"]]
    table = run(server, "list").output
    assert "add-trait" in table and "(sensitive)" in table and "big machines" in table
    assert "CUSTOM_BIG" in run(server, "show", big["uuid"]).output

    refused = run(server, "create", "--actions", '[{"op": "reboot", "args": {}}]', code=1)
    assert "unsupported action 'reboot'" in refused.output and "HTTP 400" in refused.output
    assert "not JSON" in run(server, "create", "--actions", "[", code=2).output
    assert "give a rule" in run(server, "create", code=2).output

    assert "Deleted" in run(server, "delete", big["uuid"], small["uuid"]).output
    assert len(json.loads(run(server, "list", "--json").output)) == 1
    assert "could not be found" in run(server, "show", big["uuid"], code=1).output
