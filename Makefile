# `make demo` and `make test` each set up .venv (once) and run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,notebooks]"
	# compile the Numba kernels into their cache now (about 30 s on 2 cores), not in the first fit
	$(BIN)/python -c "from nmfsched.kernels.cpu import compile_kernels; compile_kernels()"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nmfsched demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/core_vs_sklearn.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
