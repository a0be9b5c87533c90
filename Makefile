# clusterplan: two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint calibrate validate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## run the main job: the built-in Project Rainier scenario
	$(BIN)/clusterplan rainier

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest

CALCULON ?=

bench: $(STAMP)  ## estimator and search throughput, rainier end to end; Calculon side by side with CALCULON=/path/to/calculon
	$(BIN)/python benchmarks/bench_estimator.py
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_reliability.py
	$(BIN)/python benchmarks/bench_serving.py
	$(BIN)/python benchmarks/bench_simulator_schedulers.py
	$(BIN)/python benchmarks/bench_rainier.py
	$(BIN)/python benchmarks/bench_campus.py
	$(BIN)/python benchmarks/bench_calculon.py $(if $(CALCULON),--calculon $(CALCULON),)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

calibrate: $(STAMP)  ## refit efficiency.yaml on the published tables
	$(BIN)/clusterplan calibrate

validate: $(STAMP)
	$(BIN)/clusterplan validate

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
