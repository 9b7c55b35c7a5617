"""`tfjest.epoch_subsets`: a fresh uniform subset of the data each epoch, reproducible."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest


def _epochs(size, ratio, seed, epochs):
  ds = tf.data.Dataset.range(size).apply(tfjest.epoch_subsets(ratio, seed=seed, epochs=epochs))
  values = [int(v) for v in ds]
  keep = max(1, int(round(ratio * size)))
  return [values[i * keep:(i + 1) * keep] for i in range(epochs)], values


class EpochSubsetsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((10, 0.3), (50, 0.2), (7, 1.0), (5, 0.01))
  def test_each_epoch_keeps_its_share_without_repeats_in_stream_order(self, size, ratio):
    per_epoch, values = _epochs(size, ratio, seed=0, epochs=3)
    keep = max(1, int(round(ratio * size)))
    self.assertLen(values, 3 * keep)
    for epoch in per_epoch:
      self.assertLen(set(epoch), keep)
      self.assertEqual(epoch, sorted(epoch))  # the dataset's own order within an epoch

  def test_same_seed_same_subsets_other_seed_other_subsets(self):
    self.assertEqual(_epochs(40, 0.25, 3, 4)[1], _epochs(40, 0.25, 3, 4)[1])
    self.assertNotEqual(_epochs(40, 0.25, 3, 4)[1], _epochs(40, 0.25, 4, 4)[1])

  def test_subsets_are_uniform_over_many_epochs(self):
    # 400 epochs of 5 of 20: each element is kept 100 times in expectation, standard
    # deviation sqrt(400 * 0.25 * 0.75) ~ 8.7; 5 standard deviations is the tolerance.
    _, values = _epochs(20, 0.25, seed=0, epochs=400)
    counts = collections.Counter(values)
    self.assertLen(counts, 20)
    self.assertLess(max(abs(c - 100) for c in counts.values()), 44)

  def test_epochs_differ(self):
    per_epoch, _ = _epochs(100, 0.1, seed=0, epochs=2)
    self.assertNotEqual(per_epoch[0], per_epoch[1])

  def test_tuple_elements_keep_their_structure(self):
    ds = tf.data.Dataset.from_tensor_slices((np.arange(6), np.arange(6) * 10))
    x, y = next(iter(ds.apply(tfjest.epoch_subsets(0.5, epochs=1))))
    self.assertEqual(int(y), 10 * int(x))

  def test_numpy_arguments_are_accepted(self):
    ds = tf.data.Dataset.range(10).apply(
        tfjest.epoch_subsets(np.float32(0.5), seed=np.int64(1), epochs=np.int32(1)))
    self.assertLen(list(ds), 5)

  @parameterized.parameters(
      (dict(data_ratio=0.0), r"data_ratio must be in \(0, 1\]. Received: data_ratio=0.0"),
      (dict(data_ratio=1.5), r"data_ratio must be in \(0, 1\]"),
      (dict(data_ratio=True), r"data_ratio must be in \(0, 1\]"),
      (dict(data_ratio=0.5, seed=1.5), r"seed must be an integer. Received: seed=1.5"),
      (dict(data_ratio=0.5, epochs=0), r"epochs must be a positive integer or None"),
  )
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      tfjest.epoch_subsets(**kwargs)

  def test_infinite_dataset_is_refused(self):
    with self.assertRaisesRegex(ValueError, r"known, finite size.*cardinality -1"):
      tf.data.Dataset.range(3).repeat().apply(tfjest.epoch_subsets(0.5))


if __name__ == "__main__":
  tf.test.main()
