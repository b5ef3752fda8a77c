# The commands of the quick start: `make run` and `make test`.
# `run` installs only what the agent needs; `test` adds the test extra (pytest, ccxt, pybit,
# kubernetes-validate, ...: hundreds of MB) to the same virtualenv.
VENV ?= .venv
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

.PHONY: install install-test run test simulate
install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: $(VENV)/.installed
	$(VENV)/bin/feedagent run -c configs/feedagent.yaml

simulate: $(VENV)/.installed
	$(VENV)/bin/feedagent simulate

test: $(VENV)/.installed-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)
