# The front door: every target is a thin line over the real tool, so CI and people run the same thing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COMPAT := .venv-compat
CHROMIUM ?= /usr/bin/chromium

.PHONY: install run test lint fmt bench bench-three compat-clients chromium screenshots manifests clean

install: $(BIN)/queen

$(BIN)/queen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/queen

run: install
	$(BIN)/queen serve

# The official clients live in virtualenvs of their own: their import name `queen` clashes with ours.
compat-clients: $(COMPAT)/v0.15/bin/python $(COMPAT)/v2.6/bin/python

$(COMPAT)/v0.15/bin/python:
	$(PYTHON) -m venv $(COMPAT)/v0.15
	$(COMPAT)/v0.15/bin/pip install --quiet queen-mq==0.15.0

$(COMPAT)/v2.6/bin/python:
	$(PYTHON) -m venv $(COMPAT)/v2.6
	$(COMPAT)/v2.6/bin/pip install --quiet queen-mq==2.6.0

# The dashboard's browser tests drive Debian's chromium (Playwright's own download cannot be used).
# As root (CI on a bare machine) it is installed when missing; anyone else is told how.
chromium:
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 && apt-get update -q \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
		|| { echo "$(CHROMIUM) is missing: sudo apt-get install chromium"; exit 1; }

# Screenshots of every dashboard page, taken by the browser tests, copied to docs/dashboard/.
screenshots: install chromium
	rm -rf .queen/screenshots && mkdir -p .queen
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/browser --basetemp=.queen/screenshots
	mkdir -p docs/dashboard
	cp .queen/screenshots/test_every_page*0/*.png docs/dashboard/

lint: install
	$(BIN)/ruff check queen tests ops
	$(BIN)/ruff format --check queen
	$(BIN)/mypy queen

fmt: install
	$(BIN)/ruff format queen tests ops
	$(BIN)/ruff check --fix queen tests ops

test: install compat-clients chromium lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: install
	$(BIN)/python -m ops.bench.run

# The release figures: three full runs, each after waiting for a quiet machine, appended to
# ops/bench/RESULTS.md.
bench-three: install
	for run in 1 2 3; do $(BIN)/python -m ops.bench.run --wait-quiet 120 --write-results || exit 1; done

# ops/k8s/queen.yaml is the Helm chart rendered (Helm's Go SDK from a wheel: no helm binary).
manifests: install
	$(BIN)/python -m ops.k8s.render

clean:
	rm -rf $(VENV) $(COMPAT) .queen .mypy_cache .ruff_cache
