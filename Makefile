# From a fresh clone: `make test` builds the venv, compiles the native core and runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CORE_SOURCES := $(wildcard ems/_core/*.pyx ems/_core/*.pxd ems/_core/*.h)

.PHONY: install test bench clean

$(STAMP): pyproject.toml setup.py $(CORE_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# editable install: the Cython kernels are compiled next to their sources
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# Kernels vs the NumPy reference in the same run; writes benchmarks/results.json and prints the table.
bench: $(STAMP)
	$(PY) -m pytest benchmarks -q -p no:randomly --benchmark-only \
		--benchmark-json=benchmarks/raw.json --benchmark-columns=median,iqr,rounds
	$(PY) benchmarks/report.py benchmarks/raw.json benchmarks/results.json

clean:
	rm -rf $(VENV) build *.egg-info ems/_core/*.c ems/_core/*.so ems/_core/*.html .pytest_cache .hypothesis
