"""pytest configuration shared by the suite.

pytest.ini's `pythonpath = .` makes the repository root importable (`examples`, `benchmarks`),
as Bazel's `imports = [".."]` does for its targets; nothing here edits `sys.path`.
"""

import os

# The suite compiles XLA at LLVM's lowest optimisation level: what it checks is what the
# programs compute, not how fast, and compiling is most of an XLA test's time (the
# accelerator check's smoke 53 s -> 35 s). Benchmarks, examples and users keep XLA's default.
# Bazel sets the same for every test in .bazelrc; a caller's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                      "--xla_llvm_disable_expensive_passes=true")

# Two logical CPU devices for the MirroredStrategy tests (replica_step_test.py). They can only be
# configured before TensorFlow initialises its devices, and pytest imports every test module
# before running any test, so it happens here, first. Other tests still run on /cpu:0.
from tfjest import testing

testing.configure_cpu_devices(2)


def pytest_collection_modifyitems(config, items):
  # tf.test.TestCase defines a `test_session` context manager that pytest would collect and
  # report as skipped; it is not a test.
  del config
  items[:] = [item for item in items if item.name != "test_session"]
