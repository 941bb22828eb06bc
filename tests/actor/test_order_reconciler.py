"""The order actor's reconciler on its own: schedule, grace, failures, pause and resume."""

from __future__ import annotations

from actors.order_reconciliation import OrderReconciler, Trigger
from domain.config import ReconciliationConfig
from domain.reconcile import Drift, DriftKind, Reconciliation

SECOND = 1_000_000_000
T0 = 1_767_225_600 * SECOND
CONFIG = ReconciliationConfig(
    in_flight_interval_s=1,
    open_orders_interval_s=5,
    positions_interval_s=10,
    drift_grace_s=3,
    max_failures=3,
)
UNKNOWN_BBB = Drift(
    key="position:BBB",
    kind=DriftKind.POSITIONS,
    instrument="BBB",
    sentence="BBB: the broker holds +20 that no bracket of ours explains",
    unprotected=True,
)


def outcome(*drift: Drift, positions: bool = True) -> Reconciliation:
    kinds = {DriftKind.ORDERS, DriftKind.POSITIONS} if positions else {DriftKind.ORDERS}
    return Reconciliation(
        actions=(),
        instruments=(),
        unknown_broker_orders=(),
        missing_at_broker=(),
        drift=drift,
        kinds_checked=frozenset(kinds),
    )


def reconciler() -> OrderReconciler:
    return OrderReconciler(CONFIG, in_flight_settle_ns=3 * SECOND)


def record(subject: OrderReconciler, trigger: str, now: int, *drift: Drift) -> tuple[Drift, ...]:
    changes = subject.record_run(
        trigger,
        outcome(*drift, positions=trigger != Trigger.OPEN_ORDERS),
        now_ns=now,
        duration_ms=1.5,
        applied=[],
    )
    return changes.confirmed


def test_the_loops_fall_due_by_their_intervals_and_a_wider_run_covers_the_narrower() -> None:
    subject = reconciler()
    assert subject.due(T0) == Trigger.POSITIONS  # nothing ran yet
    record(subject, Trigger.START, T0)
    assert subject.due(T0) is None
    assert subject.due(T0 + SECOND) == Trigger.IN_FLIGHT
    assert subject.due(T0 + 5 * SECOND) == Trigger.OPEN_ORDERS
    assert subject.due(T0 + 10 * SECOND) == Trigger.POSITIONS


def test_drift_counts_only_when_seen_again_after_the_grace() -> None:
    subject = reconciler()
    assert record(subject, Trigger.START, T0, UNKNOWN_BBB) == ()
    assert not subject.pause_wanted()
    assert subject.due(T0 + 3 * SECOND) == Trigger.POSITIONS  # looked at again after the grace
    assert record(subject, Trigger.POSITIONS, T0 + 3 * SECOND, UNKNOWN_BBB) == (UNKNOWN_BBB,)
    assert subject.pause_wanted() and not subject.resume_allowed()
    # Confirmed once: later runs do not announce it again.
    assert record(subject, Trigger.POSITIONS, T0 + 13 * SECOND, UNKNOWN_BBB) == ()


def test_a_difference_gone_at_the_next_look_never_counts() -> None:
    subject = reconciler()
    record(subject, Trigger.START, T0, UNKNOWN_BBB)
    record(subject, Trigger.POSITIONS, T0 + 3 * SECOND)
    assert not subject.pause_wanted() and subject.resume_allowed()
    assert subject.view().clean


def test_a_run_that_did_not_compare_positions_cannot_clear_position_drift() -> None:
    subject = reconciler()
    record(subject, Trigger.START, T0, UNKNOWN_BBB)
    record(subject, Trigger.POSITIONS, T0 + 3 * SECOND, UNKNOWN_BBB)
    record(subject, Trigger.OPEN_ORDERS, T0 + 8 * SECOND)
    assert subject.pause_wanted()
    record(subject, Trigger.POSITIONS, T0 + 13 * SECOND)
    assert not subject.pause_wanted() and subject.resume_allowed()


def test_drift_last_seen_long_ago_waits_the_grace_again() -> None:
    subject = reconciler()
    record(subject, Trigger.START, T0, UNKNOWN_BBB)  # a standby's start run
    assert record(subject, Trigger.LEADERSHIP, T0 + 3600 * SECOND, UNKNOWN_BBB) == ()


def test_broker_failures_are_reported_announced_once_and_pause_entries() -> None:
    subject = reconciler()
    record(subject, Trigger.START, T0)
    announced = [
        subject.record_failure(Trigger.OPEN_ORDERS, "BROKER_TIMEOUT", T0 + n * SECOND)
        for n in range(1, 6)
    ]
    assert announced == [False, False, True, False, False]
    assert subject.pause_wanted()
    view = subject.view()
    assert view.error is not None and "5 consecutive" in view.error and not view.clean
    assert view.last_run_ns == T0  # the facts of the last run that reached the broker stand
    record(subject, Trigger.OPEN_ORDERS, T0 + 6 * SECOND)
    assert subject.view().error is None and not subject.pause_wanted()
    assert not subject.resume_allowed()  # only a clean positions run clears the pause
    record(subject, Trigger.POSITIONS, T0 + 10 * SECOND)
    assert subject.resume_allowed()


def light_outcome() -> Reconciliation:
    # What a clean light run returns: it checked no kind of drift it could clear.
    return Reconciliation(
        actions=(),
        instruments=(),
        unknown_broker_orders=(),
        missing_at_broker=(),
        drift=(),
        kinds_checked=frozenset(),
    )


def test_a_clean_light_run_does_not_clear_standing_drift_and_sends_the_next_run_full() -> None:
    subject = reconciler()
    record(subject, Trigger.START, T0, UNKNOWN_BBB)
    record(subject, Trigger.POSITIONS, T0 + 3 * SECOND, UNKNOWN_BBB)  # confirmed
    assert subject.pause_wanted()
    changes = subject.record_run(
        Trigger.POSITIONS,
        light_outcome(),
        now_ns=T0 + 13 * SECOND,
        duration_ms=0.1,
        applied=[],
        light=True,
    )
    assert changes.cleared == () and subject.pause_wanted() and not subject.resume_allowed()
    assert not subject.full_run_clean
    assert subject.full_run_reason(Trigger.OPEN_ORDERS) is not None
    assert subject.full_run_reason(Trigger.POSITIONS) is not None
    # A full run that sees it gone clears it.
    record(subject, Trigger.POSITIONS, T0 + 23 * SECOND)
    assert subject.resume_allowed() and subject.full_run_reason(Trigger.POSITIONS) is None


def test_the_fills_watermark_trails_the_last_successful_run_by_the_margin() -> None:
    subject = reconciler()
    assert subject.fills_since_ns() is None  # before any success: the whole session
    assert subject.full_run_reason(Trigger.OPEN_ORDERS) is not None
    assert subject.fills_margin_ns == 60 * SECOND  # > settle (3 s) and grace (3 s)
    record(subject, Trigger.START, T0)
    assert subject.fills_since_ns() == T0 - 60 * SECOND
    subject.record_failure(Trigger.OPEN_ORDERS, "BROKER_TIMEOUT", T0 + 5 * SECOND)
    assert subject.fills_since_ns() == T0 - 60 * SECOND  # a failed run saw nothing
    # After a failure the first positions check that reaches the broker must be full.
    assert subject.clean_full_run_wanted(Trigger.POSITIONS)
    assert not subject.clean_full_run_wanted(Trigger.OPEN_ORDERS)
    subject.record_run(
        Trigger.OPEN_ORDERS,
        light_outcome(),
        now_ns=T0 + 10 * SECOND,
        duration_ms=0.1,
        applied=[],
        light=True,
    )
    assert subject.fills_since_ns() == T0 - 50 * SECOND
    wide = OrderReconciler(ReconciliationConfig(drift_grace_s=90), in_flight_settle_ns=3 * SECOND)
    assert wide.fills_margin_ns == 90 * SECOND
