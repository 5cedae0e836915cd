# spnas: the two commands are `make demo` (set up + run the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.spnas-installed

.PHONY: setup data demo test bench clean-runs

setup: $(STAMP)

# torch first, from the CPU wheel: a plain `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt retrieval/proto/index.proto retrieval/proto/health.proto
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/python -m retrieval.proto
	touch $(STAMP)

data: setup
	bash scripts/ensure_fashion_mnist.sh
	$(BIN)/python -m nas.data unpack

demo: setup data
	$(BIN)/spnas-train arch=mobilenet_v3_small data=fashion_mnist train.epochs=2 run_dir=runs/demo/$$(date +%Y%m%d-%H%M%S)

test: setup data
	$(BIN)/python -m pytest -q

bench: setup data
	$(BIN)/python -m bench.bench_train

clean-runs:
	rm -rf runs outputs multirun
