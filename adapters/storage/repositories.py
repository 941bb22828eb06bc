"""Repositories over the engine tables, one per aggregate and keyed by its natural id, and the
unit of work that puts them in one transaction.

Owns the mapping between rows and domain types (``Order``, ``Bracket``, ``FillReport``) and the
two database-level guarantees the order path relies on:

- **Idempotency.** ``orders.client_order_id`` and ``fills.trade_id`` are unique. A duplicate
  order raises ``DuplicateClientOrderId``; a duplicate fill is skipped and reported as ``False``.
- **Fencing.** The leader lease is a row with a fencing epoch. ``LeaseRepository`` moves it by
  compare-and-set only, and ``OrderRepository.add(order, fence=...)`` inserts the order only if
  the lease is still held by that instance at that epoch, in one statement. A stale leader
  cannot write an order, so it cannot send one (the order row is committed before the broker
  call).

Every repository takes a SQLAlchemy ``Connection`` and never commits: the caller's transaction
(normally a ``UnitOfWork``) decides. Supported dialects are SQLite (3.35 or newer, for
``RETURNING``) and PostgreSQL; upserts use their ``ON CONFLICT`` clause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from sqlalchemy import (
    Connection,
    Insert,
    Row,
    Table,
    exists,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError

from adapters.storage.tables import (
    audit_log,
    brackets,
    control_state,
    daily_reports,
    day_figure_counts,
    day_heat,
    engine_starts,
    events,
    fills,
    kill_switch,
    leader_lease,
    orders,
    positions,
)
from domain.day_figures import DayDeltas, DayFigures, HeatMark
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages.control import AuditEntry
from domain.messages.orders import FillReport
from domain.oco import Bracket, BracketStatus
from domain.orders import Order

if TYPE_CHECKING:
    import contextlib

    from adapters.storage.database import Database

__all__ = [
    "DEFAULT_LEASE_NAME",
    "BracketRepository",
    "ControlStateRepository",
    "DailyReportRepository",
    "DayFiguresRepository",
    "DuplicateClientOrderId",
    "EngineStart",
    "EngineStartRepository",
    "EventRepository",
    "EventRow",
    "FillRepository",
    "KillSwitchRecord",
    "KillSwitchRepository",
    "LeaseFence",
    "LeaseRepository",
    "LeaseState",
    "OrderNotFound",
    "OrderRepository",
    "PositionRepository",
    "PositionRow",
    "StaleEpoch",
    "UnitOfWork",
    "bracket_values",
    "dialect_insert",
    "fill_values",
    "order_values",
    "position_values",
]

DEFAULT_LEASE_NAME = "trader"
_TERMINAL_ORDER_STATUSES = tuple(s.value for s in OrderStatus if s.is_terminal)
_INACTIVE_BRACKET_STATUSES = (BracketStatus.CLOSED.value, BracketStatus.CANCELLED.value)
_KILL_SWITCH_ROW_ID = 1


# ---------------------------------------------------------------------------------------------
# ERRORS AND VALUES
# ---------------------------------------------------------------------------------------------


class DuplicateClientOrderId(Exception):
    """An order with this ``client_order_id`` is already stored.

    On PostgreSQL the transaction that raised this is aborted and refuses further statements
    (SQLite happens to stay usable, but do not rely on it): let the ``UnitOfWork`` roll back and
    start a new one.
    """

    def __init__(self, client_order_id: str) -> None:
        super().__init__(
            f"DUPLICATE_CLIENT_ORDER_ID: client_order_id={client_order_id} is already stored"
        )
        self.client_order_id = client_order_id


class StaleEpoch(Exception):
    """A fenced write was refused: the lease is not held by ``instance_id`` at ``epoch``.

    ``holder`` and ``current_epoch`` describe the lease as it was when the write was refused
    (both ``None`` when there is no lease row at all). The transaction stays usable.
    """

    def __init__(
        self,
        *,
        instance_id: str,
        epoch: int,
        name: str,
        holder: str | None,
        current_epoch: int | None,
        client_order_id: str | None = None,
    ) -> None:
        super().__init__(
            f"STALE_EPOCH: instance_id={instance_id} epoch={epoch} lease={name} "
            f"holder={holder} current_epoch={current_epoch} client_order_id={client_order_id}"
        )
        self.instance_id = instance_id
        self.epoch = epoch
        self.name = name
        self.holder = holder
        self.current_epoch = current_epoch
        self.client_order_id = client_order_id


class OrderNotFound(LookupError):
    """``OrderRepository.update`` found no row with this ``client_order_id``."""

    def __init__(self, client_order_id: str) -> None:
        super().__init__(f"ORDER_NOT_FOUND: client_order_id={client_order_id} is not stored")
        self.client_order_id = client_order_id


class LeaseFence(msgspec.Struct, frozen=True):
    """The leadership an order is written under: the lease ``name`` held by ``instance_id`` at
    ``epoch``, and (when ``now_ns`` is given) not expired at ``now_ns``."""

    instance_id: str
    epoch: int
    name: str = DEFAULT_LEASE_NAME
    now_ns: int | None = None


class LeaseState(msgspec.Struct, frozen=True, kw_only=True):
    """The lease row. ``is_leader`` is relative to the caller: True only when the caller's
    instance holds it and (for ``current``) it has not expired at the caller's ``now_ns``."""

    name: str
    holder: str
    epoch: int
    expires_ns: int
    is_leader: bool


class PositionRow(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the position projection: one per bracket, ``quantity`` 0 once closed."""

    position_id: str  # the plan_client_id of the bracket that opened it
    strategy: str
    instrument: str
    side: Side
    quantity: int
    average_price: Decimal
    realized_pnl: Decimal
    status: Literal["OPEN", "CLOSED"] = "OPEN"
    updated_ns: int = 0


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    """One audit-trail entry; ``payload`` is the decoded JSON."""

    id: int
    ts_ns: int
    event: str
    instance_id: str
    payload: Any


class KillSwitchRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The persisted, sticky kill-switch state."""

    active: bool
    reason: str = ""
    detail: str = ""
    activated_ns: int | None = None
    reset_ns: int | None = None
    updated_ns: int = 0


# ---------------------------------------------------------------------------------------------
# UNIT OF WORK
# ---------------------------------------------------------------------------------------------


class UnitOfWork:
    """One transaction with every repository on it.

    ``with UnitOfWork(database) as uow:`` begins the transaction; a clean exit commits and an
    exception rolls back and propagates. After ``DuplicateClientOrderId`` (or any database
    error) the transaction may be unusable (always on PostgreSQL): let the exception leave the
    block and use a new ``UnitOfWork``. Not thread-safe: one thread per unit of work.

    Isolation: PostgreSQL runs READ COMMITTED. On SQLite the driver opens the transaction at
    the first write, so reads made before it are not isolated from other writers; the
    guarantees above (unique ids, lease compare-and-set, fenced insert) are single statements
    and hold regardless.
    """

    connection: Connection
    orders: OrderRepository
    fills: FillRepository
    brackets: BracketRepository
    positions: PositionRepository
    events: EventRepository
    lease: LeaseRepository
    kill_switch: KillSwitchRepository
    control: ControlStateRepository
    daily_reports: DailyReportRepository
    day_figures: DayFiguresRepository
    engine_starts: EngineStartRepository

    def __init__(self, database: Database) -> None:
        self._database = database
        self._transaction: contextlib.AbstractContextManager[Connection] | None = None

    def __enter__(self) -> UnitOfWork:
        if self._transaction is not None:
            raise RuntimeError("UnitOfWork is not re-entrant: it already has a transaction open")
        transaction = self._database.transaction()
        connection = transaction.__enter__()
        self._transaction = transaction
        self.connection = connection
        self.orders = OrderRepository(connection)
        self.fills = FillRepository(connection)
        self.brackets = BracketRepository(connection)
        self.positions = PositionRepository(connection)
        self.events = EventRepository(connection)
        self.lease = LeaseRepository(connection)
        self.kill_switch = KillSwitchRepository(connection)
        self.control = ControlStateRepository(connection)
        self.daily_reports = DailyReportRepository(connection)
        self.audit = AuditRepository(connection)
        self.day_figures = DayFiguresRepository(connection)
        self.engine_starts = EngineStartRepository(connection)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        transaction, self._transaction = self._transaction, None
        assert transaction is not None, "UnitOfWork exited without being entered"
        return transaction.__exit__(exc_type, exc, traceback)


# ---------------------------------------------------------------------------------------------
# ORDERS AND FILLS
# ---------------------------------------------------------------------------------------------


class OrderRepository:
    """The engine's orders, keyed by ``client_order_id``."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, order: Order, *, fence: LeaseFence | None = None) -> None:
        """Insert a new order (the write-ahead row, committed before the broker is called).

        Args:
            order: the order; its ``epoch`` must equal ``fence.epoch`` when fenced.
            fence: when given, the row is inserted only if the lease ``fence.name`` is held by
                ``fence.instance_id`` at ``fence.epoch``, checked in the same statement (on
                PostgreSQL the lease row is share-locked until commit, so a takeover waits for
                this transaction and cannot slip in between check and insert).

        Raises:
            DuplicateClientOrderId: the id is already stored; the transaction is unusable.
            StaleEpoch: the fence no longer matches the lease; nothing was written and the
                transaction is still usable.
            ValueError: ``order.epoch`` differs from ``fence.epoch``.
        """
        values = _order_values(order)
        if fence is None:
            statement: Insert = insert(orders).values(values)
        else:
            if order.epoch != fence.epoch:
                raise ValueError(
                    f"order epoch differs from its fence: client_order_id="
                    f"{order.client_order_id} order.epoch={order.epoch} fence.epoch={fence.epoch}"
                )
            lease_held = _lease_held(fence)
            columns = list(values)
            source = select(
                *(literal(values[name], type_=orders.c[name].type) for name in columns)
            ).where(exists(lease_held))
            # RETURNING, not rowcount: SQLAlchemy adds an implicit RETURNING on PostgreSQL,
            # which leaves rowcount at -1
            statement = insert(orders).from_select(columns, source).returning(orders.c.id)
        try:
            result = self._connection.execute(statement)
        except IntegrityError as error:
            if "client_order_id" in str(error.orig):
                raise DuplicateClientOrderId(order.client_order_id) from error
            raise
        if fence is not None and result.first() is None:
            raise self._stale(fence, order.client_order_id)

    def refence(self, client_order_id: str, fence: LeaseFence) -> None:
        """Re-stamp a stored order with ``fence.epoch``, only if the fence still holds.

        A resend goes through the database fence exactly as the first send did: the order row
        takes the new epoch in one statement that also checks the lease is held by
        ``fence.instance_id`` at ``fence.epoch`` (and unexpired at ``fence.now_ns`` when given),
        so a deposed leader cannot resend an order, under its old epoch or any other.

        Raises:
            StaleEpoch: the fence no longer matches the lease; nothing was written and the
                transaction is still usable.
            OrderNotFound: no such order is stored.
        """
        result = self._connection.execute(
            update(orders)
            .where(orders.c.client_order_id == client_order_id, exists(_lease_held(fence)))
            .values(epoch=fence.epoch)
        )
        if result.rowcount == 1:
            return
        if self.get(client_order_id) is None:
            raise OrderNotFound(client_order_id)
        raise self._stale(fence, client_order_id)

    def _stale(self, fence: LeaseFence, client_order_id: str) -> StaleEpoch:
        lease = LeaseRepository(self._connection).current(fence.name)
        return StaleEpoch(
            instance_id=fence.instance_id,
            epoch=fence.epoch,
            name=fence.name,
            holder=None if lease is None else lease.holder,
            current_epoch=None if lease is None else lease.epoch,
            client_order_id=client_order_id,
        )

    def update(self, order: Order) -> None:
        """Overwrite the stored order with ``order`` (matched by ``client_order_id``).

        Raises:
            OrderNotFound: no such order is stored.
        """
        values = _order_values(order)
        del values["client_order_id"]
        result = self._connection.execute(
            update(orders).where(orders.c.client_order_id == order.client_order_id).values(values)
        )
        if result.rowcount != 1:
            raise OrderNotFound(order.client_order_id)

    def get(self, client_order_id: str) -> Order | None:
        row = self._connection.execute(
            select(orders).where(orders.c.client_order_id == client_order_id)
        ).first()
        return None if row is None else _order_from_row(row)

    def list_working(self) -> list[Order]:
        """Orders not yet FILLED, CANCELLED or REJECTED, oldest first."""
        rows = self._connection.execute(
            select(orders)
            .where(orders.c.status.not_in(_TERMINAL_ORDER_STATUSES))
            .order_by(orders.c.created_ns, orders.c.id)
        )
        return [_order_from_row(row) for row in rows]

    def list_recent(self, limit: int = 200) -> list[Order]:
        """The newest ``limit`` orders, newest first."""
        rows = self._connection.execute(
            select(orders).order_by(orders.c.created_ns.desc(), orders.c.id.desc()).limit(limit)
        )
        return [_order_from_row(row) for row in rows]

    def list_for_plan(self, plan_client_id: str) -> list[Order]:
        """Every leg of one plan, oldest first."""
        rows = self._connection.execute(
            select(orders)
            .where(orders.c.plan_client_id == plan_client_id)
            .order_by(orders.c.created_ns, orders.c.id)
        )
        return [_order_from_row(row) for row in rows]

    def entries_since(self, since_ns: int) -> list[tuple[str, int]]:
        """(plan_client_id, created_ns) of every ENTRY written at or after ``since_ns``, oldest
        first: what the risk layer's rolling windows need after a restart."""
        rows = self._connection.execute(
            select(orders.c.plan_client_id, orders.c.created_ns)
            .where(orders.c.leg == LegKind.ENTRY.value, orders.c.created_ns >= since_ns)
            .order_by(orders.c.created_ns, orders.c.id)
        )
        return [(row.plan_client_id, row.created_ns) for row in rows]

    def count_duplicates(self) -> int:
        """How many ``client_order_id`` values are stored more than once (the runbook's check;
        always 0 while the unique constraint stands)."""
        groups = (
            select(orders.c.client_order_id)
            .group_by(orders.c.client_order_id)
            .having(func.count() > 1)
            .subquery()
        )
        return int(self._connection.execute(select(func.count()).select_from(groups)).scalar_one())


class FillRepository:
    """Executions, idempotent by the broker's ``trade_id``."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, fill: FillReport, *, plan_client_id: str, recorded_ns: int) -> bool:
        """Store a fill unless its ``trade_id`` is already stored.

        Returns:
            True if stored, False if it was a duplicate (nothing raised; the transaction stays
            usable, even under a concurrent insert of the same trade).
        """
        values = fill_values(fill, plan_client_id=plan_client_id, recorded_ns=recorded_ns)
        dialect_insert = _dialect_insert(self._connection)
        statement = (
            dialect_insert(fills)
            .values(values)
            .on_conflict_do_nothing(index_elements=["trade_id"])
            .returning(fills.c.id)
        )
        # a skipped row returns nothing; rowcount is unreliable under RETURNING on PostgreSQL
        return self._connection.execute(statement).first() is not None

    def trade_ids(self) -> set[str]:
        return set(self._connection.execute(select(fills.c.trade_id)).scalars())

    def list_for_plan(self, plan_client_id: str) -> list[FillReport]:
        """Every fill of one plan's orders, in event order."""
        rows = self._connection.execute(
            select(fills)
            .where(fills.c.plan_client_id == plan_client_id)
            .order_by(fills.c.ts_event_ns, fills.c.id)
        )
        return [
            FillReport(
                trade_id=row.trade_id,
                client_order_id=row.client_order_id,
                broker_order_id=row.broker_order_id,
                instrument=row.instrument,
                side=Side(row.side),
                quantity=row.quantity,
                price=row.price,
                ts_event=row.ts_event_ns,
            )
            for row in rows
        ]


# ---------------------------------------------------------------------------------------------
# BRACKETS AND POSITIONS
# ---------------------------------------------------------------------------------------------


class BracketRepository:
    """OCO brackets, keyed by ``plan_client_id``; the whole bracket is kept as msgspec JSON and
    its leg ids and status are copied into plain columns for SQL reconciliation."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def upsert(self, bracket: Bracket) -> None:
        _upsert(self._connection, brackets, bracket_values(bracket), key=("plan_client_id",))

    def get(self, plan_client_id: str) -> Bracket | None:
        state = self._connection.execute(
            select(brackets.c.state).where(brackets.c.plan_client_id == plan_client_id)
        ).scalar_one_or_none()
        return None if state is None else msgspec.json.decode(state, type=Bracket)

    def list_active(self) -> list[Bracket]:
        """Brackets neither CLOSED nor CANCELLED, least recently updated first."""
        states = self._connection.execute(
            select(brackets.c.state)
            .where(brackets.c.status.not_in(_INACTIVE_BRACKET_STATUSES))
            .order_by(brackets.c.updated_ns, brackets.c.plan_client_id)
        ).scalars()
        return [msgspec.json.decode(state, type=Bracket) for state in states]


class PositionRepository:
    """The position projection, one row per bracket, keyed by ``position_id``."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def upsert(self, view: PositionRow) -> None:
        _upsert(self._connection, positions, position_values(view), key=("position_id",))

    def get(self, position_id: str) -> PositionRow | None:
        row = self._connection.execute(
            select(positions).where(positions.c.position_id == position_id)
        ).first()
        return None if row is None else _position_from_row(row)

    def list_open(self) -> list[PositionRow]:
        rows = self._connection.execute(
            select(positions)
            .where(positions.c.status == "OPEN")
            .order_by(positions.c.updated_ns, positions.c.position_id)
        )
        return [_position_from_row(row) for row in rows]

    def realized_closed_since(self, since_ns: int) -> Decimal:
        """Realized PnL of positions closed at or after ``since_ns`` (exact, in Python: the
        column is text on SQLite, so SQL SUM would go through floats)."""
        rows = self._connection.execute(
            select(positions.c.realized_pnl).where(
                positions.c.status == "CLOSED", positions.c.updated_ns >= since_ns
            )
        )
        return sum((row.realized_pnl for row in rows), Decimal(0))


# ---------------------------------------------------------------------------------------------
# AUDIT TRAIL, LEASE, CONTROL STATE
# ---------------------------------------------------------------------------------------------


class EventRepository:
    """The append-only audit trail (MODE_SWITCH, KILL_SWITCH, RECOVERY, TRIPWIRE, ...)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def append(
        self,
        event: str,
        payload: Mapping[str, Any] | msgspec.Struct,
        *,
        ts_ns: int,
        instance_id: str,
    ) -> None:
        """Append one entry; ``payload`` is stored as JSON (Decimal as string, enums as value)."""
        body = payload if isinstance(payload, msgspec.Struct) else dict(payload)
        self._connection.execute(
            insert(events).values(
                ts_ns=ts_ns,
                event=event,
                instance_id=instance_id,
                payload=msgspec.json.encode(body).decode(),
            )
        )

    def list_recent(self, limit: int = 100, event: str | None = None) -> list[EventRow]:
        """The newest ``limit`` entries (of one ``event`` kind if given), newest first."""
        query = select(events).order_by(events.c.ts_ns.desc(), events.c.id.desc()).limit(limit)
        if event is not None:
            query = query.where(events.c.event == event)
        return [
            EventRow(
                id=row.id,
                ts_ns=row.ts_ns,
                event=row.event,
                instance_id=row.instance_id,
                payload=msgspec.json.decode(row.payload),
            )
            for row in self._connection.execute(query)
        ]


class AuditRepository:
    """The LIVE gates' append-only audit trail (``audit_log``; the database refuses UPDATE and
    DELETE). Rows are ``AuditEntry`` values, which never hold a token."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def append(self, entry: AuditEntry, *, instance_id: str) -> None:
        self._connection.execute(
            insert(audit_log).values(
                ts_ns=entry.ts_ns,
                instance_id=instance_id,
                who=entry.who[:64],
                address=entry.address[:64],
                action=entry.action,
                outcome=entry.outcome,
                detail=entry.detail,
                blockers=msgspec.json.encode(list(entry.blockers)).decode(),
                mode=entry.mode,
                rehearsal=entry.rehearsal,
            )
        )

    def list_recent(self, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` rows, newest first."""
        query = (
            select(audit_log).order_by(audit_log.c.ts_ns.desc(), audit_log.c.id.desc()).limit(limit)
        )
        return [
            AuditEntry(
                ts_ns=row.ts_ns,
                who=row.who,
                address=row.address,
                action=row.action,
                outcome=row.outcome,
                detail=row.detail,
                blockers=tuple(msgspec.json.decode(row.blockers, type=list[str])),
                mode=row.mode,
                rehearsal=bool(row.rehearsal),
            )
            for row in self._connection.execute(query)
        ]


class LeaseRepository:
    """The leader lease: a named row with a holder, a fencing epoch and an expiry.

    Every change is a compare-and-set whose row count decides, so it is correct with several
    instances on one PostgreSQL or SQLite database: the database serialises writers on the
    row, and the losing statement matches nothing. Use a short transaction of its own (do not
    hold the lease row locked while doing other work).
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def acquire_or_renew(
        self, *, instance_id: str, now_ns: int, ttl_ns: int, name: str = DEFAULT_LEASE_NAME
    ) -> LeaseState:
        """Take, keep or fail to get the lease ``name`` for ``ttl_ns`` from ``now_ns``.

        - held by me and not expired: extend the expiry, same epoch;
        - expired (whoever held it, me included): take it with epoch + 1;
        - no row yet: create it at epoch 1 (losing a concurrent create means not leader);
        - held by another and not expired: not leader.

        Returns:
            The lease after the attempt, ``is_leader`` telling whether ``instance_id`` holds
            it. A caller whose epoch changed must treat it as a new leadership.
        """
        if ttl_ns <= 0:
            raise ValueError(f"lease ttl must be positive: ttl_ns={ttl_ns}")
        expires_ns = now_ns + ttl_ns
        table = leader_lease
        renewed = self._connection.execute(
            update(table)
            .where(
                table.c.name == name,
                table.c.holder == instance_id,
                table.c.expires_ns > now_ns,
            )
            .values(expires_ns=expires_ns, renewed_ns=now_ns)
        ).rowcount
        if renewed != 1:
            taken = self._connection.execute(
                update(table)
                .where(table.c.name == name, table.c.expires_ns <= now_ns)
                .values(
                    holder=instance_id,
                    epoch=table.c.epoch + 1,
                    expires_ns=expires_ns,
                    renewed_ns=now_ns,
                )
            ).rowcount
            if taken != 1:
                dialect_insert = _dialect_insert(self._connection)
                self._connection.execute(
                    dialect_insert(table)
                    .values(
                        name=name,
                        holder=instance_id,
                        epoch=1,
                        expires_ns=expires_ns,
                        renewed_ns=now_ns,
                    )
                    .on_conflict_do_nothing(index_elements=["name"])
                )
        state = self.current(name, instance_id=instance_id, now_ns=now_ns)
        if state is None:  # only if someone deleted the row between our statements
            raise RuntimeError(f"leader lease row vanished: name={name} instance_id={instance_id}")
        return state

    def release(self, *, instance_id: str, now_ns: int, name: str = DEFAULT_LEASE_NAME) -> None:
        """Expire the lease at ``now_ns`` if ``instance_id`` holds it; otherwise do nothing. The
        next holder (this instance included) takes it with a new epoch."""
        self._connection.execute(
            update(leader_lease)
            .where(
                leader_lease.c.name == name,
                leader_lease.c.holder == instance_id,
                leader_lease.c.expires_ns > now_ns,
            )
            .values(expires_ns=now_ns)
        )

    def current(
        self,
        name: str = DEFAULT_LEASE_NAME,
        *,
        instance_id: str | None = None,
        now_ns: int | None = None,
    ) -> LeaseState | None:
        """The lease row, or None if no instance ever took it. ``is_leader`` is True only when
        both ``instance_id`` (the holder) and ``now_ns`` (before expiry) are given and match."""
        row = self._connection.execute(
            select(leader_lease).where(leader_lease.c.name == name)
        ).first()
        if row is None:
            return None
        is_leader = (
            instance_id is not None
            and now_ns is not None
            and row.holder == instance_id
            and row.expires_ns > now_ns
        )
        return LeaseState(
            name=row.name,
            holder=row.holder,
            epoch=row.epoch,
            expires_ns=row.expires_ns,
            is_leader=is_leader,
        )


class KillSwitchRepository:
    """The sticky kill-switch state: a single row."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def load(self) -> KillSwitchRecord | None:
        row = self._connection.execute(
            select(kill_switch).where(kill_switch.c.id == _KILL_SWITCH_ROW_ID)
        ).first()
        if row is None:
            return None
        return KillSwitchRecord(
            active=bool(row.active),
            reason=row.reason,
            detail=row.detail,
            activated_ns=row.activated_ns,
            reset_ns=row.reset_ns,
            updated_ns=row.updated_ns,
        )

    def save(self, record: KillSwitchRecord) -> None:
        values = msgspec.structs.asdict(record)
        values["id"] = _KILL_SWITCH_ROW_ID
        _upsert(self._connection, kill_switch, values, key=("id",))


class ControlStateRepository:
    """Small named values the control plane must survive a restart with (mode, armed, pause
    cause, ...), stored as text (JSON by convention)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def get(self, key: str) -> str | None:
        return self._connection.execute(
            select(control_state.c.value).where(control_state.c.key == key)
        ).scalar_one_or_none()

    def put(self, key: str, value: str, *, ts_ns: int) -> None:
        _upsert(
            self._connection,
            control_state,
            {"key": key, "value": value, "updated_ns": ts_ns},
            key=("key",),
        )


class DailyReportRepository:
    """One JSON report per trading day (``YYYY-MM-DD``); writing a day again replaces it."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def put(self, trading_day: str, report: Mapping[str, Any], *, ts_ns: int) -> None:
        _upsert(
            self._connection,
            daily_reports,
            {
                "trading_day": trading_day,
                "report": msgspec.json.encode(dict(report)).decode(),
                "created_ns": ts_ns,
            },
            key=("trading_day",),
        )

    def get(self, trading_day: str) -> dict[str, Any] | None:
        text = self._connection.execute(
            select(daily_reports.c.report).where(daily_reports.c.trading_day == trading_day)
        ).scalar_one_or_none()
        if text is None:
            return None
        decoded: dict[str, Any] = msgspec.json.decode(text)
        return decoded


class DayFiguresRepository:
    """The day figures (``domain.day_figures``): counts that only grow and a heat mark that only
    rises, per trading day, so that what several processes stored on one day adds up."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, deltas: DayDeltas, *, ts_ns: int) -> None:
        """Add ``deltas``' counts to the stored ones and raise each day's heat mark where the
        delta's is higher (an equal heat keeps the earlier time). One statement per row."""
        insert_ = _dialect_insert(self._connection)
        for (day, kind, key), count in sorted(deltas.counts.items()):
            statement = insert_(day_figure_counts).values(
                trading_day=day, kind=kind, key=key, count=count, updated_ns=ts_ns
            )
            self._connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["trading_day", "kind", "key"],
                    set_={
                        "count": day_figure_counts.c.count + statement.excluded.count,
                        "updated_ns": statement.excluded.updated_ns,
                    },
                )
            )
        for day, mark in sorted(deltas.heat.items()):
            self._raise_heat(day, mark, ts_ns)

    def _raise_heat(self, day: str, mark: HeatMark, ts_ns: int) -> None:
        # Read, then insert or update under a condition: ExactDecimal is text on SQLite, so the
        # comparison is made here in Decimal, and the conditional UPDATE keeps it safe against a
        # concurrent writer (it only ever raises the stored value).
        stored = self._connection.execute(
            select(day_heat.c.max_heat, day_heat.c.max_heat_ns).where(day_heat.c.trading_day == day)
        ).first()
        if stored is None:
            statement = _dialect_insert(self._connection)(day_heat).values(
                trading_day=day, max_heat=mark.rupees, max_heat_ns=mark.ts_ns, updated_ns=ts_ns
            )
            inserted = self._connection.execute(
                statement.on_conflict_do_nothing(index_elements=["trading_day"])
            )
            if inserted.rowcount:
                return
            stored = self._connection.execute(
                select(day_heat.c.max_heat, day_heat.c.max_heat_ns).where(
                    day_heat.c.trading_day == day
                )
            ).one()
        higher = mark.rupees > stored.max_heat
        earlier_tie = mark.rupees == stored.max_heat and mark.ts_ns < stored.max_heat_ns
        if higher or earlier_tie:
            self._connection.execute(
                update(day_heat)
                .where(
                    day_heat.c.trading_day == day,
                    day_heat.c.max_heat == stored.max_heat,
                    day_heat.c.max_heat_ns == stored.max_heat_ns,
                )
                .values(max_heat=mark.rupees, max_heat_ns=mark.ts_ns, updated_ns=ts_ns)
            )

    def figures(self, trading_day: str) -> DayFigures | None:
        """The stored figures of ``trading_day``; None when nothing was stored for it (a day
        before migration 0005, or one no engine recorded)."""
        rows = self._connection.execute(
            select(day_figure_counts.c.kind, day_figure_counts.c.key, day_figure_counts.c.count)
            .where(day_figure_counts.c.trading_day == trading_day)
            .order_by(day_figure_counts.c.kind, day_figure_counts.c.key)
        ).all()
        heat = self._connection.execute(
            select(day_heat.c.max_heat, day_heat.c.max_heat_ns).where(
                day_heat.c.trading_day == trading_day
            )
        ).first()
        if not rows and heat is None:
            return None
        return DayFigures.from_counts(
            trading_day,
            [(row.kind, row.key, int(row.count)) for row in rows],
            None if heat is None else HeatMark(rupees=heat.max_heat, ts_ns=heat.max_heat_ns),
        )


class EngineStart(msgspec.Struct, frozen=True, kw_only=True):
    """One engine start: what ran (config and git SHA), as whom, in which mode and zone."""

    ts_ns: int
    trading_day: str
    instance_id: str
    lease_holder: str
    config_sha: str
    git_sha: str
    mode: str
    timezone: str


class EngineStartRepository:
    """``engine_starts``: one appended row per engine start."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def record(self, start: EngineStart) -> None:
        self._connection.execute(insert(engine_starts).values(msgspec.structs.asdict(start)))

    def between(self, start_ns: int, end_ns: int) -> list[EngineStart]:
        """The starts in ``[start_ns, end_ns)``, oldest first."""
        rows = self._connection.execute(
            select(engine_starts)
            .where(engine_starts.c.ts_ns >= start_ns, engine_starts.c.ts_ns < end_ns)
            .order_by(engine_starts.c.ts_ns, engine_starts.c.id)
        ).all()
        return [_engine_start(row) for row in rows]

    def last_before(self, ts_ns: int) -> EngineStart | None:
        """The latest start before ``ts_ns`` (the engine that may have run into that time)."""
        row = self._connection.execute(
            select(engine_starts)
            .where(engine_starts.c.ts_ns < ts_ns)
            .order_by(engine_starts.c.ts_ns.desc(), engine_starts.c.id.desc())
            .limit(1)
        ).first()
        return None if row is None else _engine_start(row)


def _engine_start(row: Row[Any]) -> EngineStart:
    return EngineStart(
        ts_ns=row.ts_ns,
        trading_day=row.trading_day,
        instance_id=row.instance_id,
        lease_holder=row.lease_holder,
        config_sha=row.config_sha,
        git_sha=row.git_sha,
        mode=row.mode,
        timezone=row.timezone,
    )


# ---------------------------------------------------------------------------------------------
# ROW MAPPING
# ---------------------------------------------------------------------------------------------


def _lease_held(fence: LeaseFence) -> Any:
    """The fence as a sub-select: the lease is held by the fence's holder at its epoch (and, with
    ``now_ns``, unexpired; an expired lease fences too, since a standby may take it at any
    moment). Share-locked on PostgreSQL, so a takeover waits for the fenced write to commit."""
    return (
        select(literal(1))
        .select_from(leader_lease)
        .where(
            leader_lease.c.name == fence.name,
            leader_lease.c.holder == fence.instance_id,
            leader_lease.c.epoch == fence.epoch,
            true() if fence.now_ns is None else leader_lease.c.expires_ns > fence.now_ns,
        )
        .with_for_update(read=True)
    )


def bracket_values(bracket: Bracket) -> dict[str, Any]:
    """The ``brackets`` row of ``bracket`` (the whole bracket as JSON in ``state``)."""
    return {
        "plan_client_id": bracket.plan_client_id,
        "strategy": bracket.strategy,
        "instrument": bracket.instrument,
        "status": bracket.status.value,
        "entry_order_id": bracket.entry_order_id or None,
        "stop_order_id": bracket.stop_order_id,
        "target_order_id": bracket.target_order_id,
        "state": msgspec.json.encode(bracket).decode(),
        "updated_ns": bracket.ts_updated,
    }


def fill_values(fill: FillReport, *, plan_client_id: str, recorded_ns: int) -> dict[str, Any]:
    """The ``fills`` row of ``fill``."""
    return {
        "trade_id": fill.trade_id,
        "client_order_id": fill.client_order_id,
        "plan_client_id": plan_client_id,
        "broker_order_id": fill.broker_order_id,
        "instrument": fill.instrument,
        "side": fill.side.value,
        "quantity": fill.quantity,
        "price": fill.price,
        "ts_event_ns": fill.ts_event,
        "recorded_ns": recorded_ns,
    }


def position_values(view: PositionRow) -> dict[str, Any]:
    """The ``positions`` row of ``view``."""
    values = msgspec.structs.asdict(view)
    values["side"] = view.side.value
    return values


def order_values(order: Order) -> dict[str, Any]:
    """The ``orders`` row of ``order`` (without the surrogate ``id``)."""
    return _order_values(order)


def _order_values(order: Order) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "plan_client_id": order.plan_client_id,
        "strategy": order.strategy,
        "instrument": order.instrument,
        "leg": order.leg.value,
        "side": order.side.value,
        "order_type": order.order_type.value,
        "quantity": order.quantity,
        "price": order.price,
        "trigger_price": order.trigger_price,
        "status": order.status.value,
        "filled_quantity": order.filled_quantity,
        "average_fill_price": order.average_fill_price,
        "broker_order_id": order.broker_order_id,
        "epoch": order.epoch,
        "reason": order.reason,
        "created_ns": order.ts_created,
        "updated_ns": order.ts_updated,
    }


def _order_from_row(row: Row[Any]) -> Order:
    return Order(
        client_order_id=row.client_order_id,
        plan_client_id=row.plan_client_id,
        strategy=row.strategy,
        instrument=row.instrument,
        leg=LegKind(row.leg),
        side=Side(row.side),
        order_type=OrderType(row.order_type),
        quantity=row.quantity,
        price=row.price,
        trigger_price=row.trigger_price,
        status=OrderStatus(row.status),
        filled_quantity=row.filled_quantity,
        average_fill_price=row.average_fill_price,
        broker_order_id=row.broker_order_id,
        epoch=row.epoch,
        reason=row.reason,
        ts_created=row.created_ns,
        ts_updated=row.updated_ns,
    )


def _position_from_row(row: Row[Any]) -> PositionRow:
    return PositionRow(
        position_id=row.position_id,
        strategy=row.strategy,
        instrument=row.instrument,
        side=Side(row.side),
        quantity=row.quantity,
        average_price=row.average_price,
        realized_pnl=row.realized_pnl,
        status=row.status,
        updated_ns=row.updated_ns,
    )


def dialect_insert(connection: Connection) -> Any:
    """The ``insert`` of the connection's dialect (with ``on_conflict_*``)."""
    return _dialect_insert(connection)


def _dialect_insert(connection: Connection) -> Any:
    name = connection.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    raise NotImplementedError(
        f"storage supports sqlite and postgresql; the database dialect was {name}"
    )


def _upsert(
    connection: Connection, table: Table, values: Mapping[str, Any], *, key: Sequence[str]
) -> None:
    statement = _dialect_insert(connection)(table).values(dict(values))
    changes = {column: statement.excluded[column] for column in values if column not in key}
    connection.execute(statement.on_conflict_do_update(index_elements=list(key), set_=changes))
