"""Store: inspection rules (CRUD, pages, errors) and node traits, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from pxeforge.inspection_rules import validate_rule
from pxeforge.inventory.errors import (
    InspectionRuleAlreadyExists,
    InspectionRuleNotFound,
    InvalidParameterValue,
    NodeNotFound,
)
from pxeforge.inventory.store import Store

LOG = [{"op": "log", "args": {"msg": "hello {node.name}"}}]


def _rule(**fields: object) -> dict[str, object]:
    return validate_rule({"actions": LOG, **fields})


def test_rule_crud(store: Store) -> None:
    uuid = "7c0b7d0e-4a55-4d5c-9c3e-5e0c6b2f7a01"
    created = store.create_inspection_rule(
        _rule(uuid=uuid, priority=7, description="d", sensitive=True,
              conditions=[{"op": "is-true", "args": {"value": "{inventory[x]}"}}])
    )  # fmt: skip
    assert created.uuid == uuid and created.priority == 7 and created.sensitive
    assert created.actions == LOG and created.conditions[0]["op"] == "is-true"
    assert created.updated_at is None and created.created_at.tzinfo is not None
    assert store.get_inspection_rule(uuid.upper()) == created
    with pytest.raises(InspectionRuleAlreadyExists):
        store.create_inspection_rule(_rule(uuid=uuid))
    changed = store.update_inspection_rule(uuid, {"priority": 9, "description": None})
    assert (changed.priority, changed.description) == (9, None) and changed.updated_at
    with pytest.raises(InvalidParameterValue, match="cannot be changed: uuid"):
        store.update_inspection_rule(uuid, {"uuid": "x"})
    store.delete_inspection_rule(uuid)
    for call in (store.get_inspection_rule, store.delete_inspection_rule):
        with pytest.raises(InspectionRuleNotFound):
            call(uuid)
    with pytest.raises(InspectionRuleNotFound):
        store.get_inspection_rule("not-a-uuid")


def test_rule_pages_and_sorting(store: Store) -> None:
    made = [store.create_inspection_rule(_rule(priority=p)).uuid for p in (5, 1, 5, 3)]
    assert [r.uuid for r in store.list_inspection_rules()] == made
    by_priority = store.list_inspection_rules(sort_key="priority", sort_dir="desc")
    assert [r.priority for r in by_priority] == [5, 5, 3, 1]
    first = store.list_inspection_rules(sort_key="priority", limit=2)
    rest = store.list_inspection_rules(sort_key="priority", limit=2, marker=first[-1].uuid)
    assert [r.priority for r in first + rest] == [1, 3, 5, 5]
    assert len({r.uuid for r in first + rest}) == 4
    assert store.list_inspection_rules(phase="main", limit=0) == store.list_inspection_rules()
    assert store.list_inspection_rules(phase="other") == []
    with pytest.raises(InvalidParameterValue, match="sort_key value actions"):
        store.list_inspection_rules(sort_key="actions")
    with pytest.raises(InvalidParameterValue):
        store.list_inspection_rules(sort_dir="up")


def test_traits_are_set_read_and_go_with_the_node(store: Store) -> None:
    node = store.create_node("fake-hardware")
    assert store.get_traits(node.uuid) == []
    assert store.set_traits(node.uuid, ["CUSTOM_B", "CUSTOM_A", "CUSTOM_B"]) == [
        "CUSTOM_A", "CUSTOM_B"
    ]  # fmt: skip
    store.set_traits(node.id, ["CUSTOM_B", "CUSTOM_C"])
    assert store.get_traits(node.uuid) == ["CUSTOM_B", "CUSTOM_C"]
    other = store.create_node("fake-hardware")
    store.set_traits(other.uuid, ["CUSTOM_B"])
    store.delete_node(node.uuid)
    with pytest.raises(NodeNotFound):
        store.get_traits(node.uuid)
    assert store.get_traits(other.uuid) == ["CUSTOM_B"]
