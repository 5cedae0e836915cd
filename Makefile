# spnas: the two commands are `make demo` (set up + run the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.spnas-installed
# Data sets, caches and your measured tables live here (outside the installed package; see spnas/paths.py).
export SPNAS_HOME ?= $(CURDIR)/.spnas

.PHONY: setup data demo test bench bench-pipeline clean-runs

setup: $(STAMP)

# torch first, from the CPU wheel: a plain `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt retrieval/proto/index.proto
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test,k8s]"
# Qualcomm AI Hub's client (device=aihub, and its offline tests) and its needs, without their declared ranges:
# qai-hub pins protobuf<=6.31.1 and botocore python-dateutil<3, which constraints.txt does not meet
	$(BIN)/pip install -q --no-deps qai-hub==0.56.0 backoff==2.2.1 botocore==1.44.18 deprecation==2.1.0 h5py==3.16.0 \
		prettytable==3.19.0 requests-toolbelt==1.0.0 s3transfer==0.19.3 semver==3.2.0 jmespath==1.1.0 wcwidth==0.9.5
	$(BIN)/python -m retrieval.proto
	touch $(STAMP)

data: setup
	bash scripts/ensure_fashion_mnist.sh
	$(BIN)/python -m training.datasets unpack

demo: setup data
	$(BIN)/spnas-pipeline experiment=demo

# Two pytest-xdist workers: much of the suite (TFLite conversion, subprocess start-up, I/O) keeps one core busy,
# so two workers fill both; the expensive shared models are built once per suite (tests/conftest.py built_once).
# PASSIVE keeps OpenMP threads from spinning while the other worker needs the core.
test: setup data
	$(BIN)/lint-imports
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -n 2

# Benchmarks (each prints a table, appends to bench/results/, re-renders docs/benchmarks.md).
# bench-pipeline runs the cifar10 preset (hours); the export bench reads its models.
bench: setup data
	$(BIN)/python -m bench.bench_train
	$(BIN)/python -m bench.bench_search_step
	$(BIN)/spnas-profile model
	$(BIN)/python -m bench.bench_modeled_tables
	$(BIN)/python -m bench.bench_latency_validation
	$(BIN)/python -m bench.bench_retrieval

bench-pipeline: setup data
	$(BIN)/python -m bench.bench_pipeline --experiment cifar10
	$(BIN)/python -m bench.bench_search --experiment cifar10
	$(BIN)/python -m bench.bench_export --run runs/pipeline/cifar10 --models mobilenet_v2 spnas-sd845

clean-runs:
	rm -rf runs outputs multirun
