"""The operations kit under ``ops/``: Prometheus alert rules (``promtool check rules`` and the
``promtool test rules`` unit tests: each tripwire row fires on its condition and not just
below it), the Prometheus config, the Grafana five-signals dashboard and the compose file.

The promtool tests skip only when ``promtool`` is not installed (``.ci/run`` installs it);
everything else runs everywhere. Every ``trader_*`` name the kit uses must be a metric the
engine exports (``adapters.metrics.EngineMetrics``), except the watchdog's
``trader_tripwire_total`` where the engine does not have it yet.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from adapters.metrics import EngineMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
OPS = REPO_ROOT / "ops"
ALERTS = OPS / "prometheus" / "alerts.yml"
ALERT_TESTS = OPS / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = OPS / "prometheus" / "prometheus.yml"
DASHBOARD = OPS / "grafana" / "dashboards" / "vigil-five-signals.json"
COMPOSE = OPS / "compose.yaml"

# The runbook's decision table, one alert each (issue 8's tripwire rows).
TRIPWIRE_ALERTS = {
    "order_ack_latency": "VigilOrderAckLatencyHigh",
    "leader_lost": "VigilLeaderLost",
    "rate_limit_backlog": "VigilRateLimitQueueRising",
    "market_quality": "VigilMarketQuality",
    "risk_cap": "VigilRiskCap",
    "marketdata_stale": "VigilMarketDataStale",
    "order_stream_stale": "VigilOrderStreamStale",
}
# Metrics the kit may name before the engine on this branch exports them (the watchdog's).
NOT_YET_EXPORTED = {"trader_tripwire_total"}
FIVE_SIGNALS = (
    "trader_order_latency_ms",
    "trader_portfolio_heat_rupees",
    "trader_retries_total",
    "trader_marketdata_heartbeat_seconds",
    "trader_kill_switch_total",
)

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool is not installed")


def run_promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    assert promtool is not None
    return subprocess.run(
        [promtool, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERTS.parent,
        check=False,
    )


def exported_metric_names() -> set[str]:
    metrics = EngineMetrics(instance_id="ops-kit", strategies=["s"], feeds=["f"])
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


def trader_names(text: str) -> set[str]:
    return set(re.findall(r"\btrader_[a-z_]+", text))


@needs_promtool
def test_the_alert_rules_pass_promtool_check_rules() -> None:
    completed = run_promtool("check", "rules", str(ALERTS))
    assert completed.returncode == 0, completed.stdout + completed.stderr


@needs_promtool
def test_the_alert_rule_unit_tests_pass() -> None:
    completed = run_promtool("test", "rules", str(ALERT_TESTS))
    assert completed.returncode == 0, completed.stdout + completed.stderr


@needs_promtool
def test_the_prometheus_config_loads_with_its_rules() -> None:
    completed = run_promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_tripwire_row_has_an_alert_with_unit_tests_for_firing_and_not_firing() -> None:
    rules = [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]
    by_tripwire = {rule["labels"].get("tripwire"): rule["alert"] for rule in rules}
    assert {key: by_tripwire.get(key) for key in TRIPWIRE_ALERTS} == TRIPWIRE_ALERTS
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    for alert in TRIPWIRE_ALERTS.values():
        cases = [
            case
            for test in tests
            for case in test.get("alert_rule_test", [])
            if case["alertname"] == alert
        ]
        assert any(case["exp_alerts"] for case in cases), f"{alert}: no firing case"
        assert any(not case["exp_alerts"] for case in cases), f"{alert}: no quiet case"


def test_the_kit_names_only_metrics_the_engine_exports() -> None:
    exported = exported_metric_names() | NOT_YET_EXPORTED
    used = trader_names(ALERTS.read_text()) | trader_names(DASHBOARD.read_text())
    assert used - exported == set()


def test_the_dashboard_shows_the_five_signals_from_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    )
    for metric in FIVE_SIGNALS:
        assert metric in expressions, metric
    datasource = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {datasource["uid"]}
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_compose_starts_postgres_prometheus_and_grafana_wired_to_the_kit() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "prometheus", "grafana"}
    mounted = {
        volume.split(":")[0]: volume.split(":")[1]
        for service in services.values()
        for volume in service.get("volumes", [])
        if volume.startswith("./")
    }
    for source in mounted:
        assert (OPS / source).exists(), source
    assert mounted["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    provider = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "dashboards" / "vigil.yaml").read_text()
    )["providers"][0]
    assert mounted["./grafana/dashboards"] == provider["options"]["path"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "vigil"
    assert job["static_configs"][0]["targets"] == ["localhost:8000"]


def test_compose_addresses_agree_with_the_prometheus_config_and_grafana_datasource() -> None:
    """No daemon here to start the containers: check that the addresses they would use meet.
    Prometheus scrapes the engine's default admin address, Grafana's datasource points at the
    address Prometheus listens on, Grafana's home dashboard is a file it mounts, and both
    share the host's network (127.0.0.1 means the host for both)."""
    from urllib.parse import urlsplit

    from domain.config import HttpConfig

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["network_mode"] == grafana["network_mode"] == "host"
    defaults = HttpConfig()
    [job] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    [target] = job["static_configs"][0]["targets"]
    host, port = target.rsplit(":", 1)
    assert host in {"localhost", defaults.host} and int(port) == defaults.port
    flags = dict(
        argument.removeprefix("--").split("=", 1)
        for argument in prometheus["command"]
        if "=" in argument
    )
    mounts = dict(volume.split(":")[:2] for volume in prometheus["volumes"])
    assert mounts["./prometheus/prometheus.yml"] == flags["config.file"]
    listen = flags["web.listen-address"]
    datasource = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    url = urlsplit(datasource["url"])
    assert f"{url.hostname}:{url.port}" == listen
    environment = grafana["environment"]
    home = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    grafana_mounts = {
        target: source
        for source, target in (volume.split(":")[:2] for volume in grafana["volumes"])
    }
    dashboards_dir = grafana_mounts["/etc/grafana/dashboards"]
    assert (OPS / dashboards_dir / Path(home).name).exists(), home
    assert Path(home).parent == Path("/etc/grafana/dashboards")
    assert grafana_mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
