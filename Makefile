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

.PHONY: install demo test bench sanitize cuda cuda-sanitize clean

$(VENV)/.installed: pyproject.toml setup.py $(wildcard csrc/*) $(wildcard emp_data/*.py)
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

bench: install
	$(PY) benchmarks/sampling_throughput.py
	$(PY) benchmarks/quality.py

# C++ core built with -fsanitize=address,undefined, in place, and the suite run against it.
sanitize: install
	rm -rf build/asan && EMP_DATA_SANITIZE=1 $(PY) setup.py -q build_ext --inplace --build-temp build/asan
	LD_PRELOAD=$$(c++ -print-file-name=libasan.so):$$(c++ -print-file-name=libubsan.so) \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PY) -m pytest -q -p no:cacheprovider tests
	rm -f emp_data/_C*.so

# The optional CUDA kernels (needs nvcc and a GPU machine with a CUDA torch), built in place with
# the current python, then the GPU tests and the GPU benchmark.
cuda:
	EMP_DATA_CUDA=1 $(PYTHON) setup.py -q build_ext --inplace
	PYTHONPATH=. $(PYTHON) -m pytest -q tests/test_cuda.py tests/test_scores.py
	PYTHONPATH=. $(PYTHON) benchmarks/sampling_throughput.py --device cuda

# The GPU tests under compute-sanitizer's memcheck and racecheck (after `make cuda`).
cuda-sanitize:
	PYTHONPATH=. compute-sanitizer --tool memcheck --error-exitcode 1 $(PYTHON) -m pytest -q -x tests/test_cuda.py
	PYTHONPATH=. compute-sanitizer --tool racecheck --error-exitcode 1 $(PYTHON) -m pytest -q -x tests/test_cuda.py

clean:
	rm -rf build $(VENV) emp_data/_C*.so *.egg-info
