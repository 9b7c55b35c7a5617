# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv and installs what it needs.
# The interpreter the venv is made from: Debian's /usr/bin/python3 where it can make one (an
# optimised build: the suite, dominated by TensorFlow tracing in Python, takes about 20% less
# CPU on it than on an unoptimised pyenv build; README, "Tests and Bazel"), else python3.
PYTHON ?= $(shell /usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1 && echo /usr/bin/python3 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# `bazel test //...` runs every test with this interpreter (see tools/python/python_configure.bzl).
BAZEL ?= bazel
BAZEL_TEST := TFJEST_PYTHON="$(CURDIR)/$(PY)" $(BAZEL) test //...

.PHONY: demo test pytest bazel-test bazel-installed venv clean

$(STAMP): setup.py requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e ".[tests]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.demo

# The suite, each test once: Bazel runs the test files in parallel targets (tests/BUILD: one per
# directory of unit tests, one per program test), and //tests:meta_tests fails on a test file
# (or module) that no target runs.
test: $(STAMP) bazel-installed
	$(BAZEL_TEST)

# For quick work: the same files under pytest in one process (exits non-zero, also when it
# collects nothing); `make pytest ARGS=tests/transform_test.py` runs one file.
pytest: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

bazel-test: $(STAMP) bazel-installed
	$(BAZEL_TEST)

# Debian's bazel-bootstrap (Bazel 4.2.3) is what the WORKSPACE is written for; it runs offline.
bazel-installed:
	@command -v $(BAZEL) >/dev/null 2>&1 || { \
	  echo "$(BAZEL) not found: installing Debian's bazel-bootstrap (needs root and apt)"; \
	  apt-get update && apt-get install -y --no-install-recommends bazel-bootstrap; \
	} || true
	@command -v $(BAZEL) >/dev/null 2>&1 || { \
	  echo "error: Bazel is not installed and could not be installed automatically." >&2; \
	  echo "  On Debian/Ubuntu, as root: apt-get update &&" \
	    "apt-get install -y --no-install-recommends bazel-bootstrap" >&2; \
	  echo "  (Bazel 4.2.x; any other way to put a Bazel 4 'bazel' on PATH works too)," \
	    "then rerun make test. 'make pytest' runs the suite without Bazel." >&2; \
	  exit 1; }

clean:
	rm -rf $(VENV)
