# Everything the project needs is installed by `make install` (idempotent; run by `make run` and `make test`).
PYTHON ?= python
PIP_INSTALL = $(PYTHON) -m pip install --quiet -c constraints.txt

.PHONY: install run test test-all lint type format check bench

install:
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[tests,zoo]"

# The main job: train TRPO on CartPole-v1 (needs nothing external), save the model and a learning-curve PNG.
run: install
	$(PYTHON) -m sb3_trpo

# The default test run (tests marked slow deselected, see pyproject.toml).
test: install
	$(PYTHON) -m pytest -q

# Everything, including the tests marked slow.
test-all: install
	$(PYTHON) -m pytest -q -m ""

lint:
	ruff check sb3_trpo tests benchmarks
	ruff format --check sb3_trpo tests benchmarks

type:
	mypy sb3_trpo benchmarks

format:
	ruff format sb3_trpo tests benchmarks
	ruff check --fix sb3_trpo tests benchmarks

check: lint type test

bench:
	$(PYTHON) -m benchmarks.throughput
