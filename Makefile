# The two commands of the README: `make demo` (set up + main job) and `make test` (set up + tests).
PY := .venv/bin/python

.PHONY: setup demo test test-slow lint format

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider
	$(PY) -m ruff check .

test-slow: setup
	RUN_SLOW=1 $(PY) -m pytest -q -p no:cacheprovider

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check modeling recipes tests benchmarks

format:
	$(PY) -m ruff format modeling recipes tests benchmarks
	$(PY) -m ruff check --fix .
