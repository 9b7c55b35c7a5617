"""tfjest.multi_resolution: batch i at sizes[i % len(sizes)], by exact average pooling."""

import numpy as np
import tensorflow as tf

import tfjest


def _batches(n=5, b=2, side=8, with_label=False):
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(n * b, side, side, 3)).astype(np.float32)
  x = {"image": images, "id": np.arange(n * b)}
  parts = (x, np.arange(n * b) % 3) if with_label else x
  return tf.data.Dataset.from_tensor_slices(parts).batch(b), images


class MultiResolutionTest(tf.test.TestCase):

  def test_rotation_and_average_pooling(self):
    data, images = _batches()
    out = list(data.apply(tfjest.multi_resolution([8, 4, 2])))
    self.assertEqual([batch["image"].shape[1] for batch in out], [8, 4, 2, 8, 4])
    for i, batch in enumerate(out):
      rows = images[2 * i:2 * i + 2]
      side = batch["image"].shape[1]
      factor = 8 // side
      pooled = rows.reshape(2, side, factor, side, factor, 3).mean(axis=(2, 4))
      self.assertAllClose(batch["image"], pooled, atol=1e-6)
      self.assertAllEqual(batch["id"], [2 * i, 2 * i + 1])  # other features untouched

  def test_tuples_keep_their_labels(self):
    data, _ = _batches(with_label=True)
    out = list(data.apply(tfjest.multi_resolution([4])))
    self.assertTrue(all(x["image"].shape[1] == 4 for x, _ in out))
    self.assertAllEqual(np.concatenate([y for _, y in out]), np.arange(10) % 3)

  def test_errors(self):
    for sizes in ([], [0], [4.0], "16", [True]):
      with self.assertRaisesRegex(ValueError, "Received: sizes="):
        tfjest.multi_resolution(sizes)
    data, _ = _batches()
    with self.assertRaisesRegex(ValueError, r"at most the images' side 8.*sizes=\[16\]"):
      data.apply(tfjest.multi_resolution([16]))
    with self.assertRaisesRegex(ValueError, r"key='pixels'"):
      data.apply(tfjest.multi_resolution([4], key="pixels"))
    unbatched = tf.data.Dataset.from_tensor_slices({"image": np.zeros((4, 8, 8, 3), np.float32)})
    with self.assertRaisesRegex(ValueError, r"\[b, h, h, c\]"):
      unbatched.apply(tfjest.multi_resolution([4]))


if __name__ == "__main__":
  tf.test.main()
