"""experiment.run (curves, FLOP accounting, cached reference, errors) and speedup's measures."""

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
    cost = result["flops_per_step"]
    per_step = cost["total"]
    self.assertEqual(result["flops"], [0, 3 * per_step, 6 * per_step])
    self.assertAllClose(per_step, sum(v for k, v in cost.items() if k != "total"))
    self.assertGreater(cost["training"], 0)
    self.assertEqual(cost["proxy_training"], 0)
    if method == "uniform":
      # Uniform pays training and a few ops per candidate for its keys, no forward pass.
      self.assertEqual(cost["learner_scoring"], 0)
      self.assertEqual(cost["reference_scoring"], 0)
      self.assertLess(cost["selection"], 0.01 * cost["training"])
    else:
      # Scoring N = 32 candidates with each model: about N / (3 b) = 4/3 of training.
      self.assertAllClose(cost["learner_scoring"], cost["training"] * 32 / (3 * 8), rtol=1e-6)
      self.assertGreater(cost["reference_scoring"], 0)
      self.assertGreater(cost["selection"], 0)
    self.assertLen(result["accuracy"], 3)
    self.assertLen(result["recall_at_1"], 3)
    self.assertIsNone(result["corrupted_share"][0])
    for share in result["corrupted_share"][1:]:
      self.assertBetween(share, 0.0, 1.0)
    self.assertAllClose(sum(result["corruption_shares"].values()), 1.0)
    self.assertGreaterEqual(result["selection_stats"]["selected"], 6 * 8)

  def test_cached_reference_selects_as_the_live_one_for_free(self):
    path = self.get_temp_dir() + "/reference_cache"
    lines = []
    cache = experiment.cache_reference(self.reference, path, config=_CONFIG,
                                       data_dir=self.data_dir, log=lines.append)
    self.assertEqual(cache.num_examples, 800)
    live = self._run(method="jest")
    cached = self._run(method="jest", reference_cache=cache)
    self.assertFalse(live["reference_cached"])
    self.assertTrue(cached["reference_cached"])
    # Same selections: same corruption counts and the same learner after training.
    self.assertEqual(cached["corruption_shares"], live["corruption_shares"])
    self.assertAllClose(cached["accuracy"], live["accuracy"])
    self.assertAllClose(cached["selection_stats"]["batch_score"],
                        live["selection_stats"]["batch_score"], rtol=1e-4)
    # ... and the reference costs nothing per step.
    self.assertGreater(live["flops_per_step"]["reference_scoring"], 0)
    self.assertEqual(cached["flops_per_step"]["reference_scoring"], 0)
    self.assertAllClose(cached["flops_per_step"]["total"],
                        live["flops_per_step"]["total"] -
                        live["flops_per_step"]["reference_scoring"])
    # A second call reuses the cache; a cache path also works.
    experiment.cache_reference(self.reference, path, config=_CONFIG, data_dir=self.data_dir,
                               log=lines.append)
    self.assertIn("reusing", lines[-1])
    by_path = self._run(method="jest", reference_cache=path, steps=3)
    self.assertTrue(by_path["reference_cached"])

  def test_cache_of_another_reference_is_recomputed_or_refused(self):
    path = self.get_temp_dir() + "/stale_cache"
    other = experiment.train_reference(config=_CONFIG, data_dir=self.data_dir, epochs=1,
                                       batch_size=16, seed=1)
    stale = experiment.cache_reference(other, path, config=_CONFIG, data_dir=self.data_dir)
    # run() refuses a cache of other weights than its reference ...
    with self.assertRaisesRegex(ValueError, "other reference weights"):
      self._run(method="jest", reference_cache=stale)
    # ... and cache_reference computes it again for this reference.
    lines = []
    fresh = experiment.cache_reference(self.reference, path, config=_CONFIG,
                                       data_dir=self.data_dir, log=lines.append)
    self.assertIn("recomputing", lines[0])
    fresh.check_reference(self.reference)

  def test_proxy_scores_for_the_learner_at_a_fraction_of_the_cost(self):
    full = self._run(method="jest")
    proxied = self._run(method="jest", proxy_filters=(4, 8, 16), proxy_width=16)
    self.assertEqual(proxied["proxy"], {"filters": [4, 8, 16], "width": 16})
    cost, full_cost = proxied["flops_per_step"], full["flops_per_step"]
    self.assertEqual(cost["training"], full_cost["training"])
    # The proxy's forward pass costs well under half the learner's; it also trains on b.
    self.assertLess(cost["learner_scoring"], 0.5 * full_cost["learner_scoring"])
    self.assertAllClose(cost["proxy_training"], cost["learner_scoring"] * 3 * 8 / 32)
    self.assertGreaterEqual(proxied["selection_stats"]["selected"], 6 * 8)
    with self.assertRaisesRegex(ValueError, r"does not read the learner.*"
                                            r"Received: proxy_filters=\(4, 8, 16\)"):
      self._run(method="jest", score="easy_reference", proxy_filters=(4, 8, 16))

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
