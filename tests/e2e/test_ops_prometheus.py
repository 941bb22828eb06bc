"""The ops kit's Prometheus half against the real engine, without containers.

``ops/compose.yaml`` needs a Docker daemon this machine does not have, so the part that can
be proven natively is: ``python -m launcher`` (PAPER, a temporary database, a free port) and
the ``prometheus`` server binary (Debian's ``prometheus`` package, which ``.ci/run`` installs
with promtool) started with temporary copies of ``ops/prometheus/prometheus.yml`` and
``alerts.yml``: only the scrape target (the engine's port) and the intervals (1 s, so the
test does not wait for 5 s rounds) differ. Asserted through Prometheus' HTTP API: the engine
target is up, the ``trader_*`` series the alert rules name are queryable, and every rule group
loaded and evaluates with no error (``/api/v1/rules``: health ``ok``). The containers
themselves (images, host networking, Grafana provisioning) are not exercised here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import REPO_ROOT, Launcher, fast_paper_config, free_port
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

OPS_PROMETHEUS = REPO_ROOT / "ops" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
# Counters whose labelled series appear only at their first increment (none now: the
# kill-switch reasons the rules name are exported at 0 from the start).
CREATED_ON_FIRST_EVENT: set[str] = set()  # every series the rules name is pre-created


def temp_prometheus_config(directory: Path, engine_port: int) -> Path:
    """ops/prometheus/*.yml copied with the engine's port and 1 s intervals; else unchanged."""
    config = yaml.safe_load((OPS_PROMETHEUS / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["localhost:8000"]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{engine_port}"]
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    rules = yaml.safe_load((OPS_PROMETHEUS / "alerts.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    for name in config["rule_files"]:
        (directory / name).write_text(yaml.safe_dump(rules, sort_keys=False))
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class PrometheusServer:
    def __init__(self, workdir: Path, config: Path, port: int) -> None:
        assert PROMETHEUS is not None
        self.workdir = workdir
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def api(self, path: str, **params: str) -> Any:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
        response = self.client.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expression)["result"])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.client.close()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Launcher]:
    workdir = tmp_path / "engine"
    workdir.mkdir()
    launcher = Launcher(workdir, fast_paper_config(workdir), free_port())
    yield launcher
    launcher.close()


@pytest.fixture
def prometheus(tmp_path: Path, engine: Launcher) -> Iterator[PrometheusServer]:
    if PROMETHEUS is None:
        pytest.skip("the prometheus server binary is not installed (.ci/run installs it)")
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server = PrometheusServer(workdir, temp_prometheus_config(workdir, engine.port), free_port())
    yield server
    server.close()


def answering(server: PrometheusServer) -> bool:
    try:
        server.api("status/buildinfo")
    except httpx.TransportError:
        return False
    return True


def test_prometheus_scrapes_the_engine_and_evaluates_every_alert_rule_cleanly(
    engine: Launcher, prometheus: PrometheusServer
) -> None:
    engine.start()
    engine.wait_ready(timeout_s=30)
    wait_until(lambda: answering(prometheus), timeout_s=30, message="prometheus answering")

    def target_up() -> bool:
        targets = prometheus.api("targets")["activeTargets"]
        return [(t["labels"]["job"], t["health"]) for t in targets] == [("vigil", "up")]

    wait_until(target_up, timeout_s=30, message="the engine's target up")
    assert prometheus.query('up{job="vigil"} == 1'), "up{job=vigil} is not 1"

    # Every trader_* metric the alert rules name is a series Prometheus has scraped.
    named = set(re.findall(r"\btrader_[a-z_]+", (OPS_PROMETHEUS / "alerts.yml").read_text()))
    assert "trader_session_open" in named

    def rules_series_scraped() -> bool:
        scraped = set(prometheus.api("label/__name__/values"))
        # A histogram is stored as its _bucket, _count and _sum series.
        scraped |= {re.sub(r"_(bucket|count|sum)$", "", name) for name in scraped}
        missing = named - scraped - CREATED_ON_FIRST_EVENT
        assert not missing, f"not scraped: {sorted(missing)}"
        return True

    wait_until(rules_series_scraped, timeout_s=30, message="the rules' series scraped")
    [session] = prometheus.query("trader_session_open")
    assert session["value"][1] == "1"  # the paper profile has no scheduler: always in session
    assert prometheus.query('trader_is_leader{instance_id="vigil-e2e"} == 1')

    # Every group loaded, and every rule has been evaluated with no error.
    expected = {
        group["name"]: {rule["alert"] for rule in group["rules"]}
        for group in yaml.safe_load((OPS_PROMETHEUS / "alerts.yml").read_text())["groups"]
    }

    def rules_health() -> dict[str, dict[str, str]]:
        return {
            group["name"]: {rule["name"]: rule["health"] for rule in group["rules"]}
            for group in prometheus.api("rules")["groups"]
        }

    def all_evaluated() -> bool:
        health = rules_health()
        return all(state != "unknown" for rules in health.values() for state in rules.values())

    wait_until(all_evaluated, timeout_s=30, message="every rule evaluated once")
    health = rules_health()
    assert {name: set(rules) for name, rules in health.items()} == expected
    errors = {
        rule["name"]: rule.get("lastError")
        for group in prometheus.api("rules")["groups"]
        for rule in group["rules"]
        if rule["health"] != "ok" or rule.get("lastError")
    }
    assert errors == {}
    # The engine is scraped, so the rule that watches for it being down is not pending.
    firing = {alert["labels"]["alertname"] for alert in prometheus.api("alerts")["alerts"]}
    assert "VigilEngineDown" not in firing
    assert engine.terminate() == 0
