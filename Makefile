# Two entry points: `make demo` (the main job) and `make test` (the whole test suite).
# Both create or reuse the virtual environment in $(VENV) and install what they need.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# torch and torchvision are pinned to a pair that imports together on CPU-only machines;
# override for another platform, e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_ARGS ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs pytest venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[all]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/train_ssl.py --out outputs/demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check lightning_explain tests examples benchmarks docs
	$(VENV)/bin/ruff format --check lightning_explain

typecheck: $(STAMP)
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

pytest: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test: lint typecheck docs pytest

clean:
	rm -rf docs/_build .mypy_cache .ruff_cache .pytest_cache outputs
