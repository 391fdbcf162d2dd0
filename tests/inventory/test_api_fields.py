"""Store additions for the REST API (migration 0002): more node fields, filters, inventory."""

from __future__ import annotations

import pytest

from pxeforge.inventory.errors import (
    InstanceAssociated,
    InvalidParameterValue,
    NodeInventoryNotFound,
)
from pxeforge.inventory.store import Store


def test_api_fields_round_trip(store: Store) -> None:
    node = store.create_node(
        "fake-hardware",
        attributes={"resource_class": "baremetal", "description": "rack 4", "protected": False},
    )
    assert (node.resource_class, node.description, node.conductor_group) == (
        "baremetal",
        "rack 4",
        "",
    )
    assert node.protected is False and node.retired is False and node.network_data is None
    changed = store.update_node(node.uuid, {"owner": "team-a", "network_data": {"links": []}})
    assert changed.owner == "team-a" and changed.network_data == {"links": []}
    with pytest.raises(InvalidParameterValue):
        store.create_node("fake-hardware", attributes={"provision_state": "active"})
    with pytest.raises(InvalidParameterValue):
        store.create_node("fake-hardware", attributes={"driver_info": {}})


def test_instance_uuid_is_unique(store: Store) -> None:
    instance = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
    store.create_node("fake-hardware", attributes={"instance_uuid": instance})
    other = store.create_node("fake-hardware")
    with pytest.raises(InstanceAssociated):
        store.update_node(other.uuid, {"instance_uuid": instance})
    assert store.get_node(other.uuid).instance_uuid is None


def test_list_filters(store: Store) -> None:
    a = store.create_node("fake-hardware", attributes={"resource_class": "gold"})
    b = store.create_node(
        "fake-hardware",
        attributes={
            "resource_class": "silver",
            "instance_uuid": "00000000-0000-4000-8000-0000000000aa",
        },
    )
    assert [n.uuid for n in store.list_nodes(match={"resource_class": "gold"})] == [a.uuid]
    assert [n.uuid for n in store.list_nodes(associated=True)] == [b.uuid]
    assert [n["uuid"] for n in store.list_node_fields(["uuid"], associated=False)] == [a.uuid]
    with pytest.raises(InvalidParameterValue):
        store.list_nodes(match={"driver_info": {}})


def test_inventory(store: Store) -> None:
    node = store.create_node("fake-hardware")
    with pytest.raises(NodeInventoryNotFound) as info:
        store.get_inventory(node.uuid)
    assert info.value.code == 404
    store.save_inventory(node.uuid, {"cpu": {"count": 4}}, {"macs": ["52:54:00:00:00:01"]})
    assert store.get_inventory(node.uuid) == (
        {"cpu": {"count": 4}},
        {"macs": ["52:54:00:00:00:01"]},
    )
    store.save_inventory(node.uuid, {"cpu": {"count": 8}})
    assert store.get_inventory(node.uuid) == ({"cpu": {"count": 8}}, {})
    store.delete_node(node.uuid)
