"""SafetyOutbox: a safety command stays pending and is re-sent until the kill switch's published
state shows it in force and stored."""

from __future__ import annotations

from actors.directory import ActorDirectory
from actors.safety_outbox import SafetyOutbox, is_confirmed
from domain.enums import Mode, PauseCause, TradingState
from domain.messages import PauseEntries, TradingStateChanged, TripKillSwitch

SECOND_NS = 1_000_000_000
TRIP = TripKillSwitch(reason="DAILY_LOSS_LIMIT", flatten=True)
FLATTEN = PauseEntries(cause=PauseCause.FLATTEN, detail="risk_cap")


def _state(
    state: TradingState, *, persisted: bool = True, causes: tuple[PauseCause, ...] = ()
) -> TradingStateChanged:
    return TradingStateChanged(
        mode=Mode.PAPER,
        armed=True,
        state=state,
        pause_causes=causes,
        halt_reason="DAILY_LOSS_LIMIT" if state is TradingState.HALTED else None,
        ts_event=0,
        persisted=persisted,
    )


def test_a_command_nobody_received_stays_pending_and_is_retried_once_a_second() -> None:
    directory = ActorDirectory()  # no kill switch registered: every tell fails
    outbox = SafetyOutbox(directory=directory, owner="risk")

    assert outbox.send("daily_loss", TRIP, now_ns=0) is False
    assert outbox.retry(SECOND_NS // 2) == 0
    assert outbox.retry(SECOND_NS) == 1
    assert outbox.is_pending("daily_loss")
    assert directory.dropped_tells == 2


def test_only_a_stored_state_that_shows_the_command_confirms_it() -> None:
    outbox = SafetyOutbox(directory=ActorDirectory(), owner="risk")
    outbox.send("daily_loss", TRIP, now_ns=0)
    outbox.send("risk_cap", FLATTEN, now_ns=0)

    assert outbox.acknowledge(_state(TradingState.ACTIVE)) == []
    assert outbox.acknowledge(_state(TradingState.HALTED, persisted=False)) == []
    halted = _state(TradingState.HALTED, causes=(PauseCause.FLATTEN,))
    assert outbox.acknowledge(halted) == ["daily_loss", "risk_cap"]
    outbox.send("risk_cap", FLATTEN, now_ns=0)
    assert outbox.pending_keys() == ["risk_cap"]
    reducing = _state(TradingState.REDUCING, causes=(PauseCause.FLATTEN,))
    assert outbox.acknowledge(reducing) == ["risk_cap"]


def test_is_confirmed_reads_the_pause_causes_for_a_pause() -> None:
    assert not is_confirmed(FLATTEN, _state(TradingState.HALTED))
    assert is_confirmed(FLATTEN, _state(TradingState.HALTED, causes=(PauseCause.FLATTEN,)))


def test_a_trip_with_a_flatten_is_confirmed_only_once_its_flatten_pause_is_stored_too() -> None:
    # HALTed already for another reason (no flatten): the heat cap's trip must still get its
    # FLATTEN pause stored, so the HALT alone does not confirm it.
    heat_trip = TripKillSwitch(reason="HEAT_CAP", flatten=True, flatten_reason="risk_cap")
    assert not is_confirmed(heat_trip, _state(TradingState.HALTED))
    assert is_confirmed(heat_trip, _state(TradingState.HALTED, causes=(PauseCause.FLATTEN,)))
    assert is_confirmed(TripKillSwitch(reason="OVERFILL"), _state(TradingState.HALTED))
