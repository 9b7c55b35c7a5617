"""examples.lib.harness.run (curves, FLOP accounting, cached reference, errors) and the reference
recipe (examples.lib.reference), on a tiny captions config."""

import os
import shutil
import tempfile

from absl.testing import parameterized
import tensorflow as tf

from examples.lib import harness
from examples.lib import reference as reference_lib
from examples.lib import tasks
from tfjest import datasets

_CONFIG = datasets.make_config(noise=0.5, web_size=800, curated_size=120, test_size=60)


class RunTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()
    cls.task = tasks.CaptionsTask(_CONFIG, cls.data_dir)
    cls.reference = reference_lib.train(cls.task, epochs=1, batch_size=16)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.data_dir, ignore_errors=True)
    super().tearDownClass()

  def _run(self, reference_cache=None, **kwargs):
    args = dict(batch_size=8, filter_ratio=0.75, steps=6, eval_every=3, seed=0, num_chunks=2)
    args.update(kwargs)
    return harness.run(harness.RunConfig(**args), self.task, reference=self.reference,
                       reference_cache=reference_cache)

  _plain_jest = None

  def _jest(self):
    """The plain JEST run (live reference, learner scoring), run once for the tests that
    compare a variant with it: a run is deterministic for its config and seed."""
    if RunTest._plain_jest is None:
      RunTest._plain_jest = self._run(method="jest")
    return RunTest._plain_jest

  @parameterized.parameters("jest", "uniform")
  def test_curve(self, method):
    result = self._jest() if method == "jest" else self._run(method=method)
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
    # Examples read: a selecting step reads N = 32 candidates; uniform counts as reading b = 8
    # (its random 8 of every 32 of a shuffled stream), though its pipeline reads 32.
    per_step = 8 if method == "uniform" else 32
    self.assertEqual(result["super_batch_size"], per_step)
    self.assertEqual(result["examples_read"], 6 * per_step)
    self.assertEqual(result["dataset_size"], 800)
    self.assertEqual(result["selection_stats"]["read"], 6 * 32)

  def test_cached_reference_selects_as_the_live_one_for_free(self):
    path = os.path.join(self.get_temp_dir(), "reference_cache")
    cache = reference_lib.cached(self.reference, self.task, path)
    self.assertEqual(cache.num_examples, 800)
    live = self._jest()
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

  def test_cache_is_reused_for_the_same_reference_and_rebuilt_for_another(self):
    path = os.path.join(self.get_temp_dir(), "reused_cache")
    # Other weights: the reference's, each shifted (no second reference to train).
    other = type(self.reference).from_config(self.reference.get_config())
    other.build_from_config(self.reference.get_build_config())
    other.set_weights([w + 0.01 if w.dtype.kind == "f" else w
                       for w in self.reference.get_weights()])
    stale = reference_lib.cached(other, self.task, path)
    # run() refuses a cache of other weights than its reference ...
    with self.assertRaisesRegex(ValueError, "other reference weights"):
      self._run(method="jest", reference_cache=stale)
    # ... and the recipe computes it again for this reference, then reuses it.
    fresh = reference_lib.cached(self.reference, self.task, path)
    fresh.check_reference(self.reference)
    self.assertFalse(fresh.reused)
    written = {name: os.path.getmtime(os.path.join(path, name)) for name in os.listdir(path)}
    again = reference_lib.cached(self.reference, self.task, path)
    again.check_reference(self.reference)
    self.assertTrue(again.reused)
    self.assertEqual(
        {name: os.path.getmtime(os.path.join(path, name)) for name in os.listdir(path)},
        written)

  def test_proxy_scores_for_the_learner_at_a_fraction_of_the_cost(self):
    full = self._jest()
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

  def test_cheaper_learner_scoring_and_multi_resolution_training(self):
    full = self._jest()
    viewed = self._run(method="jest", scoring_resolution=16)
    mixed = self._run(method="jest", scoring_resolution=16, train_resolutions=(32, 16))
    cost, full_cost, mixed_cost = (viewed["flops_per_step"], full["flops_per_step"],
                                   mixed["flops_per_step"])
    # A quarter of the pixels: the image tower's convolutions cost a quarter; the text tower
    # and the head do not shrink.
    self.assertLess(cost["learner_scoring"], 0.6 * full_cost["learner_scoring"])
    self.assertGreater(cost["learner_scoring"], 0.25 * full_cost["learner_scoring"])
    self.assertEqual(cost["training"], full_cost["training"])
    # Training half of the batches at 16 x 16: the mean of the two training costs, which is
    # what scoring N at 16 costs per example times 3 b, averaged with full training.
    low_training = cost["learner_scoring"] / 32 * 3 * 8
    self.assertAllClose(mixed_cost["training"], (full_cost["training"] + low_training) / 2,
                        rtol=1e-6)
    self.assertAllClose(mixed_cost["total"], sum(v for k, v in mixed_cost.items()
                                                 if k != "total"))
    self.assertEqual(mixed["train_resolutions"], (32, 16))
    self.assertGreaterEqual(mixed["selection_stats"]["selected"], 6 * 8)
    with self.assertRaisesRegex(ValueError, r"does not read the learner.*"
                                            r"Received: scoring_resolution=16"):
      self._run(method="jest", score="easy_reference", scoring_resolution=16)

  def test_oracle_clean_selects_no_corrupted_example(self):
    result = self._run(method="uniform", oracle_clean=True)
    self.assertEqual(result["method"], "oracle_clean")
    self.assertEqual(result["corrupted_share"][-1], 0.0)

  def test_reference_saved_and_loaded(self):
    path = os.path.join(self.get_temp_dir(), "reference.keras")
    reference_lib.save(self.reference, path)
    loaded = reference_lib.load(path)
    self.assertFalse(loaded.trainable)
    self.assertEqual(self.task.evaluate(loaded), self.task.evaluate(self.reference))

  @parameterized.parameters(
      (dict(method="random"), r"Expected method.*Received: method='random'"),
      (dict(score="best"), r"Expected score.*Received: score='best'"),
      (dict(steps=7), r"steps must be a positive multiple of eval_every=3.*Received: steps=7"),
      (dict(eval_every=0), r"eval_every must be a positive integer.*Received: eval_every=0"),
      (dict(method="jest", oracle_clean=True), r"oracle_clean.*Received: oracle_clean=True"),
  )
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      self._run(**kwargs)

  def test_unregistered_noise_needs_a_config(self):
    with self.assertRaisesRegex(ValueError, r"Received: noise=0\.4"):
      tasks.make_task("captions", noise=0.4)


if __name__ == "__main__":
  tf.test.main()
