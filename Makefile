# Everything the project needs is installed by `make install` (idempotent; run by `make run` and `make test`).
PYTHON ?= python
PIP_INSTALL = $(PYTHON) -m pip install --quiet -c constraints.txt

.PHONY: install run test test-all lint type format check bench docs-install docs docs-screenshot

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
	ruff check sb3_trpo tests benchmarks docs
	ruff format --check sb3_trpo tests benchmarks docs

type:
	mypy sb3_trpo benchmarks

format:
	ruff format sb3_trpo tests benchmarks docs
	ruff check --fix sb3_trpo tests benchmarks docs

check: lint type test

bench:
	$(PYTHON) -m benchmarks.throughput

# The documentation site (Sphinx + MyST, docs/): a fresh build into docs/_build/html. Warnings are errors, broken
# cross-references included (nitpicky, see docs/conf.py); --keep-going reports them all before failing.
SPHINXBUILD = $(PYTHON) -m sphinx
DOCS_BUILD = docs/_build

docs-install: install
	$(PIP_INSTALL) -e ".[docs]"

docs: docs-install
	rm -rf $(DOCS_BUILD)/html $(DOCS_BUILD)/doctrees
	$(SPHINXBUILD) -W --keep-going -n -b html -d $(DOCS_BUILD)/doctrees docs $(DOCS_BUILD)/html
	@echo "open $(DOCS_BUILD)/html/index.html"

# Headless Chromium screenshots of the front page and the API page (docs/_build/screenshots/*.png); needs a
# Chromium or Chrome (on Debian/Ubuntu: apt-get install chromium; or set SB3_TRPO_BROWSER to a browser's path).
docs-screenshot: docs
	$(PYTHON) docs/screenshot.py --html $(DOCS_BUILD)/html --out $(DOCS_BUILD)/screenshots
