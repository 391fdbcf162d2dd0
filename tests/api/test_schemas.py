"""JSON-Patch (RFC 6902 appendix A examples for add/remove/replace) and field validation."""

from __future__ import annotations

from typing import Any

import pytest

from pxeforge.api.errors import BadRequest, NotAcceptable
from pxeforge.api.schemas import apply_patch, check_node_create, node_patch_changes
from pxeforge.api.versions import MAX_VERSION, Version


@pytest.mark.parametrize(
    ("doc", "patch", "expected"),
    [
        ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}],
         {"baz": "qux", "foo": "bar"}),  # A.1
        ({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
         {"foo": ["bar", "qux", "baz"]}),  # A.2
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),  # A.3
        ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}],
         {"foo": ["bar", "baz"]}),  # A.4
        ({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
         {"baz": "boo", "foo": "bar"}),  # A.5
        ({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
         {"foo": "bar", "child": {"grandchild": {}}}),  # A.10
        ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
         {"foo": ["bar", ["abc", "def"]]}),  # A.16
        ({"a/b": 1, "m~n": 2}, [{"op": "replace", "path": "/a~1b", "value": 3},
                                {"op": "remove", "path": "/m~0n"}], {"a/b": 3}),  # RFC 6901
    ],
)  # fmt: skip
def test_rfc6902_examples(doc: Any, patch: Any, expected: Any) -> None:
    before = repr(doc)
    assert apply_patch(doc, patch) == expected
    assert repr(doc) == before  # the input is not modified


@pytest.mark.parametrize(
    "patch",
    [
        [{"op": "add", "path": "/baz/bat", "value": "qux"}],  # A.12: parent missing
        [{"op": "remove", "path": "/missing"}],
        [{"op": "replace", "path": "/foo/5", "value": 1}],
        [{"op": "add", "path": "/foo/01", "value": 1}],
        [{"op": "test", "path": "/foo", "value": 1}],
    ],
)
def test_rfc6902_errors(patch: Any) -> None:
    with pytest.raises(BadRequest):
        apply_patch({"foo": [1]}, patch)


def test_node_create_checks() -> None:
    body = check_node_create(
        {"driver": "ipmi", "name": "a.b-c_d~e", "conductor_group": "Rack-1"}, MAX_VERSION
    )
    assert body == {"driver": "ipmi", "name": "a.b-c_d~e", "conductor_group": "rack-1"}
    with pytest.raises(NotAcceptable):
        check_node_create({"driver": "ipmi", "owner": "x"}, Version(1, 49))
    with pytest.raises(BadRequest, match="chassis"):
        chassis = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        check_node_create({"driver": "ipmi", "chassis_uuid": chassis}, MAX_VERSION)


def test_patch_changes_only_what_changed() -> None:
    view = {"driver": "ipmi", "extra": {"a": 1}, "name": "x", "description": None}
    changes = node_patch_changes(
        view,
        [{"op": "replace", "path": "/name", "value": "x"}, {"op": "add", "path": "/extra/b",
                                                             "value": 2}],
        MAX_VERSION,
    )  # fmt: skip
    assert changes == {"extra": {"a": 1, "b": 2}}
