# The few commands people run. `make test` creates (or reuses) .venv, installs the project with the pinned
# versions of constraints.txt, and runs the test suite; `make demo` trains and evaluates a small translator,
# offline, in a few minutes (training/demo.py); `make app` serves the web app (app/app.py) on 127.0.0.1:7860.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-newest test test-slow test-newest demo app lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,app]"
	touch $(STAMP)

# The newest releases of transformers, PEFT and Accelerate (resolved now, not pinned), with the pinned torch: where
# `make test-newest` checks that the model still works on what users install today.
NEWEST := .venv-newest
install-newest:
	test -x $(NEWEST)/bin/python || $(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/python -m pip install --quiet --upgrade pip
	grep '^torch==' constraints.txt > $(NEWEST)/torch-constraint.txt
	$(NEWEST)/bin/python -m pip install --quiet -c $(NEWEST)/torch-constraint.txt torch
	$(NEWEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -c $(NEWEST)/torch-constraint.txt \
		-e ".[train]" transformers peft accelerate pytest pytest-xdist parameterized

# Two workers, as many as the project's machines have cores; each test file, with its module fixtures, runs whole on
# one of them. `make test PYTEST_ARGS="-n 0 tests/test_modeling.py"` runs one file in this process.
PYTEST_ARGS ?= -n 2 --dist loadfile
# Two tiers: `make test`, the fast one (a few minutes), and `make test-slow`: trainings, recipe runs, several
# processes, the app end to end and the wheel install. CI runs both, then `make test-newest`.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# The model's tests on the newest releases: modeling, generation, save/load and remote code, PEFT, Trainer, the fast
# paths, the Hub round trip, bad input, atomic checkpoints, and transformers' own common suites.
NEWEST_TESTS := tests/test_modeling.py tests/test_generation.py tests/test_save_load.py tests/test_configuration.py \
	tests/test_peft.py tests/test_transformers_common.py tests/test_training.py tests/test_fast_paths.py \
	tests/test_hub.py tests/test_bad_input.py tests/test_reliability.py
test-newest: install-newest
	$(NEWEST)/bin/python -m pip list 2>/dev/null | grep -iE '^(torch|transformers|peft|accelerate) '
	$(NEWEST)/bin/python -m pytest $(PYTEST_ARGS) $(NEWEST_TESTS)

demo: $(STAMP)
	$(BIN)/hf-scratch-transformer demo $(DEMO_ARGS)

app: $(STAMP)
	$(BIN)/python app/app.py $(APP_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(NEWEST) build *.egg-info .pytest_cache
