"""Start-up pre-flight: what can be found wrong before the engine takes anything.

``Engine.start`` runs these first, before the paper venue, the actors and above all the leader
lease: a process that cannot serve its admin port or open its database must not take the lease
(a standby could have led instead) and must tell the operator why in one line, not with a late
traceback. Each check raises ``StartupError``, whose text names what (the port, the SQLite
path, the URL with its password hidden) and the cause.

Checks run in the calling thread (the launcher's main thread) and hold nothing afterwards
except the opened database, which the engine keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.http.server import check_bindable, is_loopback
from adapters.storage.database import Database, DatabaseUnavailable
from adapters.storage.journal import JournalUnavailable

if TYPE_CHECKING:
    from adapters.storage.journal import OrderJournal
    from domain.config import HttpConfig

__all__ = [
    "StartupError",
    "check_admin_exposure",
    "check_admin_port",
    "check_order_journal",
    "open_database",
]


class StartupError(Exception):
    """The engine cannot start. ``str()`` is one line, ready for the operator."""


def check_admin_exposure(http: HttpConfig) -> None:
    """Refuse to serve the admin API beyond loopback without an admin token: from the network,
    anyone could otherwise pause, flatten, arm or confirm LIVE.

    Raises:
        StartupError: ``http.host`` is not a loopback address and no token is configured.
    """
    if is_loopback(http.host):
        return
    if http.token is not None or http.tokens:
        return
    raise StartupError(
        f"admin HTTP would listen on http.host={http.host}, which is not loopback, with no "
        "admin token: set VIGIL_ADMIN_TOKEN (http.token) or bind http.host to 127.0.0.1"
    )


def check_admin_port(http: HttpConfig) -> None:
    """Check that the admin API's address can be bound (port 0, "any free port", always can).

    Raises:
        StartupError: the port is in use or the host cannot be bound; names both.
    """
    if http.port == 0:
        return
    try:
        check_bindable(http.host, http.port)
    except OSError as error:
        raise StartupError(
            f"admin HTTP port {http.port} on {http.host} is not available ({error}); stop "
            "whatever holds it, or choose another port with http.port / VIGIL_HTTP_PORT"
        ) from None


def open_database(url: str) -> Database:
    """Open the database at ``url``, migrated to head.

    Raises:
        StartupError: it cannot be opened, reached or migrated; names the SQLite path or the
            URL (password hidden) and the cause.
    """
    try:
        return Database.from_url(url)
    except DatabaseUnavailable as error:
        raise StartupError(str(error)) from None


def check_order_journal(journal: OrderJournal) -> None:
    """Open the order journal once (on SQLite its own file beside the database: created,
    schema checked), so a journal that cannot be written stops the start in one line instead
    of failing the order actor into a halt after its restarts.

    Raises:
        StartupError: the journal cannot be opened; names it and the cause.
    """
    try:
        journal.check()
    except JournalUnavailable as error:
        raise StartupError(str(error)) from None
    finally:
        journal.close()  # the order actor's thread opens its own
