# The two commands of the quick start: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

.PHONY: install run test simulate
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/feedagent run -c configs/feedagent.yaml

simulate: $(VENV)/.installed
	$(VENV)/bin/feedagent simulate

test: $(VENV)/.installed
	$(VENV)/bin/pytest $(PYTEST_ARGS)
