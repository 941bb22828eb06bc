"""Plans in quick succession: each one is judged with every approval before it counted."""

from __future__ import annotations

from collections.abc import Callable

from domain.messages import QueryRisk
from tests.actor.conftest import Desk


class TestPendingApprovals:
    def test_a_burst_cannot_squeeze_past_the_concurrency_limit(
        self, desk_factory: Callable[..., Desk]
    ) -> None:
        # Two slots; three plans sent at once, before the order actor can report any of them.
        # The third must see the first two approvals (the risk actor keeps them as pending
        # until the portfolio shows them) whatever order the portfolio updates arrive in.
        desk = desk_factory(risk={"max_concurrent_positions": 2})
        desk.ready_to_trade()

        first = desk.send_plan(instrument="AAA", strategy="orb_1")
        second = desk.send_plan(
            instrument="BBB", strategy="orb_1", entry="200.10", stop="199.00", target="202.00"
        )
        desk.send_plan(instrument="AAA", strategy="ema_1")

        def decided() -> dict[str, int]:
            return desk.engine.directory.ask("risk", QueryRisk(), timeout_s=5).blocks

        blocks = desk.settle(decided, what="the third plan blocked")
        assert blocks == {"MAX_CONCURRENT_POSITIONS": 1}
        desk.settle(
            lambda: (
                desk.orders_for(first.plan_client_id) and desk.orders_for(second.plan_client_id)
            ),
            what="the first two plans became orders",
        )
