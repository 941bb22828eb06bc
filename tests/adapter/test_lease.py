"""The leader lease and database-level fencing, on SQLite in a temp dir.

Time is passed in as ``now_ns``: no clock, no sleeps.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.storage import (
    Database,
    LeaseFence,
    LeaseState,
    StaleEpoch,
    UnitOfWork,
    create_database_engine,
    upgrade_schema,
)
from adapters.storage.tables import orders
from tests.adapter.test_storage import make_order

TTL_NS = 10_000


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'vigil.db'}"
    upgrade_schema(url)
    database = Database(create_database_engine(url))
    yield database
    database.dispose()


def acquire(database: Database, instance_id: str, now_ns: int, ttl_ns: int = TTL_NS) -> LeaseState:
    with UnitOfWork(database) as uow:
        return uow.lease.acquire_or_renew(instance_id=instance_id, now_ns=now_ns, ttl_ns=ttl_ns)


def release(database: Database, instance_id: str, now_ns: int) -> None:
    with UnitOfWork(database) as uow:
        uow.lease.release(instance_id=instance_id, now_ns=now_ns)


class TestLeaseTransitions:
    def test_the_first_instance_takes_a_missing_lease_at_epoch_one(
        self, database: Database
    ) -> None:
        state = acquire(database, "a", now_ns=100)
        assert state == LeaseState(
            name="trader", holder="a", epoch=1, expires_ns=100 + TTL_NS, is_leader=True
        )

    def test_the_holder_renews_before_expiry_at_the_same_epoch(self, database: Database) -> None:
        acquire(database, "a", now_ns=100)
        state = acquire(database, "a", now_ns=5_000)
        assert (state.holder, state.epoch, state.is_leader) == ("a", 1, True)
        assert state.expires_ns == 5_000 + TTL_NS

    def test_another_instance_is_not_leader_while_the_lease_is_valid(
        self, database: Database
    ) -> None:
        acquire(database, "a", now_ns=100)
        state = acquire(database, "b", now_ns=100 + TTL_NS - 1)
        assert (state.holder, state.epoch, state.is_leader) == ("a", 1, False)

    def test_an_expired_lease_is_taken_over_with_the_epoch_bumped(self, database: Database) -> None:
        acquire(database, "a", now_ns=100)
        taken = acquire(database, "b", now_ns=100 + TTL_NS)
        assert (taken.holder, taken.epoch, taken.is_leader) == ("b", 2, True)
        late = acquire(database, "a", now_ns=100 + TTL_NS + 1)
        assert (late.holder, late.epoch, late.is_leader) == ("b", 2, False)

    def test_the_holder_retaking_its_own_expired_lease_gets_a_new_epoch(
        self, database: Database
    ) -> None:
        acquire(database, "a", now_ns=100)
        state = acquire(database, "a", now_ns=100 + TTL_NS + 5)
        assert (state.holder, state.epoch, state.is_leader) == ("a", 2, True)

    def test_release_expires_the_lease_so_the_next_holder_takes_a_new_epoch(
        self, database: Database
    ) -> None:
        acquire(database, "a", now_ns=100)
        release(database, "a", now_ns=200)
        with UnitOfWork(database) as uow:
            current = uow.lease.current(instance_id="a", now_ns=200)
        assert current is not None
        assert (current.expires_ns, current.is_leader) == (200, False)
        state = acquire(database, "b", now_ns=201)
        assert (state.holder, state.epoch, state.is_leader) == ("b", 2, True)

    def test_release_by_an_instance_that_does_not_hold_the_lease_changes_nothing(
        self, database: Database
    ) -> None:
        acquire(database, "a", now_ns=100)
        release(database, "b", now_ns=200)
        state = acquire(database, "b", now_ns=300)
        assert (state.holder, state.epoch, state.is_leader) == ("a", 1, False)

    def test_current_says_leader_only_for_the_holder_before_expiry(
        self, database: Database
    ) -> None:
        with UnitOfWork(database) as uow:
            assert uow.lease.current() is None
        acquire(database, "a", now_ns=100)
        with UnitOfWork(database) as uow:
            assert uow.lease.current().is_leader is False  # type: ignore[union-attr]
            assert uow.lease.current(instance_id="a", now_ns=150).is_leader is True  # type: ignore[union-attr]
            assert uow.lease.current(instance_id="b", now_ns=150).is_leader is False  # type: ignore[union-attr]
            expired = uow.lease.current(instance_id="a", now_ns=100 + TTL_NS)
            assert expired is not None
            assert expired.is_leader is False

    def test_leases_with_different_names_are_independent(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            trader = uow.lease.acquire_or_renew(instance_id="a", now_ns=1, ttl_ns=TTL_NS)
            other = uow.lease.acquire_or_renew(
                instance_id="b", now_ns=1, ttl_ns=TTL_NS, name="reporter"
            )
        assert (trader.is_leader, other.is_leader) == (True, True)
        assert (trader.name, other.name) == ("trader", "reporter")

    def test_a_non_positive_ttl_is_refused(self, database: Database) -> None:
        with pytest.raises(ValueError, match="ttl_ns=0"):
            acquire(database, "a", now_ns=1, ttl_ns=0)


class TestFencing:
    def test_the_current_leader_writes_an_order_stamped_with_its_epoch(
        self, database: Database
    ) -> None:
        state = acquire(database, "a", now_ns=100)
        with UnitOfWork(database) as uow:
            uow.orders.add(make_order(epoch=state.epoch), fence=LeaseFence("a", state.epoch))
        with UnitOfWork(database) as uow:
            stored = uow.orders.get("PABCE")
        assert stored is not None
        assert stored.epoch == 1

    def test_a_stale_epoch_cannot_write_an_order(self, database: Database) -> None:
        acquire(database, "a", now_ns=100)
        acquire(database, "b", now_ns=100 + TTL_NS)
        with UnitOfWork(database) as uow:
            with pytest.raises(StaleEpoch) as raised:
                uow.orders.add(make_order(epoch=1), fence=LeaseFence("a", 1))
            # the transaction is still usable after the refusal
            uow.orders.add(make_order(client_order_id="PABCS", epoch=2), fence=LeaseFence("b", 2))
        refusal = raised.value
        assert (refusal.instance_id, refusal.epoch) == ("a", 1)
        assert (refusal.holder, refusal.current_epoch) == ("b", 2)
        assert refusal.client_order_id == "PABCE"
        assert "STALE_EPOCH" in str(refusal)
        with database.transaction() as connection:
            stored = connection.execute(sa.select(orders.c.client_order_id)).scalars().all()
        assert stored == ["PABCS"]

    def test_the_same_holder_with_an_old_epoch_is_refused_after_it_re_took_the_lease(
        self, database: Database
    ) -> None:
        acquire(database, "a", now_ns=100)
        acquire(database, "a", now_ns=100 + TTL_NS)  # expired and re-taken: epoch 2
        with pytest.raises(StaleEpoch) as raised, UnitOfWork(database) as uow:
            uow.orders.add(make_order(epoch=1), fence=LeaseFence("a", 1))
        assert (raised.value.holder, raised.value.current_epoch) == ("a", 2)

    def test_an_expired_lease_fences_even_before_anyone_takes_it(self, database: Database) -> None:
        acquire(database, "a", now_ns=100)
        with UnitOfWork(database) as uow:
            uow.orders.add(make_order(epoch=1), fence=LeaseFence("a", 1, now_ns=100 + TTL_NS - 1))
        with pytest.raises(StaleEpoch), UnitOfWork(database) as uow:
            uow.orders.add(
                make_order(client_order_id="PABCS", epoch=1),
                fence=LeaseFence("a", 1, now_ns=100 + TTL_NS),
            )

    def test_a_fence_without_any_lease_is_refused(self, database: Database) -> None:
        with pytest.raises(StaleEpoch) as raised, UnitOfWork(database) as uow:
            uow.orders.add(make_order(epoch=1), fence=LeaseFence("a", 1))
        assert (raised.value.holder, raised.value.current_epoch) == (None, None)

    def test_an_order_whose_epoch_differs_from_its_fence_is_refused(
        self, database: Database
    ) -> None:
        acquire(database, "a", now_ns=100)
        with (
            pytest.raises(ValueError, match=r"order\.epoch=0 fence\.epoch=1"),
            UnitOfWork(database) as uow,
        ):
            uow.orders.add(make_order(epoch=0), fence=LeaseFence("a", 1))


class TestConcurrency:
    def test_racing_instances_never_share_an_epoch_and_stale_ones_never_write(
        self, tmp_path: Path
    ) -> None:
        url = f"sqlite:///{tmp_path / 'race.db'}"
        upgrade_schema(url)
        outcome = race_for_the_lease(url, instances=3, rounds=150)
        assert outcome.errors == []
        assert outcome.epochs_claimed > 3, "the race should change hands several times"
        assert outcome.shared_epochs == {}
        assert outcome.orders_by_epoch_and_writer == outcome.claims_with_orders


class RaceOutcome:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.claims: dict[int, set[str]] = {}
        self.claims_with_orders: dict[int, set[str]] = {}
        self.orders_by_epoch_and_writer: dict[int, set[str]] = {}

    @property
    def epochs_claimed(self) -> int:
        return len(self.claims)

    @property
    def shared_epochs(self) -> dict[int, set[str]]:
        return {epoch: holders for epoch, holders in self.claims.items() if len(holders) > 1}


def race_for_the_lease(url: str, *, instances: int, rounds: int, ttl_ns: int = 4) -> RaceOutcome:
    """Threads, each with its own engine, renew the lease against a shared logical clock and
    write a fenced order after each claim. Records who believed it led at which epoch and
    which orders actually landed."""
    outcome = RaceOutcome()
    clock = itertools.count(1)
    guard = threading.Lock()
    start = threading.Barrier(instances)

    def instance(number: int) -> None:
        me = f"instance-{number}"
        database = Database(create_database_engine(url))
        try:
            start.wait(timeout=30)
            for round_number in range(rounds):
                with guard:
                    now_ns = next(clock)
                try:
                    with UnitOfWork(database) as uow:
                        state = uow.lease.acquire_or_renew(
                            instance_id=me, now_ns=now_ns, ttl_ns=ttl_ns
                        )
                    if not state.is_leader:
                        continue
                    with guard:
                        outcome.claims.setdefault(state.epoch, set()).add(me)
                    order = make_order(
                        client_order_id=f"{me}-{round_number}",
                        strategy=me,
                        epoch=state.epoch,
                    )
                    try:
                        with UnitOfWork(database) as uow:
                            uow.orders.add(order, fence=LeaseFence(me, state.epoch))
                    except StaleEpoch:
                        continue
                    with guard:
                        outcome.claims_with_orders.setdefault(state.epoch, set()).add(me)
                except Exception as error:  # collected and asserted on by the test
                    with guard:
                        outcome.errors.append(f"{me}: {error!r}")
        finally:
            database.dispose()

    threads = [threading.Thread(target=instance, args=(n,)) for n in range(instances)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
        assert not thread.is_alive(), "a racing instance did not finish in time"

    database = Database(create_database_engine(url))
    try:
        with database.transaction() as connection:
            for epoch, writer in connection.execute(
                sa.select(orders.c.epoch, orders.c.strategy).distinct()
            ):
                outcome.orders_by_epoch_and_writer.setdefault(epoch, set()).add(writer)
    finally:
        database.dispose()
    return outcome
