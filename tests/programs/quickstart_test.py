"""Runs `python -m examples.quickstart` as a user would and checks its promise."""

import re

import tensorflow as tf

from tests.programs import launch


class QuickstartTest(tf.test.TestCase):

  def test_jest_avoids_corrupted_pairs(self):
    result = launch.run("examples.quickstart")
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
