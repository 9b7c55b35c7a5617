"""pytest configuration shared by the suite."""

import os
import sys

# The examples are importable as `examples.*` from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Two logical CPU devices for the MirroredStrategy tests (replica_step_test.py). They can only be
# configured before TensorFlow initialises its devices, and pytest imports every test module
# before running any test, so it happens here, first. Other tests still run on /cpu:0.
from examples import training  # pylint: disable=g-import-not-at-top,wrong-import-position

training.configure_cpu_devices(2)


def pytest_collection_modifyitems(config, items):
  # tf.test.TestCase defines a `test_session` context manager that pytest would collect and
  # report as skipped; it is not a test.
  del config
  items[:] = [item for item in items if item.name != "test_session"]
