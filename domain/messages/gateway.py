"""Broker-gateway outcomes: what the order actor learns about a request it handed over.

The order actor never calls the broker itself: it hands each submit, cancel or modify to the
broker gateway (``actors.broker_gateway``) and goes on. What the broker did comes back as
messages. A submit or cancel that went through needs none (the broker's own reports follow);
a failure does, and so does an accepted modify (the books change the leg's size only once the
broker took the change).

The three outcomes stay apart here too: ``rejected=True`` is the broker's definitive refusal;
``rejected=False`` is a timeout, a 5xx or a disconnect: the outcome is unknown and the order
stays in flight until the broker's order list settles it.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from domain.enums import DenialCode

__all__ = [
    "BrokerRequestCompleted",
    "BrokerRequestFailed",
    "BrokerRequestKind",
    "BrokerRequestWithheld",
]


class BrokerRequestKind(StrEnum):
    SUBMIT = "submit"
    CANCEL = "cancel"
    MODIFY = "modify"
    TO_MARKET = "to_market"  # a working stop made a market order: it closes the position
    MOVE_STOP = "move_stop"  # a working stop's trigger moved in place (a tighten)


class BrokerRequestFailed(msgspec.Struct, frozen=True, kw_only=True):
    """The broker refused (``rejected``) or did not answer a request handed to the gateway.

    ``error`` is the broker's message (it opens with its code, e.g.
    ``DUPLICATE_CLIENT_ORDER_ID``); ``quantity`` is the size a modify asked for; ``queued_us``
    is the time the request waited in the gateway and ``call_us`` the broker call's own.
    """

    client_order_id: str
    request: BrokerRequestKind
    rejected: bool
    error: str
    quantity: int | None = None
    queued_us: int = 0
    call_us: int = 0
    ts_event: int


class BrokerRequestCompleted(msgspec.Struct, frozen=True, kw_only=True):
    """The broker took a request the order actor asked to hear about (a modify: the leg's new
    ``quantity`` is applied to the books only now)."""

    client_order_id: str
    request: BrokerRequestKind
    quantity: int | None = None
    queued_us: int = 0
    call_us: int = 0
    ts_event: int


class BrokerRequestWithheld(msgspec.Struct, frozen=True, kw_only=True):
    """The gateway did not send an entry: right before the broker call the kill switch's
    decision (``TradingGate``) no longer allowed entries (a HALT, pause or disarm acknowledged
    while the entry waited in the gateway's queue). The broker never saw it."""

    client_order_id: str
    request: BrokerRequestKind
    code: DenialCode
    detail: str
    ts_event: int
