"""pytest configuration shared by the suite."""

import os
import sys

# The examples are importable as `examples.*` from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_collection_modifyitems(config, items):
  # tf.test.TestCase defines a `test_session` context manager that pytest would collect and
  # report as skipped; it is not a test.
  del config
  items[:] = [item for item in items if item.name != "test_session"]
