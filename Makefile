# Sepsis early warning - `make help` lists the targets. Every target forwards CONFIG=...
CONFIG ?= configs/default.yaml
ARGS ?=
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SEPSIS := $(BIN)/sepsis
SHARED_DATA ?= $(abspath ../shared/data)
export SEPSIS_SHARED_DATA ?= $(SHARED_DATA)

.DEFAULT_GOAL := help
.PHONY: help venv install run generate prepare train evaluate report test test-all bench lint format clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  (CONFIG=configs/<name>.yaml selects the run; ARGS='key=value ...' overrides config keys)"

$(BIN)/sepsis: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel; an unpinned torch downloads a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/sepsis ## create the virtual environment in .venv and install the project
install: venv ## alias of venv

run: venv ## set up, then prepare -> train -> report on CONFIG (default: the synthetic cohort)
	$(SEPSIS) run --config $(CONFIG) $(ARGS)

generate: venv ## write the synthetic MIMIC-III-format database (source: synthetic)
	$(SEPSIS) generate --config $(CONFIG) $(ARGS)

prepare: venv ## raw records -> hourly Sepsis-3 labels -> matched cohort (runs generate for synthetic)
	$(SEPSIS) prepare --config $(CONFIG) $(ARGS)

train: venv ## fit MGP-TCN, DTW-KNN and baselines per horizon and split seed
	$(SEPSIS) train --config $(CONFIG) $(ARGS)

evaluate: venv ## AUPRC / AUROC with bootstrap CIs per learner and horizon
	$(SEPSIS) evaluate --config $(CONFIG) $(ARGS)

report: venv ## evaluate, then write report.md / report.html with plots
	$(SEPSIS) report --config $(CONFIG) $(ARGS)

test: venv ## run the test suite (real-data tests use ../shared/data when present)
	$(BIN)/pytest -q

test-all: venv ## the test suite including tests marked slow
	$(BIN)/pytest -q -m ''

bench: venv ## benchmarks; results go to docs/benchmarks/
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run_all.py

lint: venv ## ruff lint and format check
	$(BIN)/ruff check sepsis data_prep models tests benchmarks
	$(BIN)/ruff format --check sepsis data_prep models tests benchmarks

format: venv ## apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix sepsis data_prep models tests benchmarks
	$(BIN)/ruff format sepsis data_prep models tests benchmarks

clean: ## remove run outputs (runs/) and the generated synthetic databases (data/)
	rm -rf runs data
