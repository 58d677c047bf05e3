# Two commands do everything on a fresh machine (see README):
#   make quickstart   set up .venv, run experiments/quickstart.yaml (wandb offline, files under
#                     runs/quickstart/), print where the results are
#   make test         set up .venv, lint (ruff check + ruff format --check), run the default tests
#   make results      regenerate docs/results.md's tables and figures from docs/results/<study>/
LINT_PATHS := crl tests benchmarks
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crl-installed

.PHONY: quickstart test setup lint expensive results clean

setup: $(STAMP)

# torch first, pinned: pip finds the CPU build of 2.13.0 on our machines' local wheel
# store; left to itself, a dependency range would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	# dev tools and Continual DMC's dm_control + shimmy (69 MB of wheels, no torch, mujoco kept),
	# so CI runs the cdmc tests too
	$(BIN)/python -m pip install --quiet -e ".[dev,dmc]"
	# Continual World's Meta-World tasks without metaworld's mujoco==3.3.0 pin (crl patches the
	# one incompatibility with mujoco 4: docs/envs.md), so CI runs the cw10/cw20 tests too
	$(BIN)/python -m pip install --quiet --no-deps "metaworld==3.1.1"
	# PSGD Kron's package without the triton its metadata requires (the CPU path never imports
	# it), so CI tests the kron optimizer on crl's CPU torch
	$(BIN)/python -m pip install --quiet --no-deps "kron-torch==0.3.3" "opt_einsum>=3.3"
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/crl sweep experiments/quickstart.yaml --wandb offline

test: lint
	@command -v chromium >/dev/null 2>&1 || { \
	  (command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1) \
	  || echo "note: chromium could not be installed; browser tests will be skipped"; }
	$(BIN)/python -m pytest -n auto

expensive: $(STAMP)
	$(BIN)/python -m pytest -m expensive

results: $(STAMP)
	$(BIN)/crl results build docs

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

clean:
	rm -rf $(VENV) build dist *.egg-info
