"""A resend goes through the database fence: ``OrderRepository.refence`` re-stamps the order
with the new epoch only while the lease is held at that epoch and unexpired. SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from adapters.storage import Database, LeaseFence, StaleEpoch, UnitOfWork
from adapters.storage.repositories import OrderNotFound
from tests.adapter.test_storage import make_order

TTL_NS = 10_000


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database.from_url(f"sqlite:///{tmp_path / 'vigil.db'}")
        yield database
        database.dispose()
        return
    server = request.getfixturevalue("postgres_url")
    name = f"vigil_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database = Database.from_url(
        make_url(server).set(database=name).render_as_string(hide_password=False)
    )
    yield database
    database.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def lead(database: Database, holder: str, now_ns: int) -> int:
    with UnitOfWork(database) as uow:
        return uow.lease.acquire_or_renew(instance_id=holder, now_ns=now_ns, ttl_ns=TTL_NS).epoch


def stored_epoch(database: Database) -> int:
    with UnitOfWork(database) as uow:
        order = uow.orders.get("PABCE")
    assert order is not None
    return order.epoch


def test_the_leader_restamps_an_order_with_its_epoch(database: Database) -> None:
    epoch = lead(database, "a#1", now_ns=100)
    with UnitOfWork(database) as uow:
        uow.orders.add(make_order(epoch=epoch), fence=LeaseFence("a#1", epoch, now_ns=100))
    later = lead(database, "b#2", now_ns=100 + TTL_NS)  # a's lease expired; b takes it
    with UnitOfWork(database) as uow:
        uow.orders.refence("PABCE", LeaseFence("b#2", later, now_ns=100 + TTL_NS + 1))
    assert stored_epoch(database) == later == epoch + 1


@pytest.mark.parametrize(
    ("holder", "epoch_delta", "now_delta"),
    [("a#1", 0, 1), ("b#2", -1, 1), ("b#2", 0, TTL_NS + 5)],
    ids=["deposed-holder", "stale-epoch", "expired-lease"],
)
def test_a_resend_outside_the_lease_is_refused_and_writes_nothing(
    database: Database, holder: str, epoch_delta: int, now_delta: int
) -> None:
    epoch = lead(database, "a#1", now_ns=100)
    with UnitOfWork(database) as uow:
        uow.orders.add(make_order(epoch=epoch), fence=LeaseFence("a#1", epoch, now_ns=100))
    start = 100 + TTL_NS
    current = lead(database, "b#2", now_ns=start)
    fence = LeaseFence(holder, current + epoch_delta, now_ns=start + now_delta)
    with pytest.raises(StaleEpoch, match="holder=b#2") as refused, UnitOfWork(database) as uow:
        uow.orders.refence("PABCE", fence)
    assert refused.value.client_order_id == "PABCE"
    assert stored_epoch(database) == epoch


def test_refencing_an_unknown_order_says_so(database: Database) -> None:
    epoch = lead(database, "a#1", now_ns=100)
    with pytest.raises(OrderNotFound), UnitOfWork(database) as uow:
        uow.orders.refence("NOPE", LeaseFence("a#1", epoch, now_ns=101))
