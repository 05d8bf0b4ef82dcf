# sticker-suggest: two commands set everything up on a fresh machine.
#   make run   -> venv, install, keyword catalog, default world, every stage, then serve
#   make test  -> venv, install (with test tools), catalog, tests
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export STICKERS_VAR ?= $(CURDIR)/var
WORLD ?= small
STICKERS := $(BIN)/stickers

.PHONY: help install catalog world pipeline run test test-fast bench lint format clean

help:
	@echo "make run    build the default world ($(WORLD)), run every stage, then serve"
	@echo "make test   run the test suite (installs what it needs)"
	@echo "make bench  run the benchmarks (tables on stdout, JSON under var/bench/)"
	@echo "make lint   ruff + mypy;  make clean  remove .venv and var/"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

catalog: install
	$(STICKERS) data catalog

world: catalog
	$(STICKERS) data generate --size $(WORLD)

pipeline: world

run: pipeline

test: catalog
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: catalog
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy data candidate_gen keyword_index reranker federated serving evaluation bench

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .mypy_cache .ruff_cache
