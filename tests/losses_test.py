"""Pairwise sigmoid losses and per-example losses against NumPy formulas."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest


def _np_softplus(x):
  return np.logaddexp(0.0, x)


def _embeddings(n, d, seed, scale=10.0, bias=-10.0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.normal(size=(n, d)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  y /= np.linalg.norm(y, axis=1, keepdims=True)
  return tfjest.Embeddings(x, y, np.float32(scale), np.float32(bias))


def _np_pair_losses(emb):
  logits = emb.logit_scale * emb.image @ emb.text.T + emb.logit_bias
  z = 2 * np.eye(len(logits)) - 1
  return _np_softplus(-z * logits)


class SigmoidPairLossTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((6, 4, 10.0, -10.0), (9, 8, 3.0, 0.5))
  def test_full_block_matches_formula(self, n, d, scale, bias):
    emb = _embeddings(n, d, n, scale, bias)
    self.assertAllClose(tfjest.sigmoid_pair_loss_block(emb), _np_pair_losses(emb), rtol=1e-5)

  def test_row_and_column_blocks_are_slices_of_the_full_matrix(self):
    emb = _embeddings(10, 5, 0)
    full = _np_pair_losses(emb)
    rows, cols = np.array([7, 2, 2, 9]), np.array([2, 0, 9])
    self.assertAllClose(tfjest.sigmoid_pair_loss_block(emb, rows, cols),
                        full[np.ix_(rows, cols)], rtol=1e-5)
    self.assertAllClose(tfjest.sigmoid_pair_loss_block(emb, None, cols), full[:, cols],
                        rtol=1e-5)

  def test_diagonal_and_batch_loss(self):
    emb = _embeddings(8, 6, 1)
    full = _np_pair_losses(emb)
    self.assertAllClose(tfjest.sigmoid_pair_loss_diagonal(emb), np.diag(full), rtol=1e-5)
    self.assertAllClose(tfjest.siglip_loss(emb), full.sum() / 8, rtol=1e-5)

  def test_replica_loss_without_a_strategy_is_the_batch_loss(self):
    # Under a strategy it is divided by the replicas in sync: tests/distribute/replica_test.py.
    emb = _embeddings(8, 6, 2)
    self.assertAllClose(tfjest.siglip_replica_loss(emb), _np_pair_losses(emb).sum() / 8,
                        rtol=1e-5)

  @parameterized.parameters((None, [3, 0, 11]), (5, [3, 0, 11]), (4, [2, 2, 7]), (12, [5]))
  def test_chunk_sums_equal_block_sums(self, row_tile, chunk):
    # Tiles of 5 and 4 rows split the 12 rows unevenly; a repeated index counts twice.
    emb = _embeddings(12, 6, 3, scale=7.0, bias=-3.0)
    full = _np_pair_losses(emb)
    kwargs = {} if row_tile is None else {"row_tile": row_tile}
    as_image, as_text = tfjest.sigmoid_pair_loss_chunk_sums(emb, tf.constant(chunk), **kwargs)
    self.assertAllClose(as_image, full[:, chunk].sum(axis=1), rtol=1e-5, atol=1e-5)
    self.assertAllClose(as_text, full[chunk, :].sum(axis=0), rtol=1e-5, atol=1e-5)

  def test_chunk_sums_in_a_graph_and_with_large_logits(self):
    emb = _embeddings(9, 4, 4, scale=100.0, bias=-10.0)
    full = _np_pair_losses(emb)
    chunk = tf.constant([1, 8])
    got = tf.function(lambda: tfjest.sigmoid_pair_loss_chunk_sums(emb, chunk, row_tile=4))()
    self.assertAllClose(got[0], full[:, [1, 8]].sum(axis=1), rtol=1e-5, atol=1e-4)
    self.assertAllClose(got[1], full[[1, 8], :].sum(axis=0), rtol=1e-5, atol=1e-4)

  def test_large_logits_stay_finite(self):
    emb = _embeddings(4, 3, 2, scale=1e4, bias=0.0)
    self.assertAllInRange(tfjest.sigmoid_pair_loss_block(emb), 0.0, 1e5)


class PerExampleLossTest(tf.test.TestCase):

  def test_keras_loss_object_is_unreduced(self):
    y = np.array([0, 2, 1])
    logits = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected = -tf.nn.log_softmax(logits).numpy()[np.arange(3), y]
    self.assertAllClose(tfjest.per_example_loss(loss, y, logits), expected, rtol=1e-5)

  def test_finer_losses_are_averaged_per_example(self):
    y = np.zeros((2, 3), np.float32)
    pred = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]], np.float32)
    got = tfjest.per_example_loss(lambda t, p: tf.square(p - t), y, pred)
    self.assertAllClose(got, [14 / 3, 12.0])

  def test_labels_meet_predictions_at_their_rank(self):
    # As compile does: labels [N] against outputs [N, 1] are not broadcast to [N, N].
    y = np.array([1.0, 2.0, 4.0], np.float32)
    pred = np.array([[1.0], [1.0], [1.0]], np.float32)
    self.assertAllClose(tfjest.per_example_loss("poisson", y, pred), 1 - y * np.log(1 + 1e-7))
    self.assertAllClose(tfjest.per_example_loss(lambda t, p: tf.square(p - t), y, pred),
                        [0, 1, 9])

  def test_a_loss_of_the_whole_batch_is_taken_one_example_at_a_time(self):
    y = np.zeros((2, 2), np.float32)
    pred = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    got = tfjest.per_example_loss(lambda t, p: tf.reduce_mean(p - t), y, pred)
    self.assertAllClose(got, [1.5, 4.0])

  def test_a_loss_without_the_batch_axis_first_is_rejected(self):
    with self.assertRaisesRegex(ValueError, "keep the batch axis first.*Received: loss_fn="):
      tfjest.per_example_loss(lambda t, p: tf.reduce_mean(p, axis=0), np.zeros(3),
                              np.zeros((3, 2)))

  def test_a_wrong_loss_is_named(self):
    with self.assertRaisesRegex(ValueError, "Unknown loss name 'msqe'.*Received: loss_fn='msqe'"):
      tfjest.per_example_loss("msqe", np.zeros(2), np.zeros(2))
    with self.assertRaisesRegex(TypeError, "Expected a loss.*Received: loss_fn=3"):
      tfjest.per_example_loss(3, np.zeros(2), np.zeros(2))


if __name__ == "__main__":
  tf.test.main()
