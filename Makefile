# The two commands of the README: `make demo` (set up + main job) and `make test` (set up + tests).
PY := .venv/bin/python

.PHONY: setup demo test test-slow lint format fix-copies space

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider
	$(MAKE) --no-print-directory lint

# The retrieval Space on http://127.0.0.1:7860 over the main job's model (run `make demo` first).
space: setup
	GRADIO_ANALYTICS_ENABLED=False $(PY) spaces/cman-retrieval/app.py $(SPACE_ARGS)

# The captioning / VQA Space on http://127.0.0.1:7860 over outputs/captioning/gated_xattn (recipes/train_captioning.py).
.PHONY: space-captioning
space-captioning: setup
	GRADIO_ANALYTICS_ENABLED=False $(PY) spaces/captioning-vqa/app.py $(SPACE_ARGS)

test-slow: setup
	RUN_SLOW=1 $(PY) -m pytest -q -p no:cacheprovider

# Lint: ruff, and the copies of modeling/common/ in the family folders must match their source.
lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check modeling recipes tests benchmarks scripts model_cards spaces
	$(PY) scripts/check_copies.py

format:
	$(PY) -m ruff format modeling recipes tests benchmarks scripts model_cards spaces
	$(PY) -m ruff check --fix .
	$(PY) scripts/check_copies.py --fix

# Rewrite every family's copy of a modeling/common/ file from its source (after editing modeling/common/).
fix-copies:
	$(PY) scripts/check_copies.py --fix
