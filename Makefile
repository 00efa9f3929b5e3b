# crisscross: one command to set up and run the demo, one to set up and run every test.
# Both build the virtual environment on first use (Python 3.11, no root needed), pinned by requirements.lock.txt.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crisscross-installed

.PHONY: install demo test check-notebooks pytest clean-venv

install: $(STAMP)

$(STAMP): requirements.lock.txt settings.ini setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

# The main job on the embedded default.
demo: install
	$(BIN)/crisscross demo

# Everything CI checks: notebooks clean and in sync with the package, then the notebook and pytest suites.
test: install check-notebooks pytest

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

clean-venv:
	rm -rf $(VENV)
