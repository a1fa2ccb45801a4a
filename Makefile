# Two commands do everything on a fresh machine (see README):
#   make run    — install into .venv and run the whole default study with all cores
#   make test   — install into .venv (with the test extra) and run the test suite
# and, for the cluster path (root; installs and starts a single-node Slurm from Debian's packages):
#   make test-slurm — the workflow through sbatch with the slurm profile, and preemption
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
PROFILE ?= workflow/profiles/local
PYTEST_ARGS ?=
# Extra pip arguments for the torch install, e.g. an index of CPU-only wheels on a machine where
# the default index would serve the (much larger) CUDA build.
TORCH_PIP_ARGS ?=

.PHONY: run test test-slurm slurm install install-test lint format dryrun clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, from the pinned CPU build, so no dependency can pull a different (CUDA) torch.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/snakemake --cores $(CORES) --profile $(PROFILE)

# Tests marked slurm need a running Slurm: `make test-slurm` (CI runs both).
test: install-test
	$(BIN)/pytest -m "not slurm" $(PYTEST_ARGS)

slurm:
	bash tests/cluster/start_slurm.sh

test-slurm: install-test slurm
	$(BIN)/pytest -m slurm tests/cluster $(PYTEST_ARGS)

dryrun: install
	$(BIN)/snakemake -n --cores $(CORES) --profile $(PROFILE)

lint: install-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check Snakefile rules

format: install-test
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/snakefmt Snakefile rules

clean:
	rm -rf results .snakemake
