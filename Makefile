# transferlab: `make` lists the targets. Every pipeline target takes
#   CONFIG=path/to.yaml  SET='dotted.key=value other.key=value'
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KERNEL := transferlab
CONFIG ?= configs/cifar10_resnet50.yaml
SET ?=
DATA ?=
PYTEST_ARGS ?=
RUNS ?=
PHASE ?= phase1
K ?=
WORKERS ?=
PROCESSES ?= 1
comma := ,
space := $(subst ,, )

RUN_STAGE = $(BIN)/python -m transferlab $(1) --notebook --config "$(CONFIG)" --set "$(SET)"
# PROCESSES=N trains as N local processes (JAX backend, keras.distribution; docs/scaling.md).
TRAIN_STAGE = $(BIN)/python -m transferlab $(1) $(if $(filter-out 1,$(PROCESSES)),--processes $(PROCESSES),--notebook) --config "$(CONFIG)" --set "$(SET)"

.PHONY: help setup test test-slow lint format demo train-phase1 train-phase2 evaluate gradcam predict report export bench compare lr-find sweep cv data-health clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Pipeline targets take CONFIG=configs/<name>.yaml and SET='phase1.epochs=3 train.batch_size=32'"

# Re-installs only when pyproject.toml or constraints.txt is newer than the stamp: a second
# run installs nothing. constraints.txt pins the versions the tests passed with.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c constraints.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (transferlab)"
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the tested versions (when missing or pyproject.toml/constraints.txt changed)

# Two pytest workers (pytest-xdist): CI's two cores. Each file's tests stay in one worker
# (--dist loadfile), so a module fixture is built once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

test: setup ## Run the default test suite (no network, CPU, < 15 min)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: setup ## Run the slow tests too
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "slow or not slow" $(PYTEST_ARGS)

lint: setup ## ruff check + ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: setup ## The whole pipeline offline on the embedded digits dataset
	$(BIN)/python -m transferlab demo --notebook --config configs/demo.yaml --set "$(SET)"

train-phase1: setup ## Phase 1: train the head on a frozen backbone [PROCESSES=2]
	$(call TRAIN_STAGE,train-phase1)

train-phase2: setup ## Phase 2: fine-tune from phase2.unfreeze_from (conv5) [PROCESSES=2]
	$(call TRAIN_STAGE,train-phase2)

evaluate: setup ## Evaluate the best model on eval.split
	$(call RUN_STAGE,evaluate)

gradcam: setup ## Grad-CAM overlays for the best model
	$(call RUN_STAGE,gradcam)

predict: setup ## Classify new photos: make predict DATA=path/to/photo-or-folder
	$(BIN)/python -m transferlab predict --notebook --config "$(CONFIG)" --set "$(SET) predict.data=$(DATA)"

report: setup ## Write the day-checkpoint report from the run files
	$(call RUN_STAGE,report)

export: setup ## The best model as a TensorFlow SavedModel (models/<experiment>_savedmodel/)
	$(call RUN_STAGE,export)

bench: setup ## Benchmarks (results in outputs/bench, summary in docs/benchmarks.md)
	$(call RUN_STAGE,bench)

compare: setup ## Compare evaluate runs (paired tests): make compare [RUNS='run-id run-id']
	$(BIN)/python -m transferlab compare --config "$(CONFIG)" --set "$(SET)$(if $(strip $(RUNS)), compare.runs=[$(subst $(space),$(comma),$(strip $(RUNS)))])"

lr-find: setup ## Learning-rate range test: make lr-find PHASE=phase1|phase2
	$(BIN)/python -m transferlab lr-find --config "$(CONFIG)" --set "$(SET) lr_find.phase=$(PHASE)"

sweep: setup ## Optuna search of the head's settings on cached features: make sweep [WORKERS=2]
	$(BIN)/python -m transferlab sweep --config "$(CONFIG)" --set "$(SET)$(if $(WORKERS), sweep.workers=$(WORKERS))"

cv: setup ## k-fold cross-validation over train + val: make cv [K=5]
	$(BIN)/python -m transferlab cv --config "$(CONFIG)" --set "$(SET)$(if $(K), cv.folds=$(K))"

data-health: setup ## Near-duplicates across splits, likely label errors, outliers (a page of grids)
	$(call RUN_STAGE,data-health)

clean: ## Remove outputs, models and checkpoints (keeps .venv)
	rm -rf outputs/* models/* checkpoints/* .pytest_cache .ruff_cache
	@touch outputs/.gitkeep models/.gitkeep checkpoints/.gitkeep
