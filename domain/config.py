"""Configuration models. Frozen, strict (unknown keys are errors), units in the field names.

``launcher.config`` loads a YAML profile, applies environment overrides (the SOLAT runbook's
names, e.g. ``MAX_DAILY_LOSS_PCT``) and validates into ``EngineConfig``. A bad value fails at
start with a message naming the key and the rule.
"""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from domain.enums import Mode

__all__ = [
    "LIVE_RISK_LIMITS",
    "BrokerConfig",
    "CircuitBreakerConfig",
    "EngineConfig",
    "FeedConfig",
    "HeartbeatConfig",
    "HttpConfig",
    "IgConfig",
    "IgInstrumentConfig",
    "InstrumentConfig",
    "KiteConfig",
    "KiteInstrumentConfig",
    "LeaderConfig",
    "LiveGateConfig",
    "OrderConfig",
    "PaperBrokerConfig",
    "ReconciliationConfig",
    "RiskConfig",
    "SchedulerConfig",
    "StrategyConfig",
    "SupervisionConfig",
    "WatchdogConfig",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstrumentConfig(_Strict):
    """One instrument. See ``domain.instruments.Instrument`` for the meaning of each field."""

    symbol: str = Field(min_length=1)
    lot_size: int = Field(default=1, gt=0)
    tick_size: Decimal = Field(default=Decimal("0.05"), gt=0)
    freeze_quantity: int = Field(default=1_000_000, gt=0)
    price_band_pct: Decimal = Field(default=Decimal("10"), gt=0, le=100)
    reference_price: Decimal = Field(default=Decimal("100"), gt=0)
    max_spread_ticks: int = Field(default=20, gt=0)


class FeedConfig(_Strict):
    """Market data source.

    Attributes:
        kind: ``synthetic`` (seeded random walk), ``csv`` (replay of a file) or ``kite``
            (the Kite ticker websocket; needs ``broker.kind: kite``, whose connection it shares).
        seed: random seed of the synthetic market; same seed, same market.
        tick_interval_ms: synthetic pacing between ticks of one instrument.
        volatility_bps: per-tick standard deviation of the synthetic walk, basis points.
        spread_blowout_probability: chance per tick of a spread many times wider than usual.
        band_hit_probability: chance per tick that the walk is pushed to its price band.
        csv_path: file to replay when ``kind`` is ``csv``.
        replay_speed: 1.0 is real time; 0 means as fast as possible.
    """

    kind: Literal["synthetic", "csv", "kite", "ig"] = "synthetic"
    name: str = "synthetic"
    seed: int = 7
    tick_interval_ms: int = Field(default=250, gt=0)
    volatility_bps: float = Field(default=8.0, ge=0)
    spread_blowout_probability: float = Field(default=0.002, ge=0, le=1)
    band_hit_probability: float = Field(default=0.0005, ge=0, le=1)
    csv_path: str | None = None
    replay_speed: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _csv_needs_path(self) -> FeedConfig:
        if self.kind == "csv" and not self.csv_path:
            raise ValueError("feed.csv_path is required when feed.kind is 'csv'")
        return self


class StrategyConfig(_Strict):
    """One strategy instance.

    Attributes:
        name: unique instance name (metric label ``strategy``).
        kind: ``orb`` (opening-range breakout) or ``ema_pullback`` (EMA trend pullback).
        instruments: symbols this instance trades.
        bar_interval_s: bar length built from ticks.
        params: strategy-specific numbers (see each strategy's docstring).
    """

    name: str = Field(min_length=1)
    kind: Literal["orb", "ema_pullback"]
    instruments: tuple[str, ...] = Field(min_length=1)
    bar_interval_s: int = Field(default=5, gt=0)
    params: dict[str, float] = Field(default_factory=dict)


class RiskConfig(_Strict):
    """Pre-trade limits. Exits are never blocked by these; entries are.

    Attributes:
        capital_rupees: account capital the percentages apply to.
        per_trade_risk_pct: max loss to the stop of one plan, percent of capital.
        portfolio_heat_cap_pct: max summed risk-to-stop of open positions, percent of capital.
        max_order_size: max quantity of one order (after lot rounding).
        max_concurrent_positions: max open positions (plus working entries).
        per_symbol_exposure_cap_rupees: max notional in one instrument.
        max_trades_per_hour: entries allowed in any rolling hour.
        max_daily_loss_pct: realized plus unrealized loss that trips the kill switch.
        dedupe_window_s: a repeated plan id inside this window is dropped.
    """

    capital_rupees: Decimal = Field(default=Decimal("1000000"), gt=0)
    per_trade_risk_pct: Decimal = Field(default=Decimal("0.25"), gt=0, le=100)
    portfolio_heat_cap_pct: Decimal = Field(default=Decimal("1.0"), gt=0, le=100)
    max_order_size: int = Field(default=500, gt=0)
    max_concurrent_positions: int = Field(default=6, gt=0)
    per_symbol_exposure_cap_rupees: Decimal = Field(default=Decimal("300000"), gt=0)
    max_trades_per_hour: int = Field(default=120, gt=0)
    max_daily_loss_pct: Decimal = Field(default=Decimal("2.0"), gt=0, le=100)
    dedupe_window_s: float = Field(default=300.0, gt=0)


class PaperBrokerConfig(_Strict):
    """Simulated venue. Latency is clock time; slippage is in ticks against the taker."""

    latency_ms: int = Field(default=20, ge=0)
    slippage_ticks: int = Field(default=0, ge=0)
    account_id: str = "PAPER-0001"
    # REHEARSAL: the venue presents a LIVE-type account, so the whole go-live procedure runs
    # end to end with no real broker (configs/rehearsal.yaml). Everything says REHEARSAL.
    live_account: bool = False
    # A venue-side rate limit, so the paper venue can stand for a rate-limited broker in tests
    # and drills: requests (submit, cancel, modify) beyond it in any trailing second (minute)
    # are refused with ``BrokerRateLimited``, and the venue counts what arrives per window.
    # None: unlimited (the default; the paper venue has no published limit). Set the same in
    # ``broker`` for the engine to keep under it; otherwise only the threaded gateway retries
    # a 429 (the inline one reports it as an unknown outcome, settled by reconciliation).
    rate_limit_per_s: int | None = Field(default=None, gt=0)
    rate_limit_per_min: int | None = Field(default=None, gt=0)


class BrokerConfig(_Strict):
    """How the order actor reaches the broker (``actors.broker_gateway``).

    ``gateway``: ``thread`` hands each request to a priority queue served by worker threads (a
    real broker takes ~200 ms to answer; decisions, cancels and other instruments must not wait
    for it); ``inline`` calls the broker on the order actor's thread, outcomes still come back
    as messages (only for a venue that never blocks: the in-process paper venue, where a thread
    hand-off would cost more than the call); ``auto`` (default): inline for the paper venue
    without rate limits, thread for any other broker or once a rate limit is set (inline with
    a rate limit is refused). ``gateway_workers``: broker calls in progress at once (for
    different orders; one order's requests always run one at a time, in order).
    """

    # Which broker: ``paper`` (the in-process venue, the default) or ``kite`` (Zerodha Kite
    # Connect v3, settings in ``kite``; the real base URLs are LIVE, reached only through the
    # LIVE gates).
    kind: Literal["paper", "kite", "ig"] = "paper"
    gateway: Literal["auto", "thread", "inline"] = "auto"
    gateway_workers: int = Field(default=4, ge=1, le=64)
    # The broker's published request limits, enforced in front of every broker call by the
    # threaded gateway (never more than this many requests in any trailing second / minute).
    # None: unlimited (the default, for the in-process paper venue). Kite Connect publishes
    # 10 order requests/s and 200 orders/min; IG's REST API 100 trading requests/min per
    # account (30 non-trading/min per account, 60/min per app). With a limit set, ``auto``
    # picks ``thread``: the inline gateway runs on the order actor's thread, which must never
    # wait for a token.
    rate_limit_per_s: int | None = Field(default=None, gt=0)
    rate_limit_per_min: int | None = Field(default=None, gt=0)
    # A request the broker refused for its rate limit (429, ``BrokerRateLimited``) is retried
    # up to this many times; the whole gateway waits the broker's Retry-After, or without one
    # ``rate_limit_backoff_s`` doubling per retry up to ``rate_limit_backoff_max_s``.
    rate_limit_retries: int = Field(default=5, ge=0, le=100)
    rate_limit_backoff_s: float = Field(default=0.5, gt=0)
    rate_limit_backoff_max_s: float = Field(default=10.0, gt=0)
    # With a per-minute limit: entries may not use the part of the minute's budget a flatten of
    # everything the engine holds would need (cancels, exits, the legs of entries that may
    # still fill), so a burst of entries never makes a flatten wait for the minute to roll;
    # entries beyond it wait in the gateway. Cancels, exits and protective legs use it all.
    flatten_reserve: bool = True
    # A real broker that answers the start-up login with its rate limit or a 5xx/timeout (a
    # restart right after a crash can find IG's per-minute allowance used up) is asked again,
    # backing off, for up to this long before the start fails. Refused credentials and a
    # refused account fail at once: waiting cannot mend them.
    connect_retry_s: float = Field(default=90.0, ge=0)

    @property
    def is_rate_limited(self) -> bool:
        return self.rate_limit_per_s is not None or self.rate_limit_per_min is not None

    @model_validator(mode="after")
    def _remote_brokers_need_the_threaded_gateway(self) -> BrokerConfig:
        if self.kind != "paper" and self.gateway == "inline":
            raise ValueError(
                f"broker.gateway 'inline' cannot serve broker.kind '{self.kind}': a remote "
                "broker answers in ~200 ms and the order actor's thread must not wait; use "
                "'thread' or 'auto'"
            )
        return self

    @model_validator(mode="after")
    def _inline_gateway_cannot_wait_for_tokens(self) -> BrokerConfig:
        if self.gateway == "inline" and self.is_rate_limited:
            raise ValueError(
                "broker.gateway 'inline' cannot honour broker.rate_limit_per_s/"
                "rate_limit_per_min: it calls the broker on the order actor's thread, which "
                "must never wait for a token; use 'thread' or 'auto'"
            )
        return self


class KiteInstrumentConfig(_Strict):
    """Where one configured instrument trades at Kite (the instruments CSV supplies its token,
    lot size and tick size). ``tradingsymbol`` defaults to the engine's symbol."""

    exchange: str = Field(default="NSE", min_length=1)
    tradingsymbol: str | None = None


KITE_REAL_REST_BASE_URL = "https://api.kite.trade"
KITE_REAL_WS_BASE_URL = "wss://ws.kite.trade"


class KiteConfig(_Strict):
    """Zerodha Kite Connect v3 (``broker.kind: kite``; ``adapters.brokers.kite``).

    Attributes:
        api_key: the app's API key; else the ``KITE_API_KEY`` environment variable.
        access_token: the day's access token; else ``access_token_file``, else the
            ``KITE_ACCESS_TOKEN`` environment variable. Secret: never logged or dumped.
        access_token_file: a file holding the access token, re-read when it changes
            (``python -m tools.kite_login --write <file>`` writes it), so a new login after
            the 06:00 expiry needs no restart.
        rest_base_url, ws_base_url: the real ``https://api.kite.trade`` and
            ``wss://ws.kite.trade`` by default (a LIVE account); a fake's ``http://127.0.0.1:N``
            and ``ws://127.0.0.1:N`` for DEMO.
        live_account: this is a rehearsal against a fake whose account is LIVE-type: every
            view and message says REHEARSAL (``EngineConfig.rehearsal``). Whether the account
            is LIVE is the broker's answer (the real base always is; a fake says so in its
            profile's ``meta.account_type``), never this flag.
        market_protection: sent with MARKET and SL-M orders (Kite requires it non-zero since
            April 2026), in percent.
        product: ``MIS`` (intraday) by default.
        request_timeout_s: per-request HTTP timeout.
        ticker_mode: ``full`` (depth: bid/ask from the best level), ``quote`` or ``ltp``.
        ticker_backoff_initial_s, ticker_backoff_max_s: the reconnect backoff of the ticker.
        ticker_silence_timeout_s: a ticker silent this long (Kite beats every second) is
            reopened.
        instruments: symbol -> exchange and tradingsymbol; a symbol not listed trades on
            ``NSE`` under its own name.
    """

    api_key: SecretStr | None = None
    access_token: SecretStr | None = None
    access_token_file: str | None = None
    rest_base_url: str = KITE_REAL_REST_BASE_URL
    ws_base_url: str = KITE_REAL_WS_BASE_URL
    live_account: bool = False
    market_protection: Decimal = Field(default=Decimal("2"), gt=0, le=100)
    product: Literal["MIS", "NRML", "CNC"] = "MIS"
    request_timeout_s: float = Field(default=7.0, gt=0)
    ticker_mode: Literal["full", "quote", "ltp"] = "full"
    ticker_backoff_initial_s: float = Field(default=0.5, gt=0)
    ticker_backoff_max_s: float = Field(default=30.0, gt=0)
    ticker_silence_timeout_s: float = Field(default=10.0, gt=0)
    instruments: dict[str, KiteInstrumentConfig] = Field(default_factory=dict)

    @property
    def is_real_base(self) -> bool:
        """The REST base is Zerodha's own: real money."""
        return self.rest_base_url.rstrip("/") == KITE_REAL_REST_BASE_URL


class IgInstrumentConfig(_Strict):
    """Where one configured instrument trades at IG: its epic (``MARKET:{epic}`` on the
    stream), expiry (``-`` for cash and DFB markets) and the deal currency."""

    epic: str = Field(min_length=1)
    expiry: str = "-"
    currency: str = "GBP"


IG_DEMO_REST_BASE_URL = "https://demo-api.ig.com/gateway/deal"
IG_LIVE_REST_BASE_URL = "https://api.ig.com/gateway/deal"


class IgConfig(_Strict):
    """IG's REST trading API and Lightstreamer (``broker.kind: ig``; ``adapters.brokers.ig``).

    Attributes:
        api_key, identifier, password: the login; else the ``IG_API_KEY``, ``IG_IDENTIFIER``
            and ``IG_PASSWORD`` environment variables. Secrets: never logged or dumped.
        account_id: the account to trade (the session is switched to it; the runbook's
            account lock checks it is the active one); else ``IG_ACCOUNT_ID``.
        rest_base_url: IG's demo gateway by default; ``https://api.ig.com/gateway/deal`` is
            LIVE (real money); a fake's ``http://127.0.0.1:N`` for DEMO and rehearsals.
        live_account: a rehearsal against a fake whose account is LIVE-type (as Kite's).
        stream: open the Lightstreamer session (``lightstreamer-client-lib``) for prices and
            trade confirmations; False: confirms and positions by REST polling only.
        confirm_timeout_s: how long a deal's confirm (404 until ready) is polled before the
            outcome is left unknown (the order stays in flight).
        session_max_age_s: log in again before the session tokens get this old.
        instruments: symbol -> epic, expiry, currency.
    """

    api_key: SecretStr | None = None
    identifier: SecretStr | None = None
    password: SecretStr | None = None
    account_id: str = ""
    rest_base_url: str = IG_DEMO_REST_BASE_URL
    live_account: bool = False
    stream: bool = True
    request_timeout_s: float = Field(default=7.0, gt=0)
    confirm_timeout_s: float = Field(default=3.0, gt=0)
    session_max_age_s: float = Field(default=5.5 * 3600, gt=0)
    stream_silence_timeout_s: float = Field(default=10.0, gt=0)
    instruments: dict[str, IgInstrumentConfig] = Field(default_factory=dict)

    @property
    def is_real_base(self) -> bool:
        """The REST base is one of IG's own gateways (demo or live)."""
        return self.rest_base_url.rstrip("/") in (IG_DEMO_REST_BASE_URL, IG_LIVE_REST_BASE_URL)

    @property
    def is_live_base(self) -> bool:
        """The REST base is IG's live gateway: real money."""
        return self.rest_base_url.rstrip("/") == IG_LIVE_REST_BASE_URL


class HttpConfig(_Strict):
    """Admin API. Binds to loopback unless told otherwise; a token guards mutating routes."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token: SecretStr | None = None
    # More operators, each with a token of their own: name -> token. The audit trail records
    # the name of the token a request came with ("admin" for ``token``, "local" with none).
    tokens: dict[str, SecretStr] = Field(default_factory=dict)
    ask_timeout_s: float = Field(default=3.0, gt=0)
    flatten_timeout_s: float = Field(default=5.0, gt=0)
    threads: int = Field(default=4, gt=0)

    @model_validator(mode="after")
    def _tokens_tell_operators_apart(self) -> HttpConfig:
        # Caught at load, not when the admin API starts: the audit trail names operators by
        # their token, so a name must be usable and a token belong to one name. The messages
        # name operators, never tokens.
        named = dict(self.tokens)
        if self.token is not None:
            if "admin" in named:
                raise ValueError("http.tokens names 'admin', which is http.token's name")
            named["admin"] = self.token
        owners: dict[str, str] = {}
        for name, secret in named.items():
            if not name.strip() or name in ("local", "anonymous"):
                raise ValueError(f"http.tokens has an unusable operator name {name!r}")
            value = secret.get_secret_value().strip()
            if not value:
                raise ValueError(f"the admin token of {name!r} is empty")
            if value in owners:
                raise ValueError(
                    f"the admin tokens of {owners[value]!r} and {name!r} are the same token"
                )
            owners[value] = name
        return self


class HeartbeatConfig(_Strict):
    """Staleness limits that auto-pause entries (the runbook says 5 s)."""

    marketdata_stale_s: float = Field(default=5.0, gt=0)
    order_stream_stale_s: float = Field(default=5.0, gt=0)
    actor_ping_timeout_s: float = Field(default=2.0, gt=0)
    timer_interval_ms: int = Field(default=100, gt=0)


class LeaderConfig(_Strict):
    """Database leader lease with a fencing epoch."""

    lease_ttl_s: float = Field(default=5.0, gt=0)
    renew_interval_s: float = Field(default=1.0, gt=0)
    grace_s: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> LeaderConfig:
        if self.renew_interval_s >= self.lease_ttl_s:
            raise ValueError(
                f"leader.renew_interval_s ({self.renew_interval_s}) must be below "
                f"leader.lease_ttl_s ({self.lease_ttl_s})"
            )
        return self


class SupervisionConfig(_Strict):
    """Restart policy: at most ``max_restarts`` within ``window_s``, then HALT.

    Fields:
        max_restarts: crashes (of any child) within ``window_s`` before escalating to a HALT.
        window_s: the crash-counting window; also how long a child must run crash-free for
            its backoff to start again from the bottom.
        backoff_initial_s, backoff_max_s: restart delay while trading normally, doubling per
            recent crash from the first to the second. ``backoff_initial_s: 0`` switches every
            backoff off, the HALTED one included (tests that restart on the spot).
        halted_backoff_max_s: once HALTED (or escalated), a crashing child is restarted after
            ``max(backoff_max_s, 1)`` doubling per crash of that child up to this cap: a HALT
            caused by a persistent fault (a full disk) must not turn into a restart storm.
        flatten_on_escalation: the escalation HALT also flattens.
    """

    max_restarts: int = Field(default=3, ge=0)
    window_s: float = Field(default=60.0, gt=0)
    backoff_initial_s: float = Field(default=0.1, ge=0)
    backoff_max_s: float = Field(default=5.0, ge=0)
    halted_backoff_max_s: float = Field(default=60.0, gt=0)
    flatten_on_escalation: bool = False


class OrderConfig(_Strict):
    """How long an entry may live, and how often an unanswered broker call is retried."""

    # An entry not filled within this time is never sent or resent, and a working one is
    # cancelled; an entry from an earlier trading day is settled at once.
    entry_ttl_s: float = Field(default=120.0, gt=0)
    # An order whose outcome is unknown is settled from the broker's order list after this.
    in_flight_settle_s: float = Field(default=3.0, gt=0)
    # Resends, cancel resends and resizes the broker refused or never answered: past this many
    # attempts the loop stops and escalates (an event, a log line, a pause) instead of spinning.
    max_attempts: int = Field(default=5, ge=1)


class ReconciliationConfig(_Strict):
    """Scheduled comparisons of our books with the broker's (NautilusTrader's live execution
    engine runs the same three loops). Each also runs at start and on every gain of leadership."""

    in_flight_interval_s: float = Field(default=1.0, gt=0)
    open_orders_interval_s: float = Field(default=5.0, gt=0)
    positions_interval_s: float = Field(default=10.0, gt=0)
    # A difference must persist this long (broker reports in transit explain short ones)
    # before it counts as drift and halts entries.
    drift_grace_s: float = Field(default=3.0, ge=0)
    # Consecutive failures to reach the broker before the report says so and entries pause.
    max_failures: int = Field(default=5, ge=1)


class CircuitBreakerConfig(_Strict):
    """``max_errors`` broker errors or rejections within ``window_s`` trip the breaker: it
    disarms and blocks entries until ``cooldown_s`` has passed AND an operator resets it."""

    max_errors: int = Field(default=5, ge=1)
    window_s: float = Field(default=60.0, gt=0)
    cooldown_s: float = Field(default=300.0, ge=0)


class LiveGateConfig(_Strict):
    """The SOLAT runbook's LIVE gate settings (domain.live_gates evaluates them)."""

    live_trading_enabled: bool = False
    live_enable_token: SecretStr | None = None
    live_account_id: str | None = None
    live_max_order_size: Decimal | None = None
    live_confirmation_ttl_s: float = Field(default=600, gt=0)
    live_prelive_max_age_s: float = Field(default=300, gt=0)


class WatchdogConfig(_Strict):
    """The watchdog's tripwires (actors/watchdog_actor.py); defaults are the AITRAPP runbook's.

    Fields:
        latency_p95_limit_ms: order-ack latency p95 above this trips (800 ms).
        latency_window_s: the p95 is taken over the acks of this last window.
        latency_sustained_s: ... and must stay above the limit this long (2 min).
        latency_min_samples: fewer acks than this in the window judge nothing.
        market_quality_max_events: more spread blowouts plus band rejections than this ...
        market_quality_window_s: ... within this window trip (3 in 1 min).
        queue_rising_s: the broker request queue growing, never falling, this long trips (60 s).
        queue_min_depth: ... having held at least this many requests all along (a queue
            that was empty a moment ago is not a backlog).
        flatten_delay_s: "pause, then flatten": how long after the pause the flatten follows
            while the condition still holds (0: at once).

    The other rows keep their thresholds where their detector lives: leader loss
    ``leader.grace_s`` (10 s), heartbeats ``heartbeats.*_stale_s`` (5 s), daily loss and heat
    ``risk.max_daily_loss_pct``/``risk.portfolio_heat_cap_pct``.
    """

    latency_p95_limit_ms: float = Field(default=800.0, gt=0)
    latency_window_s: float = Field(default=60.0, gt=0)
    latency_sustained_s: float = Field(default=120.0, ge=0)
    latency_min_samples: int = Field(default=5, ge=1)
    market_quality_max_events: int = Field(default=3, ge=0)
    market_quality_window_s: float = Field(default=60.0, gt=0)
    queue_rising_s: float = Field(default=60.0, gt=0)
    queue_min_depth: int = Field(default=1, ge=1)
    flatten_delay_s: float = Field(default=0.0, ge=0)


# The runbook's mandatory risk limits: (environment name, RiskConfig field).
LIVE_RISK_LIMITS: tuple[tuple[str, str], ...] = (
    ("MAX_DAILY_LOSS_PCT", "max_daily_loss_pct"),
    ("MAX_CONCURRENT_POSITIONS", "max_concurrent_positions"),
    ("PER_SYMBOL_EXPOSURE_CAP", "per_symbol_exposure_cap_rupees"),
    ("MAX_TRADES_PER_HOUR", "max_trades_per_hour"),
)


class SchedulerConfig(_Strict):
    """The trading-day schedule (actors/scheduler_actor.py, rules in domain/schedule.py).

    Off by default, so existing profiles (and a paper engine run at night) trade around the
    clock as before; a LIVE profile turns it on. Session days come from ``calendar`` (a
    ``pandas-market-calendars`` name: "XNSE" / "NSE" carry the NSE holidays); weekends are
    never sessions unless listed in ``extra_sessions`` (a special Saturday session), and
    ``extra_holidays`` closes days the library does not know yet (its list ends at the last
    year the exchange has published). Times are exchange-local in ``timezone``.
    """

    enabled: bool = False
    calendar: str = Field(default="XNSE", min_length=1)
    timezone: str = "Asia/Kolkata"
    session_open: time = time(9, 15)
    session_close: time = time(15, 30)
    # No entries from here on; every stop is tightened (break-even or a trail).
    tighten_at: time = time(15, 20)
    # Everything flattened (the FLATTEN pause with detail "eod_hard_flat").
    flat_at: time = time(15, 25)
    tighten_mode: Literal["break_even", "trail"] = "break_even"
    # For tighten_mode "trail": the stop goes this many ticks behind the current price.
    trail_ticks: int = Field(default=20, gt=0)
    extra_holidays: tuple[date, ...] = ()
    extra_sessions: tuple[date, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"scheduler.timezone: unknown time zone {value!r}") from error
        return value

    @model_validator(mode="after")
    def _times_in_order(self) -> SchedulerConfig:
        if not self.session_open < self.tighten_at <= self.flat_at < self.session_close:
            raise ValueError(
                "scheduler: times must satisfy session_open < tighten_at <= flat_at < "
                f"session_close (got {self.session_open}, {self.tighten_at}, {self.flat_at}, "
                f"{self.session_close})"
            )
        both = sorted(set(self.extra_holidays) & set(self.extra_sessions))
        if both:
            raise ValueError(
                f"scheduler: {[d.isoformat() for d in both]} listed as both holiday and session"
            )
        return self


class EngineConfig(_Strict):
    """Everything the launcher needs to build the engine."""

    instance_id: str = "vigil-1"
    mode: Mode = Mode.PAPER
    auto_arm_paper: bool = True
    # POST /execution/kill-switch/activate also closes every position (the SOLAT runbook's
    # close_on_kill_switch; env CLOSE_ON_KILL_SWITCH).
    close_on_kill_switch: bool = True
    database_url: str = "sqlite:///data/vigil.db"
    data_dir: str = "data"
    logs_dir: str = "logs"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    cpu_affinity: tuple[int, ...] | None = None
    mailbox_capacity: int = Field(default=10_000, gt=0)
    # The feed's inbox is bounded in ticks, not messages (a message is a batch): a fast
    # source feels backpressure instead of queueing seconds of work ahead of pings.
    feed_mailbox_ticks: int = Field(default=5_000, gt=0)
    # Where the hot-path actors (feed, strategies, risk, order) run: ``shared`` puts their loops
    # on one dispatcher thread (a tell between them is a queue append, no thread hand-off);
    # ``threads`` gives each its own thread (pykka's default). See actors/dispatcher.py.
    dispatcher: Literal["shared", "threads"] = "shared"
    # The order actor joins the shared dispatcher only when this is true: today it still calls
    # the broker and the database synchronously, and on the shared thread a broker call that
    # takes 200 ms would stall every decision. A replay (instant paper venue) turns it on; so
    # can the broker gateway once broker I/O leaves the order actor.
    dispatcher_includes_order: bool = False
    instruments: tuple[InstrumentConfig, ...] = Field(min_length=1)
    feed: FeedConfig = Field(default_factory=FeedConfig)
    strategies: tuple[StrategyConfig, ...] = ()
    risk: RiskConfig = Field(default_factory=RiskConfig)
    paper_broker: PaperBrokerConfig = Field(default_factory=PaperBrokerConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    kite: KiteConfig = Field(default_factory=KiteConfig)
    ig: IgConfig = Field(default_factory=IgConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    heartbeats: HeartbeatConfig = Field(default_factory=HeartbeatConfig)
    leader: LeaderConfig = Field(default_factory=LeaderConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)
    orders: OrderConfig = Field(default_factory=OrderConfig)
    reconciliation: ReconciliationConfig = Field(default_factory=ReconciliationConfig)
    live: LiveGateConfig = Field(default_factory=LiveGateConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)

    @property
    def rehearsal(self) -> bool:
        """The paper venue (or a fake Kite) presents a LIVE account: LIVE is rehearsed, no
        real broker."""
        if self.broker.kind == "kite":
            return self.kite.live_account and not self.kite.is_real_base
        if self.broker.kind == "ig":
            return self.ig.live_account and not self.ig.is_real_base
        return self.paper_broker.live_account

    def missing_live_risk_limits(self) -> tuple[str, ...]:
        """The runbook's mandatory LIVE limits not set explicitly (YAML or environment): in
        LIVE a limit has no default, so each missing one blocks arming."""
        missing = [
            env_name
            for env_name, field in LIVE_RISK_LIMITS
            if field not in self.risk.model_fields_set
        ]
        if self.live.live_max_order_size is None:
            missing.insert(0, "LIVE_MAX_ORDER_SIZE")
        return tuple(missing)

    @model_validator(mode="after")
    def _kite_feed_needs_kite_broker(self) -> EngineConfig:
        if self.feed.kind == "kite" and self.broker.kind != "kite":
            raise ValueError(
                "feed.kind 'kite' needs broker.kind 'kite': the ticker shares the broker's "
                "session and websocket"
            )
        unknown = sorted(set(self.kite.instruments) - {i.symbol for i in self.instruments})
        if unknown:
            raise ValueError(
                f"kite.instruments: unknown symbols {unknown}; configured instruments are "
                f"{sorted(i.symbol for i in self.instruments)}"
            )
        return self

    @model_validator(mode="after")
    def _ig_feed_needs_ig_broker(self) -> EngineConfig:
        if self.feed.kind == "ig" and (self.broker.kind != "ig" or not self.ig.stream):
            raise ValueError(
                "feed.kind 'ig' needs broker.kind 'ig' with ig.stream true: the prices come "
                "on the broker's Lightstreamer session"
            )
        if self.broker.kind == "ig":
            symbols = {i.symbol for i in self.instruments}
            unknown = sorted(set(self.ig.instruments) - symbols)
            missing = sorted(symbols - set(self.ig.instruments))
            if unknown or missing:
                raise ValueError(
                    f"ig.instruments: every instrument needs its epic; unknown symbols "
                    f"{unknown}, missing {missing}"
                )
        return self

    @model_validator(mode="after")
    def _strategies_trade_known_instruments(self) -> EngineConfig:
        known = {i.symbol for i in self.instruments}
        if len(known) != len(self.instruments):
            raise ValueError("instruments: symbols must be unique")
        names = [s.name for s in self.strategies]
        if len(set(names)) != len(names):
            raise ValueError("strategies: names must be unique")
        for strategy in self.strategies:
            unknown = sorted(set(strategy.instruments) - known)
            if unknown:
                raise ValueError(
                    f"strategies[{strategy.name}].instruments: unknown symbols {unknown}; "
                    f"configured instruments are {sorted(known)}"
                )
        return self
