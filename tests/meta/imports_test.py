"""A library unit test needs only tfjest: loading one loads neither TF Text nor TFDS.

The check runs in a fresh interpreter, as pytest would: the suite's conftest.py first, then
the library's modules and some library test modules are loaded (not run: their own targets run
them, and running them here ran them twice); afterwards it lists which of the heavy optional
packages (`tensorflow_text`, `tensorflow_datasets`: the offline dataset's stack) were imported.
Every tfjest module is imported, so a module-level import of either package anywhere in the
library (outside `tfjest.datasets`) fails here.
"""

import json
import os
import pkgutil
import subprocess
import sys

import tensorflow as tf

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ROOT = os.path.dirname(_TESTS)
_HEAVY = ("tensorflow_text", "tensorflow_datasets")

_PROBE = """
import json, sys, unittest
import conftest  # the suite's set-up, as pytest loads it
{body}
print("LOADED " + json.dumps([m for m in {heavy!r} if m in sys.modules]))
import examples.lib.data  # the examples' data room, which uses tfjest.datasets
print("LOADED " + json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


class ImportsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    """One fresh interpreter: what loading the library loads, then (the same probe after
    importing the examples' data room) what it reports once the dataset stack is loaded."""
    super().setUpClass()
    import tfjest  # pylint: disable=g-import-not-at-top
    cls.modules = sorted(m.name for m in pkgutil.walk_packages(tfjest.__path__, "tfjest.")
                         if not m.name.startswith("tfjest.datasets"))
    tests = ("losses_test", "scores_test", "selection_test", "transform_test", "step_test")
    body = "import importlib\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in cls.modules) + "".join(
        f"assert unittest.defaultTestLoader.loadTestsFromName({t!r}).countTestCases() > 0\n"
        for t in tests)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_TESTS, _ROOT]))
    cls.result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(body=body, heavy=_HEAVY)], capture_output=True,
        text=True, timeout=600, check=False, env=env, cwd=_ROOT)
    cls.loaded = [json.loads(l[len("LOADED "):]) for l in cls.result.stdout.splitlines()
                  if l.startswith("LOADED ")]

  def test_library_unit_tests_load_neither_tf_text_nor_tfds(self):
    self.assertIn("tfjest.distribute.attach", self.modules)
    self.assertEqual(self.result.returncode, 0, self.result.stderr[-3000:])
    self.assertLen(self.loaded, 2)
    self.assertEqual(self.loaded[0], [])

  def test_the_probe_sees_the_dataset_stack_when_it_is_imported(self):
    # It must report both packages once they are loaded, or the check above could not fail.
    self.assertEqual(self.result.returncode, 0, self.result.stderr[-3000:])
    self.assertEqual(sorted(self.loaded[1]), sorted(_HEAVY))


if __name__ == "__main__":
  tf.test.main()
