# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-faults lint up down status bench-serving bench-ingest clean browser detector

# The venv is rebuilt only when the dependencies change; a re-run costs a few seconds.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25"
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'
	@touch $(STAMP)

# Debian's chromium for the reviewer-page browser test; Playwright never downloads a browser here.
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The main job on the embedded local stack; the stack is stopped afterwards unless KEEP_UP=1.
demo: $(STAMP) browser  # browser: the detection chapter photographs the reviewer page
	@$(BIN)/sightline up
	@status=0; $(BIN)/sightline demo || status=$$?; \
	if [ "$(KEEP_UP)" = 1 ]; then echo "the stack keeps running: open the link above; stop it with 'make down'"; \
	else $(BIN)/sightline down; echo "(the history stays in .sightline/: 'make up' brings the UI back to that link)"; fi; \
	exit $$status

# The gate before the suite: lint (with import sorting) and types over the whole tree.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The suite includes the short fault run (tests/faults/: each part of a stack killed once under load).
test: lint browser
	SIGHTLINE_FAULT_ROUNDS=1 SIGHTLINE_FAULT_DB_OUTAGE_S=0 $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The whole fault suite: every part killed 4 times under load (20 kills), the first Postgres kill
# left down for a minute; prints the table of kills and recovery times. Longer than `make test`.
test-faults: $(STAMP)
	SIGHTLINE_FAULT_ROUNDS=4 SIGHTLINE_FAULT_DB_OUTAGE_S=60 $(BIN)/python -m pytest -q -p no:cacheprovider \
	  tests/faults $(PYTEST_ARGS)

# The detector trained to its goal on generated frames (held-out mAP@0.5 >= 0.8), with its wall and CPU
# time and the machine's load: bench/detector.py. Not part of `make test` (minutes, not seconds).
detector: $(STAMP)
	$(BIN)/python -m bench.detector $(DETECTOR_ARGS)

up: $(STAMP)
	@$(BIN)/sightline up

down:
	@test -x $(BIN)/sightline && $(BIN)/sightline down || true

status:
	@$(BIN)/sightline status

clean: down
	rm -rf .sightline
