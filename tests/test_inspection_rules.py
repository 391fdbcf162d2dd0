"""The inspection rule evaluator (`pxeforge.inspection_rules`): validation, conditions,
actions, variables, loops and failures, as tables over an IPA-shaped inventory."""

from __future__ import annotations

from typing import Any

import pytest

from pxeforge.inspection_rules import RuleError, apply_rules, capabilities, validate_rule

GIB = 1024**3
INVENTORY: dict[str, Any] = {
    "cpu": {"count": 8, "architecture": "x86_64", "model_name": "Intel Xeon Gold 6230"},
    "memory": {"physical_mb": 65536, "total": 68719476736},
    "disks": [
        {"name": "/dev/sda", "size": 480 * GIB, "rotational": False, "model": "SSD 480"},
        {"name": "/dev/sdb", "size": 4000 * GIB, "rotational": True, "model": "HDD 4T"},
    ],
    "interfaces": [
        {
            "name": "eno1",
            "mac_address": "52:54:00:12:34:56",
            "ipv4_address": "10.0.3.17",
            "has_carrier": True,
        },
        {
            "name": "eno2",
            "mac_address": "52:54:00:12:34:57",
            "ipv4_address": None,
            "has_carrier": False,
        },
    ],  # fmt: skip
    "system_vendor": {
        "manufacturer": "Dell Inc.",
        "product_name": "PowerEdge R640",
        "serial_number": "ABC123",
    },  # fmt: skip
    "boot": {"current_boot_mode": "uefi", "pxe_interface": "52:54:00:12:34:56"},
    "bmc_address": "10.0.0.5",
    "bmc_v6address": None,
}
NODE: dict[str, Any] = {
    "uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
    "name": "n1",
    "driver": "manual-management",
    "driver_info": {},
    "properties": {"cpus": 8, "memory_mb": 65536},
    "instance_info": {},
    "extra": {},
    "resource_class": None,
}
PORTS = [{"uuid": "6d85703a-565d-469a-96f9-9b6c2a6a1f8c", "address": "52:54:00:12:34:56",
          "pxe_enabled": True, "extra": {}, "local_link_connection": {}}]  # fmt: skip


def _rule(conditions: list[Any], actions: list[Any] | None = None, **more: Any) -> dict[str, Any]:
    body = {"conditions": conditions, "actions": actions or [{"op": "log", "args": {"msg": "x"}}]}
    return validate_rule({**body, **more})


def _holds(condition: dict[str, Any]) -> bool:
    result = apply_rules([_rule([condition])], NODE, INVENTORY, {})
    assert result.failure is None, result.failure
    return bool(result.applied)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"op": "eq", "args": {"values": ["{inventory[cpu][count]}", 8]}}, True),
        ({"op": "eq", "args": {"values": ["{inventory[cpu][count]}", "8"]}}, True),  # numeric str
        ({"op": "eq", "args": [["{inventory[cpu][architecture]}"]]}, True),  # 1 value, positional
        ({"op": "eq", "args": {"values": ["{node.driver}", "manual-management"]}}, True),
        ({"op": "eq", "args": {"values": ["{node.properties.cpus}", 8]}}, True),
        ({"op": "eq", "args": {"values": ["{node.properties[cpus]}", 8]}}, True),
        ({"op": "!eq", "args": {"values": ["{inventory[cpu][count]}", 8]}}, False),
        ({"op": "! eq", "args": {"values": ["{inventory[cpu][count]}", 4]}}, True),
        ({"op": "eq", "args": {"values": ["{inventory[cpu][count]}", 4]}, "invert": True}, True),
        ({"op": "ne", "args": {"values": ["{inventory[cpu][count]}", 4]}}, True),
        ({"op": "gt", "args": {"values": ["{inventory[memory][physical_mb]}", 32768]}}, True),
        ({"op": "gt", "args": {"values": [16, "{inventory[cpu][count]}", 4]}}, True),
        ({"op": "lt", "args": {"values": ["{inventory[cpu][count]}", 8]}}, False),
        ({"op": "ge", "args": {"values": ["{inventory[cpu][count]}", 8]}}, True),
        ({"op": "le", "args": {"values": ["{inventory[cpu][count]}", 7]}}, False),
        ({"op": "lt", "args": {"values": ["{inventory[cpu][count]}", "16"]}}, True),
        ({"op": "lt", "args": {"values": ["10", "9"], "force_strings": True}}, True),  # as text
        ({"op": "is-true", "args": {"value": "{inventory[interfaces][0][has_carrier]}"}}, True),
        ({"op": "is-true", "args": {"value": "yes"}}, True),
        ({"op": "is-false", "args": {"value": "{inventory[interfaces][1][has_carrier]}"}}, True),
        ({"op": "is-false", "args": {"value": "{inventory[nothing]}"}}, True),
        ({"op": "is-none", "args": {"value": "{inventory[bmc_v6address]}"}}, True),
        ({"op": "is-none", "args": {"value": "{inventory[no][such][field]}"}}, True),
        ({"op": "is-none", "args": {"value": "{inventory[bmc_address]}"}}, False),
        ({"op": "is-empty", "args": {"value": "{node.extra}"}}, True),
        ({"op": "is-empty", "args": {"value": "{inventory[disks]}"}}, False),
        (
            {
                "op": "matches",
                "args": {
                    "value": "{inventory[system_vendor][product_name]}",
                    "regex": "PowerEdge R[0-9]{3}",
                },
            },
            True,
        ),  # fmt: skip
        (
            {
                "op": "matches",
                "args": {"value": "{inventory[system_vendor][product_name]}", "regex": "PowerEdge"},
            },
            False,
        ),  # whole string  # fmt: skip
        (
            {
                "op": "contains",
                "args": {"value": "{inventory[system_vendor][manufacturer]}", "regex": "(?i)dell"},
            },
            True,
        ),  # fmt: skip
        ({"op": "contains", "args": {"value": "{inventory[nothing]}", "regex": "x"}}, False),
        (
            {
                "op": "one-of",
                "args": {
                    "value": "{inventory[cpu][architecture]}",
                    "values": ["aarch64", "x86_64"],
                },
            },
            True,
        ),  # fmt: skip
        ({"op": "one-of", "args": {"value": "{inventory[cpu][count]}", "values": [2, 4]}}, False),
        (
            {
                "op": "in-net",
                "args": {"address": "{inventory[bmc_address]}", "subnet": "10.0.0.0/24"},
            },
            True,
        ),  # fmt: skip
        (
            {
                "op": "in-net",
                "args": {"address": "{inventory[bmc_address]}", "subnet": "10.0.1.0/24"},
            },
            False,
        ),  # fmt: skip
        (
            {"op": "in-net", "args": {"address": "{inventory[bmc_v6address]}", "subnet": "::/0"}},
            False,
        ),  # no address  # fmt: skip
        # loops: over a list given in the rule, and over the inventory's own lists
        (
            {
                "op": "eq",
                "args": {"values": ["{inventory[system_vendor][product_name]}", "{item}"]},
                "loop": ["HPE ProLiant DL380 Gen10", "PowerEdge R640"],
            },
            True,
        ),  # fmt: skip
        (
            {
                "op": "ge",
                "args": {"values": ["{item[size]}", 1000 * GIB]},
                "loop": "{inventory[disks]}",
            },
            True,
        ),  # any disk of 1 TB  # fmt: skip
        (
            {
                "op": "ge",
                "args": {"values": ["{item[size]}", 1000 * GIB]},
                "loop": "{inventory[disks]}",
                "multiple": "all",
            },
            False,
        ),  # fmt: skip
        (
            {
                "op": "is-false",
                "args": {"value": "{item[rotational]}"},
                "loop": "{inventory[disks]}",
                "multiple": "first",
            },
            True,
        ),  # fmt: skip
        (
            {
                "op": "is-false",
                "args": {"value": "{item[rotational]}"},
                "loop": "{inventory[disks]}",
                "multiple": "last",
            },
            False,
        ),  # fmt: skip
        (
            {
                "op": "is-true",
                "args": {"value": "{item[has_carrier]}"},
                "loop": "{inventory[no_such_list]}",
            },
            False,
        ),  # nothing to loop over  # fmt: skip
        (
            {
                "op": "is-true",
                "args": {"value": "{item[has_carrier]}"},
                "loop": "{inventory[no_such_list]}",
                "multiple": "all",
            },
            True,
        ),  # fmt: skip
    ],
)
def test_conditions(condition: dict[str, Any], expected: bool) -> None:
    assert _holds(condition) is expected


def test_all_conditions_must_hold_and_none_means_always() -> None:
    yes = {"op": "eq", "args": {"values": [1, 1]}}
    no = {"op": "eq", "args": {"values": [1, 2]}}
    assert apply_rules([_rule([yes, no])], NODE, INVENTORY, {}).applied == []
    assert len(apply_rules([_rule([])], NODE, INVENTORY, {}).applied) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({"conditions": []}, "actions (a non-empty list) is required"),
        ({"actions": []}, "actions (a non-empty list) is required"),
        ({"actions": [{"op": "log", "args": {"msg": "x"}}], "scope": "x"}, "Unknown inspection"),
        ({"actions": [{"op": "log", "args": {"msg": "x"}}], "priority": 10000}, "between 0"),
        ({"actions": [{"op": "log", "args": {"msg": "x"}}], "priority": -1}, "between 0"),
        ({"actions": [{"op": "log", "args": {"msg": "x"}}], "priority": "1"}, "integer"),
        ({"actions": [{"op": "log", "args": {"msg": "x"}}], "phase": "late"}, "Invalid phase"),
        ({"actions": [{"op": "log", "args": {"msg": "x"}}], "uuid": "nope"}, "Expected a UUID"),
        ({"actions": [{"op": "log", "args": {"msg": "x"}}], "description": "x" * 256}, "255"),
        ({"actions": [{"op": "reboot", "args": {}}]}, "unsupported action 'reboot'"),
        ({"actions": [{"op": "api-call", "args": {"url": "http://x"}}]}, "no outgoing HTTP"),
        ({"actions": [{"op": "log"}]}, "'args' is required"),
        ({"actions": [{"op": "log", "args": {}}]}, "missing required argument(s): msg"),
        ({"actions": [{"op": "fail", "args": {"message": "x"}}]}, "unexpected argument(s)"),
        ({"actions": [{"op": "log", "args": {"msg": "x", "level": "loud"}}]}, "'level'"),
        ({"actions": [{"op": "log", "args": {"msg": "x"}, "when": 1}]}, "unknown key(s) when"),
        (
            {
                "actions": [
                    {"op": "set-attribute", "args": {"path": "/provision_state", "value": "active"}}
                ]
            },
            "'provision_state' cannot be set",
        ),  # fmt: skip
        (
            {"actions": [{"op": "set-attribute", "args": {"path": "/driver/x", "value": 1}}]},
            "'driver' is not an object",
        ),
        (
            {"actions": [{"op": "set-attribute", "args": {"path": "//", "value": 1}}]},
            "invalid path",
        ),
        ({"actions": [{"op": "add-trait", "args": {"name": "lower_case"}}]}, "invalid trait"),
        (
            {
                "actions": [
                    {
                        "op": "set-port-attribute",
                        "args": {"port_id": "x", "path": "/address", "value": "y"},
                    }
                ]
            },
            "'address' cannot be set",
        ),  # fmt: skip
        ({"actions": [{"op": "log", "args": {"msg": "{inventory[x"}}]}, "literal braces"),
        ({"actions": [{"op": "log", "args": {"msg": "{inv[x]}"}}]}, "unknown variable {inv[x]}"),
        ({"actions": [{"op": "log", "args": {"msg": "{item}"}}]}, "only with a loop"),
        (
            {
                "conditions": [{"op": "between", "args": {}}],
                "actions": [{"op": "log", "args": {"msg": "x"}}],
            },
            "unsupported condition 'between'",
        ),
        (
            {
                "conditions": [{"op": "eq", "args": {"value": 1}}],
                "actions": [{"op": "log", "args": {"msg": "x"}}],
            },
            "missing required argument(s)",
        ),
        (
            {
                "conditions": [{"op": "matches", "args": {"value": "x", "regex": "("}}],
                "actions": [{"op": "log", "args": {"msg": "x"}}],
            },
            "invalid regular expression",
        ),
        (
            {
                "conditions": [{"op": "in-net", "args": {"address": "x", "subnet": "10.0.0.0/33"}}],
                "actions": [{"op": "log", "args": {"msg": "x"}}],
            },
            "invalid subnet",
        ),
        (
            {
                "conditions": [{"op": "eq", "args": {"values": [1]}, "multiple": "most"}],
                "actions": [{"op": "log", "args": {"msg": "x"}}],
            },
            "'multiple'",
        ),
        (
            {
                "conditions": [{"op": "eq", "args": {"values": [1]}, "loop": "a {inventory[x]}"}],
                "actions": [{"op": "log", "args": {"msg": "x"}}],
            },
            "one reference",
        ),
        (
            {
                "conditions": [{"op": "eq", "args": {"values": [1]}, "loop": 3}],
                "actions": [{"op": "log", "args": {"msg": "x"}}],
            },
            "'loop' must be",
        ),
        (
            {"conditions": "eq", "actions": [{"op": "log", "args": {"msg": "x"}}]},
            "conditions must be a list",
        ),
    ],
)
def test_invalid_rules_are_refused_with_a_reason(body: Any, message: str) -> None:
    with pytest.raises(RuleError) as info:
        validate_rule(body)
    assert message in str(info.value)


def test_a_valid_rule_is_normalised() -> None:
    rule = validate_rule({"actions": [{"op": "fail", "args": ["bad"]}],
                          "uuid": "1BE26C0B-03F2-4D2E-AE87-C02D7F33C123"})  # fmt: skip
    assert rule == {
        "uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
        "description": None,
        "priority": 0,
        "sensitive": False,
        "phase": "main",
        "conditions": [],
        "actions": [{"op": "fail", "args": ["bad"]}],
    }


VENDOR = "{inventory[system_vendor][manufacturer]}"
PRODUCT = "{inventory[system_vendor][product_name]}"


def test_actions_set_properties_capabilities_traits_driver_info_extra() -> None:
    node = {**NODE, "properties": {**NODE["properties"], "capabilities": "boot_mode:bios,x:1"}}
    rule = _rule(
        [{"op": "eq", "args": {"values": [VENDOR, "Dell Inc."]}}],
        [
            {"op": "set-attribute", "args": {"path": "/driver", "value": "ipmi"}},
            {
                "op": "set-attribute",
                "args": {"path": "driver_info.ipmi_address", "value": "{inventory[bmc_address]}"},
            },
            {"op": "set-attribute", "args": {"path": "/driver_info/ipmi_port", "value": 623}},
            {
                "op": "set-attribute",
                "args": {"path": "/properties/vendor", "value": "{inventory[system_vendor]}"},
            },
            {
                "op": "set-attribute",
                "args": {
                    "path": "/extra/serial",
                    "value": "sn-{inventory[system_vendor][serial_number]}",
                },
            },
            {"op": "set-attribute", "args": {"path": "/resource_class", "value": "large"}},
            {
                "op": "extend-attribute",
                "args": {"path": "/extra/tags", "value": "{item}", "unique": True},
                "loop": ["a", "b", "a"],
            },
            {"op": "del-attribute", "args": {"path": "/properties/memory_mb"}},
            {
                "op": "set-capability",
                "args": {"name": "boot_mode", "value": "{inventory[boot][current_boot_mode]}"},
            },
            {"op": "unset-capability", "args": {"name": "x"}},
            {"op": "add-trait", "args": {"name": "CUSTOM_DELL"}},
            {"op": "add-trait", "args": {"name": "CUSTOM_DELL"}},
            {"op": "remove-trait", "args": {"name": "CUSTOM_OLD"}},
            {
                "op": "set-plugin-data",
                "args": {"path": "/vendor/bmc", "value": "{inventory[bmc_address]}"},
            },
            {
                "op": "set-port-attribute",
                "args": {"port_id": "52:54:00:12:34:56", "path": "/extra/switch", "value": "sw1"},
            },
            {"op": "log", "args": {"msg": "{node.name} is a " + PRODUCT, "level": "warning"}},
        ],
    )
    result = apply_rules(
        [rule], node, INVENTORY, {"existing": 1}, traits=["CUSTOM_OLD"], ports=PORTS
    )
    assert result.failure is None, result.failure
    changes = result.node_changes
    assert changes["driver"] == "ipmi"
    assert changes["driver_info"] == {"ipmi_address": "10.0.0.5", "ipmi_port": 623}
    assert changes["properties"]["vendor"] == INVENTORY["system_vendor"]  # a dict kept a dict
    assert "memory_mb" not in changes["properties"] and changes["properties"]["cpus"] == 8
    assert capabilities(changes["properties"]["capabilities"]) == {"boot_mode": "uefi"}
    assert changes["extra"] == {"serial": "sn-ABC123", "tags": ["a", "b"]}
    assert changes["resource_class"] == "large"
    assert "name" not in changes and "instance_info" not in changes  # unchanged: not listed
    assert result.traits == ["CUSTOM_DELL"]
    assert result.plugin_data == {"existing": 1, "vendor": {"bmc": "10.0.0.5"}}
    assert result.port_changes == {PORTS[0]["uuid"]: {"extra": {"switch": "sw1"}}}
    assert [(line.level, line.text) for line in result.log] == [
        ("warning", "n1 is a PowerEdge R640")
    ]
    assert node["properties"]["capabilities"] == "boot_mode:bios,x:1"  # input untouched


def test_priority_order_and_later_rules_see_earlier_changes() -> None:
    first = _rule([], [{"op": "set-attribute", "args": {"path": "/extra/step", "value": 1}}],
                  priority=90)  # fmt: skip
    second = _rule(
        [{"op": "eq", "args": {"values": ["{node.extra[step]}", 1]}}],
        [{"op": "set-attribute", "args": {"path": "/extra/step", "value": 2}}],
        priority=10,
    )
    for rules in ([first, second], [second, first]):
        result = apply_rules(rules, NODE, INVENTORY, {})
        assert result.node_changes["extra"] == {"step": 2}
        assert len(result.applied) == 2


def test_fail_stops_everything_with_its_message() -> None:
    fail = validate_rule({
        "uuid": "0b3c5f9e-8e3c-4a43-9c55-2a3bcd4f0d11",
        "priority": 50,
        "conditions": [{"op": "lt", "args": {"values": ["{inventory[memory][physical_mb]}",
                                                        131072]}}],  # fmt: skip
        "actions": [{"op": "fail", "args": {"msg": "{node.name}: only "
                                            "{inventory[memory][physical_mb]} MiB of RAM"}}],
    })  # fmt: skip
    later = _rule([], [{"op": "add-trait", "args": {"name": "CUSTOM_NEVER"}}], priority=1)
    result = apply_rules([later, fail], NODE, INVENTORY, {})
    assert result.failure == "n1: only 65536 MiB of RAM"
    assert result.failed_rule == fail["uuid"]
    assert result.traits is None and result.applied == []


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"conditions": [{"op": "gt", "args": {"values": ["{inventory[disks]}", 1]}}]},
            "cannot order",
        ),
        (
            {
                "actions": [
                    {
                        "op": "set-attribute",
                        "args": {
                            "path": "/driver_info/ipmi_address",
                            "value": "https://{inventory[bmc_host]}",
                        },
                    }
                ]
            },
            "{inventory[bmc_host]} in 'https://{inventory[bmc_host]}': the inspection data has no",
        ),
        (
            {
                "actions": [
                    {
                        "op": "set-port-attribute",
                        "args": {
                            "port_id": "52:54:00:99:99:99",
                            "path": "/pxe_enabled",
                            "value": False,
                        },
                    }
                ]
            },
            "node has no port '52:54:00:99:99:99'",
        ),
        (
            {
                "actions": [
                    {
                        "op": "set-attribute",
                        "args": {"path": "{item}", "value": 1},
                        "loop": ["/provision_state"],
                    }
                ]
            },
            "'provision_state' cannot be set",
        ),
        (
            {
                "actions": [
                    {
                        "op": "set-attribute",
                        "args": {"path": "/driver", "value": "{inventory[cpu][count]}"},
                    }
                ]
            },
            "driver cannot be set to int 8",
        ),
        (
            {"actions": [{"op": "add-trait", "args": {"name": "{inventory[cpu][model_name]}"}}]},
            "invalid trait 'Intel Xeon Gold 6230'",
        ),
    ],
)
def test_a_rule_that_cannot_apply_fails_inspection_naming_it(
    rule: dict[str, Any], message: str
) -> None:
    body = {"uuid": "5f0c4bb1-9d7a-4d0e-9b8f-0a0d3f1b2c33",
            "actions": [{"op": "log", "args": {"msg": "x"}}], **rule}  # fmt: skip
    result = apply_rules([validate_rule(body)], NODE, INVENTORY, {}, ports=PORTS)
    assert result.failure is not None
    assert result.failure.startswith(f"Inspection rule {body['uuid']} failed: ")
    assert message in result.failure


def test_sensitive_rules_keep_no_log_lines() -> None:
    rule = _rule([], [{"op": "log", "args": {"msg": "secret {inventory[bmc_address]}"}}],
                 sensitive=True)  # fmt: skip
    result = apply_rules([rule], NODE, INVENTORY, {})
    assert len(result.applied) == 1 and result.log == []


def test_capabilities_parse_strings_and_objects() -> None:
    assert capabilities("a:1, b:x:y,,c") == {"a": "1", "b": "x:y", "c": ""}
    assert capabilities({"a": 1}) == {"a": "1"}
    assert capabilities(None) == {}
