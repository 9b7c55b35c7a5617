"""Runs `python -m examples.quickstart` as a user would and checks its promise."""

import os
import re
import subprocess
import sys

import tensorflow as tf

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class QuickstartTest(tf.test.TestCase):

  def test_jest_avoids_corrupted_pairs(self):
    result = subprocess.run([sys.executable, "-m", "examples.quickstart"], cwd=_ROOT,
                            capture_output=True, text=True, timeout=600, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    lines = result.stdout.strip().splitlines()
    match = re.fullmatch(r"corrupted share selected: uniform=(\d\.\d\d) "
                         r"independent=(\d\.\d\d) jest=(\d\.\d\d)", lines[-1])
    self.assertIsNotNone(match, lines[-1])
    uniform, independent, jest = map(float, match.groups())
    accuracy = float(re.search(r"for ([\d.]+)% of images", result.stdout).group(1))
    self.assertGreaterEqual(accuracy, 90.0)
    # The stream is half corrupted: uniform stays near 0.50 (960 draws: standard error 0.016),
    # jest keeps fewer than half the input rate.
    self.assertBetween(uniform, 0.42, 0.58)
    self.assertLess(jest, 0.25)
    self.assertLess(independent, 0.25)


if __name__ == "__main__":
  tf.test.main()
