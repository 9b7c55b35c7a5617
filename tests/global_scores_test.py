"""`GlobalScores` against one-device oracles, with the all-gather simulated (no strategy).

The replicated version (a real `ReplicaContext.all_gather` on 2 logical CPUs) is in
replica_step_test.py; here every shard's `chunk_gain` runs in one process, twice: a first pass
records what each shard hands to `gather`, a second pass gathers those in shard order, exactly
what `all_gather(x, axis=0)` returns on every replica.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import global_scores


def _embeddings(n, d, rng, scale=10.0, bias=-10.0):
  def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  image = unit(rng.normal(size=(n, d)))
  text = unit(image + 0.7 * rng.normal(size=(n, d)))
  return tfjest.Embeddings(tf.constant(image), tf.constant(text), tf.constant(scale),
                           tf.constant(bias))


def _shard(emb, r, n):
  return tfjest.Embeddings(emb.image[r * n:(r + 1) * n], emb.text[r * n:(r + 1) * n],
                           emb.logit_scale, emb.logit_bias)


def _shard_scores(score, learner, reference, r, n):
  return tfjest.PairwiseScores(score, _shard(learner, r, n) if learner is not None else None,
                               _shard(reference, r, n) if reference is not None else None)


def _simulated_gains(score, learner, reference, chunks, n):
  """Every shard's `GlobalScores(...).chunk_gain(its chunk)`, with a simulated all-gather."""
  shards = len(chunks)
  sent = {}

  def gains(gather_for):
    return [global_scores.GlobalScores(_shard_scores(score, learner, reference, r, n),
                                       gather_for(r), r).chunk_gain(tf.constant(chunks[r]))
            for r in range(shards)]

  def record(r):
    def gather(t):
      sent[r] = t
      return tf.tile(t, [shards, 1])
    return gather

  gains(record)
  return gains(lambda r: lambda t: tf.concat([sent[s] for s in range(shards)], axis=0))


class GlobalScoresTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(score=["learnability", "hard_learner", "easy_reference"],
                         shards=[1, 2, 3])
  def test_gains_equal_one_device_gains_for_the_same_chosen_set(self, score, shards):
    n, d, m = 10, 6, 2
    rng = np.random.default_rng(shards)
    learner = _embeddings(shards * n, d, rng)
    reference = _embeddings(shards * n, d, rng, scale=12.0, bias=-8.0)
    chunks = [sorted(rng.choice(n, m, replace=False)) for _ in range(shards)]
    got = _simulated_gains(score, learner, reference, chunks, n)

    # One device: all shards' candidates together, A = every shard's chunk (global indices).
    full = tfjest.PairwiseScores(score, learner, reference)
    chosen = np.concatenate([r * n + np.array(c) for r, c in enumerate(chunks)])
    dense = full.block().numpy()
    oracle = dense[:, chosen].sum(axis=1) + dense[chosen, :].sum(axis=0)
    gains = tfjest.conditional_gains(full, chosen).numpy()
    for r in range(shards):
      rows = slice(r * n, (r + 1) * n)
      # Every local candidate, chosen ones included (they meet themselves as positive pairs).
      self.assertAllClose(got[r], oracle[rows], rtol=1e-5, atol=1e-4)
      local = _shard_scores(score, learner, reference, r, n)
      self.assertAllClose(local.diagonal() + got[r], gains[rows], rtol=1e-5, atol=1e-4)

  def test_one_shard_equals_local_scores_and_selection(self):
    rng = np.random.default_rng(0)
    learner, reference = _embeddings(24, 8, rng), _embeddings(24, 8, rng)
    local = tfjest.PairwiseScores("learnability", learner, reference)
    wrapped = tfjest.GlobalScores(local, lambda t: t, 0)
    chunk = tf.constant([3, 7, 11])
    self.assertAllClose(wrapped.chunk_gain(chunk), local.chunk_gain(chunk), atol=1e-4)
    self.assertAllClose(wrapped.diagonal(), local.diagonal())
    for greedy in (True, False):
      self.assertAllEqual(
          tfjest.joint_selection(wrapped, 8, num_chunks=4, seed=1, step=2, greedy=greedy),
          tfjest.joint_selection(local, 8, num_chunks=4, seed=1, step=2, greedy=greedy))

  def test_per_example_scores_never_gather(self):
    def gather(t):
      raise AssertionError(f"gathered {t}")
    wrapped = tfjest.GlobalScores(tfjest.DiagonalScores(tf.range(6.0)), gather, 0)
    self.assertAllEqual(wrapped.chunk_gain(tf.constant([1, 2])), tf.zeros([6]))
    picks = tfjest.joint_selection(wrapped, 4, num_chunks=2, greedy=True,
                                   first_chunk="scores").numpy()
    self.assertAllEqual(sorted(picks[:2]), [4, 5])  # chunk by chunk, unordered inside
    self.assertAllEqual(sorted(picks[2:]), [2, 3])

  def test_compiles_with_xla(self):
    rng = np.random.default_rng(1)
    learner, reference = _embeddings(16, 4, rng), _embeddings(16, 4, rng)

    @tf.function(jit_compile=True)
    def select(learner, reference):
      scores = tfjest.GlobalScores(tfjest.PairwiseScores("learnability", learner, reference),
                                   lambda t: tf.concat([t, t[::-1]], axis=0), 0)
      return tfjest.joint_selection(scores, 8, num_chunks=4, seed=0, step=0, greedy=True,
                                    first_chunk="scores")

    picks = select(learner, reference).numpy()
    self.assertLen(set(picks), 8)
    self.assertTrue(np.all((picks >= 0) & (picks < 16)))

  def test_wraps_only_score_objects(self):
    with self.assertRaisesRegex(TypeError, r"Received: local of type DenseScores"):
      tfjest.GlobalScores(tfjest.DenseScores(tf.zeros([3, 3])), lambda t: t, 0)


class SetSizePerChunkTest(tf.test.TestCase, parameterized.TestCase):
  """`normalization="set_size"` divides chunk k's gains by 2 k g + 1, g = set_size_per_chunk."""

  @parameterized.parameters(1, 2, 5)
  def test_second_chunk_divides_by_two_g_plus_one(self, growth):
    # Two chunks, a uniform first chunk: dividing the second chunk's gains by 2 g + 1 is
    # drawing it at temperature 2 g + 1.
    s = np.random.default_rng(growth).normal(size=(20, 20)).astype(np.float32) * 3
    scores = tfjest.DenseScores(s)
    for step in range(5):
      normalized = tfjest.joint_selection(scores, 8, num_chunks=2, seed=3, step=step,
                                          normalization="set_size", set_size_per_chunk=growth)
      tempered = tfjest.joint_selection(scores, 8, num_chunks=2, seed=3, step=step,
                                        temperature=2.0 * growth + 1.0)
      self.assertAllEqual(normalized, tempered)

  def test_default_is_the_chunk_size(self):
    s = np.random.default_rng(0).normal(size=(24, 24)).astype(np.float32)
    for step in range(3):
      self.assertAllEqual(
          tfjest.joint_selection(tfjest.DenseScores(s), 12, num_chunks=3, step=step,
                                 normalization="set_size"),
          tfjest.joint_selection(tfjest.DenseScores(s), 12, num_chunks=3, step=step,
                                 normalization="set_size", set_size_per_chunk=4))


if __name__ == "__main__":
  tf.test.main()
