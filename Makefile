# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The editable install maps module names to files: when modules are added, moved or removed, the stamp's name
# changes and the package is installed again.
MODULES := $(shell find ks_runtime ks_train ks_export cpp_ext -name '*.py' -not -path '*/__pycache__/*' | sort | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(MODULES)
# A real Triton server for the triton engine's tests (tests/runtime/engine/test_triton_client.py): pytriton's, in a
# venv of its own, inside .venv (it pins numpy<2; `make pytriton`); without it those tests skip and say why.
PYTRITON_VENV := $(VENV)/pytriton
ifneq ($(wildcard $(PYTRITON_VENV)/bin/python),)
export KS_PYTRITON_PYTHON := $(abspath $(PYTRITON_VENV)/bin/python)
endif

.PHONY: setup demo test test-slow browser pytriton lint bench clean

setup: $(STAMP)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml CMakeLists.txt $(wildcard cpp_ext/CMakeLists.txt cpp_ext/src/* cpp_ext/cuda/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[cpu,train,export,serve,ray,openvino,dev]"
	rm -f $(VENV)/.installed*
	touch $(STAMP)

demo: setup
	$(PY) -m ks_export.demo

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

pytriton:
	@{ test -x $(PYTRITON_VENV)/bin/python || $(PYTHON) -m venv $(PYTRITON_VENV); } \
		&& $(PYTRITON_VENV)/bin/python -m pip install --quiet nvidia-pytriton onnxruntime \
		|| { rm -rf $(PYTRITON_VENV); echo "make pytriton: pytriton could not be installed; the Triton server tests will skip"; }

# Chromium for the browser test of ks-serve's page (tests/serve/test_browser.py, a slow test): Debian's package, as
# root. Where it cannot be installed the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
		|| echo "make browser: chromium not installed (needs root and apt); the browser test will skip"

# pytest-benchmark suites in benchmarks/ (about 15 min on 2 cores; KS_BENCH_QUICK=1 for a smoke run), then the
# table: benchmarks/results/<machine>.json and .md, and docs/benchmarks.md between its BENCH markers (never README.md).
bench: setup
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-only \
		--benchmark-json benchmarks/.cache/pytest-benchmark.json
	$(PY) -m benchmarks.report --doc docs/benchmarks.md

LINTED := ks_runtime ks_train ks_export cpp_ext tests benchmarks

lint: setup
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

clean:
	rm -rf build $(VENV) .pytest_cache
