# crisscross: one command to set up and run the demo, one to set up and run every test.
# Both build the virtual environment on first use (Python 3.11, no root needed), pinned by requirements.lock.txt.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crisscross-installed

.PHONY: install demo test check-notebooks book pytest bench bench-quick ablations clean-venv

install: $(STAMP)

$(STAMP): requirements.lock.txt settings.ini setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

# The main job on the embedded default.
demo: install
	$(BIN)/crisscross demo

# Everything CI checks: notebooks clean and in sync with the package, the book builds, then the notebook and pytest
# suites (tests/test_book.py opens the built book in headless Chromium).
test: install check-notebooks book pytest

# The Jupyter Book, offline, warnings as errors. Its pages only read the committed tables in book/data/ and images in
# book/figures/ (they never train); --all re-executes them so a changed table never leaves a stale page.
book: install
	@start=$$(date +%s); \
	OMP_NUM_THREADS=1 $(BIN)/jupyter-book build book --all --warningiserror --keep-going --quiet || exit 1; \
	echo "book built in $$(( $$(date +%s) - start )) s: book/_build/html/index.html"

# The poster's three ablations on the demo data x 3 seeds + the random-init baseline (`crisscross sweep`: each run is
# nbs/ablation.ipynb executed by papermill into runs/ablations/<run>/; finished runs are skipped, a failed run is
# reported and the sweep goes on), then the collect step writes book/data/{relaxation,async_loss,data_size}.csv.
# Options through SWEEP_ARGS, e.g. make ablations SWEEP_ARGS="--dry-run" or SWEEP_ARGS="--seeds 0 --set epochs=5".
ablations: install
	$(BIN)/crisscross sweep $(SWEEP_ARGS)

check-notebooks: install
	@before=$$(cat nbs/*.ipynb crisscross/*.py | md5sum); \
	$(BIN)/nbdev_clean >/dev/null && $(BIN)/nbdev_export; \
	after=$$(cat nbs/*.ipynb crisscross/*.py | md5sum); \
	if [ "$$before" != "$$after" ]; then \
	  git --no-pager diff --stat -- nbs crisscross; \
	  echo "ERROR: nbdev_clean/nbdev_export changed nbs/ or crisscross/: the notebooks were not clean or the package was out of step with them (or crisscross/*.py was edited by hand). Review the diff above, commit it, and edit the notebooks, not crisscross/."; \
	  exit 1; \
	fi; \
	echo "notebooks clean and in sync with crisscross/"

pytest: install
	$(BIN)/python -m pytest -p no:cacheprovider

# Benchmarks (never part of `make test`): loader, model and training throughput with the machine described; results are
# appended to benchmarks/results/<name>.json and rendered to <name>.md (bench-quick: a fast smoke into results/quick/).
bench: install
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.run

bench-quick: install
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.run --quick

clean-venv:
	rm -rf $(VENV)
