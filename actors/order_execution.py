"""The order actor's execution: every order it places, sends, resends, resizes or cancels.

Not an actor: a helper the ``OrderActor`` owns and calls on its own thread, working on the
shared ``OrderBook``. It owns the way to the broker:

- the last gate (``send_gate``, ``may_touch_broker``): leadership (lease held, not expired,
  epoch not refused by the database), the finished takeover for entries, and the kill switch's
  authoritative decision (``TradingGate.current()``) for entries; exits and protective legs
  only reduce exposure and go on while paused or halted;
- the write-ahead fence: before every broker call (place, resend, cancel, cancel resend,
  resize) one entry is appended to the order journal (``adapters.storage.journal``) by one
  fenced INSERT under our lease holder and epoch (a ``StaleEpoch`` means deposed: nothing more
  is sent under that epoch); every other change goes to the tables behind it, through the
  write-behind (``adapters.storage.write_behind``), never in a transaction of its own;
- outcomes: a broker timeout or 5xx leaves the order in flight (never "rejected") until the
  broker's order list settles it; nothing is re-sent under a new id;
- entry expiry (``config.orders.entry_ttl_s`` and the trading day) and the retry caps
  (``config.orders.max_attempts``) on resends, resizes and cancels, which escalate instead of
  spinning.

What it needs from the actor comes in as collaborators and two callbacks: applying a status
report (the actor's fill/status path) and counting a cancel for a flatten in progress.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec

from adapters.brokers.base import BrokerRejected, BrokerUnavailable
from adapters.logs import log_event
from adapters.storage.journal import JournalKind
from adapters.storage.repositories import (
    DuplicateClientOrderId,
    LeaseFence,
    StaleEpoch,
    UnitOfWork,
)
from domain import oco
from domain.enums import DenialCode, LegKind, OrderStatus, OrderType
from domain.expiry import entry_expiry
from domain.messages import (
    BrokerRequestCompleted,
    BrokerRequestFailed,
    BrokerRequestKind,
    BrokerRequestWithheld,
    LeadershipChanged,
    OrderDenied,
    OrderRequest,
    OrderStatusReport,
    TripKillSwitch,
)
from domain.orders import (
    InvalidTransition,
    Order,
    mark_cancel_rejected,
    mark_cancel_requested,
    mark_rejected,
    mark_submitted,
    move_trigger,
    resize,
    turn_to_market,
)

if TYPE_CHECKING:
    from actors.broker_gateway import BrokerGateway
    from actors.order_book import OrderBook
    from actors.order_reconciliation import OrderReconciler
    from actors.safety_outbox import SafetyOutbox
    from actors.trading_gate import TradingGate
    from adapters.brokers.base import BrokerPort
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from adapters.storage.journal import OrderJournal
    from adapters.storage.write_behind import WriteBehind
    from domain.clock import Clock
    from domain.config import OrderConfig

__all__ = ["OrderExecution"]

# The order actor's log lines keep one logger name, whichever module writes them.
logger = logging.getLogger("actors.order_actor")

_MAX_LEG_REPLACEMENTS = 3
_DUPLICATE_AT_BROKER = "DUPLICATE_CLIENT_ORDER_ID"


class OrderExecution:
    """Placing, sending and cancelling the orders of one order actor's books.

    Args:
        book: the actor's books, shared by reference.
        database: the tables, read on cold paths only (an order not in the books).
        journal: the write-ahead journal (and the lease fence), appended before each call.
        store: the write-behind that brings the tables up to date.
        broker: the broker port (its order list, for expiry).
        gateway: where submits, cancels and modifies go; their outcomes come back as messages
            (``on_request_failed``, ``on_request_completed``).
        metrics: order, retry and denial counters.
        clock: the actor's clock.
        gate: the kill switch's authoritative trading state.
        lease_holder: our lease holder (instance id plus incarnation), written with each order.
        instance_id: stamped on stored events.
        config: entry time to live and retry caps.
        reconciler: told which ids the broker already holds.
        safety: halts that must reach the kill switch.
        apply_status_report: the actor's status-report path (settling an order locally).
        on_cancel_requested: called after each cancel sent (a flatten counts them).
    """

    def __init__(
        self,
        book: OrderBook,
        *,
        database: Database,
        journal: OrderJournal,
        store: WriteBehind,
        broker: BrokerPort,
        gateway: BrokerGateway,
        metrics: EngineMetrics,
        clock: Clock,
        gate: TradingGate,
        lease_holder: str,
        instance_id: str,
        config: OrderConfig,
        reconciler: OrderReconciler,
        safety: SafetyOutbox,
        apply_status_report: Callable[[OrderStatusReport], None],
        on_cancel_requested: Callable[[], None],
    ) -> None:
        self._book = book
        self._database = database
        self._journal = journal
        self._store = store
        self._broker = broker
        # IG keeps stop and target on the position: a flatten's exit closes them with it.
        self.levels_on_position = bool(getattr(broker, "levels_on_position", False))
        # Kite can make a working stop a market order: a flatten's stop is then its exit.
        self.stop_in_place = bool(getattr(broker, "stop_in_place", False))
        self._gateway = gateway
        self._metrics = metrics
        self._clock = clock
        self._gate = gate
        self._lease_holder = lease_holder
        self._instance_id = instance_id
        self._order_config = config
        self._reconciler = reconciler
        self._safety = safety
        self._apply_status_report = apply_status_report
        self._on_cancel_requested = on_cancel_requested
        self.leadership: LeadershipChanged | None = None
        # Monotonic send time per order, for the acknowledgement latency.
        self.submitted_at_ns: dict[str, int] = {}
        self.denied: deque[OrderDenied] = deque(maxlen=50)
        # Resizes handed to the gateway and not yet answered (client_order_id -> quantity): a
        # consistency pass meanwhile must not ask for the same resize again.
        self._resizing: dict[str, int] = {}
        # Stops a flatten is making market orders, not yet answered (the same, for turns).
        self._turning: dict[str, int] = {}
        # Stops whose trigger a tighten is moving, not yet answered (client_order_id -> the
        # new trigger): one move per stop at a time; the books take it once the broker did.
        self._moving: dict[str, Decimal] = {}
        # Failed attempts per (loop, client_order_id): resends and resizes stop at
        # max_attempts and escalate instead of spinning.
        self._attempts: Counter[tuple[str, str]] = Counter()
        # The epoch whose takeover (books reloaded, broker caught up) has finished: entries
        # wait for it, exits and protective legs do not.
        self.taken_over_epoch: int | None = None
        # An epoch the database fence refused: we were deposed before our lease actor noticed,
        # so nothing more goes to the broker under it.
        self._deposed_epoch: int | None = None
        # While a burst of messages is worked through: places decided (booked, not yet
        # journalled or sent) to be journalled in one statement and sent at flush_places.
        self._deferred: list[tuple[oco.Bracket, oco.PlaceLeg, Order]] | None = None

    # ------------------------------------------------------------------ LAST GATE
    def send_gate(self, leg: LegKind) -> tuple[DenialCode, str] | None:
        leadership = self.leadership
        now = self._clock.now_ns()
        if leadership is None or not leadership.is_leader:
            return DenialCode.NOT_LEADER, f"holder={self._lease_holder}"
        if leadership.lease_expires_ns <= now:
            return DenialCode.NOT_LEADER, (
                f"lease_expired_ns={leadership.lease_expires_ns} now_ns={now}"
            )
        if leadership.epoch == self._deposed_epoch:
            return DenialCode.STALE_EPOCH, f"epoch {leadership.epoch} refused by the database"
        if leg is not LegKind.ENTRY:
            return None  # stops, targets and exits only ever reduce exposure
        if self.taken_over_epoch != leadership.epoch:
            return DenialCode.NOT_LEADER, (
                f"takeover of epoch {leadership.epoch} not finished (books not yet reloaded "
                "and reconciled)"
            )
        # The kill switch's decision, not our copy of its last message: a HALT, pause or
        # disarm it has acknowledged stops this order even if the message is still queued.
        return self._gate.entry_denial(now)

    def submit_started_ns(self, client_order_id: str) -> int | None:
        """When the broker call of the order's submit began (None: not known)."""
        return self._gateway.take_submit_started_ns(client_order_id)

    def held_by_gateway(self) -> frozenset[str]:
        """Orders whose request the broker gateway still holds (queued or in a call)."""
        return self._gateway.held_order_ids()

    def may_touch_broker(self) -> bool:
        leadership = self.leadership
        return (
            leadership is not None
            and leadership.is_leader
            and leadership.lease_expires_ns > self._clock.now_ns()
            and leadership.epoch != self._deposed_epoch
        )

    # ------------------------------------------------------------------ DENIALS
    def deny(self, client_id: str, leg: LegKind, code: DenialCode, detail: str, now: int) -> None:
        denied = OrderDenied(
            client_order_id=client_id, leg=leg, code=code, detail=detail, ts_event=now
        )
        self.denied.append(denied)
        self._metrics.orders_total.labels(leg=leg.value, outcome="denied").inc()
        self._metrics.risk_blocks_total.labels(reason=code.value).inc()
        logger.warning("order %s (%s) denied: %s %s", client_id, leg.value, code.value, detail)

    # ------------------------------------------------------------------ EGRESS
    def bracket_update(self, bracket: oco.Bracket, now: int) -> list[oco.BracketAction]:
        """``oco.on_order_update`` for ``bracket`` with its legs, as this broker keeps them."""
        return oco.on_order_update(
            bracket,
            self._book.bracket_orders(bracket),
            now,
            levels_on_position=self.levels_on_position,
            stop_in_place=self.stop_in_place,
        )

    def bracket_flatten(
        self, bracket: oco.Bracket, reason: str, now: int
    ) -> list[oco.BracketAction]:
        """``oco.request_flatten`` for ``bracket`` with its legs, as this broker keeps them."""
        return oco.request_flatten(
            bracket,
            self._book.bracket_orders(bracket),
            reason,
            now,
            levels_on_position=self.levels_on_position,
            stop_in_place=self.stop_in_place,
        )

    def store_order_update(self, order: Order, now: int) -> None:
        """Store a changed order, let its bracket (if still active) react, and carry out what
        the bracket asks for."""
        bracket = self._book.brackets.get(order.plan_client_id)
        actions: list[oco.BracketAction] = []
        if bracket is not None:
            actions = self.bracket_update(bracket, now)
        self._store.write(order=order, bracket=bracket)
        if bracket is not None:
            self.execute(bracket, actions)

    def execute(self, bracket: oco.Bracket, actions: list[oco.BracketAction]) -> None:
        self.execute_all([(bracket, actions)])

    def execute_all(self, work: Iterable[tuple[oco.Bracket, list[oco.BracketAction]]]) -> None:
        """Carry out each bracket's actions. A bracket whose actions are all cancels (what a
        flatten asks of every protected position) has them journalled together with the
        other such brackets' in one fenced statement; any other list runs in its own order."""
        cancels: list[oco.CancelLeg] = []
        for bracket, actions in work:
            if all(isinstance(action, oco.CancelLeg) for action in actions):
                cancels.extend(actions)  # type: ignore[arg-type]
                continue
            for action in actions:
                if isinstance(action, oco.PlaceLeg):
                    self.place(bracket, action)
                elif isinstance(action, oco.ResizeLeg):
                    self._resize(action)
                elif isinstance(action, oco.MarketLeg):
                    self._turn_to_market(action)
                elif isinstance(action, oco.MoveStop):
                    self._move_stop(action)
                else:
                    self.cancel_all([action])
        self.cancel_all(cancels)

    def place(self, bracket: oco.Bracket, action: oco.PlaceLeg) -> bool:
        now = self._clock.now_ns()
        gate = self.send_gate(action.leg)
        if gate is not None:
            if action.leg is LegKind.ENTRY:
                self.deny(action.client_order_id, action.leg, gate[0], gate[1], now)
            else:
                # Deferred, not dropped: the consistency pass asks for this leg again.
                logger.info("deferring %s: %s %s", action.client_order_id, gate[0].value, gate[1])
            return False
        replacements = {
            LegKind.STOP: bracket.stop_sequence,
            LegKind.TARGET: bracket.target_sequence,
        }
        if replacements.get(action.leg, 0) > _MAX_LEG_REPLACEMENTS:
            # The venue keeps killing this protective leg: holding the position unprotected is
            # worse than closing it.
            self.give_up_protection(bracket, now)
            return False
        assert self.leadership is not None
        order = oco.new_leg_order(bracket, action, now, epoch=self.leadership.epoch)
        if self._deferred is not None:
            # Booked now (the rest of the burst must see the leg and not place it again);
            # journalled with the burst's other places, and only then sent.
            self._book.orders[order.client_order_id] = order
            self._deferred.append((bracket, action, order))
            return True
        fence = LeaseFence(instance_id=self._lease_holder, epoch=self.leadership.epoch, now_ns=now)
        try:
            # The write-ahead record: one fenced INSERT, with the bracket recovery needs.
            seq = self._journal.append(JournalKind.PLACE, order, fence, bracket=bracket)
        except DuplicateClientOrderId:
            self._placed_before(action, now)
            return False
        except StaleEpoch as error:
            self._deposed(fence.epoch, error)
            self.deny(action.client_order_id, action.leg, DenialCode.STALE_EPOCH, str(error), now)
            return False
        self._book.orders[order.client_order_id] = order
        self._store.write(order=order, bracket=bracket, journal_seq=seq)
        self._send(order)
        return True

    def _placed_before(self, action: oco.PlaceLeg, now: int) -> None:
        """The journal refused a PLACE: its client order id is already placed."""
        if action.leg is LegKind.ENTRY:
            self.deny(
                action.client_order_id,
                action.leg,
                DenialCode.DUPLICATE_PLAN,
                f"client_order_id={action.client_order_id} already stored",
                now,
            )
            return
        # Cold path: the stored leg (a leg id reused after a restart) from the tables.
        self._store.flush()
        with UnitOfWork(self._database) as uow:
            stored = uow.orders.get(action.client_order_id)
        if stored is not None:
            self._book.orders[stored.client_order_id] = stored

    # ------------------------------------------------------------------ DEFERRED PLACES
    def defer_places(self) -> None:
        """Until ``flush_places``: a place is decided and booked, then journalled together
        with the others (one fenced statement for a burst of plans or a flatten's exits, not
        one each) and sent at the flush. Nothing is sent before its journal entry exists."""
        if self._deferred is None:
            self._deferred = []

    def flush_places(self) -> None:
        """Journal the deferred places in one statement, then send them in decision order;
        one the fence or a duplicate refuses is unbooked and never sent."""
        deferred, self._deferred = self._deferred, None
        if not deferred:
            return
        now = self._clock.now_ns()
        assert self.leadership is not None
        fence = LeaseFence(instance_id=self._lease_holder, epoch=self.leadership.epoch, now_ns=now)
        try:
            seqs = self._journal.append_places(
                [(order, bracket) for bracket, _, order in deferred], fence
            )
        except StaleEpoch as error:
            self._deposed(fence.epoch, error)
            for bracket, action, order in deferred:
                self._unbook(bracket, order)
                self.deny(
                    action.client_order_id, action.leg, DenialCode.STALE_EPOCH, str(error), now
                )
            return
        except BaseException:
            # Nothing of the failed statement may be sent; the actor fails and reloads.
            for bracket, _, order in deferred:
                self._unbook(bracket, order)
            raise
        # The burst's orders are all booked: the gateway learns the flatten's cost once, and
        # weighs none of its entries against it before the whole burst is queued.
        self.update_flatten_reserve()
        legs_sent = False
        with self._gateway.entry_burst():
            for (bracket, action, order), seq in zip(deferred, seqs, strict=True):
                if seq is None:
                    self._unbook(bracket, order)
                    self._placed_before(action, now)
                    continue
                self._store.write(order=order, bracket=bracket, journal_seq=seq)
                self._send(order, reserve_told=True)
                legs_sent = legs_sent or order.leg is not LegKind.ENTRY
        if legs_sent:
            # Counted above at their submit and cancel (not handed over yet); now the gateway
            # holds their submits: the books count their cancels only.
            self.update_flatten_reserve()

    def _unbook(self, bracket: oco.Bracket, order: Order) -> None:
        self._book.orders.pop(order.client_order_id, None)
        if order.leg is LegKind.ENTRY and order.client_order_id == bracket.entry_order_id:
            # The bracket was opened for this entry alone (submit_bracket): it never was.
            self._book.brackets.pop(bracket.plan_client_id, None)

    def _send(self, order: Order, *, reserve_told: bool = False) -> None:
        attached_stop = attached_target = None
        if order.leg is LegKind.ENTRY:
            bracket = self._book.brackets.get(order.plan_client_id)
            if bracket is not None:
                attached_stop, attached_target = bracket.stop_price, bracket.target_price
        request = OrderRequest(
            client_order_id=order.client_order_id,
            instrument=order.instrument,
            side=order.side,
            order_type=order.order_type,
            quantity=order.quantity,
            price=order.price,
            trigger_price=order.trigger_price,
            attached_stop=attached_stop,
            attached_target=attached_target,
        )
        now = self._clock.now_ns()
        self.submitted_at_ns[order.client_order_id] = self._clock.monotonic_ns()
        if order.status is OrderStatus.PENDING_SUBMIT:
            # "Maybe sent" from here on: the gateway may call the broker at any moment.
            mark_submitted(order, now)
        is_entry = order.leg is LegKind.ENTRY
        if not reserve_told and is_entry:
            # Before the hand-over: the gateway weighs an entry against a flatten reserve that
            # already counts its bracket.
            self.update_flatten_reserve()
        # SUBMITTED lives in memory only: the stored PENDING_SUBMIT already means "maybe sent",
        # and recovery settles it from the broker's order list either way (resending under the
        # same id only if the broker never saw it). One transaction saved per leg.
        self._gateway.submit(request, leg=order.leg)
        if not reserve_told and not is_entry:
            # After the hand-over: a SUBMITTED leg counts in the books as its cancel only, its
            # submit being the gateway's (queued or sent); told before, the submit would be
            # counted nowhere for a moment, and an entry could take its token. A filled
            # entry's legs shrink its bracket's share.
            self.update_flatten_reserve()
        self._metrics.orders_total.labels(leg=order.leg.value, outcome="submitted").inc()
        # One line per order we send (bounded by our own order rate), so the log alone shows
        # what went out, e.g. a flatten's exits finishing after a restart. A refusal adds an
        # ORDER_REJECTED line when the gateway reports it. Written after the hand-over: a log
        # line costs more than the paper venue's whole call.
        log_event(
            logger,
            "ORDER_SUBMITTED",
            f"{order.leg.value} {order.side.value} {order.quantity} {order.instrument} "
            f"{order.client_order_id}: submitted",
            client_order_id=order.client_order_id,
            plan_client_id=order.plan_client_id,
            leg=order.leg.value,
            side=order.side.value,
            quantity=order.quantity,
            order_type=order.order_type.value,
            epoch=order.epoch,
            outcome="submitted",
        )

    def _resize(self, action: oco.ResizeLeg) -> None:
        order = self._book.orders.get(action.client_order_id)
        if order is None or order.status.is_terminal or not self.may_touch_broker():
            return
        if self._resizing.get(order.client_order_id) == action.quantity:
            return  # already on its way to the broker; its outcome comes back as a message
        if self.stamp_under_fence(order, self._clock.now_ns(), kind=JournalKind.RESIZE) is not None:
            return
        self._resizing[order.client_order_id] = action.quantity
        self._gateway.modify(order.client_order_id, quantity=action.quantity, leg=order.leg)

    def _turn_to_market(self, action: oco.MarketLeg) -> None:
        """Make a flatten's stop its exit. Written ahead as a re-stamp; our books say MARKET only
        once the broker took it (``on_request_completed``), so until then the bracket asks
        again (answered from ``_turning``), and after a restart it asks the broker again."""
        order = self._book.orders.get(action.client_order_id)
        if order is None or order.status.is_terminal or order.order_type is not OrderType.STOP:
            return
        if not self.may_touch_broker() or self._turning.get(order.client_order_id) == (
            action.quantity
        ):
            return
        if self.stamp_under_fence(order, self._clock.now_ns(), kind=JournalKind.RESIZE) is not None:
            return
        self._turning[order.client_order_id] = action.quantity
        self._gateway.turn_to_market(order.client_order_id, quantity=action.quantity, leg=order.leg)

    def _move_stop(self, action: oco.MoveStop) -> None:
        """Move a stop's trigger in place (a tighten): written ahead as a re-stamp; the books
        take the new trigger once the broker did, and until then the bracket asks again
        (answered from ``_moving``)."""
        order = self._book.orders.get(action.client_order_id)
        if order is None or order.status.is_terminal or order.order_type is not OrderType.STOP:
            return
        if not self.may_touch_broker() or order.client_order_id in self._moving:
            return
        if self.stamp_under_fence(order, self._clock.now_ns(), kind=JournalKind.RESIZE) is not None:
            return
        self._moving[order.client_order_id] = action.trigger_price
        self._gateway.move_stop(
            order.client_order_id,
            quantity=order.quantity,
            trigger_price=action.trigger_price,
            leg=order.leg,
        )

    def _stop_moved(self, client_id: str) -> None:
        trigger_price = self._moving.pop(client_id, None)
        order = self._book.orders.get(client_id)
        if trigger_price is None or order is None:
            return
        self._attempts.pop(("move", client_id), None)
        try:
            move_trigger(order, trigger_price, self._clock.now_ns())
        except InvalidTransition as error:
            logger.info("stop %s moved at the broker, not in our books: %s", client_id, error)
            return
        self._store.write(order=order)

    def _move_stop_failed(self, order: Order, failed: BrokerRequestFailed) -> None:
        """A refused or unanswered move leaves the old stop protecting at its old level; the
        bracket asks again at its next update. Past max_attempts the stop is cancelled and the
        keep-protected rule replaces it at the new level (a round trip without a stop, the way
        brokers that cannot move a stop always tighten)."""
        if order.status.is_terminal or order.status is OrderStatus.PENDING_CANCEL:
            return
        key = ("move", order.client_order_id)
        self._attempts[key] += 1
        if not failed.rejected:
            self._metrics.retries_total.labels(type="modify_unknown").inc()
        logger.warning(
            "stop %s not moved (%s, attempt %d): %s",
            order.client_order_id,
            "refused" if failed.rejected else "unanswered",
            self._attempts[key],
            failed.error,
        )
        if self._attempts[key] < self._order_config.max_attempts:
            return
        del self._attempts[key]
        detail = (
            f"stop {order.client_order_id} could not be moved {self._order_config.max_attempts} "
            f"times; cancelling it, the bracket replaces it at its new level. Last: "
            f"{failed.error}"
        )
        log_event(
            logger,
            "MOVE_GAVE_UP",
            detail,
            level=logging.WARNING,
            client_order_id=order.client_order_id,
            leg=order.leg.value,
        )
        self._store.write_event(
            "MOVE_GAVE_UP",
            {"detail": detail, "client_order_id": order.client_order_id},
            ts_ns=self._clock.now_ns(),
            instance_id=self._instance_id,
        )
        self.cancel(oco.CancelLeg(client_order_id=order.client_order_id))

    def _turned_to_market(self, client_id: str, quantity: int) -> None:
        self._turning.pop(client_id, None)
        order = self._book.orders.get(client_id)
        if order is None:
            return
        try:
            turn_to_market(order, quantity, self._clock.now_ns())
        except (InvalidTransition, ValueError) as error:
            # A fill or cancel crossed it (a market order fills at once): the reports settle it.
            logger.info("stop %s made a market order, not in our books: %s", client_id, error)
            return
        self._store.write(order=order)

    def _turn_to_market_failed(self, order: Order, failed: BrokerRequestFailed) -> None:
        """The broker refused to make the stop a market order, or did not answer: cancel it
        (a cancel that finds it filled is refused, and its fill settles it). Once it is dead
        the bracket closes the position with an EXIT, the usual way."""
        if order.status.is_terminal or order.status is OrderStatus.PENDING_CANCEL:
            return
        outcome = "refused" if failed.rejected else "unanswered"
        if not failed.rejected:
            self._metrics.retries_total.labels(type="modify_unknown").inc()
        logger.warning(
            "stop %s not made a market order (%s: %s); cancelling it, then an exit closes "
            "the position",
            order.client_order_id,
            outcome,
            failed.error,
        )
        self.cancel(oco.CancelLeg(client_order_id=order.client_order_id))

    def _resize_failed(self, order: Order, key: tuple[str, str], error: str) -> None:
        """Count a refused or unanswered resize; past max_attempts, stop resizing and make the
        bracket safe without it.

        A leg whose size cannot be changed no longer matches the position: too small leaves
        part of it unprotected, too large can over-exit. Cancel-and-replace would leave the
        position unprotected between the cancel and a replacement the same broker may refuse
        again, so a protective leg gives up the bracket instead: flatten it (cancel every leg,
        then one market EXIT for what is open, the existing ``_give_up_protection`` path). An
        EXIT leg is already the flatten: cancelling it lets the wind-down place a new EXIT
        sized to what is open.
        """
        self._attempts[key] += 1
        attempts = self._attempts[key]
        if attempts < self._order_config.max_attempts:
            return
        now = self._clock.now_ns()
        detail = (
            f"resize of {order.client_order_id} ({order.leg.value}) failed {attempts} times "
            f"(max_attempts={self._order_config.max_attempts}), last: {error}"
        )
        self._escalate("RESIZE_GAVE_UP", detail, order, now)
        del self._attempts[key]
        bracket = self._book.brackets.get(order.plan_client_id)
        if order.leg in (LegKind.STOP, LegKind.TARGET) and bracket is not None:
            self.give_up_protection(bracket, now)
        else:
            self.cancel(oco.CancelLeg(client_order_id=order.client_order_id))

    def cancel(self, action: oco.CancelLeg) -> None:
        self.cancel_all([action])

    def cancel_all(self, actions: Iterable[oco.CancelLeg]) -> None:
        """Cancel the working orders of ``actions``: one fenced journal statement for all of
        them, then a cancel request each."""
        orders: dict[str, Order] = {}
        for action in actions:
            order = self._book.orders.get(action.client_order_id)
            if order is not None and not order.status.is_terminal:
                orders[order.client_order_id] = order
        if not orders or not self.may_touch_broker():
            return
        now = self._clock.now_ns()
        if (
            self.stamp_all_under_fence(
                list(orders.values()), now, kind=JournalKind.CANCEL, change=mark_cancel_requested
            )
            is not None
        ):
            return
        for order in orders.values():
            self.request_cancel(order)
            self._on_cancel_requested()
        self.update_flatten_reserve()  # a bracket winding down frees its share

    def update_flatten_reserve(self) -> None:
        """Tell the gateway what a flatten of the books would cost now (its flatten reserve;
        no work for a gateway without one)."""
        self._gateway.update_flatten_reserve(
            self._book.brackets.values(),
            self._book.orders,
            levels_on_position=self.levels_on_position,
            stop_in_place=self.stop_in_place,
        )

    def request_cancel(self, order: Order) -> None:
        order.ts_updated = self._clock.now_ns()  # the settle pass waits from the last request
        self._gateway.cancel(order.client_order_id, leg=order.leg)

    # ------------------------------------------------------------------ BROKER OUTCOMES
    def on_request_failed(self, failed: BrokerRequestFailed) -> None:
        """The gateway's report of a refused (``rejected``) or unanswered request: what the
        broker call's exception branches did when the call ran here. A refused submit is
        rejected (a ``DUPLICATE_CLIENT_ORDER_ID`` is not: the broker has the order); a refused
        cancel leaves the order working; a failed resize counts towards its retry cap; an
        unanswered submit or cancel stays in flight until the broker's order list settles it."""
        client_id = failed.client_order_id
        if failed.request is BrokerRequestKind.MODIFY and self._resizing.get(client_id) == (
            failed.quantity
        ):
            del self._resizing[client_id]
        if failed.request is BrokerRequestKind.TO_MARKET:
            self._turning.pop(client_id, None)
        if failed.request is BrokerRequestKind.MOVE_STOP:
            self._moving.pop(client_id, None)
        order = self._book.orders.get(client_id)
        if order is None:
            logger.info(
                "broker %s of %s failed after it left the books: %s",
                failed.request.value,
                client_id,
                failed.error,
            )
            return
        if failed.request is BrokerRequestKind.SUBMIT:
            self._submit_failed(order, failed)
        elif failed.request is BrokerRequestKind.CANCEL:
            self._cancel_failed(order, failed)
        elif failed.request is BrokerRequestKind.TO_MARKET:
            self._turn_to_market_failed(order, failed)
        elif failed.request is BrokerRequestKind.MOVE_STOP:
            self._move_stop_failed(order, failed)
        else:
            self._resize_answered_failed(order, failed)

    def on_request_completed(self, completed: BrokerRequestCompleted) -> None:
        """A resize (or a stop made a market order) the broker took: only now is the leg's new
        size (or type) in our books."""
        client_id = completed.client_order_id
        if completed.request is BrokerRequestKind.TO_MARKET and completed.quantity is not None:
            self._turned_to_market(client_id, completed.quantity)
            return
        if completed.request is BrokerRequestKind.MOVE_STOP:
            self._stop_moved(client_id)
            return
        if completed.request is not BrokerRequestKind.MODIFY or completed.quantity is None:
            return
        if self._resizing.get(client_id) == completed.quantity:
            del self._resizing[client_id]
        order = self._book.orders.get(client_id)
        if order is None:
            return
        self._attempts.pop(("resize", client_id), None)
        try:
            resize(order, completed.quantity, self._clock.now_ns())
        except (InvalidTransition, ValueError) as error:
            # The venue accepted a resize our books no longer allow (a fill or cancel crossed
            # it); the next report settles the order.
            logger.warning("resize of %s not applied locally: %s", client_id, error)
            return
        self._store.write(order=order)

    def on_request_withheld(self, withheld: BrokerRequestWithheld) -> None:
        """An entry the gateway did not send: the kill switch stopped entries while it waited
        in the queue. Denied as at the last gate, and settled: the broker never saw it."""
        order = self._book.orders.get(withheld.client_order_id)
        if order is None or order.status.is_terminal:
            return
        self.deny(
            order.client_order_id, order.leg, withheld.code, withheld.detail, now=withheld.ts_event
        )
        self.settle_locally(
            order,
            f"NEVER_REACHED_BROKER: withheld by the gateway, {withheld.code.value} "
            f"{withheld.detail}",
        )

    def _submit_failed(self, order: Order, failed: BrokerRequestFailed) -> None:
        now = self._clock.now_ns()
        leg = order.leg.value
        if not failed.rejected:
            # Unknown, not rejected: stays in flight until the broker's order list settles it.
            self._metrics.orders_total.labels(leg=leg, outcome="unknown").inc()
            self._metrics.retries_total.labels(type="submit_unknown").inc()
            logger.warning("submit of %s outcome unknown: %s", order.client_order_id, failed.error)
            return
        if failed.error.startswith(_DUPLICATE_AT_BROKER):
            # The venue already has this id (a resend after a crash): not a rejection; its
            # order list settles the state.
            self._metrics.orders_total.labels(leg=leg, outcome="duplicate").inc()
            self._reconciler.broker_has.add(order.client_order_id)
            logger.info("submit of %s: the broker already has it", order.client_order_id)
            return
        try:
            mark_rejected(order, failed.error, now)
        except InvalidTransition as error:
            # Our books moved on meanwhile (a fill reported first): the broker's reports and
            # reconciliation settle it, not this refusal.
            logger.warning("refusal of %s not applied: %s", order.client_order_id, error)
            return
        self.submitted_at_ns.pop(order.client_order_id, None)
        self._metrics.orders_total.labels(leg=leg, outcome="rejected").inc()
        log_event(
            logger,
            "ORDER_REJECTED",
            f"{order.leg.value} {order.side.value} {order.quantity} {order.instrument} "
            f"{order.client_order_id}: {failed.error}",
            level=logging.WARNING,
            client_order_id=order.client_order_id,
            plan_client_id=order.plan_client_id,
            leg=leg,
            side=order.side.value,
            quantity=order.quantity,
            order_type=order.order_type.value,
            epoch=order.epoch,
            outcome="rejected",
        )
        self.store_order_update(order, now)

    def _cancel_failed(self, order: Order, failed: BrokerRequestFailed) -> None:
        if not failed.rejected:
            self._metrics.retries_total.labels(type="cancel_unknown").inc()
            logger.warning(
                "cancel of %s outcome unknown; the settle pass retries: %s",
                order.client_order_id,
                failed.error,
            )
            return
        logger.warning("cancel of %s refused: %s", order.client_order_id, failed.error)
        mark_cancel_rejected(order, failed.error, self._clock.now_ns())
        self._store.write(order=order)

    def _resize_answered_failed(self, order: Order, failed: BrokerRequestFailed) -> None:
        if order.status.is_terminal:
            return  # the order ended meanwhile: nothing is left to resize
        if failed.rejected:
            logger.warning("resize of %s refused: %s", order.client_order_id, failed.error)
        else:
            self._metrics.retries_total.labels(type="modify_unknown").inc()
            logger.warning(
                "resize of %s outcome unknown, will retry: %s", order.client_order_id, failed.error
            )
        self._resize_failed(order, ("resize", order.client_order_id), failed.error)

    # ------------------------------------------------------------- RESENDS, EXPIRY, RETRY CAPS
    def resend_or_drop(self, order: Order) -> None:
        """An order the broker never saw: send it again under the SAME id if it has not expired,
        the last gate still allows it now, the database fence takes it under our epoch, and it
        has not used up its attempts (the venue refuses a second order with a known id);
        otherwise it was never sent, and it ends here (or, fenced out, is left to the leader
        that holds the lease)."""
        now = self._clock.now_ns()
        expired = entry_expiry(order, now_ns=now, ttl_s=self._order_config.entry_ttl_s)
        if expired is not None:
            self._expire_locally(order, expired, now)
            return
        gate = self.send_gate(order.leg)
        if gate is not None:
            self.settle_locally(
                order, f"NEVER_REACHED_BROKER: not resent, {gate[0].value} {gate[1]}"
            )
            return
        key = ("resend", order.client_order_id)
        if self._attempts[key] >= self._order_config.max_attempts:
            self._give_up_sending(order, self._attempts[key], now)
            return
        refused = self.stamp_under_fence(order, now, kind=JournalKind.RESEND)
        if refused is not None:
            # Deposed: the order belongs to the leader that holds the lease now.
            self.deny(order.client_order_id, order.leg, DenialCode.STALE_EPOCH, refused, now)
            return
        self._attempts[key] += 1
        self._metrics.retries_total.labels(type="resend").inc()
        self._send(order)

    def stamp_under_fence(
        self,
        order: Order,
        now: int,
        *,
        kind: JournalKind,
        change: Callable[[Order, int], None] | None = None,
    ) -> str | None:
        """``stamp_all_under_fence`` of one order."""
        return self.stamp_all_under_fence([order], now, kind=kind, change=change)

    def stamp_all_under_fence(
        self,
        orders: Sequence[Order],
        now: int,
        *,
        kind: JournalKind,
        change: Callable[[Order, int], None] | None = None,
    ) -> str | None:
        """Re-stamp ``orders`` with our epoch through the database fence (lease held by this
        process, at this epoch, unexpired) before the broker calls that touch them: a resend,
        a cancel, a cancel resend, a resize. One fenced journal statement writes an entry of
        ``kind`` per order, as the call will leave it (``change``, e.g. marking the cancel
        requested, applied); only once they are written do the orders in the books change,
        and their rows follow through the write-behind.

        Returns:
            None once stamped; else why the fence refused (we are deposed): nothing was
            written or changed, and no broker call may follow.
        """
        if self.leadership is None:
            return "no leadership known"

        fence = LeaseFence(instance_id=self._lease_holder, epoch=self.leadership.epoch, now_ns=now)
        stamped = [msgspec.structs.replace(order, epoch=fence.epoch) for order in orders]
        if change is not None:
            for order in stamped:
                change(order, now)
        try:
            seqs = self._journal.append_batch(kind, stamped, fence)
        except StaleEpoch as error:
            self._deposed(fence.epoch, error)
            return str(error)
        for order, new, seq in zip(orders, stamped, seqs, strict=True):
            for field in order.__struct_fields__:
                setattr(order, field, getattr(new, field))
            self._store.write(order=order, journal_seq=seq)
        return None

    def _deposed(self, epoch: int, error: StaleEpoch) -> None:
        if self._deposed_epoch == epoch:
            return
        self._deposed_epoch = epoch
        log_event(
            logger,
            "DEPOSED",
            f"the database refused epoch {epoch}: another process leads; this one stops "
            f"sending until it leads again ({error})",
            level=logging.CRITICAL,
            epoch=epoch,
            holder=error.holder,
            current_epoch=error.current_epoch,
        )

    def expire_entries(self, now: int) -> None:
        """Entries past their time to live or from an earlier trading day: never-sent ones are
        settled here, working ones are cancelled at the broker (their filled part stays
        protected by the bracket). Only a leader touches them."""
        if not self.may_touch_broker():
            return
        ttl_s = self._order_config.entry_ttl_s
        expired = [
            (order, reason)
            for order in list(self._book.orders.values())
            if order.leg is LegKind.ENTRY
            and order.status.is_working
            and order.status is not OrderStatus.PENDING_CANCEL
            and (reason := entry_expiry(order, now_ns=now, ttl_s=ttl_s)) is not None
        ]
        if not expired:
            return
        unsent = [o for o, _ in expired if o.status is OrderStatus.PENDING_SUBMIT]
        broker_known: dict[str, OrderStatusReport] = {}
        if unsent:
            # Storage says "maybe sent": only the broker's list tells whether it has them.
            try:
                broker_known = {r.client_order_id: r for r in self._broker.list_orders()}
            except (BrokerUnavailable, BrokerRejected) as error:
                logger.warning("could not list broker orders to expire entries: %s", error)
                expired = [(o, r) for o, r in expired if o.status is not OrderStatus.PENDING_SUBMIT]
        for order, reason in expired:
            if order.status is OrderStatus.PENDING_SUBMIT:
                report = broker_known.get(order.client_order_id)
                if report is None:
                    self._expire_locally(order, reason, now)
                    continue
                self._apply_status_report(report)
                if not order.status.is_working:
                    continue
            self._record_expiry(order, reason, now)
            order.reason = reason
            self.cancel(oco.CancelLeg(client_order_id=order.client_order_id))

    def _expire_locally(self, order: Order, reason: str, now: int) -> None:
        # Never (re)sent: the broker has not got it, so it ends here.
        self._record_expiry(order, reason, now)
        self.settle_locally(order, reason)

    def _record_expiry(self, order: Order, reason: str, now: int) -> None:
        log_event(
            logger,
            "ENTRY_EXPIRED",
            f"{order.client_order_id}: {reason}",
            level=logging.WARNING,
            client_order_id=order.client_order_id,
            status=order.status.value,
        )
        self._store.write_event(
            "ENTRY_EXPIRED",
            {
                "client_order_id": order.client_order_id,
                "status": order.status.value,
                "reason": reason,
            },
            ts_ns=now,
            instance_id=self._instance_id,
        )

    def may_resend_cancel(self, order: Order, now: int) -> bool:
        """Count a cancel the broker still shows working; past max_attempts stop asking and
        HALT: a stop or target the broker will not cancel can outlive its position, and only
        an operator (or the broker's own desk) can remove it."""
        key = ("cancel", order.client_order_id)
        self._attempts[key] += 1
        attempts = self._attempts[key]
        limit = self._order_config.max_attempts
        if attempts <= limit:
            return True
        if attempts == limit + 1:
            detail = (
                f"{order.client_order_id} ({order.leg.value}) still working at the broker after "
                f"{limit} cancel requests (max_attempts={limit})"
            )
            self._escalate("CANCEL_GAVE_UP", detail, order, now)
            self._safety.send(
                "halt:CANCEL_GAVE_UP",
                TripKillSwitch(reason="CANCEL_GAVE_UP", detail=detail),
                now_ns=now,
            )
        return False

    def _give_up_sending(self, order: Order, attempts: int, now: int) -> None:
        """A resend loop that used up its attempts: end the order as never sent and escalate
        so the position is not left as it is."""
        detail = (
            f"{order.client_order_id} ({order.leg.value}) not accepted after {attempts} "
            f"resends (max_attempts={self._order_config.max_attempts})"
        )
        self._escalate("RESEND_GAVE_UP", detail, order, now)
        self.settle_locally(order, f"GAVE_UP: {detail}")
        bracket = self._book.brackets.get(order.plan_client_id)
        if order.leg in (LegKind.STOP, LegKind.TARGET) and bracket is not None:
            self.give_up_protection(bracket, now)
        elif order.leg is LegKind.EXIT:
            # The broker will not take our exit: only an operator can close this position.
            self._safety.send(
                "halt:RESEND_GAVE_UP",
                TripKillSwitch(reason="RESEND_GAVE_UP", detail=detail),
                now_ns=now,
            )

    def _escalate(self, event: str, detail: str, order: Order, now: int) -> None:
        log_event(
            logger,
            event,
            detail,
            level=logging.CRITICAL,
            client_order_id=order.client_order_id,
            leg=order.leg.value,
        )
        self._store.write_event(
            event,
            {"detail": detail, "client_order_id": order.client_order_id},
            ts_ns=now,
            instance_id=self._instance_id,
        )

    def settle_locally(self, order: Order, reason: str) -> None:
        self._apply_status_report(
            OrderStatusReport(
                client_order_id=order.client_order_id,
                broker_order_id=order.broker_order_id or "",
                instrument=order.instrument,
                status=OrderStatus.CANCELLED,
                quantity=order.quantity,
                filled_quantity=order.filled_quantity,
                reason=reason,
                ts_event=self._clock.now_ns(),
            )
        )

    def resubmit_unsent(self) -> None:
        unsent = [o for o in self._book.orders.values() if o.status is OrderStatus.PENDING_SUBMIT]
        for order in unsent:
            self.resend_or_drop(order)

    def give_up_protection(self, bracket: oco.Bracket, now: int) -> None:
        log_event(
            logger,
            "PROTECTION_FAILED",
            f"protective legs of {bracket.plan_client_id} keep dying; flattening it",
            level=logging.CRITICAL,
            plan_client_id=bracket.plan_client_id,
        )
        actions = self.bracket_flatten(bracket, "protection_failed", now)
        self.persist_bracket(bracket)
        self.execute(bracket, actions)

    def persist_bracket(self, bracket: oco.Bracket) -> None:
        self._store.write(bracket=bracket)
