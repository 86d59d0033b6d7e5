# From a fresh clone: `make run` shows the live demo site; `make test` builds everything and runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CORE_SOURCES := $(wildcard ems/_core/*.pyx ems/_core/*.pxd ems/_core/*.h)

.PHONY: install run test bench validate fuzz clean test-aarch64

$(STAMP): pyproject.toml setup.py $(CORE_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# editable install: the Cython kernels are compiled next to their sources
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/ems run

test: $(STAMP)
	# the page tests drive a real Chromium (Debian's), the cloud tests a real Mosquitto: installed here when
	# missing (root, apt-get)
	bash tools/browser.sh
	bash tools/mosquitto.sh
	$(PY) -m pytest

# Kernels vs the NumPy reference in the same run, simulation speed, real-time loop jitter (60 s).
bench: $(STAMP)
	$(PY) -m pytest benchmarks -q -p no:randomly --benchmark-only \
		--benchmark-json=benchmarks/raw.json --benchmark-columns=median,iqr,rounds
	$(PY) benchmarks/report.py benchmarks/raw.json benchmarks/results.json

# Every example scenario over its full duration (the test suite runs their first hours), then the SOC/SOH
# estimator against the LFP cell plant (14 days × 5 cases, ~1 min; figures in build/validate/soc.json), peak
# shaving's whole window (~30 s) and the estimator against PyBaMM (8 cases, ~1 min; build/validate/pybamm.json).
validate: $(STAMP)
	@for f in examples/*.toml; do \
		$(VENV)/bin/ems simulate $$f --out build/validate/$$(basename $$f .toml) || exit 1; \
	done
	$(PY) -m validation.soc --json build/validate/soc.json
	# peak shaving's whole 08:00–20:00 window, every quarter hour (make test checks the morning)
	$(PY) -m validation.peak_shaving --json build/validate/peak_shaving.json
	# the estimator against PyBaMM (SPMe, DFN; Prada2013 LFP), an independent model: the [validate] extra
	$(PY) -m pip install --quiet -e '.[validate]'
	$(PY) -m validation.pybamm_suite --json build/validate/pybamm.json

# The dispatch server fuzzed for 5 minutes from outside the allowlist (frames, connections, writes accepted
# against the rules, RSS, file descriptors), then kill -9 of `ems run` in a loop (databases, restored SOC).
fuzz: $(STAMP)
	$(PY) -m tests.fuzz_dispatch --seconds 300 --out build/fuzz/dispatch.json
	$(PY) -m tests.kill_loop --cycles 30 --out build/fuzz/kill.json

clean:
	rm -rf $(VENV) build *.egg-info ems/_core/*.c ems/_core/*.so ems/_core/*.html .pytest_cache .hypothesis

# The package built and its suite run on arm64 (debootstrap rootfs, qemu-user; root; slow): docs/board.md
test-aarch64:
	bash firmware/aarch64/test.sh
