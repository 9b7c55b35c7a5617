"""cache_reference(..., reuse=True): load a cache that holds exactly this, else build it again."""

import os
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing


def _with_image_changed(dataset, example_id):
  """The same stream with one example's image features shifted (its id unchanged)."""
  def change(element):
    shift = tf.cast(tf.equal(element["id"], example_id), tf.float32)
    return dict(element, image=element["image"] + shift)
  return dataset.map(change)


def _selected_ids(dataset, selector):
  return np.concatenate([testing.ids(batch) for batch in dataset.apply(selector)])


class CacheReuseTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.reference = testing.dual_encoder(1, "reference")
    self.stream = testing.stream("contrastive", n=96)
    self.path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "cache")

  def _cache(self, reference=None, dataset=None, **kwargs):
    reference = self.reference if reference is None else reference
    dataset = self.stream if dataset is None else dataset
    return tfjest.cache_reference(reference, dataset, self.path, id_key="id", batch_size=32,
                                  reuse=True, **kwargs)

  def test_built_when_absent_then_reused_without_calling_the_reference(self):
    built = self._cache()
    self.assertFalse(built.reused)
    self.assertEqual(built.rebuild_reason, "no reference cache at this path")
    with mock.patch.object(self.reference, "call", side_effect=AssertionError("called")):
      with self.assertLogs("absl", "INFO") as logs:
        reused = self._cache()
    self.assertTrue(reused.reused)
    self.assertIsNone(reused.rebuild_reason)
    self.assertRegex(logs.output[-1], r"reused the reference cache at .* \(96 examples\)")
    self.assertEqual(reused.metadata, built.metadata)
    # The same stream reordered and re-batched holds the same examples.
    shuffled = self.stream.shuffle(96, seed=3, reshuffle_each_iteration=False)
    with mock.patch.object(self.reference, "call", side_effect=AssertionError("called")):
      self.assertTrue(self._cache(dataset=shuffled).reused)

  def test_reused_cache_selects_as_the_fresh_one(self):
    fresh = self._cache()
    reused = self._cache()
    self.assertTrue(reused.reused)
    learner = testing.dual_encoder(0, "learner")
    kwargs = dict(learner=learner, batch_size=8, super_batch_size=32, num_chunks=2, seed=5)
    with_fresh = tfjest.select(reference_cache=fresh, id_key="id", **kwargs)
    with_reused = tfjest.select(reference_cache=reused, id_key="id", **kwargs)
    live = tfjest.select(reference=self.reference, **kwargs)
    expected = _selected_ids(self.stream, with_fresh)
    self.assertLen(expected, 24)
    self.assertAllEqual(_selected_ids(self.stream, with_reused), expected)
    self.assertAllEqual(_selected_ids(self.stream, live), expected)

  def test_rebuilt_for_other_reference_weights(self):
    self._cache()
    other = testing.dual_encoder(1, "reference")
    weights = other.get_weights()
    weights[0] = weights[0] + 1e-4  # one kernel, barely
    other.set_weights(weights)
    cache = self._cache(reference=other)
    self.assertFalse(cache.reused)
    self.assertRegex(cache.rebuild_reason, "reference weights differ")
    cache.check_reference(other)  # rebuilt for the new weights
    self.assertTrue(self._cache(reference=other).reused)
    self.assertRegex(self._cache().rebuild_reason, "reference weights differ")

  @parameterized.named_parameters(
      ("fewer_ids", lambda d: d.take(64),
       "other example ids in input shard 0 \\(64 examples, the reference cache 96\\)"),
      ("other_ids", lambda d: d.map(lambda e: dict(e, id=e["id"] + 1000)),
       "other example ids in input shard 0 \\(96 examples, the reference cache 96\\)"),
      ("one_input_changed", lambda d: _with_image_changed(d, 17), "inputs of some examples"),
      ("other_inputs", lambda d: testing.stream("contrastive", n=96, seed=1),
       "inputs of some examples"),
      ("another_structure", lambda d: d.map(lambda e: dict(e, extra=e["text"])),
       "another structure"),
  )
  def test_rebuilt_for_another_dataset(self, change, reason):
    self._cache()
    dataset = change(self.stream)
    cache = self._cache(dataset=dataset)
    self.assertFalse(cache.reused)
    self.assertRegex(cache.rebuild_reason, reason)
    # The rebuilt cache is exactly that dataset's.
    self.assertTrue(self._cache(dataset=dataset).reused)

  def test_classifier_labels_are_inputs(self):
    reference = testing.classifier(1, "reference")
    stream = testing.stream("classification", n=64)
    self.assertFalse(self._cache(reference=reference, dataset=stream).reused)
    self.assertTrue(self._cache(reference=reference, dataset=stream).reused)
    relabelled = stream.map(lambda x, y: (x, (y + 1) % testing.CLASSES))
    cache = self._cache(reference=reference, dataset=relabelled)
    self.assertFalse(cache.reused)
    self.assertRegex(cache.rebuild_reason, "inputs of some examples")

  def test_rebuilt_over_an_unreadable_cache(self):
    os.makedirs(self.path)
    with open(os.path.join(self.path, "metadata.json"), "w") as f:
      f.write("{not json")
    cache = self._cache()
    self.assertFalse(cache.reused)
    self.assertRegex(cache.rebuild_reason, "unreadable")
    self.assertTrue(self._cache().reused)

  def test_without_reuse_an_existing_cache_is_still_an_error(self):
    self._cache()
    with self.assertRaisesRegex(ValueError, "pass overwrite=True"):
      tfjest.cache_reference(self.reference, self.stream, self.path, id_key="id")
    with self.assertRaisesRegex(ValueError, "Received: reuse='yes'"):
      tfjest.cache_reference(self.reference, self.stream, self.path, id_key="id", reuse="yes")

  def test_duplicate_ids_are_an_error_as_when_building(self):
    self._cache()
    duplicated = self.stream.concatenate(_with_image_changed(self.stream.take(4), 2))
    with self.assertRaisesRegex(ValueError, "must be unique.*input shard 0.*Received: id=0"):
      self._cache(dataset=duplicated)


if __name__ == "__main__":
  tf.test.main()
