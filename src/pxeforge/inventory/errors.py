"""Errors of the inventory, each with the HTTP status the API answers with.

    PxeforgeError                      (pxeforge.errors)
    └── InventoryError                 code 500: a bug or a broken database
        ├── Invalid                    400: the caller asked for something malformed
        │   ├── InvalidStateRequested  400: this action is not allowed in the node's state
        │   │   └── InvalidTransition  400: the same, raised by the state machine
        │   ├── InvalidMAC             400: not a MAC address
        │   ├── InvalidUUID            400: not a UUID
        │   ├── InvalidParameterValue  400: a bad value (unknown field, sort key, limit…)
        │   └── NodeNotLocked          400: release() by someone who does not hold the lock
        ├── NotFound                   404
        │   ├── NodeNotFound           404: no node with that UUID or name
        │   ├── NodeInventoryNotFound  404: no inventory stored for the node (yet)
        │   ├── InspectionRuleNotFound 404: no inspection rule with that UUID
        │   └── PortNotFound           404: no port with that UUID or address
        └── Conflict                   409: the request is fine but clashes with current data
            ├── NodeLocked             409: another conductor holds the node's lock; retry later
            ├── InvalidState           409: the node's state forbids this (delete, concurrent edit)
            ├── NodeAlreadyExists      409: UUID taken
            ├── DuplicateName          409: name taken
            ├── InspectionRuleAlreadyExists 409: inspection rule UUID taken
            ├── InstanceAssociated     409: instance_uuid already used by another node
            ├── PortAlreadyExists      409: port UUID taken
            └── MACAlreadyExists       409: a port with this MAC exists

Messages are Ironic's (``ironic/common/exception.py``) so clients that match on them keep
working. Every class carries ``code`` like Ironic's exceptions; the API turns it into the status.
Note that Ironic's ``InvalidState`` is a 409 and ``InvalidStateRequested`` a 400; we keep both.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import ClassVar

from pxeforge.errors import PxeforgeError

__all__ = [
    "Conflict",
    "DuplicateName",
    "InspectionRuleAlreadyExists",
    "InspectionRuleNotFound",
    "Invalid",
    "InstanceAssociated",
    "InvalidMAC",
    "InvalidParameterValue",
    "InvalidState",
    "InvalidStateRequested",
    "InvalidTransition",
    "InvalidUUID",
    "InventoryError",
    "MACAlreadyExists",
    "NodeAlreadyExists",
    "NodeInventoryNotFound",
    "NodeLocked",
    "NodeNotFound",
    "NodeNotLocked",
    "NotFound",
    "PortAlreadyExists",
    "PortNotFound",
]


class InventoryError(PxeforgeError):
    """Base of inventory errors; ``code`` is the HTTP status to answer with."""

    code: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR


class Invalid(InventoryError):
    """The caller's request is malformed or not allowed (HTTP 400)."""

    code: ClassVar[int] = HTTPStatus.BAD_REQUEST


class NotFound(InventoryError):
    """No such resource (HTTP 404)."""

    code: ClassVar[int] = HTTPStatus.NOT_FOUND


class Conflict(InventoryError):
    """The request clashes with the current data (HTTP 409)."""

    code: ClassVar[int] = HTTPStatus.CONFLICT


def _quoted(items: Iterable[str]) -> str:
    return ", ".join(f'"{i}"' for i in items)


class InvalidStateRequested(Invalid):
    """An action (verb or event) that the node's provision state does not allow.

    ``allowed`` lists what *is* allowed in that state, so the message can name it.
    """

    def __init__(
        self,
        action: str,
        state: str,
        *,
        node: str | None = None,
        allowed: Iterable[str] = (),
    ) -> None:
        self.action = str(action)
        self.state = state
        self.node = node
        self.allowed: tuple[str, ...] = tuple(str(a) for a in allowed)
        if node is not None:
            head = (
                f'The requested action "{self.action}" can not be performed on node "{node}" '
                f'while it is in state "{state}".'
            )
        else:
            head = (
                f'The requested action "{self.action}" can not be performed '
                f'while in state "{state}".'
            )
        if self.allowed:
            tail = f" Allowed in this state: {_quoted(self.allowed)}."
        else:
            tail = " No action is allowed in this state."
        super().__init__(head + tail)


class InvalidTransition(InvalidStateRequested):
    """Raised by `pxeforge.inventory.machine.advance`: no transition for (state, event)."""

    def with_node(self, node: str, allowed: Iterable[str] | None = None) -> InvalidTransition:
        """The same refusal naming the node (and optionally listing verbs instead of events)."""
        return InvalidTransition(
            self.action,
            self.state,
            node=node,
            allowed=self.allowed if allowed is None else allowed,
        )


class InvalidMAC(Invalid):
    def __init__(self, mac: object) -> None:
        super().__init__(f"Expected a MAC address but received {mac}.")
        self.mac = mac


class InvalidUUID(Invalid):
    def __init__(self, uuid: object) -> None:
        super().__init__(f"Expected a UUID but received {uuid}.")
        self.uuid = uuid


class InvalidParameterValue(Invalid):
    """A bad parameter; the message says which and why."""


class NodeNotLocked(Invalid):
    def __init__(self, node: str, holder: str) -> None:
        super().__init__(f"Node {node} found not to be locked on release (by {holder})")
        self.node = node
        self.holder = holder


class NodeNotFound(NotFound):
    def __init__(self, node: object) -> None:
        super().__init__(f"Node {node} could not be found.")
        self.node = node


class NodeInventoryNotFound(NotFound):
    def __init__(self, node: object) -> None:
        super().__init__(f"Node inventory for node {node} could not be found.")
        self.node = node


class PortNotFound(NotFound):
    def __init__(self, port: object) -> None:
        super().__init__(f"Port {port} could not be found.")
        self.port = port


class NodeLocked(Conflict):
    """Someone else holds the node's lock (``reservation``); retry after their operation."""

    def __init__(self, node: str, host: str | None) -> None:
        super().__init__(
            f"Node {node} is locked by host {host}, please retry after the current "
            "operation is completed."
        )
        self.node = node
        self.host = host


class InvalidState(Conflict):
    """The node's state forbids the operation (Ironic answers 409 for this one)."""


class NodeAlreadyExists(Conflict):
    def __init__(self, uuid: str) -> None:
        super().__init__(f"A node with UUID {uuid} already exists.")
        self.uuid = uuid


class DuplicateName(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"A node with name {name} already exists.")
        self.name = name


class InstanceAssociated(Conflict):
    def __init__(self, instance_uuid: str, node: str) -> None:
        super().__init__(
            f"Instance {instance_uuid} is already associated with a node, it cannot be "
            f"associated with this other node {node}"
        )
        self.instance_uuid = instance_uuid
        self.node = node


class PortAlreadyExists(Conflict):
    def __init__(self, uuid: str) -> None:
        super().__init__(f"A port with UUID {uuid} already exists.")
        self.uuid = uuid


class MACAlreadyExists(Conflict):
    def __init__(self, mac: str) -> None:
        super().__init__(f"A port with MAC address {mac} already exists.")
        self.mac = mac


class InspectionRuleNotFound(NotFound):
    def __init__(self, rule: object) -> None:
        super().__init__(f"Inspection rule {rule} could not be found.")
        self.rule = rule


class InspectionRuleAlreadyExists(Conflict):
    def __init__(self, uuid: str) -> None:
        super().__init__(f"An inspection rule with UUID {uuid} already exists.")
        self.uuid = uuid
