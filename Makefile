# `make demo` and `make test` each set up .venv (once) and run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint docs notebooks bench gpu-check gpu-wheels clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,notebooks,lint,docs]"
	# compile the Numba kernels into their cache now (80 s on a 2-core Intel 2026-12-07, 110 s on a 2-core AMD EPYC 2026-12-08, fresh cache), not in the first fit
	$(BIN)/python -c "from nmfsched.kernels.cpu import compile_kernels; compile_kernels()"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nmfsched demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

# the documentation site into docs/_build/html, warnings as errors (open docs/_build/html/index.html)
docs: $(STAMP)
	rm -rf docs/generated docs/_generated
	$(BIN)/python -m sphinx -W --keep-going -q -E -b html docs docs/_build/html

# execute every notebook in place, full size, and stamp it with its code (tests/test_docs.py
# checks the stamp: the docs show these stored outputs)
notebooks: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python docs/_ext/refresh_notebooks.py notebooks/*.ipynb

bench: $(STAMP)
	$(BIN)/python benchmarks/core_vs_sklearn.py

# On a GPU machine (which starts bare and cannot download): installs nmfsched from this tree
# offline into $(GPU_PYTHON), runs the gpu tests and benchmarks/gpu.py --check, and writes
# everything to $$GPU_CHECK_OUT (gpu-check-out/). Without a GPU it stops at once.
GPU_PYTHON ?= python3
gpu-check:
	@$(GPU_PYTHON) benchmarks/gpu_check.py

# Here, before a GPU session: the PyTorch peer's wheel for the GPU machine's Python 3.12,
# into .whl/ (carry it; gpu-check installs it offline).
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux2014_x86_64 -d .whl torchnmf==0.3.5

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis gpu-check-out docs/_build docs/generated docs/_generated
