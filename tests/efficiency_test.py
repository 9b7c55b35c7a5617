"""tfjest.efficiency: targets, speedups, examples read and the plateau rule on hand-built curves."""

import doctest
import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import efficiency

STEPS = [0, 10, 20, 30, 40, 50]


def _curve(accuracy, cost=10, **extra):
  """A run evaluated every 10 steps at `cost` FLOPs per step."""
  return {"steps": list(STEPS), "flops": [s * cost for s in STEPS], "accuracy": list(accuracy),
          "flops_per_step": {"total": cost}, **extra}


# Uniform's mean curve is [0, .2, .4, .5, .6, .6]: the target is 0.6, first reached at step 40
# (400 FLOPs at 10 per step).
UNIFORM = [_curve([0.0, 0.2, 0.4, 0.5, 0.7, 0.6]), _curve([0.0, 0.2, 0.4, 0.5, 0.5, 0.6])]
# A method at 3x uniform's cost per step, reading N = 40 examples per step of a split of 100.
# Seed 0 reaches 0.6 at step 10, seed 1 at step 20, seed 2 never; the mean curve
# [0, .333, .5, .567, .6, .633] at step 40.
METHOD = [
    _curve([0.0, 0.6, 0.7, 0.7, 0.7, 0.7], cost=30, super_batch_size=40, dataset_size=100,
           corrupted_share=[None, 0.1, 0.1, 0.1, 0.1, 0.1]),
    _curve([0.0, 0.3, 0.6, 0.7, 0.7, 0.7], cost=30, super_batch_size=40, dataset_size=100,
           corrupted_share=[None, 0.2, 0.2, 0.2, 0.2, 0.2]),
    _curve([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], cost=30, super_batch_size=40, dataset_size=100,
           corrupted_share=[None, 0.3, 0.3, 0.3, 0.3, 0.3]),
]


class FirstReachAndTargetTest(tf.test.TestCase):

  def test_first_reach_skips_step_zero(self):
    self.assertEqual(efficiency.first_reach([0, 10, 20], [0.9, 0.1, 0.5], 0.5), 20)
    self.assertIsNone(efficiency.first_reach([0, 10, 20], [0.9, 0.1, 0.4], 0.5))
    self.assertEqual(efficiency.first_reach([0, 100, 200], [0.0, 0.2, 0.5], 0.2), 100)

  def test_mean_curve_and_target(self):
    self.assertAllClose(efficiency.mean_curve(UNIFORM), [0.0, 0.2, 0.4, 0.5, 0.6, 0.6])
    self.assertAllClose(efficiency.mean_curve(UNIFORM, "flops"), [0, 100, 200, 300, 400, 500])
    self.assertAllClose(efficiency.target(UNIFORM), 0.6)

  def test_the_module_example(self):
    result = doctest.testmod(efficiency, verbose=False)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0)

  def test_exported(self):
    self.assertIs(tfjest.efficiency, efficiency)
    self.assertIn("efficiency", tfjest.__all__)


class SummarizeTest(tf.test.TestCase):

  def test_against_uniform(self):
    s = efficiency.summarize(METHOD, UNIFORM)
    self.assertAllClose(s["target"], 0.6)
    self.assertEqual((s["uniform_steps"], s["uniform_flops"]), (40, 400))
    self.assertEqual((s["steps"], s["flops"]), (40, 1200))
    self.assertAllClose(s["step_speedup"], 1.0)
    self.assertAllClose(s["compute_speedup"], 400 / 1200)
    # Per seed: steps 40/10 and 40/20; FLOPs 400/300 and 400/600; seed 2 never reaches.
    self.assertEqual((s["seeds_reaching"], s["seeds"]), (2, 3))
    self.assertAllClose(s["step_speedup_seeds"]["mean"], 3.0)
    self.assertAllClose(s["step_speedup_seeds"]["std"], 1.0)
    self.assertAllClose(s["compute_speedup_seeds"]["mean"], 1.0)
    self.assertAllClose(s["compute_speedup_seeds"]["std"], 1 / 3)
    # Final accuracies .7, .7, .5: deviations 1/15, 1/15, -2/15.
    self.assertAllClose(s["final_accuracy"]["mean"], 1.9 / 3)
    self.assertAllClose(s["final_accuracy"]["std"], math.sqrt(2) / 15)
    self.assertAllClose(s["corrupted_share"]["mean"], 0.2)
    self.assertEqual(s["final_recall_at_1"], {"mean": None, "std": None})
    self.assertAllClose(s["flops_per_step_ratio"], 3.0)
    # 40 examples per step: 50 steps of budget, 40 to the target, over a split of 100.
    self.assertEqual((s["examples_read"], s["examples_read_to_target"]), (2000, 1600))
    self.assertAllClose(s["reads_per_example"], 20.0)
    self.assertAllClose(s["reads_per_example_to_target"], 16.0)

  def test_keys_are_those_of_the_examples_version(self):
    keys = {"target", "uniform_steps", "uniform_flops", "steps", "flops", "step_speedup",
            "compute_speedup", "step_speedup_seeds", "compute_speedup_seeds",
            "seeds_reaching", "seeds", "final_accuracy", "final_recall_at_1",
            "corrupted_share", "flops_per_step_ratio"}
    summary = efficiency.summarize(METHOD, UNIFORM)
    self.assertContainsSubset(keys, summary)
    self.assertEqual(set(summary) - keys, {"examples_read", "examples_read_to_target",
                                           "reads_per_example", "reads_per_example_to_target"})

  def test_a_method_that_never_reaches_the_target(self):
    slow = [_curve([0.0, 0.1, 0.2, 0.3, 0.4, 0.59], super_batch_size=8)] * 2
    s = efficiency.summarize(slow, UNIFORM)
    for key in ("steps", "flops", "step_speedup", "compute_speedup", "examples_read_to_target",
                "reads_per_example", "reads_per_example_to_target"):
      self.assertIsNone(s[key], key)
    self.assertEqual(s["seeds_reaching"], 0)
    self.assertEqual(s["step_speedup_seeds"], {"mean": None, "std": None})
    self.assertEqual(s["examples_read"], 400)

  def test_one_seed_reaching_while_the_mean_does_not(self):
    runs = [_curve([0.0, 0.1, 0.2, 0.3, 0.4, 0.7]), _curve([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])]
    s = efficiency.summarize(runs, UNIFORM)
    self.assertIsNone(s["step_speedup"])
    self.assertEqual(s["seeds_reaching"], 1)
    self.assertAllClose(s["step_speedup_seeds"], {"mean": 40 / 50, "std": 0.0})

  def test_uniform_against_itself(self):
    s = efficiency.summarize(UNIFORM, UNIFORM)
    self.assertAllClose((s["step_speedup"], s["compute_speedup"]), (1.0, 1.0))
    # Seed 0 reaches 0.6 at step 40 (0.7), seed 1 at step 50.
    self.assertAllClose(s["step_speedup_seeds"]["mean"], (1.0 + 0.8) / 2)
    self.assertIsNone(s["examples_read"])

  def test_optional_fields_missing(self):
    bare = [{"steps": STEPS, "flops": STEPS, "accuracy": [0.0, 0.2, 0.4, 0.5, 0.6, 0.6]}]
    s = efficiency.summarize(bare, bare)
    for key in ("final_recall_at_1", "corrupted_share"):
      self.assertEqual(s[key], {"mean": None, "std": None})
    for key in ("flops_per_step_ratio", "examples_read", "reads_per_example"):
      self.assertIsNone(s[key])
    s = efficiency.summarize([dict(bare[0], recall_at_1=[0.0] * 5 + [0.25])], bare)
    self.assertEqual(s["final_recall_at_1"], {"mean": 0.25, "std": 0.0})
    s = efficiency.summarize([dict(bare[0], super_batch_size=3)], bare)
    self.assertEqual((s["examples_read"], s["examples_read_to_target"]), (150, 120))
    self.assertIsNone(s["reads_per_example"])


class ExamplesReadTest(tf.test.TestCase, parameterized.TestCase):

  def test_steps_times_super_batch_size(self):
    self.assertEqual(efficiency.examples_read(100, 40), 4000)
    self.assertEqual(efficiency.examples_read(np.int64(3), 8), 24)
    self.assertAllEqual(efficiency.examples_read([0, 10, 20], 40), [0, 400, 800])

  @parameterized.parameters(
      ((10, 0), "Received: super_batch_size=0"),
      ((10, 2.5), "Received: super_batch_size=2.5"),
      ((10, True), "Received: super_batch_size=True"),
      ((-1, 8), "Received: steps=-1"),
      ((1.5, 8), "Received: steps=1.5"),
      (([0, -10], 8), r"Received: steps=\[0, -10\]"),
  )
  def test_errors(self, args, message):
    with self.assertRaisesRegex(ValueError, message):
      efficiency.examples_read(*args)


class PlateauTest(tf.test.TestCase, parameterized.TestCase):

  EVERY_TEN = list(range(0, 101, 10))

  def test_rising_curve_has_not_plateaued(self):
    got = efficiency.plateau(self.EVERY_TEN, [s / 100 for s in self.EVERY_TEN])
    # Window after step 75: best 1.0 there against 0.7 (step 70) before.
    self.assertFalse(got.plateaued)
    self.assertEqual((got.best_step, got.window_start), (100, 75.0))
    self.assertAllClose((got.best, got.gain_last_window), (1.0, 0.3))

  def test_flat_curve_has_plateaued(self):
    got = efficiency.plateau(self.EVERY_TEN, [0.0] + [0.5] * 10)
    self.assertTrue(got.plateaued)
    self.assertEqual((got.best_step, got.best, got.gain_last_window), (10, 0.5, 0.0))

  def test_noisy_flat_curve_has_plateaued(self):
    accuracy = [0.0, 0.50, 0.504, 0.497, 0.503, 0.499, 0.502, 0.496, 0.505, 0.498, 0.501]
    got = efficiency.plateau(self.EVERY_TEN, accuracy)
    self.assertTrue(got.plateaued)
    self.assertEqual((got.best_step, got.best), (80, 0.505))
    self.assertAllClose(got.gain_last_window, 0.505 - 0.504)
    # A late spike above the tolerance is a gain.
    accuracy[9] = 0.52
    got = efficiency.plateau(self.EVERY_TEN, accuracy)
    self.assertFalse(got.plateaued)
    self.assertAllClose(got.gain_last_window, 0.016)

  def test_a_curve_that_fell_has_plateaued(self):
    got = efficiency.plateau(self.EVERY_TEN, [0.0, 0.3, 0.6] + [0.5] * 8)
    self.assertTrue(got.plateaued)
    self.assertEqual(got.best_step, 20)
    self.assertAllClose(got.gain_last_window, -0.1)

  def test_step_zero_counts_in_neither_part(self):
    # Accuracy before training above everything after it: the best is still after step 0.
    got = efficiency.plateau([0, 10, 20, 30, 40], [0.9, 0.1, 0.2, 0.3, 0.35])
    self.assertEqual((got.best_step, got.best), (40, 0.35))
    self.assertAllClose(got.gain_last_window, 0.05)

  @parameterized.parameters((0.25, False), (0.2500001, True))
  def test_the_gain_must_stay_below_the_tolerance(self, tolerance, plateaued):
    got = efficiency.plateau([0, 1, 2, 3, 4], [0.0, 0.25, 0.5, 0.5, 0.75], tolerance=tolerance)
    self.assertEqual(got.gain_last_window, 0.25)
    self.assertEqual(got.plateaued, plateaued)

  def test_window_and_offset_steps(self):
    got = efficiency.plateau(self.EVERY_TEN, [s / 100 for s in self.EVERY_TEN], window=0.5)
    self.assertEqual(got.window_start, 50.0)
    self.assertAllClose(got.gain_last_window, 0.5)
    steps = [100 + s for s in self.EVERY_TEN]
    got = efficiency.plateau(steps, [0.0] + [0.1] * 7 + [0.2] * 3)
    self.assertEqual(got.window_start, 175.0)
    self.assertAllClose(got.gain_last_window, 0.1)
    self.assertEqual(got.best_step, 180)

  @parameterized.parameters(
      (([0, 10, 20], [0.0, 0.1]), {}, "Received: 3 steps and 2 accuracy"),
      (([0, 20, 10, 30], [0.0] * 4), {},
       r"steps must increase.*steps\[2\]=10 is not after steps\[1\]=20\. "
       r"Received: steps=\[0, 20, 10, 30\]"),
      (([0, 10, 20, 30], [0.0] * 4), {"window": 0}, "Received: window=0"),
      (([0, 10, 20, 30], [0.0] * 4), {"window": 1.0}, "Received: window=1.0"),
      (([0, 10, 20, 30], [0.0] * 4), {"tolerance": 0}, "Received: tolerance=0"),
      (([0, 10, 20, 30], [0.0] * 4), {"tolerance": -0.1}, "Received: tolerance=-0.1"),
      (([0, 100], [0.0, 0.5]), {}, r"Evaluate more often. Received: steps=\[0, 100\]"),
      (([0, 10, 100], [0.0, 0.1, 0.5]), {"window": 0.95}, "Evaluate more often"),
  )
  def test_errors(self, args, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      efficiency.plateau(*args, **kwargs)


class ErrorsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("no_runs", [], UNIFORM, "non-empty list of curves.*Received: runs=\\[\\]"),
      ("no_uniform_runs", METHOD, [], "Received: uniform_runs=\\[\\]"),
      ("one_dict", METHOD[0], UNIFORM, "Expected runs to be a non-empty list"),
      ("missing_flops", [{"steps": [0, 1], "accuracy": [0, 1]}], UNIFORM,
       "to have 'flops'.*Received: runs\\[0\\] with keys \\['accuracy', 'steps'\\]"),
      ("short_accuracy", [dict(METHOD[0], accuracy=[0.0, 0.1])], UNIFORM,
       "Received: 6 steps and 2 accuracy"),
      ("short_uniform_flops", METHOD, [dict(UNIFORM[0], flops=[0])],
       "Received: 6 steps and 1 flops"),
      ("empty_steps", [{"steps": [], "flops": [], "accuracy": []}], UNIFORM,
       "Received: runs\\[0\\] with steps=\\[\\]"),
      ("unequal_steps", [METHOD[0], dict(METHOD[1], steps=[0, 5, 10, 15, 20, 25])], UNIFORM,
       "share their evaluation steps"),
      ("unequal_uniform_steps", METHOD, [UNIFORM[0], dict(UNIFORM[1], steps=[0, 1, 2, 3, 4, 5])],
       "share their evaluation steps"),
      ("unequal_super_batch_size", [METHOD[0], dict(METHOD[1], super_batch_size=32)], UNIFORM,
       "share super_batch_size. Received: super_batch_size \\[40, 32\\]"),
      ("bad_dataset_size", [dict(METHOD[0], dataset_size=0)], UNIFORM,
       "Received: dataset_size=0"),
      ("decreasing_steps", [dict(METHOD[0], steps=[0, 10, 20, 15, 40, 50])], UNIFORM,
       r"steps must increase.*steps\[3\]=15 is not after steps\[2\]=20\. "
       r"Received: runs\[0\]\['steps'\]=\[0, 10, 20, 15, 40, 50\]"),
      ("repeated_uniform_steps", METHOD,
       [UNIFORM[0], dict(UNIFORM[1], steps=[0, 10, 20, 30, 30, 50])],
       r"steps\[4\]=30 is not after steps\[3\]=30\. "
       r"Received: uniform_runs\[1\]\['steps'\]=\[0, 10, 20, 30, 30, 50\]"),
      ("only_step_zero", METHOD, [{"steps": [0], "flops": [0], "accuracy": [0.5]}],
       "an evaluation after step 0"),
  )
  def test_summarize(self, runs, uniform_runs, message):
    with self.assertRaisesRegex(ValueError, message):
      efficiency.summarize(runs, uniform_runs)

  def test_first_reach_and_mean_curve(self):
    with self.assertRaisesRegex(ValueError, "Received: 3 xs and 2 values"):
      efficiency.first_reach([0, 1, 2], [0.0, 1.0], 0.5)
    with self.assertRaisesRegex(ValueError, "Received: runs=\\[\\]"):
      efficiency.mean_curve([])
    with self.assertRaisesRegex(ValueError, "to have 'recall_at_1'"):
      efficiency.mean_curve(UNIFORM, "recall_at_1")
    with self.assertRaisesRegex(ValueError, r"steps\[1\]=0 is not after steps\[0\]=0\. "
                                r"Received: runs\[0\]\['steps'\]"):
      efficiency.mean_curve([{"steps": [0, 0, 10], "accuracy": [0.0, 0.1, 0.2]}])


if __name__ == "__main__":
  tf.test.main()
