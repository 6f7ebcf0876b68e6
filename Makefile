# One target per step of CI (.ci/run), each runnable alone, in the active environment
# (make a venv first: python3 -m venv .venv && . .venv/bin/activate && make install).
# A Makefile, not nox: nox makes a virtual environment per session, and every fresh
# environment recompiles the three kernel builds (minutes); these steps run where the
# package is already built. `make help` lists the targets.

PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
# The folders ruff checks (the same in CI and in the pre-commit hook).
LINT_PATHS = fastconv tests benchmarks examples setup.py
# The tests CI runs once more against the debug build (bounds checks on).
DEBUG_BUILD_TESTS = tests/engine/test_equivalence.py tests/kernels/test_im2col.py tests/engine/test_fuzz.py \
	tests/engine/test_edges.py tests/engine/test_threads.py tests/engine/test_parallel.py \
	tests/kernels/test_kernels_build.py
BENCH_OUT ?= bench-results/quick.json

.PHONY: help install build lint-deps lint format typecheck stubtest test test-quick test-debug-build \
	bench-quick docs ci

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

install:  ## editable install with the test and lint extras (compiles the kernels)
	$(PYTHON) -m pip install -e ".[test,lint]"

build:  ## recompile the kernels after editing fastconv/kernels/*.pyx, *.pxi or *.h (release build)
	$(PYTHON) -m pip install -q -e .

# The lint extra and the package's own dependencies (numpy: mypy reads its types), without
# installing fastconv itself (no compiler needed): read from pyproject.toml, one list.
lint-deps:  ## install ruff, mypy and numpy only (what lint and typecheck need)
	$(PYTHON) -m pip install -q $(shell $(PYTHON) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(" ".join(repr(d) for d in p["dependencies"] + p["optional-dependencies"]["lint"]))')

lint:  ## ruff check and ruff format --check (pyproject.toml [tool.ruff])
	$(PYTHON) -m ruff check $(LINT_PATHS)
	$(PYTHON) -m ruff format --check $(LINT_PATHS)

format:  ## ruff format: rewrites the files as `make lint` wants them
	$(PYTHON) -m ruff format $(LINT_PATHS)

typecheck:  ## mypy (pyproject.toml [tool.mypy]); needs no build
	$(PYTHON) -m mypy

stubtest:  ## the compiled kernels against their stubs (needs the build; the test suite runs it too)
	$(PYTHON) -m mypy.stubtest --mypy-config-file pyproject.toml \
		$$($(PYTHON) -c 'import fastconv.kernels.picker as p; print(*(m.__name__ for m, _ in p.builds().values() if m))')

test:  ## the whole suite, as CI runs it on the release build
	FASTCONV_EXPECT_DEBUG_BUILD=0 $(PYTEST) -q

test-quick:  ## the suite without the tests marked slow (CONTRIBUTING.md, "Tests")
	$(PYTEST) -q -m "not slow"

# Rebuilds the kernels with bounds checks on: `make build` afterwards goes back to the release build.
test-debug-build:  ## rebuild with FASTCONV_CYTHON_DEBUG=1, then the kernels' tests against it
	FASTCONV_CYTHON_DEBUG=1 $(PYTHON) -m pip install -q -e .
	$(PYTHON) -m fastconv config
	FASTCONV_EXPECT_DEBUG_BUILD=1 $(PYTEST) -q $(DEBUG_BUILD_TESTS)

bench-quick:  ## fastconv bench --quick (tiny shapes, seconds), the README's first command
	$(PYTHON) -m fastconv bench --quick --out $(BENCH_OUT)

docs:  ## the documentation site, links checked (needs the docs extra: pip install -e ".[docs]")
	$(PYTHON) -m mkdocs build --strict --quiet

ci:  ## everything, as CI runs it (fresh virtual environments: slow)
	bash .ci/run
