"""``IgStream``: IG's Lightstreamer session through the official SDK
(``lightstreamer-client-lib``), never a home-made TLCP client.

Login: user = the account id, password ``CST-<cst>|XST-<token>`` (``parsing.session_password``,
read from the REST session at each (re)connect, so a re-login's tokens are used). Items:
- ``MARKET:{epic}`` (BID OFFER UPDATE_TIME MARKET_STATE, MERGE) -> ``Tick`` to ``on_tick``;
- ``TRADE:{accountId}`` (CONFIRMS OPU WOU, DISTINCT) -> each JSON field to ``on_confirm`` or
  ``on_position_update`` (the broker turns them into reports).

Reconnects are the SDK's own. Liveness: every update calls ``on_alive``, and so does a
timer every ``alive_interval_s`` while the SDK reports the session CONNECTED and the TRADE
item subscribed (IG replays nothing sent before the subscription, so a deal closed in that
gap is found by ``on_trade_subscribed``'s look at the positions; the server's
PROBEs keep a quiet market's session alive, and the SDK turns their absence into STALLED and
then DISCONNECTED:WILL-RETRY; it does not hand PROBEs to listeners). So a stalled or dropped
stream stops the ``OrderStreamHeartbeat``s and the engine pauses entries
(ORDER_STREAM_STALE) until the SDK is connected again, as for Kite's ticker.

The SDK is imported lazily (``stream_available``). Without the stream (``ig.stream: false``
or the SDK missing) confirms are polled over REST and level hits are noticed by the list
calls, but nothing proves the order stream alive: the engine's ORDER_STREAM_STALE pause then
holds entries, so the stream is required for trading, the REST path is a fallback for the
outcome of what is already in flight.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from adapters.brokers.ig.parsing import market_update_to_tick, session_password
from domain.messages import Tick

__all__ = ["IgStream", "stream_available"]

logger = logging.getLogger(__name__)

MARKET_FIELDS = ["BID", "OFFER", "UPDATE_TIME", "MARKET_STATE"]
TRADE_FIELDS = ["CONFIRMS", "OPU", "WOU"]


def stream_available() -> bool:
    try:
        import lightstreamer.client  # noqa: F401
    except ImportError:
        return False
    return True


class IgStream:
    """One Lightstreamer client for prices and the account's trade updates.

    Args:
        endpoint: the session's ``lightstreamerEndpoint``.
        account_id: the active account (the user, and the TRADE item).
        session_source: returns the current REST session (its CST and security token).
        epics: epic -> our symbol.
        on_tick, on_confirm, on_position_update, on_alive: callbacks, on the SDK's thread.
        now_ns: dates the ticks on arrival.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        account_id: str,
        session_source: Callable[[], Any],
        epics: Mapping[str, str],
        on_tick: Callable[[Tick], None],
        on_confirm: Callable[[Mapping[str, Any]], None],
        on_position_update: Callable[[Mapping[str, Any]], None],
        on_alive: Callable[[], None],
        now_ns: Callable[[], int],
        on_trade_subscribed: Callable[[], None] | None = None,
        alive_interval_s: float = 0.5,
    ) -> None:
        self._endpoint = endpoint
        self._account_id = account_id
        self._session_source = session_source
        self._epics = dict(epics)
        self._on_tick = on_tick
        self._on_confirm = on_confirm
        self._on_position_update = on_position_update
        self._on_alive = on_alive
        self._on_trade_subscribed = on_trade_subscribed
        self._now_ns = now_ns
        self._client: Any = None
        self._alive_interval_s = alive_interval_s
        self._stopped = threading.Event()
        self._timer: threading.Thread | None = None
        self.status = "DISCONNECTED"
        # A connected session says nothing about our deals until the TRADE item is live:
        # updates sent before it was are lost (IG replays none), so it gates liveness.
        self.trade_subscribed = False
        # The SDK's recent status changes, oldest first (for the operator and the tests).
        self.status_history: deque[str] = deque(maxlen=64)
        self.updates_total = 0

    def start(self) -> None:
        from lightstreamer.client import LightstreamerClient, Subscription

        session = self._session_source()
        client = LightstreamerClient(self._endpoint, None)
        client.connectionDetails.setUser(self._account_id)
        client.connectionDetails.setPassword(session_password(session.cst, session.security_token))
        client.addListener(_ClientListener(self))
        if self._epics:
            market = Subscription("MERGE", [f"MARKET:{e}" for e in self._epics], MARKET_FIELDS)
            market.setRequestedSnapshot("yes")
            market.addListener(_MarketListener(self))
            client.subscribe(market)
        trade = Subscription("DISTINCT", [f"TRADE:{self._account_id}"], TRADE_FIELDS)
        trade.addListener(_TradeListener(self))
        client.subscribe(trade)
        self._client = client
        client.connect()
        self._timer = threading.Thread(target=self._alive_loop, name="ig-stream-alive", daemon=True)
        self._timer.start()

    def _alive_loop(self) -> None:
        # A periodic timer, not a synchronisation: wakes at once when stopped.
        while not self._stopped.wait(self._alive_interval_s):
            if self.is_live():
                self._on_alive()

    def is_live(self) -> bool:
        """Connected, with the TRADE item subscribed: what IG sends about our deals arrives."""
        return self.status.startswith("CONNECTED:") and self.trade_subscribed

    def stop(self) -> None:
        self._stopped.set()
        if self._timer is not None:
            self._timer.join(2.0)
        if self._client is not None:
            try:
                self._client.disconnect()
            except Exception:
                logger.exception("ig: the stream did not disconnect cleanly")

    # ------------------------------------------------------------------ SDK callbacks
    def _status(self, status: str) -> None:
        self.status = status
        self.status_history.append(status)
        if not status.startswith("CONNECTED"):
            # The SDK re-subscribes on reconnect and says so; until then nothing arrives.
            self.trade_subscribed = False
        elif self.is_live():
            self._on_alive()
        elif status == "DISCONNECTED:WILL-RETRY" and self._client is not None:
            # The SDK reconnects; a re-login since may have new tokens.
            session = self._session_source()
            if session is not None:
                self._client.connectionDetails.setPassword(
                    session_password(session.cst, session.security_token)
                )

    def _trade_subscription(self, subscribed: bool) -> None:
        self.trade_subscribed = subscribed
        self.status_history.append("TRADE:SUBSCRIBED" if subscribed else "TRADE:UNSUBSCRIBED")
        if subscribed:
            if self._on_trade_subscribed is not None:
                self._on_trade_subscribed()
            if self.is_live():
                self._on_alive()

    def _market(self, item: str, fields: Mapping[str, str | None]) -> None:
        self.updates_total += 1
        self._on_alive()
        symbol = self._epics.get(item.removeprefix("MARKET:"))
        if symbol is None:
            return
        tick = market_update_to_tick(symbol, fields, now_ns=self._now_ns())
        if tick is not None:
            self._on_tick(tick)

    def _trade(self, fields: Mapping[str, str | None]) -> None:
        self.updates_total += 1
        self._on_alive()
        for name, handler in (("CONFIRMS", self._on_confirm), ("OPU", self._on_position_update)):
            raw = fields.get(name)
            if not raw:
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                logger.warning("ig: the stream's %s is not JSON; skipped", name)
                continue
            if isinstance(data, dict):
                handler(data)


class _ClientListener:
    def __init__(self, stream: IgStream) -> None:
        self._stream = stream

    def onStatusChange(self, status: str) -> None:
        self._stream._status(status)

    def onServerError(self, code: int, message: str) -> None:
        logger.error("ig: the stream server refused: %s %s", code, message)


class _MarketListener:
    def __init__(self, stream: IgStream) -> None:
        self._stream = stream

    def onItemUpdate(self, update: Any) -> None:
        fields = {name: update.getValue(name) for name in MARKET_FIELDS}
        self._stream._market(update.getItemName(), fields)

    def onSubscriptionError(self, code: int, message: str) -> None:
        logger.error("ig: MARKET subscription refused: %s %s", code, message)


class _TradeListener:
    def __init__(self, stream: IgStream) -> None:
        self._stream = stream

    def onItemUpdate(self, update: Any) -> None:
        self._stream._trade({name: update.getValue(name) for name in TRADE_FIELDS})

    def onSubscription(self) -> None:
        self._stream._trade_subscription(True)

    def onUnsubscription(self) -> None:
        self._stream._trade_subscription(False)

    def onSubscriptionError(self, code: int, message: str) -> None:
        logger.error("ig: TRADE subscription refused: %s %s", code, message)
