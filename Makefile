# Everything a person does with nextbest. `make demo` and `make test` work on a
# fresh machine with only Python 3.11+: they create .venv and install when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
DEMO_HCPS ?= 2000
PORT ?= 8000
export NEXTBEST_MODELS_DIR ?= models

.PHONY: install lock demo test lint format bench bench-quality bench-serve bench-loop bench-feedback bench-logscale clean

$(STAMP): pyproject.toml constraints.txt
	@# A venv without a working pip (made where python3-venv was missing) is made again.
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip \
		|| echo "note: pip could not be upgraded; installing with the pip the venv has"
	@trap 'exit 130' INT TERM; for try in 1 2 3; do \
		$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]" && exit 0; \
		[ $$try = 3 ] || { echo "pip install failed (try $$try of 3): trying again in 15 s"; sleep 15; }; \
	done; echo "pip could not install nextbest: see its error above"; exit 1
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install nextbest with its dev tools, at constraints.txt's versions

# A venv of its own, so that .venv keeps serving while the newest releases are tried.
LOCK_VENV := .venv-lock
lock: ## take the newest releases pyproject.toml admits into constraints.txt (then: make lint test)
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e ".[dev,bench]"
	grep '^#' constraints.txt > constraints.txt.new
	$(LOCK_VENV)/bin/python -m pip freeze --exclude-editable >> constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)
	@echo "constraints.txt now pins the newest releases: 'make lint test' installs them into .venv and runs the suite"

demo: $(STAMP) ## simulate a world, train, register and serve on 127.0.0.1:$(PORT)
	$(BIN)/nextbest simulate --out $(DEMO_DIR)/world --hcps $(DEMO_HCPS) --periods 26 --seed 7
	@# Run again, the same world (seed 7) is simulated: the version trained on it is kept.
	$(BIN)/nextbest train --data $(DEMO_DIR)/world --skip-if-trained
	$(BIN)/python -m nextbest.demo --port $(PORT)
	$(BIN)/nextbest serve --host 127.0.0.1 --port $(PORT)

test: $(STAMP) ## run the whole test suite
	@# The slowest tests are listed at the end: what to look at when the suite slows down.
	@# Compiled modules are kept (__pycache__, git-ignored) even where PYTHONDONTWRITEBYTECODE
	@# is set: each test worker then reads its test modules' rewritten asserts instead of
	@# making them again (9 of its 17 s of collection), and the hundreds of nextbest
	@# processes the suite starts read nextbest's modules compiled.
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=30 --durations-min=5

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check src tests bench training
	$(BIN)/ruff format --check src tests bench training
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench training
	$(BIN)/ruff check --fix src tests bench training

bench: bench-quality bench-serve bench-loop bench-feedback ## every benchmark; figures land in bench/results/

bench-quality: $(STAMP) ## policy value on the simulator and on the Hillstrom e-mail experiment
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[bench]"  # causalml, the rival learners
	$(BIN)/python bench/quality.py

bench-serve: $(STAMP) ## latency, throughput and overhead of a real uvicorn server
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/plots.py bench/results/serve.json

bench-loop: $(STAMP) ## the closed loop, simulated: serve, feedback, retrain, gate, promote
	$(BIN)/python bench/loop.py

bench-feedback: $(STAMP) ## feedback ingest through the API on SQLite and PostgreSQL, zero loss
	$(BIN)/python bench/feedback.py

# Not part of `make bench`: a year of log, filled and measured on both backends, takes
# about half an hour on 2 cores (an hour on a loaded machine).
bench-logscale: $(STAMP) ## a year of log (5 M answers): each command and serving read, timed, with plans
	$(BIN)/python bench/logscale.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
