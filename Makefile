# Every target creates .venv itself, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: verify paper demo-kite test test-loop bench bench-kite lint post-close burnin ops-check clean kiteconnect-venv igclients-venv demo-ig

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

verify: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m launcher --check-config

paper: $(STAMP)
	$(PY) -m launcher --config configs/paper.yaml

# The engine against the local fake Kite Connect server (REST + ticker on 127.0.0.1:5010, a DEMO
# account): the fake starts first, tools/kite_login logs in through its login page and writes
# the access token, then the engine runs until interrupted; the fake stops with it.
# The port configs/demo_kite.yaml names.
KITE_FAKE_PORT := 5010
demo-kite: $(STAMP)
	$(PY) -m tools.fake_kite --port $(KITE_FAKE_PORT) --account-type DEMO & fake=$$!; \
	trap 'kill $$fake 2>/dev/null' EXIT INT TERM; \
	$(PY) -m tools.kite_login --api-key fake_api_key --api-secret fake_api_secret \
		--base-url http://127.0.0.1:$(KITE_FAKE_PORT) \
		--login-base http://127.0.0.1:$(KITE_FAKE_PORT) \
		--fetch-request-token --wait-s 15 --write data/kite_access_token && \
	$(PY) -m launcher --config configs/demo_kite.yaml

# The engine against the fake IG (tools/fake_ig: REST + Lightstreamer on one port) with
# configs/demo_ig.yaml; the fake's demo login is in the config.
IG_FAKE_PORT := 5020
demo-ig: $(STAMP)
	$(PY) -m tools.fake_ig --port $(IG_FAKE_PORT) & fake=$$!; \
	trap 'kill $$fake 2>/dev/null' EXIT INT TERM; \
	$(PY) -c "import socket,time; d=time.monotonic()+15; \
	exec('while time.monotonic()<d:\n try:\n  socket.create_connection((\'127.0.0.1\',$(IG_FAKE_PORT)),1).close(); break\n except OSError: time.sleep(0.1)')" && \
	$(PY) -m launcher --config configs/demo_ig.yaml

# The official Kite Connect client pins autobahn[twisted]: it gets a venv of its own, which
# tests/e2e/test_fake_kite_official_client.py runs it from (the test also makes it if missing).
KITE_VENV := .venv-kiteconnect
KITE_STAMP := $(KITE_VENV)/.installed-kiteconnect-5.2.2
$(KITE_STAMP):
	$(PYTHON) -m venv --clear $(KITE_VENV)
	$(KITE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check kiteconnect==5.2.2
	touch $(KITE_STAMP)

kiteconnect-venv: $(KITE_STAMP)

# trading-ig pins lightstreamer-client-lib==1.0.3 and pulls requests-cache: IG's clients get a
# venv of their own too, which tests/e2e/test_fake_ig_clients.py runs (and makes if missing).
IG_VENV := .venv-igclients
IG_STAMP := $(IG_VENV)/.installed-trading-ig-0.0.25
$(IG_STAMP):
	$(PYTHON) -m venv --clear $(IG_VENV)
	$(IG_VENV)/bin/python -m pip install --quiet --disable-pip-version-check trading-ig==0.0.25 lightstreamer-client-lib==1.0.3
	touch $(IG_STAMP)

igclients-venv: $(IG_STAMP)

test: $(STAMP) $(KITE_STAMP) $(IG_STAMP)
	$(PY) -m pytest

# The whole suite N times in a row (default 10); stops at the first failure, prints the pass
# count and each run's duration, keeps the failing run's output in logs/test-loop-failure.log.
N ?= 10
test-loop: $(STAMP)
	$(PY) -m tools.test_loop --runs $(N)

# The eight figures of docs/benchmarks.md, each next to its target (about 8 minutes on 2 cores);
# all numbers go to one JSON file in bench/results/. BENCH_ARGS="--only chain intake" runs a few.
bench: $(STAMP)
	$(PY) -m tools.bench $(BENCH_ARGS)

# Flatten N brackets against the fake Kite at Kite's limits (10/s, 200/min): prints timings.
bench-kite: $(STAMP)
	$(PY) -m tools.bench_kite_flatten $(BENCH_KITE_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The runbook's Post-Close Ritual: the daily report (reports/<day>/report.md, report.json,
# equity.png) and the database reconcile. DAY=YYYY-MM-DD (IST; default today), DATABASE_URL as
# the engine's. The reconcile's exit code is the target's: findings fail it.
DAY ?=
post-close: $(STAMP)
	$(PY) -m tools.post_close $(if $(DAY),--day $(DAY)) --out reports
	$(PY) -m tools.reconcile

# The burn-in checklist for one day: PASS/FAIL per item, exit 0 only when all pass.
burnin: $(STAMP)
	$(PY) -m tools.burnin $(if $(DAY),--day $(DAY))

# The operations kit: Prometheus rules checked and unit-tested with promtool (ops/README.md).
ops-check:
	promtool check rules ops/prometheus/alerts.yml
	promtool test rules ops/prometheus/alerts_test.yml

clean:
	rm -rf $(VENV) $(KITE_VENV) $(IG_VENV) data logs .pytest_cache
