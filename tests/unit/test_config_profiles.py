"""Every shipped profile in configs/ loads; the LIVE rehearsal profiles are what they claim.

configs/rehearsal.yaml and configs/canary_live.yaml present a LIVE-type account on the paper
venue (issue 7): they must say so (``EngineConfig.rehearsal``), set every mandatory LIVE risk
limit explicitly, lock the account the venue presents, and carry no secret.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from domain.config import EngineConfig
from launcher.config import REPO_ROOT, load_config

CONFIGS = REPO_ROOT / "configs"
PROFILES = sorted(CONFIGS.glob("*.yaml"))
REHEARSAL = CONFIGS / "rehearsal.yaml"
CANARY = CONFIGS / "canary_live.yaml"
PAPER = CONFIGS / "paper.yaml"


def load(path: Path, environ: dict[str, str] | None = None) -> EngineConfig:
    # No .env: the profile as shipped, plus only what the test passes.
    return load_config(path, environ=environ or {}, dotenv_path=None)


def test_the_rehearsal_profiles_are_shipped() -> None:
    assert {REHEARSAL, CANARY, PAPER} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_every_profile_loads(profile: Path) -> None:
    config = load(profile)
    assert config.instruments


@pytest.mark.parametrize("profile", [REHEARSAL, CANARY], ids=["rehearsal", "canary_live"])
class TestRehearsalProfiles:
    def test_the_paper_venue_presents_a_live_account(self, profile: Path) -> None:
        config = load(profile)
        assert config.rehearsal
        assert config.paper_broker.live_account
        # The locked account is the one the venue presents: Account verification can pass.
        assert config.live.live_account_id == config.paper_broker.account_id
        assert config.live.live_trading_enabled

    def test_every_mandatory_live_limit_is_set_explicitly(self, profile: Path) -> None:
        assert load(profile).missing_live_risk_limits() == ()

    def test_no_secret_is_in_the_file(self, profile: Path) -> None:
        config = load(profile)
        assert config.live.live_enable_token is None
        assert config.http.token is None
        assert config.http.tokens == {}

    def test_the_secrets_come_from_the_environment(self, profile: Path) -> None:
        config = load(
            profile,
            {"LIVE_ENABLE_TOKEN": "t" * 32, "VIGIL_ADMIN_TOKEN": "a" * 32},
        )
        assert config.live.live_enable_token is not None
        assert config.live.live_enable_token.get_secret_value() == "t" * 32
        assert config.http.token is not None

    def test_the_engine_is_not_armed_at_start(self, profile: Path) -> None:
        assert not load(profile).auto_arm_paper

    def test_it_keeps_its_own_books_and_logs(self, profile: Path) -> None:
        config, paper = load(profile), load(PAPER)
        assert config.database_url != paper.database_url
        assert config.logs_dir != paper.logs_dir
        assert config.instance_id != paper.instance_id

    def test_the_live_order_size_fits_one_lot_of_every_instrument(self, profile: Path) -> None:
        config = load(profile)
        assert config.live.live_max_order_size is not None
        for instrument in config.instruments:
            assert config.live.live_max_order_size >= instrument.lot_size, instrument.symbol
            assert config.risk.max_order_size >= instrument.lot_size, instrument.symbol
        assert config.live.live_max_order_size >= config.risk.max_order_size


def test_the_canary_is_small_and_tight() -> None:
    canary, rehearsal = load(CANARY), load(REHEARSAL)
    assert canary.live.live_max_order_size is not None
    assert rehearsal.live.live_max_order_size is not None
    assert canary.live.live_max_order_size < rehearsal.live.live_max_order_size
    assert canary.risk.max_order_size < rehearsal.risk.max_order_size
    assert 1 <= canary.risk.max_concurrent_positions <= 2
    assert canary.risk.max_trades_per_hour <= 5
    assert canary.risk.max_daily_loss_pct <= Decimal("0.5")
    assert canary.risk.portfolio_heat_cap_pct <= Decimal("0.25")


def test_the_runbook_variables_still_override_the_rehearsal_limits() -> None:
    config = load(REHEARSAL, {"LIVE_MAX_ORDER_SIZE": "0.5", "MAX_TRADES_PER_HOUR": "3"})
    assert config.live.live_max_order_size == Decimal("0.5")
    assert config.risk.max_trades_per_hour == 3
