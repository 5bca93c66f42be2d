# The front door: every target is a thin line over the real tool, so CI and people run the same thing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COMPAT := .venv-compat

.PHONY: install run test lint fmt bench compat-clients manifests clean

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

lint: install
	$(BIN)/ruff check queen tests ops
	$(BIN)/ruff format --check queen
	$(BIN)/mypy queen

fmt: install
	$(BIN)/ruff format queen tests ops
	$(BIN)/ruff check --fix queen tests ops

test: install compat-clients lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: install
	$(BIN)/python -m ops.bench.run

# ops/k8s/queen.yaml is the Helm chart rendered (Helm's Go SDK from a wheel: no helm binary).
manifests: install
	$(BIN)/python -m ops.k8s.render

clean:
	rm -rf $(VENV) $(COMPAT) .queen .mypy_cache .ruff_cache
