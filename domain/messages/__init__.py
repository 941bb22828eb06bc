"""Immutable messages: commands (imperative), events (past tense), queries (``Query...``).

Every message is a frozen, keyword-only ``msgspec.Struct``; the same structs are what the HTTP
API, the logs and the state dumps serialise.
"""

from __future__ import annotations

from domain.messages.control import *  # noqa: F403
from domain.messages.control import __all__ as _control_all
from domain.messages.gateway import *  # noqa: F403
from domain.messages.gateway import __all__ as _gateway_all
from domain.messages.market import *  # noqa: F403
from domain.messages.market import __all__ as _market_all
from domain.messages.orders import *  # noqa: F403
from domain.messages.orders import __all__ as _orders_all
from domain.messages.queries import *  # noqa: F403
from domain.messages.queries import __all__ as _queries_all
from domain.messages.tripwires import *  # noqa: F403
from domain.messages.tripwires import __all__ as _tripwires_all

__all__ = [*_control_all, *_market_all, *_orders_all, *_queries_all]
__all__ += _gateway_all
__all__ += _tripwires_all
