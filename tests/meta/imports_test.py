"""A library unit test needs only tfjest: running one loads neither TF Text nor TFDS.

Each check runs in a fresh interpreter, as pytest would: the suite's conftest.py first, then
one test module under unittest; afterwards it lists which of the heavy optional packages
(`tensorflow_text`, `tensorflow_datasets`: the offline dataset's stack) were imported.
"""

import json
import os
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
"""


def _loaded(body: str):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([_TESTS, _ROOT]))
  result = subprocess.run([sys.executable, "-c", _PROBE.format(body=body, heavy=_HEAVY)],
                          capture_output=True, text=True, timeout=600, check=False, env=env,
                          cwd=_ROOT)
  lines = [l for l in result.stdout.splitlines() if l.startswith("LOADED ")]
  assert result.returncode == 0 and lines, result.stderr[-3000:]
  return json.loads(lines[-1][len("LOADED "):]), result


class ImportsTest(tf.test.TestCase):

  def test_library_unit_tests_load_neither_tf_text_nor_tfds(self):
    for module in ("losses_test", "scores_test", "selection_test"):
      body = (f"result = unittest.TextTestRunner().run("
              f"unittest.defaultTestLoader.loadTestsFromName({module!r}))\n"
              f"assert result.wasSuccessful() and result.testsRun > 0, result")
      loaded, _ = _loaded(body)
      self.assertEqual(loaded, [], module)

  def test_the_probe_sees_the_dataset_stack_when_it_is_imported(self):
    # The same probe after importing the examples' data room, which uses tfjest.datasets: it
    # must report both packages, or the check above could not fail.
    loaded, _ = _loaded("import examples.lib.data")
    self.assertEqual(sorted(loaded), sorted(_HEAVY))


if __name__ == "__main__":
  tf.test.main()
