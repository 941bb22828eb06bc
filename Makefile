# Every target creates .venv itself, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: verify paper test test-loop bench lint post-close clean

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

test: $(STAMP)
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

lint: $(STAMP)
	$(VENV)/bin/ruff check .

post-close: $(STAMP)
	$(PY) -m tools.reconcile

clean:
	rm -rf $(VENV) data logs .pytest_cache
