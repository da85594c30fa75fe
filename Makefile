# Two commands on a fresh machine: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNS ?= runs
GOLDEN := leaderboards/golden/demo.json

.PHONY: install test demo check golden clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/avbench demo --runs-dir $(RUNS)

# The CI regression check: the demo protocol's leaderboard against the committed golden table.
check: demo
	$(BIN)/avbench check --golden $(GOLDEN) --runs-dir $(RUNS)

# Rewrite the golden table after a change that is meant to move the numbers (commit it with the change).
golden: demo
	$(BIN)/avbench check --golden $(GOLDEN) --runs-dir $(RUNS) --write

clean:
	rm -rf $(VENV) $(RUNS) demo_data .pytest_cache
