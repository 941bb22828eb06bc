"""The fake IG's Lightstreamer endpoint spoken to in raw TLCP 2.4.0 over a WebSocket.

The SDK itself is proven in tests/e2e/test_fake_ig_clients.py; here each TLCP message the
fake sends is checked on its own: WSOK, CONOK/CONERR, REQOK/REQERR, SUBOK, U (field encoding),
EOS, UNSUB, PROBE, END, and what a dropped stream and a rebind look like.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from urllib.parse import urlencode

import pytest
import websocket

from domain.clock import ManualClock
from tools.fake_ig import Allowances, FakeIG
from tools.fake_ig.server import tlcp_value
from tools.fake_ig.testing import IgHttp

pytestmark = pytest.mark.timeout(60)

EPIC = "IX.D.FTSE.DAILY.IP"
START_NS = 1_767_603_600 * 1_000_000_000
MARKET_SCHEMA = "BID OFFER UPDATE_TIME MARKET_STATE"


class TlcpSocket:
    """A websocket-client connection speaking TLCP; ``lines`` holds every line received."""

    def __init__(self, fake: FakeIG) -> None:
        url = f"ws://{fake.host}:{fake.port}/lightstreamer"
        self.ws = websocket.create_connection(
            url, timeout=5, subprotocols=["TLCP-2.4.0.lightstreamer.com"]
        )
        self.lines: list[str] = []
        self.closed = False

    def send(self, kind: str, *requests: dict[str, str]) -> None:
        self.ws.send("\r\n".join([kind, *(urlencode(r) for r in requests)]))

    def pump_until(self, condition: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"tlcp: not met (closed={self.closed}): {self.lines[-6:]}")
            self.ws.settimeout(min(left, 1.0))
            try:
                opcode, payload = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                self.closed = True
                continue
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.closed = True
            elif opcode == websocket.ABNF.OPCODE_TEXT:
                self.lines.extend(line for line in payload.decode().split("\r\n") if line)

    def wait_for(self, prefix: str, *, count: int = 1) -> list[str]:
        self.pump_until(lambda: len(self.starting(prefix)) >= count)
        return self.starting(prefix)

    def starting(self, prefix: str) -> list[str]:
        return [line for line in self.lines if line.startswith(prefix)]

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = FakeIG(seed=4, clock=ManualClock(START_NS), allowances=Allowances.unlimited(),
                    probe_interval_s=0.2)  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ig(fake: FakeIG) -> Iterator[IgHttp]:
    client = IgHttp(fake.base_url, fake.api_key)
    client.login(fake.username, fake.password)
    try:
        yield client
    finally:
        client.close()


def _password(ig: IgHttp) -> str:
    return f"CST-{ig.client.headers['CST']}|XST-{ig.client.headers['X-SECURITY-TOKEN']}"


def _connect(fake: FakeIG, ig: IgHttp) -> tuple[TlcpSocket, str]:
    socket = TlcpSocket(fake)
    socket.send("wsok")
    socket.wait_for("WSOK")
    socket.send("create_session", {"LS_cid": "x", "LS_adapter_set": "DEFAULT",
                                   "LS_user": "ABC123", "LS_password": _password(ig)})  # fmt: skip
    (conok,) = socket.wait_for("CONOK")
    return socket, conok.split(",")[1]


def _subscribe(socket: TlcpSocket, req: int, sub: int, group: str, schema: str, mode: str,
               snapshot: str = "true") -> None:  # fmt: skip
    socket.send("control", {"LS_reqId": str(req), "LS_op": "add", "LS_subId": str(sub),
                            "LS_mode": mode, "LS_group": group, "LS_schema": schema,
                            "LS_snapshot": snapshot})  # fmt: skip


def test_field_values_use_tlcps_encoding() -> None:
    assert tlcp_value(None) == "#"
    assert tlcp_value("") == "$"
    assert tlcp_value("7500.5") == "7500.5"
    assert tlcp_value("a|b%c") == "a%7Cb%25c"
    assert tlcp_value("#x") == "%23x"
    assert tlcp_value('{"a": 1, "b": null}') == '{"a": 1, "b": null}'


def test_bad_credentials_get_conerr(fake: FakeIG, ig: IgHttp) -> None:
    socket = TlcpSocket(fake)
    try:
        socket.send("create_session", {"LS_user": "ABC123", "LS_password": "CST-no|XST-no"})
        assert socket.wait_for("CONERR") == ["CONERR,1,User/password check failed"]
        socket.send("create_session", {"LS_user": "NOPE", "LS_password": _password(ig)})
        assert len(socket.wait_for("CONERR", count=2)) == 2
        assert fake.stream_count() == 0
    finally:
        socket.close()


def test_market_subscription_gets_its_snapshot_and_every_move(fake: FakeIG, ig: IgHttp) -> None:
    socket, session_id = _connect(fake, ig)
    try:
        assert session_id.startswith("S")
        _subscribe(socket, 1, 1, f"MARKET:{EPIC}", MARKET_SCHEMA, "MERGE")
        socket.wait_for("U,")
        assert socket.starting("REQOK") == ["REQOK,1"]
        assert socket.starting("SUBOK") == ["SUBOK,1,1,4"]
        values = fake.market_fields(EPIC)
        snapshot = "|".join(values[name] for name in MARKET_SCHEMA.split())
        assert socket.starting("U,") == [f"U,1,1,{snapshot}"]
        fake.set_quote(EPIC, Decimal("7512.5"))
        (_, moved) = socket.wait_for("U,", count=2)
        assert moved.startswith("U,1,1,7512.5|7513.5|")
        fake.advance(1.0)
        third = socket.wait_for("U,", count=3)[2]
        quote = fake.market_fields(EPIC)
        assert third == "U,1,1," + "|".join(quote[name] for name in MARKET_SCHEMA.split())
        socket.wait_for("PROBE")  # the keepalive
        socket.send("control", {"LS_reqId": "2", "LS_op": "delete", "LS_subId": "1"})
        socket.wait_for("UNSUB")
        assert fake.subscriptions() == []
    finally:
        socket.close()


def test_trade_subscription_streams_confirms_and_opu_as_json(fake: FakeIG, ig: IgHttp) -> None:
    socket, _ = _connect(fake, ig)
    try:
        _subscribe(socket, 1, 2, "TRADE:ABC123", "CONFIRMS OPU WOU", "DISTINCT")
        assert socket.wait_for("EOS") == ["EOS,2,1"]  # an empty snapshot
        ig.deal(dealReference="streamed", stopDistance=10)
        updates = socket.wait_for("U,", count=2)
        confirm_line, opu_line = updates
        confirm_json, opu_field, wou_field = confirm_line.split(",", 3)[3].split("|")
        assert json.loads(confirm_json) == fake.confirms()["streamed"]
        assert (opu_field, wou_field) == ("#", "#")
        _, opu_json, _ = opu_line.split(",", 3)[3].split("|")
        opu = json.loads(opu_json)
        assert opu["status"] == "OPEN" and opu["dealReference"] == "streamed"
        # another account's TRADE item is refused
        _subscribe(socket, 2, 3, "TRADE:XYZ789", "CONFIRMS OPU WOU", "DISTINCT")
        assert socket.wait_for("REQERR") == ["REQERR,2,21,Bad Group name"]
    finally:
        socket.close()


def test_a_dropped_stream_closes_and_a_rebind_resumes_the_session(fake: FakeIG, ig: IgHttp) -> None:
    socket, session_id = _connect(fake, ig)
    _subscribe(socket, 1, 1, f"MARKET:{EPIC}", MARKET_SCHEMA, "MERGE")
    socket.wait_for("U,")
    fake.drop_streams()
    socket.pump_until(lambda: socket.closed)
    socket.close()
    again = TlcpSocket(fake)
    try:
        again.send("bind_session", {"LS_session": "unknown"})
        assert again.wait_for("CONERR") == ["CONERR,20,Session not found"]
        again.send("bind_session", {"LS_session": session_id})
        assert again.wait_for("CONOK")[0].split(",")[1] == session_id
        fake.set_quote(EPIC, Decimal("7490.0"))
        assert again.wait_for("U,")[0].startswith("U,1,1,7490.0|")
        again.send("control", {"LS_reqId": "9", "LS_op": "destroy"})
        assert again.wait_for("END")
        again.pump_until(lambda: again.closed)
        assert fake.stream_count() == 0
    finally:
        again.close()
