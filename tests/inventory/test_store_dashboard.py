"""The store reads the dashboard needs: search, counts per state, MACs of a page of nodes,
which MACs a port names — on SQLite and PostgreSQL."""

from __future__ import annotations

from pxeforge.inventory.store import Store


def _enroll(store: Store) -> dict[str, int]:
    ids = {}
    for name, macs in (
        ("rack1-node01", ["52:54:00:aa:00:01", "52:54:00:aa:00:02"]),
        ("rack1-node02", ["52:54:00:aa:01:01"]),
        ("Rack2_Node%1", ["52:54:00:bb:00:01"]),
        (None, []),
    ):
        node = store.create_node("fake-hardware", name=name)
        ids[name or node.uuid] = node.id
        for mac in macs:
            store.create_port(node.id, mac)
    return ids


def _names(rows: list[dict[str, object]]) -> list[object]:
    return [r["name"] for r in rows]


def test_search_name_uuid_and_mac(store: Store) -> None:
    ids = _enroll(store)
    fields = ["uuid", "name"]
    assert _names(store.list_node_fields(fields, search="rack1")) == [
        "rack1-node01",
        "rack1-node02",
    ]
    # any case; LIKE wildcards in the text are literal characters
    assert _names(store.list_node_fields(fields, search="RACK2")) == ["Rack2_Node%1"]
    assert _names(store.list_node_fields(fields, search="_node%")) == ["Rack2_Node%1"]
    assert store.list_node_fields(fields, search="%") == [
        {"uuid": store.get_node(ids["Rack2_Node%1"]).uuid, "name": "Rack2_Node%1"}
    ]
    # a UUID's start (any case), a MAC's start (':' or '-'), a whole MAC
    nameless = next(k for k in ids if k.count("-") == 4)
    assert _names(store.list_node_fields(fields, search=nameless[:8].upper())) == [None]
    assert _names(store.list_node_fields(fields, search="52-54-00-AA-00")) == ["rack1-node01"]
    assert _names(store.list_node_fields(fields, search="52:54:00:aa:01:01")) == ["rack1-node02"]
    assert _names(store.list_node_fields(fields, search="52:54:00")) == [
        "rack1-node01",
        "rack1-node02",
        "Rack2_Node%1",
    ]
    assert store.list_node_fields(fields, search="no-such-thing") == []
    # combined with a state filter, paging and sorting
    assert store.list_node_fields(fields, search="rack", provision_state="active") == []
    first = store.list_node_fields(fields, search="rack", limit=2, sort_key="name")
    rest = store.list_node_fields(
        fields, search="rack", limit=2, sort_key="name", marker=first[-1]["uuid"]
    )
    assert _names(first + rest) == sorted(["rack1-node01", "rack1-node02", "Rack2_Node%1"])


def test_count_nodes_by_state(store: Store) -> None:
    assert store.count_nodes_by_state() == {}
    _enroll(store)
    gone = store.create_node("fake-hardware", provision_state="manageable")
    store.create_node("fake-hardware", provision_state="available")
    store.create_node("fake-hardware", provision_state="available")
    assert store.count_nodes_by_state() == {"enroll": 4, "available": 2, "manageable": 1}
    store.delete_node(gone.id)
    assert store.count_nodes_by_state() == {"enroll": 4, "available": 2}


def test_node_addresses_one_map_for_a_page(store: Store) -> None:
    ids = _enroll(store)
    found = store.node_addresses(ids.values())
    assert found == {
        ids["rack1-node01"]: ["52:54:00:aa:00:01", "52:54:00:aa:00:02"],
        ids["rack1-node02"]: ["52:54:00:aa:01:01"],
        ids["Rack2_Node%1"]: ["52:54:00:bb:00:01"],
    }
    assert store.node_addresses([]) == {}
    assert store.node_addresses([10_000]) == {}


def test_port_owners(store: Store) -> None:
    ids = _enroll(store)
    owner = store.get_node(ids["rack1-node01"]).uuid
    found = store.port_owners(["52-54-00-AA-00-02", "52:54:00:ff:ff:ff", "not a mac", ""])
    assert found == {"52:54:00:aa:00:02": owner}
    assert store.port_owners([]) == {}


def test_port_owners_more_than_one_chunk(store: Store) -> None:
    node = store.create_node("fake-hardware")
    known = [f"52:54:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(0, 1200, 200)]
    for mac in known:
        store.create_port(node.id, mac)
    asked = [f"52:54:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(1200)]
    assert store.port_owners(asked) == dict.fromkeys(known, node.uuid)
