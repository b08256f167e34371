# The commands of the README. Each sets up .venv first (idempotent: quick the second time).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup lint test demo clean-demo

setup:
	@bash tools/setup_env.sh $(VENV)

# Static checks (ruff: pyflakes, pycodestyle, import order, formatting; pyproject.toml).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check crbp_panoptic tools tests setup.py

# The whole pytest suite, on the CPU.
test: setup
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests $(PYTEST_ARGS)

# The main job on the built-in synthetic data: train a C-RBP Panoptic FPN, evaluate PQ on
# the held-out val split, print the table and write panoptic overlays to output/demo/.
demo: setup
	OMP_NUM_THREADS=2 $(PY) tools/demo.py --output output/demo

clean-demo:
	rm -rf output/demo
