# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv and installs what it needs.
PYTHON ?= python3
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

# pytest first (fast feedback; exits non-zero, also when it collects nothing), then Bazel,
# which runs each test file as its own target and fails on a test file without one.
test: $(STAMP) bazel-installed
	$(PY) -m pytest -q
	$(BAZEL_TEST)

pytest: $(STAMP)
	$(PY) -m pytest -q

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
