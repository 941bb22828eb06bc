"""The paper venue's rehearsal account: with ``paper_broker.live_account`` it presents a
LIVE-type account on connect, so the go-live procedure can be rehearsed with no real broker."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import event

from adapters.brokers.base import AccountInfo
from adapters.brokers.paper import PaperBroker
from adapters.storage.database import Database
from domain.clock import ManualClock
from domain.config import PaperBrokerConfig
from domain.instruments import Instrument

pytest_plugins = ["tests.adapter.paper_fixtures"]

INSTRUMENTS = {"NIFTY": Instrument(symbol="NIFTY", lot_size=50, reference_price=Decimal("20000"))}


def _connect(config: PaperBrokerConfig, database: Database, clock: ManualClock) -> AccountInfo:
    broker = PaperBroker(config=config, instruments=INSTRUMENTS, database=database, clock=clock)
    try:
        return broker.connect()
    finally:
        broker.close()


def test_a_rehearsal_venue_presents_a_live_account(database: Database, clock: ManualClock) -> None:
    account = _connect(
        PaperBrokerConfig(live_account=True, account_id="REHEARSAL-LIVE-0001"), database, clock
    )
    assert account.is_live is True
    assert account.account_id == "REHEARSAL-LIVE-0001"
    assert account.balance == Decimal("1000000")


def test_an_ordinary_paper_venue_presents_a_paper_account(
    database: Database, clock: ManualClock
) -> None:
    account = _connect(PaperBrokerConfig(), database, clock)
    assert account.is_live is False
    assert account.account_id == "PAPER-0001"


def test_a_second_connect_answers_the_account_without_reloading_the_books(
    database: Database, clock: ManualClock
) -> None:
    # An operator's POST /execution/connect (or a pre-live check) while the venue trades: a
    # reload would replace the books in memory with what storage had, dropping any order
    # submitted between the read and the install. Observed, not mocked: no statement runs.
    broker = PaperBroker(
        config=PaperBrokerConfig(live_account=True, account_id="REHEARSAL-LIVE-0001"),
        instruments=INSTRUMENTS,
        database=database,
        clock=clock,
    )
    try:
        first = broker.connect()
        statements: list[str] = []

        def count(*args: object) -> None:
            statements.append(str(args[2]))

        event.listen(database.engine, "before_cursor_execute", count)
        try:
            again = broker.connect()
        finally:
            event.remove(database.engine, "before_cursor_execute", count)
        assert statements == []
        assert again == first
    finally:
        broker.close()
