"""The inventory store: the only module that reads or writes the database.

Theory of operation:

* Every public method is **one transaction** and returns frozen records
  (`pxeforge.inventory.records`), never live ORM objects. A method that fails leaves the
  database as it was. Writes start as writers (``BEGIN IMMEDIATE`` on SQLite, see `db`). The
  sweeps over many nodes (`recover_stuck`, `expire_waits`) lock, change and unlock one node at
  a time, each step its own transaction.
* **Node locks** are Ironic's ``reservation`` column. `acquire` is one conditional
  ``UPDATE nodes SET reservation=:holder WHERE id=:id AND reservation IS NULL``; its row count
  says who won, atomically on SQLite and PostgreSQL alike, so two pxeforge processes sharing a
  PostgreSQL database never work on one node at once. Locks are not re-entrant. Writes to a node
  (`update_node`, `delete_node`, port changes) are refused with `NodeLocked` while someone else
  holds its lock; `save_transition` requires the caller to hold it.
* **Holders** are conductor names. A process registers itself in ``conductors`` and heartbeats
  (`register_conductor`, `heartbeat`); a holder whose heartbeat is older than
  ``heartbeat_timeout`` (Ironic's ``[conductor]heartbeat_timeout``, 60 s) or that never
  registered is dead. `recover_stuck` — called once at start-up, before any work — takes the
  dead holders' locks over and applies ``fail`` to nodes left in a state that cannot be resumed
  (`STUCK_STATES_TREATED_AS_FAIL`), as Ironic's conductor does when it starts.
* **Wait states time out**: `expire_waits` fails nodes that waited too long in
  ``wait call-back``, ``inspect wait`` or ``clean wait`` (`WaitTimeouts`, Ironic's defaults).
* **Pagination** is Ironic's: ``limit`` (at most `MAX_LIMIT`) and ``marker`` (the UUID of the last
  item of the previous page), keyset-based on ``(sort_key, id)``.
* **History observers** (`Store.observers`): every history record — `add_history`, and the
  records a `save_transition` writes with its state change — is told to each observer as a
  `HistoryNotice` once its transaction has committed (the live timeline and the metrics
  listen). It runs in the writer's thread; an observer that raises is logged, never the
  writer's problem.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Engine,
    and_,
    delete,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from pxeforge.boot.machine import normalize_mac
from pxeforge.inventory import db
from pxeforge.inventory.errors import (
    DuplicateName,
    InspectionRuleAlreadyExists,
    InspectionRuleNotFound,
    InstanceAssociated,
    InvalidParameterValue,
    InvalidState,
    InvalidUUID,
    MACAlreadyExists,
    NodeAlreadyExists,
    NodeInventoryNotFound,
    NodeLocked,
    NodeNotFound,
    NodeNotLocked,
    PortAlreadyExists,
    PortNotFound,
)
from pxeforge.inventory.errors import InvalidMAC as InvalidMACError
from pxeforge.inventory.machine import advance, next_target
from pxeforge.inventory.models import (
    Conductor,
    InspectionRule,
    Node,
    NodeHistory,
    NodeInventory,
    NodeTrait,
    Port,
)
from pxeforge.inventory.records import (
    NODE_FIELDS,
    HistoryRecord,
    InspectionRuleRecord,
    NodeRecord,
    PortRecord,
)
from pxeforge.inventory.states import (
    ALL_STATES,
    CLEANWAIT,
    DELETE_ALLOWED_STATES,
    DEPLOYWAIT,
    ENROLL,
    INSPECTWAIT,
    SEVERITY_ERROR,
    SEVERITY_INFO,
    STUCK_STATES_TREATED_AS_FAIL,
    Event,
    HistoryType,
)

__all__ = [
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "KEEP",
    "MAX_LIMIT",
    "HistoryEntry",
    "HistoryNotice",
    "Keep",
    "Recovery",
    "Store",
    "WaitTimeouts",
]

log = logging.getLogger(__name__)

MAX_LIMIT: Final = 1000
"""Largest page (Ironic's ``[api]max_limit``); also the page size when no limit is given."""

_IN_CHUNK: Final = 500
"""Most values in one ``IN (…)`` (SQLite caps bound parameters per statement)."""

DEFAULT_HEARTBEAT_TIMEOUT: Final = 60.0
"""Seconds without a heartbeat after which a conductor is dead (Ironic's default)."""

# Columns nobody may set through update_node / save_transition changes.
_MANAGED_FIELDS: Final = frozenset(
    {
        "id",
        "uuid",
        "created_at",
        "updated_at",
        "reservation",
        "provision_state",
        "target_provision_state",
        "provision_updated_at",
    }
)
_JSON_NODE_FIELDS: Final = frozenset(
    {
        "driver_info",
        "properties",
        "instance_info",
        "driver_internal_info",
        "extra",
        "network_data",
        "raid_config",
        "target_raid_config",
    }
)
_NULLABLE_JSON_NODE_FIELDS: Final = frozenset({"network_data", "raid_config", "target_raid_config"})
_MATCHABLE_NODE_FIELDS: Final = frozenset(
    {"resource_class", "conductor_group", "owner", "lessee", "fault", "retired", "shard"}
)
_SORT_KEYS: Final = tuple(f for f in NODE_FIELDS if f not in _JSON_NODE_FIELDS)
_NODE_COLUMNS: Final = tuple(getattr(Node, f) for f in NODE_FIELDS)  # NodeRecord field order
_CREATE_ARGUMENTS: Final = frozenset(
    {
        "name",
        "driver",
        "driver_info",
        "properties",
        "instance_info",
        "driver_internal_info",
        "extra",
        "power_state",
        "maintenance",
        "maintenance_reason",
        "boot_interface",
        "deploy_interface",
        "power_interface",
        "management_interface",
    }
)
_PORT_CHANGEABLE: Final = frozenset(
    {"address", "node", "pxe_enabled", "local_link_connection", "extra"}
)


class Keep:
    """Type of `KEEP`: "leave this column as it is"."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = Keep()


@dataclass(frozen=True, slots=True)
class WaitTimeouts:
    """How long a node may wait for its ramdisk, in seconds (0: forever). Ironic's defaults."""

    deploy_callback_timeout: float = 1800.0  # [conductor]deploy_callback_timeout
    inspect_wait_timeout: float = 1800.0  # [conductor]inspect_wait_timeout
    clean_callback_timeout: float = 1800.0  # [conductor]clean_callback_timeout


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A history record to write together with a state change."""

    event: str
    event_type: str | None = HistoryType.TRANSITION
    severity: str = SEVERITY_INFO


@dataclass(frozen=True, slots=True)
class HistoryNotice:
    """Committed history records of one node, as `Store.observers` get them."""

    node: str  # the node's UUID
    records: tuple[HistoryRecord, ...]
    from_state: str | None = None  # save_transition: the provision state left…
    to_state: str | None = None  # …the one entered (may be the same)
    seconds_in_state: float | None = None  # how long the node had been in ``from_state``
    last_error: str | None = None  # save_transition: the node's last_error afterwards


@dataclass(frozen=True, slots=True)
class Recovery:
    """One node `recover_stuck` or `expire_waits` acted on."""

    uuid: str
    previous_state: str
    provision_state: str
    previous_holder: str | None


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _check_uuid(value: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidUUID(value) from None


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _mac(address: str) -> str:
    try:
        return normalize_mac(address)
    except (ValueError, AttributeError):
        raise InvalidMACError(address) from None


def _node_where(ident: str | int) -> ColumnElement[bool]:
    if isinstance(ident, int):
        return Node.id == ident
    if _is_uuid(ident):
        return Node.uuid == str(uuidlib.UUID(ident))
    return Node.name == ident


def _search_where(text: str) -> ColumnElement[bool]:
    """Nodes named like ``text``, or whose UUID or a port's MAC starts with it."""
    text = text.strip().lower()
    mac = text.replace("-", ":")
    return or_(
        Node.name.icontains(text, autoescape=True),
        Node.uuid.startswith(text, autoescape=True),
        Node.id.in_(select(Port.node_id).where(Port.address.startswith(mac, autoescape=True))),
    )


def _unique_violation(exc: IntegrityError, table: str, column: str) -> bool:
    text = str(exc.orig).lower()
    return f"{table}.{column}" in text or f"uq_{table}_{column}" in text


def _check_changes(changes: Mapping[str, Any]) -> None:
    unknown = sorted(set(changes) - set(NODE_FIELDS))
    if unknown:
        raise InvalidParameterValue(f"Unknown node field(s): {', '.join(unknown)}")
    managed = sorted(set(changes) & _MANAGED_FIELDS)
    if managed:
        raise InvalidParameterValue(f"Node field(s) managed by pxeforge: {', '.join(managed)}")
    for name in _JSON_NODE_FIELDS & set(changes):
        if changes[name] is None and name in _NULLABLE_JSON_NODE_FIELDS:
            continue
        if not isinstance(changes[name], dict):
            raise InvalidParameterValue(f"Node field {name} must be a JSON object")


class Store:
    """CRUD, locks and recovery over one database (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = db.write_engine(engine)
        self.observers: list[Callable[[HistoryNotice], object]] = []

    def _notify(self, notice: HistoryNotice) -> None:
        for observer in self.observers:
            try:
                observer(notice)
            except Exception:
                log.exception("history observer %r failed", observer)

    @classmethod
    def connect(cls, url: str, *, migrate: bool = True) -> Store:
        """Open (and by default migrate) ``url``; `close` disposes of the engine."""
        return cls(db.connect(url, migrate=migrate))

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with Session(self.engine) as session, session.begin():
            yield session

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with Session(self._writer) as session, session.begin():
            yield session

    @staticmethod
    def _node(session: Session, ident: str | int) -> Node:
        row = session.scalars(select(Node).where(_node_where(ident))).one_or_none()
        if row is None:
            raise NodeNotFound(ident)
        return row

    # -- nodes ------------------------------------------------------------------------------

    def create_node(
        self,
        driver: str,
        *,
        uuid: str | None = None,
        name: str | None = None,
        driver_info: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        instance_info: Mapping[str, Any] | None = None,
        driver_internal_info: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        provision_state: str = ENROLL,
        power_state: str | None = None,
        maintenance: bool = False,
        maintenance_reason: str | None = None,
        boot_interface: str | None = None,
        deploy_interface: str | None = None,
        power_interface: str | None = None,
        management_interface: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> NodeRecord:
        """Enroll a node (in ``enroll`` unless told otherwise). Duplicate UUID or name: 409.

        ``attributes``: other node fields to set at creation (``resource_class``,
        ``description``, ``network_interface``…; not the provision-state fields).
        """
        more = dict(attributes or {})
        _check_changes(more)
        clash = sorted(set(more) & _CREATE_ARGUMENTS)
        if clash:
            raise InvalidParameterValue(f"Pass {', '.join(clash)} as arguments, not attributes")
        node_uuid = _check_uuid(uuid) if uuid is not None else str(uuidlib.uuid4())
        if name is not None and _is_uuid(name):
            raise InvalidParameterValue(f"A node name cannot be a UUID: {name}")
        if provision_state not in ALL_STATES:
            raise InvalidParameterValue(f"Unknown provision state {provision_state!r}")
        row = Node(
            uuid=node_uuid,
            name=name,
            driver=driver,
            driver_info=dict(driver_info or {}),
            properties=dict(properties or {}),
            instance_info=dict(instance_info or {}),
            driver_internal_info=dict(driver_internal_info or {}),
            extra=dict(extra or {}),
            provision_state=provision_state,
            target_provision_state=None,
            power_state=power_state,
            target_power_state=None,
            maintenance=maintenance,
            maintenance_reason=maintenance_reason,
            last_error=None,
            reservation=None,
            boot_interface=boot_interface,
            deploy_interface=deploy_interface,
            power_interface=power_interface,
            management_interface=management_interface,
            created_at=_now(now),
            **more,
        )
        try:
            with self._writing() as session:
                session.add(row)
                session.flush()
                return NodeRecord.from_row(row)
        except IntegrityError as exc:
            if _unique_violation(exc, "nodes", "name"):
                raise DuplicateName(str(name)) from None
            if _unique_violation(exc, "nodes", "instance_uuid"):
                raise InstanceAssociated(str(more.get("instance_uuid")), node_uuid) from None
            raise NodeAlreadyExists(node_uuid) from None

    def get_node(self, ident: str | int) -> NodeRecord:
        """The node with this UUID, name or numeric id; `NodeNotFound` otherwise."""
        with self._reading() as session:
            row = session.execute(select(*_NODE_COLUMNS).where(_node_where(ident))).one_or_none()
            if row is None:
                raise NodeNotFound(ident)
            return NodeRecord(*row)

    def _list_query(
        self,
        session: Session,
        *,
        provision_state: str | Collection[str] | None,
        maintenance: bool | None,
        driver: str | None,
        power_state: str | None,
        reserved: bool | None,
        reservation: str | None,
        associated: bool | None,
        match: Mapping[str, Any] | None,
        limit: int | None,
        marker: str | None,
        sort_key: str,
        sort_dir: str,
        search: str | None = None,
    ) -> tuple[list[ColumnElement[bool]], list[Any], int]:
        if sort_key not in _SORT_KEYS:
            raise InvalidParameterValue(
                f"The sort_key value {sort_key} is an invalid field for sorting"
            )
        if sort_dir not in ("asc", "desc"):
            raise InvalidParameterValue(
                f"Invalid sort direction: {sort_dir}. Acceptable values are 'asc' or 'desc'"
            )
        if limit is not None and limit <= 0:
            raise InvalidParameterValue("Limit must be positive")
        page = MAX_LIMIT if limit is None else min(limit, MAX_LIMIT)
        where: list[ColumnElement[bool]] = []
        if provision_state is not None:
            states = [provision_state] if isinstance(provision_state, str) else provision_state
            where.append(Node.provision_state.in_(list(states)))
        if maintenance is not None:
            where.append(Node.maintenance == maintenance)
        if driver is not None:
            where.append(Node.driver == driver)
        if power_state is not None:
            where.append(Node.power_state == power_state)
        if reserved is not None:
            where.append(Node.reservation.is_not(None) if reserved else Node.reservation.is_(None))
        if reservation is not None:
            where.append(Node.reservation == reservation)
        if associated is not None:
            where.append(
                Node.instance_uuid.is_not(None) if associated else Node.instance_uuid.is_(None)
            )
        for name, value in (match or {}).items():
            if name not in _MATCHABLE_NODE_FIELDS:
                raise InvalidParameterValue(f"Cannot filter nodes by {name}")
            where.append(getattr(Node, name) == value)
        if search:
            where.append(_search_where(search))
        column = getattr(Node, sort_key)
        ascending = sort_dir == "asc"
        if marker is not None:
            mrow = session.execute(select(column, Node.id).where(Node.uuid == marker)).one_or_none()
            if mrow is None:
                raise NodeNotFound(marker)
            where.append(self._after(column, mrow[0], mrow[1], ascending))
        # NULLs sort first ascending and last descending, the same on SQLite and PostgreSQL.
        if ascending:
            order = [column.asc().nulls_first(), Node.id.asc()]
        else:
            order = [column.desc().nulls_last(), Node.id.desc()]
        return where, order, page

    @staticmethod
    def _after(
        column: InstrumentedAttribute[Any], value: Any, marker_id: int, ascending: bool
    ) -> ColumnElement[bool]:
        """Rows strictly after the marker row in ``(column, id)`` order (NULLs smallest)."""
        if column is Node.id:
            return Node.id > marker_id if ascending else Node.id < marker_id
        if ascending:
            if value is None:
                return or_(and_(column.is_(None), Node.id > marker_id), column.is_not(None))
            return or_(column > value, and_(column == value, Node.id > marker_id))
        if value is None:
            return and_(column.is_(None), Node.id < marker_id)
        return or_(column < value, and_(column == value, Node.id < marker_id), column.is_(None))

    def list_nodes(
        self,
        *,
        provision_state: str | Collection[str] | None = None,
        maintenance: bool | None = None,
        driver: str | None = None,
        power_state: str | None = None,
        reserved: bool | None = None,
        reservation: str | None = None,
        associated: bool | None = None,
        match: Mapping[str, Any] | None = None,
        limit: int | None = None,
        marker: str | None = None,
        sort_key: str = "id",
        sort_dir: str = "asc",
    ) -> list[NodeRecord]:
        """One page of nodes matching every filter given (Ironic's limit/marker paging).

        ``associated``: only nodes with (True) or without (False) an ``instance_uuid``;
        ``match``: equality filters on ``resource_class``, ``conductor_group``, ``owner``,
        ``lessee``, ``fault``, ``retired`` or ``shard``.
        """
        with self._reading() as session:
            where, order, page = self._list_query(
                session,
                provision_state=provision_state,
                maintenance=maintenance,
                driver=driver,
                power_state=power_state,
                reserved=reserved,
                reservation=reservation,
                associated=associated,
                match=match,
                limit=limit,
                marker=marker,
                sort_key=sort_key,
                sort_dir=sort_dir,
            )
            # plain column rows, not ORM entities: several times faster for big pages
            rows = session.execute(
                select(*_NODE_COLUMNS).where(*where).order_by(*order).limit(page)
            )
            return [NodeRecord(*row) for row in rows]

    def list_node_fields(
        self,
        fields: Sequence[str],
        *,
        provision_state: str | Collection[str] | None = None,
        maintenance: bool | None = None,
        driver: str | None = None,
        power_state: str | None = None,
        reserved: bool | None = None,
        reservation: str | None = None,
        associated: bool | None = None,
        match: Mapping[str, Any] | None = None,
        limit: int | None = None,
        marker: str | None = None,
        sort_key: str = "id",
        sort_dir: str = "asc",
        search: str | None = None,
    ) -> list[dict[str, Any]]:
        """Like `list_nodes`, but reads only ``fields`` and returns one dict per node;
        ``search`` (the dashboard's box) keeps nodes whose name contains it (any case), whose
        UUID starts with it, or with a port whose MAC starts with it."""
        bad = [f for f in fields if f not in NODE_FIELDS]
        if bad or not fields:
            raise InvalidParameterValue(f'Field(s) "{", ".join(bad)}" are not valid')
        names = list(dict.fromkeys(fields))
        with self._reading() as session:
            where, order, page = self._list_query(
                session,
                provision_state=provision_state,
                maintenance=maintenance,
                driver=driver,
                power_state=power_state,
                reserved=reserved,
                reservation=reservation,
                associated=associated,
                match=match,
                limit=limit,
                marker=marker,
                sort_key=sort_key,
                sort_dir=sort_dir,
                search=search,
            )
            columns = [getattr(Node, name) for name in names]
            result = session.execute(select(*columns).where(*where).order_by(*order).limit(page))
            return [dict(zip(names, row, strict=True)) for row in result]

    def update_node(
        self,
        ident: str | int,
        changes: Mapping[str, Any],
        *,
        holder: str | None = None,
        now: datetime | None = None,
        touch_provisioning: bool = False,
    ) -> NodeRecord:
        """Set node fields. Refused (`NodeLocked`) if someone other than ``holder`` holds the
        lock; provision-state fields change only through `save_transition`.
        ``touch_provisioning``: also move ``provision_updated_at`` to now (Ironic's
        ``touch_provisioning``: an agent heartbeat in a wait state restarts its timeout)."""
        _check_changes(changes)
        if changes.get("name") is not None and _is_uuid(changes["name"]):
            raise InvalidParameterValue(f"A node name cannot be a UUID: {changes['name']}")
        touched = {"provision_updated_at": _now(now)} if touch_provisioning else {}
        try:
            with self._writing() as session:
                row = self._node(session, ident)
                free = Node.reservation.is_(None)
                may_write = free if holder is None else or_(free, Node.reservation == holder)
                result = session.execute(
                    update(Node)
                    .where(Node.id == row.id, may_write)
                    .values(**changes, updated_at=_now(now), **touched)
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(result) != 1:
                    raise NodeLocked(row.uuid, row.reservation)
                session.expire(row)
                return NodeRecord.from_row(self._node(session, row.id))
        except IntegrityError as exc:
            if _unique_violation(exc, "nodes", "name"):
                raise DuplicateName(str(changes.get("name"))) from None
            if _unique_violation(exc, "nodes", "instance_uuid"):
                raise InstanceAssociated(str(changes.get("instance_uuid")), str(ident)) from None
            raise

    def delete_node(self, ident: str | int, *, holder: str | None = None) -> None:
        """Delete a node with its ports and history. Only in `DELETE_ALLOWED_STATES` unless in
        maintenance (`InvalidState`, 409); never while someone else holds its lock."""
        with self._writing() as session:
            row = self._node(session, ident)
            if not row.maintenance and row.provision_state not in DELETE_ALLOWED_STATES:
                valid = ", ".join(DELETE_ALLOWED_STATES)
                raise InvalidState(
                    f'Can not delete node "{row.uuid}" while it is in provision state '
                    f'"{row.provision_state}". Valid provision states to perform deletion '
                    f'are: "{valid}", or set the node into maintenance mode'
                )
            free = Node.reservation.is_(None)
            may_write = free if holder is None else or_(free, Node.reservation == holder)
            result = session.execute(
                delete(Node)
                .where(Node.id == row.id, may_write)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) != 1:
                raise NodeLocked(row.uuid, row.reservation)

    # -- ports ------------------------------------------------------------------------------

    def _port(self, session: Session, ident: str) -> tuple[Port, str]:
        if _is_uuid(ident):
            where = Port.uuid == str(uuidlib.UUID(ident))
        else:
            where = Port.address == _mac(ident)
        found = session.execute(
            select(Port, Node.uuid).join(Node, Port.node_id == Node.id).where(where)
        ).one_or_none()
        if found is None:
            raise PortNotFound(ident)
        return found[0], found[1]

    @staticmethod
    def _check_node_free(node: Node, holder: str | None) -> None:
        if node.reservation is not None and node.reservation != holder:
            raise NodeLocked(node.uuid, node.reservation)

    def create_port(
        self,
        node: str | int,
        address: str,
        *,
        uuid: str | None = None,
        pxe_enabled: bool = True,
        local_link_connection: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> PortRecord:
        """Add a port (a MAC) to a node. Duplicate MAC: `MACAlreadyExists` (409)."""
        mac = _mac(address)
        port_uuid = _check_uuid(uuid) if uuid is not None else str(uuidlib.uuid4())
        try:
            with self._writing() as session:
                node_row = self._node(session, node)
                row = Port(
                    uuid=port_uuid,
                    address=mac,
                    node_id=node_row.id,
                    pxe_enabled=pxe_enabled,
                    local_link_connection=dict(local_link_connection or {}),
                    extra=dict(extra or {}),
                    created_at=_now(now),
                )
                session.add(row)
                session.flush()
                return PortRecord.from_row(row, node_row.uuid)
        except IntegrityError as exc:
            if _unique_violation(exc, "ports", "address"):
                raise MACAlreadyExists(mac) from None
            raise PortAlreadyExists(port_uuid) from None

    def get_port(self, ident: str) -> PortRecord:
        """The port with this UUID or MAC address; `PortNotFound` otherwise."""
        with self._reading() as session:
            row, node_uuid = self._port(session, ident)
            return PortRecord.from_row(row, node_uuid)

    def list_ports(
        self,
        *,
        node: str | int | None = None,
        address: str | None = None,
        pxe_enabled: bool | None = None,
        limit: int | None = None,
        marker: str | None = None,
        sort_dir: str = "asc",
    ) -> list[PortRecord]:
        """One page of ports (by id), optionally of one node or one MAC."""
        if limit is not None and limit <= 0:
            raise InvalidParameterValue("Limit must be positive")
        if sort_dir not in ("asc", "desc"):
            raise InvalidParameterValue(f"Invalid sort direction: {sort_dir}")
        page = MAX_LIMIT if limit is None else min(limit, MAX_LIMIT)
        with self._reading() as session:
            query = select(Port, Node.uuid).join(Node, Port.node_id == Node.id)
            if node is not None:
                query = query.where(Port.node_id == self._node(session, node).id)
            if address is not None:
                query = query.where(Port.address == _mac(address))
            if pxe_enabled is not None:
                query = query.where(Port.pxe_enabled == pxe_enabled)
            if marker is not None:
                marker_id = session.scalar(select(Port.id).where(Port.uuid == marker))
                if marker_id is None:
                    raise PortNotFound(marker)
                after = Port.id > marker_id if sort_dir == "asc" else Port.id < marker_id
                query = query.where(after)
            query = query.order_by(Port.id.asc() if sort_dir == "asc" else Port.id.desc())
            rows = session.execute(query.limit(page)).all()
            return [PortRecord.from_row(row, node_uuid) for row, node_uuid in rows]

    def update_port(
        self,
        ident: str,
        changes: Mapping[str, Any],
        *,
        holder: str | None = None,
        now: datetime | None = None,
    ) -> PortRecord:
        """Change a port (``address``, ``node``, ``pxe_enabled``, ``local_link_connection``,
        ``extra``). Needs the node's lock to be free or held by ``holder``."""
        unknown = sorted(set(changes) - _PORT_CHANGEABLE)
        if unknown:
            raise InvalidParameterValue(f"Port field(s) cannot be changed: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        if "address" in changes:
            values["address"] = _mac(changes["address"])
        for name in ("pxe_enabled", "local_link_connection", "extra"):
            if name in changes:
                values[name] = changes[name]
        try:
            with self._writing() as session:
                row, _node_uuid = self._port(session, ident)
                owner = session.get_one(Node, row.node_id)
                self._check_node_free(owner, holder)
                if "node" in changes:
                    new_owner = self._node(session, changes["node"])
                    self._check_node_free(new_owner, holder)
                    values["node_id"] = new_owner.id
                for name, value in values.items():
                    setattr(row, name, value)
                row.updated_at = _now(now)
                session.flush()
                node_uuid = session.get_one(Node, row.node_id).uuid
                return PortRecord.from_row(row, node_uuid)
        except IntegrityError as exc:
            if _unique_violation(exc, "ports", "address"):
                raise MACAlreadyExists(values["address"]) from None
            raise

    def delete_port(self, ident: str, *, holder: str | None = None) -> None:
        """Delete a port; needs its node's lock to be free or held by ``holder``."""
        with self._writing() as session:
            row, _node_uuid = self._port(session, ident)
            self._check_node_free(session.get_one(Node, row.node_id), holder)
            session.delete(row)

    def node_macs(self, ident: str | int) -> tuple[str, list[str]]:
        """``(uuid, MACs of its ports)`` of a node (PXE-enabled ports first), one read."""
        with self._reading() as session:
            row = self._node(session, ident)
            macs = session.execute(
                select(Port.address)
                .where(Port.node_id == row.id)
                .order_by(Port.pxe_enabled.desc(), Port.id)
            ).scalars()
            return row.uuid, list(macs)

    def lookup_node(self, addresses: Iterable[str]) -> NodeRecord:
        """The one node owning any of these MACs (the ramdisk's and the boot plane's lookup).

        `NodeNotFound` when none does, or when the MACs belong to more than one node (Ironic
        answers both with the same 404). Malformed MACs are ignored.
        """
        macs = set()
        for address in addresses:
            try:
                macs.add(normalize_mac(address))
            except (ValueError, AttributeError):
                continue
        label = ",".join(sorted(macs)) or "(no valid MAC)"
        if not macs:
            raise NodeNotFound(label)
        with self._reading() as session:
            node_ids = set(session.scalars(select(Port.node_id).where(Port.address.in_(macs))))
            if len(node_ids) != 1:
                raise NodeNotFound(label)
            return NodeRecord.from_row(self._node(session, node_ids.pop()))

    def count_nodes_by_state(self) -> dict[str, int]:
        """How many nodes are in each provision state (one ``GROUP BY``)."""
        with self._reading() as session:
            rows = session.execute(
                select(Node.provision_state, func.count()).group_by(Node.provision_state)
            )
            return {state: count for state, count in rows}

    def node_addresses(self, nodes: Iterable[int]) -> dict[int, list[str]]:
        """The MACs of each of these nodes (numeric ids), in port order; one query per
        `_IN_CHUNK` nodes."""
        ids = sorted(set(nodes))
        found: dict[int, list[str]] = {}
        with self._reading() as session:
            for i in range(0, len(ids), _IN_CHUNK):
                chunk = ids[i : i + _IN_CHUNK]
                rows = session.execute(
                    select(Port.node_id, Port.address)
                    .where(Port.node_id.in_(chunk))
                    .order_by(Port.id)
                )
                for node_id, address in rows:
                    found.setdefault(node_id, []).append(address)
        return found

    def port_owners(self, addresses: Iterable[str]) -> dict[str, str]:
        """Which of these MACs a port names: ``{mac: node UUID}``; one query per `_IN_CHUNK`
        MACs. Malformed MACs are ignored (no port has them)."""
        macs = set()
        for address in addresses:
            try:
                macs.add(normalize_mac(address))
            except (ValueError, AttributeError):
                continue
        wanted = sorted(macs)
        found: dict[str, str] = {}
        with self._reading() as session:
            for i in range(0, len(wanted), _IN_CHUNK):
                rows = session.execute(
                    select(Port.address, Node.uuid)
                    .join(Node, Port.node_id == Node.id)
                    .where(Port.address.in_(wanted[i : i + _IN_CHUNK]))
                )
                found.update((address, node_uuid) for address, node_uuid in rows)
        return found

    # -- history ----------------------------------------------------------------------------

    def add_history(
        self,
        node: str | int,
        event: str,
        *,
        event_type: str | None = HistoryType.TRANSITION,
        severity: str = SEVERITY_INFO,
        user: str | None = None,
        conductor: str | None = None,
        now: datetime | None = None,
    ) -> HistoryRecord:
        """Append one event to a node's history."""
        with self._writing() as session:
            node_row = self._node(session, node)
            row = self._history_row(
                node_row.id,
                HistoryEntry(event, event_type, severity),
                user=user,
                conductor=conductor,
                now=_now(now),
            )
            session.add(row)
            session.flush()
            record = HistoryRecord.from_row(row)
            uuid = node_row.uuid
        if self.observers:
            self._notify(HistoryNotice(uuid, (record,)))
        return record

    @staticmethod
    def _history_row(
        node_id: int,
        entry: HistoryEntry,
        *,
        user: str | None,
        conductor: str | None,
        now: datetime,
    ) -> NodeHistory:
        return NodeHistory(
            uuid=str(uuidlib.uuid4()),
            node_id=node_id,
            created_at=now,
            event=entry.event,
            event_type=entry.event_type,
            severity=entry.severity,
            user=user,
            conductor=conductor,
        )

    def list_history(
        self, node: str | int, *, limit: int | None = None, marker: str | None = None
    ) -> list[HistoryRecord]:
        """A node's history, oldest first (``marker``: UUID of the last record seen)."""
        if limit is not None and limit <= 0:
            raise InvalidParameterValue("Limit must be positive")
        page = MAX_LIMIT if limit is None else min(limit, MAX_LIMIT)
        with self._reading() as session:
            query = select(NodeHistory).where(NodeHistory.node_id == self._node(session, node).id)
            if marker is not None:
                marker_id = session.scalar(select(NodeHistory.id).where(NodeHistory.uuid == marker))
                if marker_id is None:
                    raise InvalidParameterValue(f"No history record {marker}")
                query = query.where(NodeHistory.id > marker_id)
            rows = session.scalars(query.order_by(NodeHistory.id).limit(page))
            return [HistoryRecord.from_row(row) for row in rows]

    # -- inventory --------------------------------------------------------------------------

    def save_inventory(
        self,
        node: str | int,
        inventory: Mapping[str, Any],
        plugin_data: Mapping[str, Any] | None = None,
        *,
        now: datetime | None = None,
    ) -> None:
        """Store (or replace) the hardware inventory inspection collected for ``node``."""
        at = _now(now)
        with self._writing() as session:
            node_id = self._node(session, node).id
            row = session.scalars(
                select(NodeInventory).where(NodeInventory.node_id == node_id)
            ).one_or_none()
            if row is None:
                session.add(
                    NodeInventory(
                        node_id=node_id,
                        inventory_data=dict(inventory),
                        plugin_data=dict(plugin_data or {}),
                        created_at=at,
                    )
                )
            else:
                row.inventory_data = dict(inventory)
                row.plugin_data = dict(plugin_data or {})
                row.updated_at = at

    def get_inventory(self, node: str | int) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(inventory, plugin_data)`` of ``node``; `NodeInventoryNotFound` if none stored."""
        with self._reading() as session:
            row = self._node(session, node)
            found = session.execute(
                select(NodeInventory.inventory_data, NodeInventory.plugin_data).where(
                    NodeInventory.node_id == row.id
                )
            ).one_or_none()
            if found is None:
                raise NodeInventoryNotFound(row.uuid)
            return dict(found[0]), dict(found[1])

    # -- traits (migration 0003) ------------------------------------------------------------

    def get_traits(self, node: str | int) -> list[str]:
        """The node's traits, sorted."""
        with self._reading() as session:
            node_id = self._node(session, node).id
            rows = session.scalars(
                select(NodeTrait.trait)
                .where(NodeTrait.node_id == node_id)
                .order_by(NodeTrait.trait)
            )
            return list(rows)

    def set_traits(
        self, node: str | int, traits: Iterable[str], *, now: datetime | None = None
    ) -> list[str]:
        """Replace the node's traits with ``traits`` (deduplicated); the new list, sorted."""
        wanted = sorted(set(traits))
        at = _now(now)
        with self._writing() as session:
            node_id = self._node(session, node).id
            have = set(session.scalars(select(NodeTrait.trait).where(NodeTrait.node_id == node_id)))
            gone = have - set(wanted)
            if gone:
                session.execute(
                    delete(NodeTrait).where(NodeTrait.node_id == node_id, NodeTrait.trait.in_(gone))
                )
            for trait in wanted:
                if trait not in have:
                    session.add(NodeTrait(node_id=node_id, trait=trait, created_at=at))
        return wanted

    # -- inspection rules (migration 0003) ---------------------------------------------------

    _RULE_SORT_KEYS: Final = ("id", "uuid", "priority", "description", "phase", "created_at",
                              "updated_at")  # fmt: skip
    _RULE_CHANGEABLE: Final = frozenset(
        {"description", "priority", "sensitive", "phase", "conditions", "actions"}
    )

    def create_inspection_rule(
        self, rule: Mapping[str, Any], *, now: datetime | None = None
    ) -> InspectionRuleRecord:
        """Store a rule validated by `pxeforge.inspection_rules.validate_rule` (``uuid`` None:
        a new one). A taken UUID is `InspectionRuleAlreadyExists` (409)."""
        rule_uuid = _check_uuid(rule["uuid"]) if rule.get("uuid") else str(uuidlib.uuid4())
        row = InspectionRule(
            uuid=rule_uuid,
            description=rule.get("description"),
            priority=int(rule.get("priority") or 0),
            sensitive=bool(rule.get("sensitive")),
            phase=rule.get("phase") or "main",
            conditions=list(rule.get("conditions") or []),
            actions=list(rule["actions"]),
            created_at=_now(now),
        )
        try:
            with self._writing() as session:
                session.add(row)
                session.flush()
                return InspectionRuleRecord.from_row(row)
        except IntegrityError:
            raise InspectionRuleAlreadyExists(rule_uuid) from None

    @staticmethod
    def _rule(session: Session, ident: str) -> InspectionRule:
        if not _is_uuid(ident):
            raise InspectionRuleNotFound(ident)
        row = session.scalars(
            select(InspectionRule).where(InspectionRule.uuid == str(uuidlib.UUID(ident)))
        ).one_or_none()
        if row is None:
            raise InspectionRuleNotFound(ident)
        return row

    def get_inspection_rule(self, ident: str) -> InspectionRuleRecord:
        """The rule with this UUID; `InspectionRuleNotFound` (404) otherwise."""
        with self._reading() as session:
            return InspectionRuleRecord.from_row(self._rule(session, ident))

    def list_inspection_rules(
        self,
        *,
        phase: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
        sort_key: str = "id",
        sort_dir: str = "asc",
    ) -> list[InspectionRuleRecord]:
        """One page of rules in ``(sort_key, id)`` order (``limit=0``: all of them)."""
        if limit is not None and limit < 0:
            raise InvalidParameterValue("Limit must be positive")
        if sort_key not in self._RULE_SORT_KEYS:
            raise InvalidParameterValue(
                f"The sort_key value {sort_key} is an invalid field for sorting"
            )
        if sort_dir not in ("asc", "desc"):
            raise InvalidParameterValue(f"Invalid sort direction: {sort_dir}")
        column = getattr(InspectionRule, sort_key)
        ascending = sort_dir == "asc"
        with self._reading() as session:
            query = select(InspectionRule)
            if phase is not None:
                query = query.where(InspectionRule.phase == phase)
            if marker is not None:
                row = self._rule(session, marker)
                value, marker_id = getattr(row, sort_key), row.id
                if value is None:
                    after = (
                        or_(
                            and_(column.is_(None), InspectionRule.id > marker_id),
                            column.is_not(None),
                        )
                        if ascending
                        else and_(column.is_(None), InspectionRule.id < marker_id)
                    )
                elif ascending:
                    after = or_(
                        column > value, and_(column == value, InspectionRule.id > marker_id)
                    )
                else:
                    after = or_(
                        column < value,
                        and_(column == value, InspectionRule.id < marker_id),
                        column.is_(None),
                    )
                query = query.where(after)
            if ascending:
                query = query.order_by(column.asc().nulls_first(), InspectionRule.id.asc())
            else:
                query = query.order_by(column.desc().nulls_last(), InspectionRule.id.desc())
            if limit:
                query = query.limit(min(limit, MAX_LIMIT))
            return [InspectionRuleRecord.from_row(r) for r in session.scalars(query)]

    def update_inspection_rule(
        self, ident: str, changes: Mapping[str, Any], *, now: datetime | None = None
    ) -> InspectionRuleRecord:
        """Change a rule's fields (validated by the caller; not its uuid)."""
        unknown = sorted(set(changes) - self._RULE_CHANGEABLE)
        if unknown:
            raise InvalidParameterValue(
                f"Inspection rule field(s) cannot be changed: {', '.join(unknown)}"
            )
        with self._writing() as session:
            row = self._rule(session, ident)
            for name, value in changes.items():
                setattr(row, name, value)
            row.updated_at = _now(now)
            session.flush()
            return InspectionRuleRecord.from_row(row)

    def delete_inspection_rule(self, ident: str) -> None:
        """Forget a rule; `InspectionRuleNotFound` (404) if there is none."""
        with self._writing() as session:
            session.delete(self._rule(session, ident))

    # -- locks ------------------------------------------------------------------------------

    def acquire(self, node: str | int, holder: str) -> bool:
        """Take the node's lock for ``holder`` if nobody holds it: True if taken."""
        with self._writing() as session:
            node_id = self._node(session, node).id
            result = session.execute(
                update(Node)
                .where(Node.id == node_id, Node.reservation.is_(None))
                .values(reservation=holder)
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result) == 1

    def release(self, node: str | int, holder: str) -> None:
        """Give the lock back; `NodeNotLocked` if ``holder`` does not hold it."""
        with self._writing() as session:
            row = self._node(session, node)
            result = session.execute(
                update(Node)
                .where(Node.id == row.id, Node.reservation == holder)
                .values(reservation=None)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) != 1:
                raise NodeNotLocked(row.uuid, holder)

    def _try_lock(self, node: str | int, holder: str) -> tuple[NodeRecord, bool]:
        with self._writing() as session:
            row = self._node(session, node)
            result = session.execute(
                update(Node)
                .where(Node.id == row.id, Node.reservation.is_(None))
                .values(reservation=holder)
                .execution_options(synchronize_session=False)
            )
            won = _rowcount(result) == 1
            session.expire(row)
            return NodeRecord.from_row(self._node(session, row.id)), won

    @contextmanager
    def lock(
        self, node: str | int, holder: str, *, attempts: int = 1, interval: float = 1.0
    ) -> Iterator[NodeRecord]:
        """Hold the node's lock for the ``with`` block; yields the node as it was when locked.

        Tries ``attempts`` times, ``interval`` seconds apart (Ironic's
        ``node_locked_retry_attempts``/``…_interval``), then raises `NodeLocked` (409).
        """
        record, won = self._try_lock(node, holder)
        for _ in range(attempts - 1):
            if won:
                break
            time.sleep(interval)
            record, won = self._try_lock(node, holder)
        if not won:
            raise NodeLocked(record.uuid, record.reservation)
        failed = False
        try:
            yield record
        except BaseException:
            failed = True
            raise
        finally:
            try:
                self.release(record.id, holder)
            except (NodeNotLocked, NodeNotFound):
                if not failed:
                    raise
                log.warning("node %s: lock of %s was lost before release", record.uuid, holder)

    # -- provision state --------------------------------------------------------------------

    def save_transition(
        self,
        node: str | int,
        *,
        holder: str,
        expected_state: str,
        provision_state: str,
        target_provision_state: str | None,
        history: Sequence[HistoryEntry] = (),
        last_error: str | None | Keep = KEEP,
        changes: Mapping[str, Any] | None = None,
        user: str | None = None,
        now: datetime | None = None,
    ) -> NodeRecord:
        """Publish a state change (and its history) in one transaction, under the caller's lock.

        The update applies only if ``holder`` holds the lock and the node is still in
        ``expected_state``: otherwise `NodeLocked` (lock lost) or `InvalidState`, and nothing
        is written. ``provision_updated_at`` moves when the state or target changes.
        """
        changes = dict(changes or {})
        _check_changes(changes)
        if provision_state not in ALL_STATES:
            raise InvalidParameterValue(f"Unknown provision state {provision_state!r}")
        at = _now(now)
        with self._writing() as session:
            row = self._node(session, node)
            values: dict[str, Any] = dict(changes)
            values.update(
                provision_state=provision_state,
                target_provision_state=target_provision_state,
                updated_at=at,
            )
            if (provision_state, target_provision_state) != (
                expected_state,
                row.target_provision_state,
            ):
                values["provision_updated_at"] = at
            if not isinstance(last_error, Keep):
                values["last_error"] = last_error
            result = session.execute(
                update(Node)
                .where(
                    Node.id == row.id,
                    Node.reservation == holder,
                    Node.provision_state == expected_state,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) != 1:
                if row.reservation != holder:
                    raise NodeLocked(row.uuid, row.reservation)
                raise InvalidState(
                    f'Node {row.uuid} is in state "{row.provision_state}", not '
                    f'"{expected_state}"; the transition was not saved'
                )
            entered = row.provision_updated_at or row.created_at
            rows = [
                self._history_row(row.id, entry, user=user, conductor=holder, now=at)
                for entry in history
            ]
            session.add_all(rows)
            session.flush()
            records = tuple(HistoryRecord.from_row(r) for r in rows)
            session.expire(row)
            after = NodeRecord.from_row(self._node(session, row.id))
        if self.observers:
            self._notify(
                HistoryNotice(
                    after.uuid,
                    records,
                    from_state=expected_state,
                    to_state=provision_state,
                    seconds_in_state=max(0.0, (at - entered).total_seconds()),
                    last_error=after.last_error,
                )
            )
        return after

    def _fail_locked(
        self,
        record: NodeRecord,
        holder: str,
        *,
        last_error: str,
        history: str,
        event_type: str,
        now: datetime,
    ) -> NodeRecord:
        """Apply ``fail`` to a node ``holder`` has just locked."""
        new_state = advance(record.provision_state, Event.FAIL)
        target = next_target(record.target_provision_state, Event.FAIL, new_state)
        return self.save_transition(
            record.id,
            holder=holder,
            expected_state=record.provision_state,
            provision_state=new_state,
            target_provision_state=target,
            history=[HistoryEntry(history, event_type, SEVERITY_ERROR)],
            last_error=last_error,
            now=now,
        )

    def expire_waits(
        self, *, holder: str, now: datetime | None = None, timeouts: WaitTimeouts | None = None
    ) -> list[Recovery]:
        """Fail nodes that waited too long for their ramdisk (``fail`` from the wait state).

        Only unlocked nodes out of maintenance are considered (as Ironic's periodic checks);
        ``last_error`` says what was waited for. Returns what was failed.
        """
        at = _now(now)
        limits = timeouts or WaitTimeouts()
        checks: list[tuple[str, float, str]] = [
            (DEPLOYWAIT, limits.deploy_callback_timeout, "deploy_callback_timeout"),
            (INSPECTWAIT, limits.inspect_wait_timeout, "inspect_wait_timeout"),
            (CLEANWAIT, limits.clean_callback_timeout, "clean_callback_timeout"),
        ]
        done: list[Recovery] = []
        for state, seconds, option in checks:
            if seconds <= 0:
                continue
            cutoff = at - timedelta(seconds=seconds)
            since = Node.provision_updated_at
            if state == INSPECTWAIT:
                since = Node.inspection_started_at
            with self._reading() as session:
                candidates = list(
                    session.scalars(
                        select(Node.id).where(
                            Node.provision_state == state,
                            Node.reservation.is_(None),
                            Node.maintenance == false(),
                            or_(
                                since < cutoff,
                                and_(since.is_(None), Node.provision_updated_at < cutoff),
                            ),
                        )
                    )
                )
            for node_id in candidates:
                record, won = self._try_lock(node_id, holder)
                if not won:
                    continue
                try:
                    if record.provision_state != state:
                        continue
                    message = self._timeout_message(record, state)
                    detail = (
                        f'{message} (waited more than {seconds:g} s in "{state}"; '
                        f"[conductor]{option})"
                    )
                    after = self._fail_locked(
                        record,
                        holder,
                        last_error=message,
                        history=detail,
                        event_type=HistoryType.PROVISIONING,
                        now=at,
                    )
                    done.append(Recovery(record.uuid, state, after.provision_state, None))
                finally:
                    self.release(node_id, holder)
        return done

    @staticmethod
    def _timeout_message(record: NodeRecord, state: str) -> str:
        """Ironic's ``last_error`` wording for each wait-state timeout."""
        if state == DEPLOYWAIT:
            return f"Timeout reached while waiting for callback for node {record.uuid}"
        if state == INSPECTWAIT:
            return "timeout reached while inspecting the node"
        step = record.driver_internal_info.get("clean_step")
        text = (
            "Timeout reached while cleaning the node. Please check if the ramdisk responsible "
            "for the cleaning is running on the node."
        )
        return f"{text} Failed on step {step}." if step else text

    # -- conductors and recovery ------------------------------------------------------------

    def register_conductor(self, hostname: str, *, now: datetime | None = None) -> None:
        """Mark ``hostname`` online with a fresh heartbeat (creating it if new)."""
        at = _now(now)
        for _attempt in range(2):
            try:
                with self._writing() as session:
                    result = session.execute(
                        update(Conductor)
                        .where(Conductor.hostname == hostname)
                        .values(online=True, updated_at=at)
                        .execution_options(synchronize_session=False)
                    )
                    if _rowcount(result) == 0:
                        session.add(
                            Conductor(hostname=hostname, online=True, created_at=at, updated_at=at)
                        )
                return
            except IntegrityError:
                continue  # registered concurrently: the update will find it now
        raise InvalidState(f"could not register conductor {hostname}")

    def heartbeat(self, hostname: str, *, now: datetime | None = None) -> None:
        """Refresh ``hostname``'s heartbeat (registering it if needed)."""
        self.register_conductor(hostname, now=now)

    def unregister_conductor(self, hostname: str, *, now: datetime | None = None) -> None:
        """Mark ``hostname`` offline (clean shutdown); its remaining locks are released."""
        with self._writing() as session:
            session.execute(
                update(Conductor)
                .where(Conductor.hostname == hostname)
                .values(online=False, updated_at=_now(now))
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(Node)
                .where(Node.reservation == hostname)
                .values(reservation=None)
                .execution_options(synchronize_session=False)
            )

    def live_conductors(
        self, *, now: datetime | None = None, heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    ) -> list[str]:
        """Hostnames that are online and heartbeated within ``heartbeat_timeout`` seconds."""
        cutoff = _now(now) - timedelta(seconds=heartbeat_timeout)
        with self._reading() as session:
            return list(
                session.scalars(
                    select(Conductor.hostname)
                    .where(Conductor.online.is_(True), Conductor.updated_at >= cutoff)
                    .order_by(Conductor.hostname)
                )
            )

    def recover_stuck(
        self,
        me: str,
        *,
        now: datetime | None = None,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
    ) -> list[Recovery]:
        """Start-up recovery, run by conductor ``me`` before it does any work.

        Locks held by dead conductors (stale heartbeat, offline, never registered — or ``me``
        itself, from a previous life) are taken over. Nodes found in a state that cannot be
        resumed (`STUCK_STATES_TREATED_AS_FAIL`) with no live lock holder get the ``fail``
        event and Ironic's ``last_error``; other taken-over nodes are just unlocked.
        """
        at = _now(now)
        alive = set(self.live_conductors(now=at, heartbeat_timeout=heartbeat_timeout)) - {me}
        with self._reading() as session:
            rows = session.execute(
                select(Node.id, Node.reservation, Node.provision_state).where(
                    or_(
                        and_(Node.reservation.is_not(None), Node.reservation.not_in(alive)),
                        and_(
                            Node.reservation.is_(None),
                            Node.provision_state.in_(STUCK_STATES_TREATED_AS_FAIL),
                        ),
                    )
                )
            ).all()
        recovered: list[Recovery] = []
        for node_id, dead, _state in rows:
            record = self._take_over(node_id, dead, me)
            if record is None:
                continue  # someone else moved first
            try:
                state = record.provision_state
                if state in STUCK_STATES_TREATED_AS_FAIL:
                    message = (
                        f"The {state} state can't be resumed by conductor {me}. "
                        "Moving to fail state."
                    )
                    why = f" It was locked by conductor {dead}, which is dead." if dead else ""
                    after = self._fail_locked(
                        record,
                        me,
                        last_error=message,
                        history=message + why,
                        event_type=HistoryType.STARTFAIL,
                        now=at,
                    )
                    recovered.append(Recovery(record.uuid, state, after.provision_state, dead))
                elif dead is not None:
                    self.add_history(
                        node_id,
                        f"Lock of dead conductor {dead} released by conductor {me}",
                        event_type=HistoryType.TAKEOVER,
                        conductor=me,
                        now=at,
                    )
                    recovered.append(Recovery(record.uuid, state, state, dead))
            finally:
                self.release(node_id, me)
        return recovered

    def _take_over(self, node_id: int, previous: str | None, me: str) -> NodeRecord | None:
        """Atomically move the lock from ``previous`` (None: unlocked) to ``me``."""
        with self._writing() as session:
            held = Node.reservation.is_(None) if previous is None else Node.reservation == previous
            result = session.execute(
                update(Node)
                .where(Node.id == node_id, held)
                .values(reservation=me)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) != 1:
                return None
            return NodeRecord.from_row(self._node(session, node_id))
