"""Configuration loading: YAML, .env, environment overrides, error messages, hash, redaction."""

from __future__ import annotations

import json
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from domain.config import EngineConfig
from domain.enums import Mode
from launcher.config import (
    DEFAULT_CONFIG_PATH,
    ENV_OVERRIDES,
    ConfigError,
    config_sha,
    load_config,
    redacted_config,
)

MINIMAL = """\
instance_id: test-1
instruments:
  - symbol: NIFTY
    lot_size: 25
risk:
  capital_rupees: "500000"
  max_daily_loss_pct: 1.5
"""


def write(directory: Path, text: str, name: str = "profile.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(path: Path, environ: dict[str, str] | None = None) -> EngineConfig:
    return load_config(path, environ=environ or {}, dotenv_path=None)


def problems_of(path: Path, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load(path, environ)
    return caught.value.problems


class TestLoading:
    def test_loads_the_paper_profile_from_the_repository(self) -> None:
        if not DEFAULT_CONFIG_PATH.exists():
            pytest.skip(f"{DEFAULT_CONFIG_PATH} is not written yet")
        config = load_config(None, environ={}, dotenv_path=None)
        assert config.mode is Mode.PAPER
        assert config.instruments

    def test_path_defaults_to_the_profile_named_by_vigil_config(self, tmp_path: Path) -> None:
        path = write(tmp_path, MINIMAL)
        config = load_config(None, environ={"VIGIL_CONFIG": str(path)}, dotenv_path=None)
        assert config.instance_id == "test-1"

    def test_loads_yaml_values_into_the_model(self, tmp_path: Path) -> None:
        config = load(write(tmp_path, MINIMAL))
        assert config.instruments[0].lot_size == 25
        assert config.risk.capital_rupees == Decimal("500000")
        assert config.risk.max_daily_loss_pct == Decimal("1.5")

    def test_relative_paths_are_kept_as_written(self, tmp_path: Path) -> None:
        config = load(write(tmp_path, MINIMAL + "data_dir: var/data\n"))
        assert config.data_dir == "var/data"


class TestEnvironmentOverrides:
    def test_runbook_variables_override_the_yaml(self, tmp_path: Path) -> None:
        environ = {
            "LIVE_TRADING_ENABLED": "true",
            "LIVE_ENABLE_TOKEN": "s3cret",
            "LIVE_ACCOUNT_ID": "ABC123",
            "LIVE_MAX_ORDER_SIZE": "0.5",
            "LIVE_CONFIRMATION_TTL_S": "120",
            "LIVE_PRELIVE_MAX_AGE_S": "60",
            "MAX_DAILY_LOSS_PCT": "2.0",
            "MAX_CONCURRENT_POSITIONS": "3",
            "PER_SYMBOL_EXPOSURE_CAP": "5000",
            "MAX_TRADES_PER_HOUR": "10",
            "CLOSE_ON_KILL_SWITCH": "false",
            "DATABASE_URL": "sqlite:///tmp/x.db",
            "VIGIL_HTTP_HOST": "0.0.0.0",
            "VIGIL_HTTP_PORT": "8042",
            "VIGIL_ADMIN_TOKEN": "admin-token",
            "VIGIL_INSTANCE_ID": "vigil-9",
            "VIGIL_LOGS_DIR": "var/logs",
            "VIGIL_DATA_DIR": "var/data",
            "VIGIL_LOG_LEVEL": "DEBUG",
        }
        assert set(environ) == set(ENV_OVERRIDES)
        config = load(write(tmp_path, MINIMAL), environ)
        assert config.live.live_trading_enabled is True
        assert config.live.live_enable_token is not None
        assert config.live.live_enable_token.get_secret_value() == "s3cret"
        assert config.live.live_account_id == "ABC123"
        assert config.live.live_max_order_size == Decimal("0.5")
        assert config.live.live_confirmation_ttl_s == 120
        assert config.live.live_prelive_max_age_s == 60
        assert config.risk.max_daily_loss_pct == Decimal("2.0")
        assert config.risk.max_concurrent_positions == 3
        assert config.risk.per_symbol_exposure_cap_rupees == Decimal("5000")
        assert config.risk.max_trades_per_hour == 10
        assert config.risk.capital_rupees == Decimal("500000")  # untouched YAML value stays
        assert config.close_on_kill_switch is False
        assert config.database_url == "sqlite:///tmp/x.db"
        assert (config.http.host, config.http.port) == ("0.0.0.0", 8042)
        assert config.http.token is not None
        assert config.http.token.get_secret_value() == "admin-token"
        assert config.instance_id == "vigil-9"
        assert (config.logs_dir, config.data_dir, config.log_level) == (
            "var/logs",
            "var/data",
            "DEBUG",
        )

    def test_an_empty_variable_overrides_nothing(self, tmp_path: Path) -> None:
        config = load(write(tmp_path, MINIMAL), {"VIGIL_INSTANCE_ID": ""})
        assert config.instance_id == "test-1"

    def test_variables_outside_the_table_are_ignored(self, tmp_path: Path) -> None:
        config = load(write(tmp_path, MINIMAL), {"MAX_ORDER_SIZE": "-1", "instance_id": "x"})
        assert config.instance_id == "test-1"
        assert config.risk.max_order_size == 500

    def test_dotenv_values_apply_under_the_real_environment(self, tmp_path: Path) -> None:
        dotenv = write(
            tmp_path,
            "MAX_TRADES_PER_HOUR=7\nVIGIL_INSTANCE_ID=from-dotenv\nLIVE_ACCOUNT_ID=DOTENV\n",
            name=".env",
        )
        config = load_config(
            write(tmp_path, MINIMAL),
            environ={"VIGIL_INSTANCE_ID": "from-environ"},
            dotenv_path=dotenv,
        )
        assert config.instance_id == "from-environ"
        assert config.risk.max_trades_per_hour == 7
        assert config.live.live_account_id == "DOTENV"

    def test_a_missing_dotenv_file_is_fine(self, tmp_path: Path) -> None:
        config = load_config(
            write(tmp_path, MINIMAL), environ={}, dotenv_path=tmp_path / "absent.env"
        )
        assert config.instance_id == "test-1"

    def test_dotenv_can_name_the_profile(self, tmp_path: Path) -> None:
        path = write(tmp_path, MINIMAL)
        dotenv = write(tmp_path, f"VIGIL_CONFIG={path}\n", name=".env")
        assert load_config(None, environ={}, dotenv_path=dotenv).instance_id == "test-1"

    def test_a_bad_variable_names_the_variable_and_the_key(self, tmp_path: Path) -> None:
        problems = problems_of(write(tmp_path, MINIMAL), {"MAX_TRADES_PER_HOUR": "ten"})
        assert problems == (
            "risk.max_trades_per_hour (from environment variable MAX_TRADES_PER_HOUR): "
            "Input should be a valid integer, unable to parse string as an integer (was 'ten')",
        )

    def test_a_variable_breaking_a_rule_names_the_variable_and_the_rule(
        self, tmp_path: Path
    ) -> None:
        problems = problems_of(write(tmp_path, MINIMAL), {"MAX_CONCURRENT_POSITIONS": "0"})
        assert problems == (
            "risk.max_concurrent_positions (from environment variable MAX_CONCURRENT_POSITIONS)"
            ": Input should be greater than 0 (was '0')",
        )


class TestErrors:
    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            load(tmp_path / "absent.yaml")
        message = str(caught.value)
        assert str(tmp_path / "absent.yaml") in message
        assert "(file): not found" in message

    def test_bad_yaml_reports_line_and_column(self, tmp_path: Path) -> None:
        path = write(tmp_path, "instance_id: a\ninstruments: [1, 2\nrisk: {}\n")
        (problem,) = problems_of(path)
        assert problem.startswith("(yaml): line 3, column 5: ")

    def test_a_top_level_that_is_not_a_mapping_is_refused(self, tmp_path: Path) -> None:
        assert problems_of(write(tmp_path, "- 1\n- 2\n")) == (
            "(root): must be a mapping of keys to values (was list)",
        )

    def test_an_unknown_key_is_named_with_its_path(self, tmp_path: Path) -> None:
        path = write(tmp_path, MINIMAL + "  max_ordr_size: 5\n")
        assert problems_of(path) == (
            "risk.max_ordr_size: unknown key (extra keys are not permitted) (was 5)",
        )

    def test_a_wrong_type_is_named_with_the_value(self, tmp_path: Path) -> None:
        path = write(tmp_path, MINIMAL + "  max_order_size: lots\n")
        assert problems_of(path) == (
            "risk.max_order_size: Input should be a valid integer, "
            "unable to parse string as an integer (was 'lots')",
        )

    def test_a_negative_value_names_the_rule_and_the_value(self, tmp_path: Path) -> None:
        path = write(tmp_path, MINIMAL + "  max_order_size: -5\n")
        assert problems_of(path) == (
            "risk.max_order_size: Input should be greater than 0 (was -5)",
        )

    def test_every_error_is_listed_with_list_indexes_in_the_path(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """\
            instruments:
              - symbol: NIFTY
                lot_size: 0
              - symbol: BANK
                tick_sise: 1
            risk:
              max_order_size: -5
            leader:
              lease_ttl_s: 1
              renew_interval_s: 2
            """,
        )
        with pytest.raises(ConfigError) as caught:
            load(path)
        assert caught.value.problems == (
            "instruments[0].lot_size: Input should be greater than 0 (was 0)",
            "instruments[1].tick_sise: unknown key (extra keys are not permitted) (was 1)",
            "risk.max_order_size: Input should be greater than 0 (was -5)",
            "leader: leader.renew_interval_s (2.0) must be below leader.lease_ttl_s (1.0)",
        )
        assert str(caught.value).startswith(f"invalid configuration {path} (4 problems):\n  ")

    def test_a_missing_required_key_is_named(self, tmp_path: Path) -> None:
        assert problems_of(write(tmp_path, "instance_id: x\n")) == ("instruments: Field required",)

    def test_a_cross_field_rule_names_its_keys(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            MINIMAL + "strategies:\n  - {name: s, kind: orb, instruments: [BANK]}\n",
        )
        (problem,) = problems_of(path)
        assert problem.startswith("(root): strategies[s].instruments: unknown symbols ['BANK']")

    def test_a_bad_secret_is_never_echoed(self, tmp_path: Path) -> None:
        path = write(tmp_path, MINIMAL + "http:\n  token: 123456\n")
        (problem,) = problems_of(path)
        assert problem == "http.token: Input should be a valid string (was ***)"
        assert "123456" not in problem


def _config_text(*, order_swapped: bool = False, max_order_size: int = 500) -> str:
    risk = f"risk:\n  max_order_size: {max_order_size}\n  max_trades_per_hour: 9\n"
    instruments = "instruments:\n  - symbol: NIFTY\n    lot_size: 25\n"
    if order_swapped:
        risk = f"risk:\n  max_trades_per_hour: 9\n  max_order_size: {max_order_size}\n"
        return risk + "instance_id: a\n" + instruments
    return "instance_id: a\n" + instruments + risk


class TestConfigSha:
    def test_is_a_full_sha256_hex_digest(self, tmp_path: Path) -> None:
        sha = config_sha(load(write(tmp_path, _config_text())))
        assert len(sha) == 64
        assert int(sha, 16) >= 0

    def test_is_stable_across_key_order(self, tmp_path: Path) -> None:
        one = load(write(tmp_path, _config_text(), name="a.yaml"))
        two = load(write(tmp_path, _config_text(order_swapped=True), name="b.yaml"))
        assert config_sha(one) == config_sha(two)

    def test_is_stable_across_equal_decimal_spellings(self, tmp_path: Path) -> None:
        one = load(write(tmp_path, MINIMAL), {"MAX_DAILY_LOSS_PCT": "2"})
        two = load(write(tmp_path, MINIMAL), {"MAX_DAILY_LOSS_PCT": "2.00"})
        assert config_sha(one) == config_sha(two)

    def test_changes_when_a_value_changes(self, tmp_path: Path) -> None:
        one = load(write(tmp_path, _config_text(), name="a.yaml"))
        two = load(write(tmp_path, _config_text(max_order_size=499), name="b.yaml"))
        assert config_sha(one) != config_sha(two)

    def test_changes_when_an_override_changes_a_value(self, tmp_path: Path) -> None:
        path = write(tmp_path, MINIMAL)
        assert config_sha(load(path)) != config_sha(load(path, {"MAX_TRADES_PER_HOUR": "3"}))

    def test_ignores_secrets_whether_set_differently_or_not_at_all(self, tmp_path: Path) -> None:
        path = write(tmp_path, MINIMAL)
        shas = {
            config_sha(load(path, environ))
            for environ in (
                {},
                {"LIVE_ENABLE_TOKEN": "one", "VIGIL_ADMIN_TOKEN": "alpha"},
                {"LIVE_ENABLE_TOKEN": "two", "VIGIL_ADMIN_TOKEN": "beta"},
            )
        }
        assert len(shas) == 1

    def test_ignores_the_database_password(self, tmp_path: Path) -> None:
        path = write(tmp_path, MINIMAL)
        one = load(path, {"DATABASE_URL": "postgresql://vigil:first@db:5432/vigil"})
        two = load(path, {"DATABASE_URL": "postgresql://vigil:second@db:5432/vigil"})
        other_host = load(path, {"DATABASE_URL": "postgresql://vigil:first@db2:5432/vigil"})
        assert config_sha(one) == config_sha(two)
        assert config_sha(one) != config_sha(other_host)


class TestRedactedConfig:
    def test_masks_set_secrets_and_shows_unset_ones_as_none(self, tmp_path: Path) -> None:
        config = load(write(tmp_path, MINIMAL), {"LIVE_ENABLE_TOKEN": "s3cret-token"})
        dumped = redacted_config(config)
        assert dumped["live"]["live_enable_token"] == "***"
        assert dumped["http"]["token"] is None
        assert "s3cret-token" not in repr(dumped)

    def test_masks_the_database_password(self, tmp_path: Path) -> None:
        url = "postgresql+psycopg://vigil:hunter2@db:5432/vigil"
        dumped = redacted_config(load(write(tmp_path, MINIMAL), {"DATABASE_URL": url}))
        assert dumped["database_url"] == "postgresql+psycopg://vigil:***@db:5432/vigil"

    def test_is_plain_json_ready_data(self, tmp_path: Path) -> None:
        dumped = redacted_config(load(write(tmp_path, MINIMAL)))
        assert json.loads(json.dumps(dumped)) == dumped
        assert dumped["mode"] == "PAPER"
        assert dumped["risk"]["capital_rupees"] == "500000"
        assert dumped["instruments"][0]["symbol"] == "NIFTY"
