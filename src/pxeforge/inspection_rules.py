"""Inspection rules: conditions on the inspection data → actions on the node. Pure, no I/O.

Theory of operation (Ironic's built-in inspection rules, API 1.96, ``doc/source/admin/inspection/
rules.rst``; the subset pxeforge implements, and where it differs):

* **A rule** is ``{uuid, description, priority, sensitive, phase, conditions, actions}``.
  `validate_rule` checks one completely (unknown keys, operators and arguments, bad regexes,
  subnets, paths, trait names, template syntax) and returns it normalised; every problem is a
  `RuleError` naming the item (the API answers 400). ``priority`` 0–9999 (higher runs first),
  ``phase`` only ``main``, ``actions`` at least one.
* **Conditions** ``{"op", "args", "loop"?, "multiple"?, "invert"?}`` — all must hold for the
  actions to run (no conditions: always). ``op`` is one of `CONDITIONS`; ``!op`` (Ironic) or
  ``"invert": true`` (ironic-inspector) negates it. ``eq``/``lt``/``gt`` take ``values`` (a list:
  all equal / strictly ascending / strictly descending; ``force_strings`` compares their
  strings); ``ne``, ``ge``, ``le`` are pxeforge's names for ``!eq``, ``!lt``, ``!gt``. ``is-empty``,
  ``is-none``, ``is-true``, ``is-false`` take ``value``; ``matches`` (whole string) and
  ``contains`` (anywhere) take ``value`` and ``regex``; ``one-of`` ``value`` and ``values``;
  ``in-net`` ``address`` and ``subnet``. Ordering compares numbers (numeric strings count as
  numbers, so ``"8"`` vs ``16`` works) or strings; anything else is an error.
* **Actions** ``{"op", "args", "loop"?}`` (`ACTIONS`): ``fail`` (``msg``: inspection fails with
  it), ``log`` (``msg``, ``level``), ``set-attribute``/``extend-attribute``/``del-attribute``
  (``path`` like ``/driver_info/ipmi_address`` or ``driver_info.ipmi_address``, into the node
  fields of `SETTABLE_FIELDS`), ``set-capability``/``unset-capability`` (``properties.
  capabilities``, Ironic's ``"k:v,k2:v2"`` string), ``add-trait``/``remove-trait``,
  ``set-plugin-data``/``extend-plugin-data``/``unset-plugin-data``, and ``set-port-attribute``/
  ``extend-port-attribute``/``del-port-attribute`` (``port_id`` = MAC or UUID of one of the
  node's ports; paths under ``extra``, ``local_link_connection``, ``pxe_enabled``). Ironic's
  ``api-call`` is refused: pxeforge makes no outgoing calls from rules.
* **Variables.** Argument strings are Python format strings over ``node`` (``{node.driver}``,
  ``{node.properties[cpus]}`` — dots and brackets both work on pxeforge's plain dicts),
  ``inventory`` (``{inventory[cpu][count]}``, ``{inventory[disks][0][size]}``), ``plugin_data``
  and, in a loop, ``item``. A string that is exactly one reference keeps the value's type (an
  integer stays an integer, a list a list; Ironic always makes a string) and is None when the
  data has no such field; a reference inside longer text that finds nothing is an error (Ironic
  would keep the literal ``{…}`` text — e.g. as an IPMI address). ``regex``, ``level``,
  ``unique``, ``force_strings`` and ``multiple`` are never interpolated; ``{{`` is a brace.
* **Loops.** ``loop`` is a list (each element is ``item``), an object (one item) or — pxeforge's
  addition, for conditions over the inventory's lists — a string that is one reference, such as
  ``"{inventory[disks]}"``. Conditions combine the items with ``multiple``: ``any`` (default),
  ``all``, ``first``, ``last``.
* **Applying** (`apply_rules`): rules run by priority, highest first (ties: the given order);
  each sees the node as earlier rules left it. The first ``fail`` stops everything and
  `Result.failure` is its message; an error while applying a rule (a comparison of a number with
  a list, a missing reference, an unknown port) also fails inspection, naming the rule — as in
  Ironic. `Result` lists the node fields that changed, the new traits, plugin data, port
  changes and log lines; the caller saves them. A ``sensitive`` rule's log lines are not kept.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import string
import uuid as uuidlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ACTIONS",
    "CONDITIONS",
    "MAX_PRIORITY",
    "PHASES",
    "SETTABLE_FIELDS",
    "LogLine",
    "Result",
    "RuleError",
    "apply_rules",
    "capabilities",
    "validate_rule",
]

PHASES: Final = ("main",)
MAX_PRIORITY: Final = 9999
DESCRIPTION_MAX: Final = 255
TRAIT_RE: Final = re.compile(r"^[A-Z][A-Z0-9_]{0,254}$")
LEVELS: Final = ("debug", "info", "warning", "error")
MULTIPLE: Final = ("any", "all", "first", "last")
RULE_FIELDS: Final = ("uuid", "description", "priority", "sensitive", "phase", "conditions",
                      "actions")  # fmt: skip

# op → (required args, optional args)
CONDITIONS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "eq": (("values",), ("force_strings",)),
    "lt": (("values",), ("force_strings",)),
    "gt": (("values",), ("force_strings",)),
    "ne": (("values",), ("force_strings",)),
    "ge": (("values",), ("force_strings",)),
    "le": (("values",), ("force_strings",)),
    "is-empty": (("value",), ()),
    "in-net": (("address", "subnet"), ()),
    "matches": (("value", "regex"), ()),
    "contains": (("value", "regex"), ()),
    "one-of": (("value", "values"), ()),
    "is-none": (("value",), ()),
    "is-true": (("value",), ()),
    "is-false": (("value",), ()),
}
ACTIONS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "fail": (("msg",), ()),
    "log": (("msg",), ("level",)),
    "set-attribute": (("path", "value"), ()),
    "extend-attribute": (("path", "value"), ("unique",)),
    "del-attribute": (("path",), ()),
    "set-capability": (("name", "value"), ()),
    "unset-capability": (("name",), ()),
    "add-trait": (("name",), ()),
    "remove-trait": (("name",), ()),
    "set-plugin-data": (("path", "value"), ()),
    "extend-plugin-data": (("path", "value"), ("unique",)),
    "unset-plugin-data": (("path",), ()),
    "set-port-attribute": (("port_id", "path", "value"), ()),
    "extend-port-attribute": (("port_id", "path", "value"), ("unique",)),
    "del-port-attribute": (("port_id", "path"), ()),
}
_REFUSED_ACTIONS: Final = {
    "api-call": "pxeforge makes no outgoing HTTP calls from inspection rules",
}
_NOT_INTERPOLATED: Final = frozenset({"regex", "level", "unique", "force_strings"})
_INVERSES: Final = {"ne": "eq", "ge": "lt", "le": "gt"}

SETTABLE_FIELDS: Final[dict[str, type | tuple[type, ...]]] = {
    "driver": str,
    "driver_info": dict,
    "properties": dict,
    "instance_info": dict,
    "extra": dict,
    "name": (str, type(None)),
    "description": (str, type(None)),
    "resource_class": (str, type(None)),
    "owner": (str, type(None)),
    "lessee": (str, type(None)),
    "automated_clean": (bool, type(None)),
    **{
        f"{kind}_interface": (str, type(None))
        for kind in (
            "bios",
            "boot",
            "console",
            "deploy",
            "firmware",
            "inspect",
            "management",
            "network",
            "power",
            "raid",
            "rescue",
            "storage",
            "vendor",
        )
    },  # fmt: skip
}
"""Node fields rules may set (Ironic's ``set-attribute`` paths pxeforge stores)."""

_PORT_FIELDS: Final[dict[str, type | tuple[type, ...]]] = {
    "extra": dict,
    "local_link_connection": dict,
    "pxe_enabled": bool,
}
_ROOTS: Final = frozenset({"node", "inventory", "plugin_data"})
_MISSING: Final = object()
_FORMATTER: Final = string.Formatter()
_TOKEN: Final = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")


class RuleError(ValueError):
    """An invalid rule (400 at the API), or a rule that cannot be applied to this node."""

    code = 400


class _Fail(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---- validation -------------------------------------------------------------------------------


def _check_args(
    op: str, raw: Any, signature: tuple[tuple[str, ...], tuple[str, ...]], where: str
) -> dict[str, Any]:
    required, optional = signature
    names = (*required, *optional)
    if isinstance(raw, list):  # Ironic's deprecated positional form
        if len(raw) > len(names):
            raise RuleError(f"{where}: {op} takes at most {len(names)} arguments "
                            f"({', '.join(names)}), got {len(raw)}")  # fmt: skip
        raw = dict(zip(names, raw, strict=False))
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: 'args' must be an object (or a list), got {_kind(raw)}")
    missing = [n for n in required if n not in raw]
    unexpected = sorted(set(raw) - set(names))
    problems = []
    if missing:
        problems.append(f"missing required argument(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected argument(s): {', '.join(unexpected)}")
    if problems:
        accepted = ", ".join(names)
        raise RuleError(f"{where}: {op}: {'; '.join(problems)} (it takes {accepted})")
    return dict(raw)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)  # fmt: skip


def _templates(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _templates(k)
            yield from _templates(v)
    elif isinstance(value, list):
        for v in value:
            yield from _templates(v)


def _fields(text: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise RuleError(f"{text!r}: {exc} (write {{{{ and }}}} for literal braces)") from None


def _check_templates(value: Any, where: str, loop: bool) -> None:
    for text in _templates(value):
        for _literal, name, _spec, _conv in _fields(text):
            if name is None:
                continue
            root = re.split(r"[.\[]", name, maxsplit=1)[0]
            allowed = _ROOTS | ({"item"} if loop else set())
            if root not in allowed:
                hint = " (item exists only with a loop)" if root == "item" else ""
                raise RuleError(
                    f"{where}: unknown variable {{{name}}} in {text!r}{hint}; variables are "
                    f"{', '.join(sorted(allowed))}"
                )


def _static(value: Any) -> bool:
    return not any("{" in t for t in _templates(value))


def _split_path(path: str) -> list[str]:
    text = path.strip()
    parts = text.strip("/").split("/") if "/" in text else text.split(".")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in parts]
    if not parts or any(p == "" for p in parts):
        raise RuleError(f"invalid path {path!r}")
    return parts


def _check_path(path: Any, where: str, fields: Mapping[str, Any] | None) -> None:
    if not isinstance(path, str):
        raise RuleError(f"{where}: 'path' must be a string, got {_kind(path)}")
    if "{" in path:
        return  # checked when applied
    try:
        parts = _split_path(path)
    except RuleError as exc:
        raise RuleError(f"{where}: {exc}") from None
    if fields is not None and parts[0] not in fields:
        raise RuleError(
            f"{where}: {parts[0]!r} cannot be set by inspection rules; settable: "
            f"{', '.join(sorted(fields))}"
        )
    if fields is not None and len(parts) > 1 and fields[parts[0]] is not dict:
        raise RuleError(f"{where}: {parts[0]!r} is not an object: {path!r} has no sub-fields")


def _check_condition(index: int, raw: Any) -> dict[str, Any]:
    where = f"conditions[{index}]"
    if not isinstance(raw, dict):
        raise RuleError(f"{where} must be an object, got {_kind(raw)}")
    unknown = sorted(set(raw) - {"op", "args", "loop", "multiple", "invert"})
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(unknown)} (op, args, loop, "
                        "multiple, invert)")  # fmt: skip
    op = raw.get("op")
    if not isinstance(op, str):
        raise RuleError(f"{where}: 'op' (a string) is required")
    name = op.lstrip("!").strip()
    if name not in CONDITIONS:
        raise RuleError(f"{where}: unsupported condition {op!r}; supported: "
                        f"{', '.join(CONDITIONS)} (prefix ! to negate)")  # fmt: skip
    if "args" not in raw:
        raise RuleError(f"{where}: 'args' is required")
    args = _check_args(name, raw["args"], CONDITIONS[name], where)
    loop = _check_loop(raw, where)
    multiple = raw.get("multiple", "any")
    if multiple not in MULTIPLE:
        raise RuleError(f"{where}: 'multiple' must be one of {', '.join(MULTIPLE)}")
    invert = raw.get("invert", False)
    if not isinstance(invert, bool):
        raise RuleError(f"{where}: 'invert' must be true or false")
    for key, value in args.items():
        if key not in _NOT_INTERPOLATED:
            _check_templates(value, where, loop is not None)
    if "values" in args and not isinstance(args["values"], list | str):
        raise RuleError(f"{where}: 'values' must be a list")
    if "force_strings" in args and not isinstance(args["force_strings"], bool):
        raise RuleError(f"{where}: 'force_strings' must be true or false")
    if "regex" in args:
        if not isinstance(args["regex"], str):
            raise RuleError(f"{where}: 'regex' must be a string")
        try:
            re.compile(args["regex"])
        except re.error as exc:
            raise RuleError(
                f"{where}: invalid regular expression {args['regex']!r}: {exc}"
            ) from None
    if "subnet" in args and _static(args["subnet"]):
        try:
            ipaddress.ip_network(str(args["subnet"]), strict=False)
        except ValueError as exc:
            raise RuleError(f"{where}: invalid subnet: {exc}") from None
    out: dict[str, Any] = {"op": op, "args": raw["args"]}
    if loop is not None:
        out["loop"] = loop
        out["multiple"] = multiple
    if invert:
        out["invert"] = True
    return out


def _check_loop(raw: Mapping[str, Any], where: str) -> Any:
    if "loop" not in raw or raw["loop"] in (None, []):
        return None
    loop = raw["loop"]
    if isinstance(loop, str):
        parts = _fields(loop)
        if len(parts) != 1 or parts[0][0] or parts[0][1] is None:
            raise RuleError(f"{where}: a 'loop' string must be one reference such as "
                            f"\"{{inventory[disks]}}\", got {loop!r}")  # fmt: skip
        _check_templates(loop, where, False)
        return loop
    if not isinstance(loop, list | dict):
        raise RuleError(f"{where}: 'loop' must be a list, an object or a reference string")
    _check_templates(loop, where, False)
    return loop


def _check_action(index: int, raw: Any) -> dict[str, Any]:
    where = f"actions[{index}]"
    if not isinstance(raw, dict):
        raise RuleError(f"{where} must be an object, got {_kind(raw)}")
    unknown = sorted(set(raw) - {"op", "args", "loop"})
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(unknown)} (op, args, loop)")
    op = raw.get("op")
    if not isinstance(op, str):
        raise RuleError(f"{where}: 'op' (a string) is required")
    if op in _REFUSED_ACTIONS:
        raise RuleError(f"{where}: {op} is not supported: {_REFUSED_ACTIONS[op]}")
    if op not in ACTIONS:
        raise RuleError(f"{where}: unsupported action {op!r}; supported: {', '.join(ACTIONS)}")
    if "args" not in raw:
        raise RuleError(f"{where}: 'args' is required")
    args = _check_args(op, raw["args"], ACTIONS[op], where)
    loop = _check_loop(raw, where)
    for key, value in args.items():
        if key not in _NOT_INTERPOLATED:
            _check_templates(value, where, loop is not None)
    if op in ("fail", "log") and not isinstance(args["msg"], str):
        raise RuleError(f"{where}: 'msg' must be a string")
    if "level" in args and args["level"] not in LEVELS:
        raise RuleError(f"{where}: 'level' must be one of {', '.join(LEVELS)}")
    if "unique" in args and not isinstance(args["unique"], bool):
        raise RuleError(f"{where}: 'unique' must be true or false")
    if op.endswith("-attribute"):
        _check_path(args["path"], where, _PORT_FIELDS if "-port-" in op else SETTABLE_FIELDS)
    elif op.endswith("-plugin-data"):
        _check_path(args["path"], where, None)
    if op.endswith("-trait") and _static(args["name"]):
        _check_trait(args["name"], where)
    if op.endswith("-capability") and not isinstance(args["name"], str):
        raise RuleError(f"{where}: 'name' must be a string")
    out: dict[str, Any] = {"op": op, "args": raw["args"]}
    if loop is not None:
        out["loop"] = loop
    return out


def _check_trait(name: Any, where: str) -> str:
    if not isinstance(name, str) or not TRAIT_RE.match(name):
        raise RuleError(
            f"{where}: invalid trait {name!r}: traits are upper-case letters, digits and _ "
            "(a standard trait or CUSTOM_…), at most 255 characters"
        )
    return name


def validate_rule(body: Any) -> dict[str, Any]:
    """The rule ``body`` checked and normalised (every `RULE_FIELDS` key present).

    ``uuid`` None means "make one". Raises `RuleError` naming the first problem."""
    if not isinstance(body, dict):
        raise RuleError(f"An inspection rule must be a JSON object, got {_kind(body)}")
    unknown = sorted(set(body) - set(RULE_FIELDS))
    if unknown:
        raise RuleError(f"Unknown inspection rule field(s): {', '.join(unknown)}; fields are "
                        f"{', '.join(RULE_FIELDS)}")  # fmt: skip
    rule_uuid = body.get("uuid")
    if rule_uuid is not None:
        try:
            rule_uuid = str(uuidlib.UUID(str(rule_uuid)))
        except ValueError:
            raise RuleError(f"Expected a UUID for uuid: {body['uuid']!r}") from None
    description = body.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > DESCRIPTION_MAX
    ):
        raise RuleError(f"description must be a string of at most {DESCRIPTION_MAX} characters")
    priority = body.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise RuleError(f"priority must be an integer, got {_kind(priority)}")
    if not 0 <= priority <= MAX_PRIORITY:
        raise RuleError(f"Priority must be between 0 and {MAX_PRIORITY} for user-defined rules.")
    sensitive = body.get("sensitive")
    if sensitive is not None and not isinstance(sensitive, bool):
        raise RuleError("sensitive must be true or false")
    phase = body.get("phase") or "main"
    if phase not in PHASES:
        raise RuleError(f"Invalid phase: {phase}. Valid phases are: {', '.join(PHASES)}")
    conditions = body.get("conditions") or []
    if not isinstance(conditions, list):
        raise RuleError("conditions must be a list")
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions:
        raise RuleError("actions (a non-empty list) is required")
    return {
        "uuid": rule_uuid,
        "description": description,
        "priority": priority,
        "sensitive": bool(sensitive),
        "phase": phase,
        "conditions": [_check_condition(i, c) for i, c in enumerate(conditions)],
        "actions": [_check_action(i, a) for i, a in enumerate(actions)],
    }


# ---- variables --------------------------------------------------------------------------------


def _step(container: Any, key: str) -> Any:
    if isinstance(container, Mapping):
        if key in container:
            return container[key]
        return _MISSING
    if isinstance(container, list | tuple) and re.fullmatch(r"-?\d+", key):
        index = int(key)
        return container[index] if -len(container) <= index < len(container) else _MISSING
    return _MISSING


def _lookup(name: str, scope: Mapping[str, Any]) -> Any:
    match = re.match(r"[^.\[]+", name)
    if match is None or match.group(0) not in scope:
        return _MISSING
    value = scope[match.group(0)]
    rest = name[match.end() :]
    pos = 0
    while pos < len(rest):
        token = _TOKEN.match(rest, pos)
        if token is None:
            raise RuleError(f"cannot read {{{name}}}: bad reference syntax")
        value = _step(value, token.group(1) if token.group(1) is not None else token.group(2))
        if value is _MISSING:
            return _MISSING
        pos = token.end()
    return value


def _render(text: str, scope: Mapping[str, Any]) -> Any:
    parts = _fields(text)
    if len(parts) == 1 and not parts[0][0] and parts[0][1] is not None:
        _literal, only, spec, conv = parts[0]
        if only is not None and not spec and not conv:
            value = _lookup(only, scope)
            return None if value is _MISSING else value
    out = []
    for literal, name, spec, conv in parts:
        out.append(literal)
        if name is None:
            continue
        value = _lookup(name, scope)
        if value is _MISSING:
            raise RuleError(f"{{{name}}} in {text!r}: the inspection data has no such field")
        if conv == "r":
            value = repr(value)
        elif conv in ("s", "a"):
            value = str(value) if conv == "s" else ascii(value)
        try:
            out.append(format(value, spec or ""))
        except (TypeError, ValueError) as exc:
            raise RuleError(f"{{{name}}} in {text!r}: {exc}") from None
    return "".join(out)


def _interpolate(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _render(value, scope) if "{" in value or "}" in value else value
    if isinstance(value, dict):
        return {str(_interpolate(k, scope)): _interpolate(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, scope) for v in value]
    return value


def _args(
    item: Mapping[str, Any], table: Mapping[str, Any], scope: Mapping[str, Any]
) -> dict[str, Any]:
    name = item["op"].lstrip("!").strip()
    signature = table[name]
    raw = item["args"]
    if isinstance(raw, list):
        raw = dict(zip((*signature[0], *signature[1]), raw, strict=False))
    return {k: (v if k in _NOT_INTERPOLATED else _interpolate(v, scope)) for k, v in raw.items()}


def _loop_items(item: Mapping[str, Any], scope: Mapping[str, Any]) -> list[Any] | None:
    loop = item.get("loop")
    if loop is None or loop == []:
        return None
    if isinstance(loop, str):
        loop = _render(loop, scope)
        if loop is None:
            return []
    else:
        loop = _interpolate(loop, scope)
    if isinstance(loop, dict):
        return [loop]
    if isinstance(loop, list):
        return loop
    raise RuleError(f"loop {item['loop']!r} is {_kind(loop)}, not a list")


# ---- conditions -------------------------------------------------------------------------------


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _pair(a: Any, b: Any) -> tuple[Any, Any] | None:
    """``a`` and ``b`` as comparable values, else None: two strings compare as strings, a number
    and a number or numeric string as numbers."""
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return na, nb
    return None


def _equal(a: Any, b: Any) -> bool:
    pair = _pair(a, b)
    return bool(pair[0] == pair[1]) if pair is not None else bool(a == b)


def _compare(op: str, values: Any, force_strings: bool) -> bool:
    if not isinstance(values, list):
        raise RuleError(f"{op}: 'values' must be a list, got {_kind(values)}")
    if force_strings:
        values = [str(v) for v in values]
    for a, b in zip(values, values[1:], strict=False):
        if op == "eq":
            if not _equal(a, b):
                return False
            continue
        pair = _pair(a, b)
        if pair is None:
            raise RuleError(f"{op}: cannot order {a!r} ({_kind(a)}) and {b!r} ({_kind(b)})")
        if not (pair[0] < pair[1] if op == "lt" else pair[0] > pair[1]):
            return False
    return True


def _truth(value: Any, wanted: bool) -> bool:
    if isinstance(value, bool):
        return value is wanted
    if isinstance(value, int | float):
        return bool(value) is wanted
    if isinstance(value, str):
        return value.strip().lower() in (("yes", "true") if wanted else ("no", "false"))
    return value is None and not wanted


def _check(op: str, args: Mapping[str, Any]) -> bool:
    if op in ("eq", "lt", "gt"):
        return _compare(op, args["values"], bool(args.get("force_strings")))
    if op in _INVERSES:
        return not _compare(_INVERSES[op], args["values"], bool(args.get("force_strings")))
    value = args.get("value")
    if op == "is-empty":
        return value is None or value == "" or value == [] or value == {}
    if op == "is-none":
        return value is None
    if op == "is-true":
        return _truth(value, True)
    if op == "is-false":
        return _truth(value, False)
    if op == "one-of":
        values = args["values"]
        if not isinstance(values, list):
            raise RuleError(f"one-of: 'values' must be a list, got {_kind(values)}")
        return any(_equal(value, v) for v in values)
    if op in ("matches", "contains"):
        text = "" if value is None else str(value)
        regex = args["regex"]
        found = re.fullmatch(regex, text) if op == "matches" else re.search(regex, text)
        return found is not None
    if op == "in-net":
        try:
            network = ipaddress.ip_network(str(args["subnet"]), strict=False)
        except ValueError as exc:
            raise RuleError(f"in-net: invalid subnet: {exc}") from None
        try:
            return ipaddress.ip_address(str(args["address"])) in network
        except ValueError:
            return False  # no address (None) or not one: not in the network
    raise RuleError(f"unsupported condition {op!r}")  # validate_rule keeps this unreachable


def _condition(cond: Mapping[str, Any], scope: dict[str, Any]) -> bool:
    op = cond["op"]
    inverted = op.startswith("!") != bool(cond.get("invert"))
    name = op.lstrip("!").strip()

    def once(extra: Mapping[str, Any]) -> bool:
        result = _check(name, _args(cond, CONDITIONS, {**scope, **extra}))
        return not result if inverted else result

    items = _loop_items(cond, scope)
    if items is None:
        return once({})
    multiple = cond.get("multiple", "any")
    results: list[bool] = []
    for item in items:
        result = once({"item": item})
        if multiple == "first":
            return result
        results.append(result)
    if multiple == "any":
        return any(results)
    if multiple == "all":
        return all(results)
    return results[-1] if results else False  # last


# ---- actions ----------------------------------------------------------------------------------


def capabilities(value: Any) -> dict[str, str]:
    """``properties.capabilities`` (Ironic's ``"k:v,k2:v2"`` string, or an object) as a dict."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    if isinstance(value, str):
        for part in value.split(","):
            key, _, val = part.partition(":")
            if key.strip():
                out[key.strip()] = val.strip()
    return out


@dataclass(frozen=True, slots=True)
class LogLine:
    """A message for the node's history: a ``log`` action, or what a rule did."""

    rule: str
    level: str
    text: str


@dataclass
class Result:
    """What the rules did (`apply_rules`); nothing is saved yet."""

    node_changes: dict[str, Any] = field(default_factory=dict)
    traits: list[str] | None = None  # the new trait list, when it changed
    plugin_data: dict[str, Any] = field(default_factory=dict)
    port_changes: dict[str, dict[str, Any]] = field(default_factory=dict)  # port uuid → fields
    log: list[LogLine] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # uuids of rules whose actions ran
    failure: str | None = None  # inspection must fail with this last_error
    failed_rule: str | None = None


@dataclass
class _State:
    node: dict[str, Any]
    traits: list[str]
    plugin_data: dict[str, Any]
    ports: list[dict[str, Any]]
    log: list[LogLine]


def _container(root: dict[str, Any], parts: Sequence[str], path: str, create: bool) -> Any:
    """The dict holding ``parts[-1]`` under ``root`` (created on the way when ``create``)."""
    here: Any = root
    for key in parts[:-1]:
        nxt = here.get(key) if isinstance(here, dict) else None
        if nxt is None and create and isinstance(here, dict):
            nxt = here[key] = {}
        if not isinstance(nxt, dict):
            if not create and nxt is None:
                return None
            raise RuleError(f"path {path!r}: {key!r} is not an object")
        here = nxt
    return here


def _set_path(
    target: dict[str, Any], path: Any, value: Any, fields: Mapping[str, Any] | None, op: str,
    unique: bool = False,
) -> None:  # fmt: skip
    if not isinstance(path, str):
        raise RuleError(f"path must be a string, got {_kind(path)}")
    parts = _split_path(path)
    if fields is not None:
        kind = fields.get(parts[0])
        if kind is None:
            raise RuleError(f"{parts[0]!r} cannot be set by inspection rules")
        if len(parts) == 1:
            if op == "del":
                target[parts[0]] = {} if kind is dict else None
                return
            if op == "set":
                if not isinstance(value, kind):
                    raise RuleError(f"{parts[0]} cannot be set to {_kind(value)} {value!r}")
                target[parts[0]] = copy.deepcopy(value)
                return
        elif kind is not dict:
            raise RuleError(f"{parts[0]!r} is not an object: {path!r} has no sub-fields")
        else:
            target[parts[0]] = dict(target.get(parts[0]) or {})
    if op == "del":
        holder = _container(target, parts, path, create=False)
        if isinstance(holder, dict):
            holder.pop(parts[-1], None)
        return
    holder = _container(target, parts, path, create=True)
    if op == "set":
        holder[parts[-1]] = copy.deepcopy(value)
        return
    current = holder.get(parts[-1])
    current = [] if current is None else current
    if not isinstance(current, list):
        raise RuleError(f"path {path!r} is {_kind(current)}, not a list: cannot extend it")
    if not (unique and value in current):
        current = [*current, copy.deepcopy(value)]
    holder[parts[-1]] = current


def _port(state: _State, port_id: Any) -> dict[str, Any]:
    wanted = str(port_id).strip().lower()
    for port in state.ports:
        if wanted in (str(port.get("address", "")).lower(), str(port.get("uuid", "")).lower()):
            return port
    raise RuleError(f"node has no port {port_id!r} (give a MAC address or port UUID)")


def _act(op: str, args: Mapping[str, Any], state: _State, rule: Mapping[str, Any]) -> None:
    uuid, sensitive = str(rule.get("uuid")), bool(rule.get("sensitive"))
    if op == "fail":
        raise _Fail(str(args["msg"]))
    if op == "log":
        if not sensitive:
            state.log.append(LogLine(uuid, args.get("level", "info"), str(args["msg"])))
        return
    unique = bool(args.get("unique"))
    if op.endswith("-port-attribute"):
        port = _port(state, args["port_id"])
        _set_path(port, args["path"], args.get("value"), _PORT_FIELDS, op.split("-")[0], unique)
    elif op.endswith("-attribute"):
        _set_path(state.node, args["path"], args.get("value"), SETTABLE_FIELDS,
                  op.split("-")[0], unique)  # fmt: skip
    elif op.endswith("-plugin-data"):
        kind = {"set": "set", "extend": "extend", "unset": "del"}[op.split("-")[0]]
        _set_path(state.plugin_data, args["path"], args.get("value"), None, kind, unique)
    elif op in ("set-capability", "unset-capability"):
        props = dict(state.node.get("properties") or {})
        caps = capabilities(props.get("capabilities"))
        name = str(args["name"])
        if op == "set-capability":
            caps[name] = "" if args["value"] is None else str(args["value"])
        else:
            caps.pop(name, None)
        props["capabilities"] = ",".join(f"{k}:{v}" for k, v in caps.items())
        if not caps:
            props.pop("capabilities")
        state.node["properties"] = props
    elif op == "add-trait":
        trait = _check_trait(args["name"], "add-trait")
        if trait not in state.traits:
            state.traits.append(trait)
    elif op == "remove-trait":
        trait = _check_trait(args["name"], "remove-trait")
        if trait in state.traits:
            state.traits.remove(trait)
    else:
        raise RuleError(f"unsupported action {op!r}")  # validate_rule keeps this unreachable


def _apply_one(rule: Mapping[str, Any], state: _State, scope_of: Any) -> bool:
    """Run ``rule`` on ``state``: True if its conditions held (its actions ran)."""
    for cond in rule.get("conditions") or ():
        if not _condition(cond, scope_of()):
            return False
    for action in rule["actions"]:
        op = action["op"]
        items = _loop_items(action, scope_of())
        for item in [None] if items is None else items:
            extra = {} if items is None else {"item": item}
            _act(op, _args(action, ACTIONS, {**scope_of(), **extra}), state, rule)
    return True


def apply_rules(
    rules: Sequence[Mapping[str, Any]],
    node: Mapping[str, Any],
    inventory: Mapping[str, Any],
    plugin_data: Mapping[str, Any],
    *,
    traits: Sequence[str] = (),
    ports: Sequence[Mapping[str, Any]] = (),
) -> Result:
    """Apply validated ``rules`` to ``node`` (its fields as a dict) — see the module docstring.

    ``ports`` are the node's ports as dicts (``uuid``, ``address``, ``pxe_enabled``, ``extra``,
    ``local_link_connection``)."""
    state = _State(
        node=copy.deepcopy(dict(node)),
        traits=list(traits),
        plugin_data=copy.deepcopy(dict(plugin_data)),
        ports=[copy.deepcopy(dict(p)) for p in ports],
        log=[],
    )
    frozen_inventory = copy.deepcopy(dict(inventory))
    result = Result()

    def scope() -> dict[str, Any]:
        return {"node": state.node, "inventory": frozen_inventory,
                "plugin_data": state.plugin_data}  # fmt: skip

    order = sorted(enumerate(rules), key=lambda pair: (-int(pair[1].get("priority") or 0), pair[0]))
    for _index, rule in order:
        uuid = str(rule.get("uuid"))
        try:
            if _apply_one(rule, state, scope):
                result.applied.append(uuid)
        except _Fail as fail:
            result.failure, result.failed_rule = fail.message, uuid
            break
        except RuleError as exc:
            result.failure = f"Inspection rule {uuid} failed: {exc}"
            result.failed_rule = uuid
            break
    result.log = state.log
    result.node_changes = {
        k: v for k, v in state.node.items() if k in SETTABLE_FIELDS and v != node.get(k)
    }
    result.traits = state.traits if state.traits != list(traits) else None
    result.plugin_data = state.plugin_data
    before = {str(p.get("uuid")): p for p in ports}
    for port in state.ports:
        old = before.get(str(port.get("uuid")), {})
        changed = {k: v for k, v in port.items() if k in _PORT_FIELDS and v != old.get(k)}
        if changed:
            result.port_changes[str(port.get("uuid"))] = changed
    return result
