"""experiment.run (curves, FLOP accounting, errors) and speedup's JEST_SPEC section 9 measures."""

import shutil
import tempfile

from absl.testing import parameterized
import tensorflow as tf

from examples import captions_world as cw
from examples import experiment
from examples import speedup
from tfjest import datasets

_CONFIG = datasets.make_config(noise=0.5, web_size=800, curated_size=120, test_size=60)


def _curve(accuracy, cost=10, eval_every=10, corrupted=0.5):
  steps = [i * eval_every for i in range(len(accuracy))]
  return {"steps": steps, "flops": [s * cost for s in steps], "accuracy": list(accuracy),
          "recall_at_1": list(accuracy), "corrupted_share": [None] + [corrupted] * (
              len(accuracy) - 1), "flops_per_step": {"total": cost}}


class FlopsTest(tf.test.TestCase, parameterized.TestCase):

  def test_forward_flops_count_every_kernel(self):
    model = cw.DualEncoder(vocab_size=100, width=64)
    # Image tower: three stride-2 convolutions and a projection; text tower: a width-3
    # convolution over 32 tokens and a projection (2 FLOPs per multiply-add).
    image = 2 * (16 * 16 * 3 * 3 * 3 * 16 + 8 * 8 * 3 * 3 * 16 * 32 + 4 * 4 * 3 * 3 * 32 * 64 +
                 4 * 4 * 64 * 64)
    text = 2 * (32 * 3 * 32 * 64 + 64 * 64)
    self.assertEqual(experiment.forward_flops_per_example(model), image + text)
    classifier = cw.Classifier()
    self.assertEqual(experiment.forward_flops_per_example(classifier), image + 2 * 64 * 40)

  @parameterized.parameters(
      ("uniform", "learnability", 0, 0, 0),
      ("jest", "learnability", 1, 1, 4),
      ("jest", "hard_learner", 1, 0, 2),
      ("jest", "easy_reference", 0, 1, 2),
      ("independent", "learnability", 1, 1, 0),
  )
  def test_step_flops_follow_the_spec(self, method, score, learner, reference, selection):
    b, f, fl, fr, d = 64, 0.8, 1000, 3000, 16
    n = 320
    flops = experiment.step_flops(method=method, score=score, batch_size=b, filter_ratio=f,
                                  learner_flops=fl, reference_flops=fr, width=d)
    self.assertEqual(flops["train"], 3 * fl * b)
    self.assertEqual(flops["learner_scoring"], learner * fl * n)
    self.assertEqual(flops["reference_scoring"], reference * fr * n)
    self.assertEqual(flops["selection"], selection * n * b * d)
    self.assertEqual(flops["total"], sum(v for k, v in flops.items() if k != "total"))


class SpeedupTest(tf.test.TestCase):

  def test_first_reach_skips_step_zero(self):
    self.assertEqual(speedup.first_reach([0, 10, 20], [0.9, 0.1, 0.5], 0.5), 20)
    self.assertIsNone(speedup.first_reach([0, 10, 20], [0.9, 0.1, 0.4], 0.5))

  def test_summary_against_uniform(self):
    uniform = [_curve([0.0, 0.1, 0.2, 0.3, 0.4]), _curve([0.0, 0.1, 0.2, 0.2, 0.2])]
    # Uniform's mean curve peaks at 0.3 at step 40 (the target) ...
    self.assertAllClose(speedup.target(uniform), 0.3)
    # ... which this method reaches at step 20 on its mean, one seed at 10, one at 20, at four
    # times uniform's cost per step.
    fast = [_curve([0.0, 0.3, 0.4, 0.4, 0.4], cost=40, corrupted=0.2),
            _curve([0.0, 0.2, 0.3, 0.4, 0.5], cost=40, corrupted=0.4)]
    summary = speedup.summarize(fast, uniform)
    self.assertEqual(summary["uniform_steps"], 40)
    self.assertEqual(summary["steps"], 20)
    self.assertAllClose(summary["step_speedup"], 2.0)
    self.assertAllClose(summary["compute_speedup"], 0.5)
    self.assertAllClose(summary["step_speedup_seeds"]["mean"], (4.0 + 2.0) / 2)
    self.assertAllClose(summary["step_speedup_seeds"]["std"], 1.0)
    self.assertEqual(summary["seeds_reaching"], 2)
    self.assertAllClose(summary["final_accuracy"]["mean"], 0.45)
    self.assertAllClose(summary["corrupted_share"]["mean"], 0.3)
    self.assertAllClose(summary["flops_per_step_ratio"], 4.0)
    slow = [_curve([0.0, 0.1, 0.1, 0.1, 0.2])] * 2
    summary = speedup.summarize(slow, uniform)
    self.assertIsNone(summary["step_speedup"])
    self.assertEqual(summary["seeds_reaching"], 0)

  def test_mean_curve_needs_shared_steps(self):
    with self.assertRaisesRegex(ValueError, "share their evaluation steps"):
      speedup.mean_curve([_curve([0.0, 0.1]), _curve([0.0, 0.1], eval_every=5)])


class RunTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()
    cls.reference = experiment.train_reference(config=_CONFIG, data_dir=cls.data_dir, epochs=1,
                                               batch_size=16)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.data_dir, ignore_errors=True)
    super().tearDownClass()

  def _run(self, **kwargs):
    args = dict(batch_size=8, filter_ratio=0.75, steps=6, eval_every=3, seed=0, config=_CONFIG,
                data_dir=self.data_dir, reference=self.reference, num_chunks=2)
    args.update(kwargs)
    return experiment.run(**args)

  @parameterized.parameters("jest", "uniform")
  def test_curve(self, method):
    result = self._run(method=method)
    self.assertEqual(result["steps"], [0, 3, 6])
    per_step = result["flops_per_step"]["total"]
    self.assertEqual(result["flops"], [0, 3 * per_step, 6 * per_step])
    if method == "uniform":
      self.assertEqual(per_step, result["flops_per_step"]["train"])
    else:
      self.assertGreater(per_step, result["flops_per_step"]["train"])
    self.assertLen(result["accuracy"], 3)
    self.assertLen(result["recall_at_1"], 3)
    self.assertIsNone(result["corrupted_share"][0])
    for share in result["corrupted_share"][1:]:
      self.assertBetween(share, 0.0, 1.0)
    self.assertAllClose(sum(result["corruption_shares"].values()), 1.0)
    self.assertGreaterEqual(result["selection_stats"]["selected"], 6 * 8)

  def test_oracle_clean_selects_no_corrupted_example(self):
    result = self._run(method="uniform", oracle_clean=True)
    self.assertEqual(result["method"], "oracle_clean")
    self.assertEqual(result["corrupted_share"][-1], 0.0)

  def test_reference_saved_and_loaded(self):
    path = self.get_temp_dir() + "/reference.keras"
    experiment.save_reference(self.reference, path)
    loaded = experiment.load_reference(path)
    self.assertFalse(loaded.trainable)
    world = experiment.load_world(_CONFIG, self.data_dir)
    self.assertEqual(cw.evaluate(loaded, world.test, world.tokenizer),
                     cw.evaluate(self.reference, world.test, world.tokenizer))

  @parameterized.parameters(
      (dict(method="random"), r"Unknown method.*Received: method='random'"),
      (dict(score="best"), r"Unknown score.*Received: score='best'"),
      (dict(steps=7), r"steps must be a positive multiple of eval_every=3.*Received: steps=7"),
      (dict(eval_every=0), r"eval_every must be a positive integer.*Received: eval_every=0"),
      (dict(method="jest", oracle_clean=True), r"oracle_clean.*Received: oracle_clean=True"),
  )
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      self._run(**kwargs)

  def test_unregistered_noise_needs_a_config(self):
    with self.assertRaisesRegex(ValueError, r"Received: noise=0\.4"):
      experiment.config_for(0.4)
    self.assertEqual(experiment.config_for(0.5), "noise_0.5")


if __name__ == "__main__":
  tf.test.main()
