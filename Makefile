# Set-up and checks. Two commands do everything on a fresh machine:
#   make demo   - install into .venv and run the main job
#   make test   - install into .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch: the CPU build. Where a local wheel of torch 2.13.0+cpu exists (pip's find-links), pip takes
# it from disk; elsewhere the PyTorch CPU index is used, so no multi-GB CUDA build is ever pulled.
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install demo test bench docs sanitize fuzz fuzz-replay cuda cuda-sanitize clean

$(VENV)/.installed: pyproject.toml setup.py $(wildcard csrc/*/*) $(wildcard emp_data/*.py) $(wildcard emp_data/*/*.py) $(wildcard benchmarks/quality/*.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if $(PIP) install -q --no-deps --no-index $(TORCH_SPEC); then $(PIP) install -q $(TORCH_SPEC); \
	  else $(PIP) install -q $(TORCH_SPEC) --index-url $(TORCH_CPU_INDEX); fi; \
	fi
	$(PIP) install -q ".[test,demo]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/emp-data demo

test: install
	$(VENV)/bin/pytest -q tests

docs: install
	$(VENV)/bin/mkdocs build --strict      # the docs/ pages as a site in build/site

bench: install
	$(PY) benchmarks/sampling_throughput.py
	$(PY) benchmarks/quality.py

# C++ core built with -fsanitize=address,undefined, in place, and the suite run against it.
sanitize: install
	$(PIP) install -q pybind11 ninja setuptools wheel     # the in-place build runs outside pip's build isolation
	rm -rf build/asan && EMP_DATA_SANITIZE=1 $(PY) setup.py -q build_ext --inplace --build-temp build/asan
	LD_PRELOAD=$$(c++ -print-file-name=libasan.so):$$(c++ -print-file-name=libubsan.so) \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 EMP_DATA_TEST_WORKER_START=spawn \
	  $(PY) -m pytest -q -p no:cacheprovider -o faulthandler_timeout=600 tests
	rm -f emp_data/_C*.so

# Coverage-guided fuzzing of every parser of untrusted bytes, FUZZ_SECONDS per target: the C++ tar
# scanner, store file and key-table file (libFuzzer through clang, with ASan+UBSan), and the Python
# shard-index and wids JSON readers (atheris). New inputs are merged, minimised, into fuzz/corpus/,
# which every test run replays (tests/test_fuzz_corpus.py); crashes land in build/fuzz/crashes/.
FUZZ_SECONDS ?= 600
FUZZ_CXX ?= $(shell command -v clang++ || command -v clang++-14)
FUZZ_FLAGS := -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -DEMP_KEY_TABLE_PUBLISH_TIMEOUT_MS=0 -Icsrc
# Each C++ harness and the sources it links (one list for `fuzz` and `fuzz-replay`).
FUZZ_SOURCES_tar := csrc/webdataset/tar_index.cpp
FUZZ_SOURCES_store := csrc/core/store.cpp csrc/core/store_file.cpp csrc/core/update.cpp csrc/core/buffer.cpp
FUZZ_SOURCES_key_table := csrc/webdataset/key_table.cpp
fuzz: install
	@test -n "$(FUZZ_CXX)" || { echo "make fuzz needs clang (apt-get install clang libfuzzer-14-dev)"; exit 1; }
	$(PIP) install -q atheris
	mkdir -p build/fuzz/crashes
	$(FUZZ_CXX) $(FUZZ_FLAGS) fuzz/fuzz_tar.cpp $(FUZZ_SOURCES_tar) -o build/fuzz/fuzz_tar
	$(FUZZ_CXX) $(FUZZ_FLAGS) fuzz/fuzz_store.cpp $(FUZZ_SOURCES_store) -o build/fuzz/fuzz_store
	$(FUZZ_CXX) $(FUZZ_FLAGS) fuzz/fuzz_key_table.cpp $(FUZZ_SOURCES_key_table) -o build/fuzz/fuzz_key_table
	$(PY) fuzz/make_seeds.py build/fuzz/seeds
	for t in tar store key_table; do \
	  mkdir -p build/fuzz/work/$$t fuzz/corpus/$$t && \
	  build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=4096 \
	    -artifact_prefix=build/fuzz/crashes/$$t- build/fuzz/work/$$t fuzz/corpus/$$t build/fuzz/seeds/$$t && \
	  build/fuzz/fuzz_$$t -merge=1 fuzz/corpus/$$t build/fuzz/work/$$t build/fuzz/seeds/$$t || exit 1; \
	done
	# atheris's -merge finds no Python coverage in its merge subprocess: new inputs go straight
	# into the corpus instead (they are small).
	for t in shard_index wids_json; do \
	  mkdir -p fuzz/corpus/$$t && \
	  $(PY) fuzz/fuzz_python.py $$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -artifact_prefix=build/fuzz/crashes/$$t- fuzz/corpus/$$t build/fuzz/seeds/$$t || exit 1; \
	done

# The C++ harnesses built with any compiler ($(CXX), no libFuzzer) under ASan and UBSan, each saved
# input replayed once: checks that the harnesses still build and the corpus stays clean where clang
# is missing.
FUZZ_REPLAY_CXX ?= $(or $(CXX),c++)
FUZZ_TARGETS := tar store key_table
fuzz-replay: $(foreach t,$(FUZZ_TARGETS),build/fuzz-replay/fuzz_$(t))
	for t in $(FUZZ_TARGETS); do \
	  ASAN_OPTIONS=detect_leaks=0 build/fuzz-replay/fuzz_$$t fuzz/corpus/$$t/* || exit 1; \
	done
build/fuzz-replay/fuzz_%: fuzz/fuzz_%.cpp fuzz/replay_main.cpp $(wildcard csrc/*/*)
	mkdir -p build/fuzz-replay
	$(FUZZ_REPLAY_CXX) -std=c++17 -O1 -g -fopenmp -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	  -DEMP_KEY_TABLE_PUBLISH_TIMEOUT_MS=0 -Icsrc $< $(FUZZ_SOURCES_$*) fuzz/replay_main.cpp -o $@

# The optional CUDA kernels (needs nvcc and a GPU machine with a CUDA torch), built in place with
# the current python, then the GPU tests and the GPU benchmark.
cuda:
	EMP_DATA_CUDA=1 $(PYTHON) setup.py -q build_ext --inplace
	PYTHONPATH=. $(PYTHON) -m pytest -q tests/store/test_cuda.py tests/store/test_cuda_host.py tests/selection/test_scores.py \
	  tests/selection/test_clip_scores.py "tests/docs/test_readme.py::test_every_python_block_runs[docs/gpu.md]"
	PYTHONPATH=. $(PYTHON) benchmarks/sampling_throughput.py --device cuda

# The GPU tests under compute-sanitizer's memcheck and racecheck (after `make cuda`). Racecheck leaves
# out the shuffle-uniformity test: its 400 selects take many minutes under that tool, and every other
# test runs the same shuffle kernels.
cuda-sanitize:
	PYTHONPATH=. compute-sanitizer --tool memcheck --error-exitcode 1 $(PYTHON) -m pytest -q -x tests/store/test_cuda.py
	PYTHONPATH=. compute-sanitizer --tool racecheck --error-exitcode 1 $(PYTHON) -m pytest -q -x tests/store/test_cuda.py \
	  -k "not shuffle_is_uniform"

clean:
	rm -rf build $(VENV) emp_data/_C*.so *.egg-info
