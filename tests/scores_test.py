"""Score variants, block/streaming forms against the dense matrix, and the models a score reads."""

import doctest
import itertools

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import scores as scores_lib
from tfjest import scoring
from tfjest import testing


def _embeddings(n, d, seed, scale=10.0, bias=-10.0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.normal(size=(n, d)).astype(np.float32)
  return tfjest.Embeddings(tf.math.l2_normalize(x, -1), tf.math.l2_normalize(y, -1),
                           tf.constant(scale), tf.constant(bias))


def _dense(score, learner, reference):
  l = tfjest.sigmoid_pair_loss_block(learner)
  r = tfjest.sigmoid_pair_loss_block(reference)
  return {"learnability": l - r, "hard_learner": l, "easy_reference": -r}[score]


class PairwiseScoresTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("learnability", "hard_learner", "easy_reference")
  def test_blocks_match_dense_matrix(self, score):
    learner, reference = _embeddings(12, 6, 0), _embeddings(12, 6, 1, 5.0, -2.0)
    dense = _dense(score, learner, reference).numpy()
    streaming = tfjest.PairwiseScores(score, learner, reference)
    chunk = tf.constant([3, 0, 11])
    self.assertAllClose(streaming.diagonal(), np.diag(dense), rtol=1e-5, atol=1e-6)
    self.assertAllClose(streaming.block(chunk, chunk), dense[np.ix_([3, 0, 11], [3, 0, 11])],
                        rtol=1e-5, atol=1e-6)
    self.assertAllClose(streaming.chunk_gain(chunk),
                        tfjest.DenseScores(dense).chunk_gain(chunk), rtol=1e-5, atol=1e-5)

  @parameterized.parameters((32, 8, 4), (64, 16, 16), (96, 24, 3), (50, 10, 1))
  def test_streaming_and_dense_give_identical_selections(self, n, b, num_chunks):
    learner, reference = _embeddings(n, 8, n), _embeddings(n, 8, n + 1)
    dense = tfjest.DenseScores(_dense("learnability", learner, reference))
    streaming = tfjest.PairwiseScores("learnability", learner, reference)
    for step in range(3):
      kwargs = dict(num_chunks=num_chunks, seed=4, step=step)
      self.assertAllEqual(tfjest.joint_selection(streaming, b, **kwargs),
                          tfjest.joint_selection(dense, b, **kwargs))

  def test_batch_score_is_the_sum_over_the_chosen_block(self):
    learner, reference = _embeddings(10, 4, 2), _embeddings(10, 4, 3)
    dense = _dense("learnability", learner, reference).numpy()
    chosen = tf.constant([1, 4, 8])
    got = tfjest.batch_score(tfjest.PairwiseScores("learnability", learner, reference), chosen)
    self.assertAllClose(got, dense[np.ix_([1, 4, 8], [1, 4, 8])].sum(), rtol=1e-5)

  def test_missing_model_is_an_error(self):
    emb = _embeddings(4, 2, 0)
    with self.assertRaisesRegex(ValueError, "Received: reference=None"):
      tfjest.PairwiseScores("learnability", emb, None)
    with self.assertRaisesRegex(ValueError, "Received: learner=None"):
      tfjest.PairwiseScores("hard_learner", None, emb)


class DiagonalScoresTest(tf.test.TestCase):

  def test_block_is_diagonal_and_gains_never_change(self):
    scores = tfjest.DiagonalScores(tf.constant([1.0, 2.0, 3.0]))
    self.assertAllEqual(scores.block(), np.diag([1.0, 2.0, 3.0]))
    self.assertAllEqual(scores.chunk_gain(tf.constant([0])), np.zeros(3))


class CombineTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("learnability", 2.0), ("hard_learner", 5.0),
                            ("easy_reference", -3.0))
  def test_variants(self, score, expected):
    self.assertAllClose(scores_lib.combine(score, tf.constant(5.0), tf.constant(3.0)), expected)

  def test_unknown_variant(self):
    with self.assertRaisesRegex(ValueError, "Received: score='hardest'"):
      scores_lib.combine("hardest", 1.0, 1.0)


# Written out by hand (docs/SPEC.md §3), not derived from the tables the code reads.
MODELS_READ = {
    ("jest", "learnability"): ("learner", "reference"),
    ("jest", "hard_learner"): ("learner",),
    ("jest", "easy_reference"): ("reference",),
    ("independent", "learnability"): ("learner", "reference"),
    ("independent", "hard_learner"): ("learner",),
    ("independent", "easy_reference"): ("reference",),
    ("uniform", "learnability"): (),
    ("uniform", "hard_learner"): (),
    ("uniform", "easy_reference"): (),
}


class ModelsReadTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.models = {"learner": testing.dual_encoder(0, "learner"),
                  "reference": testing.dual_encoder(1, "reference")}
    cls.stream = testing.stream("contrastive", n=64)

  @parameterized.parameters(*MODELS_READ.items())
  def test_table(self, configuration, expected):
    self.assertEqual(tfjest.models_read(*configuration), expected)

  def test_defaults_and_example(self):
    self.assertEqual(tfjest.models_read("jest"), ("learner", "reference"))
    result = doctest.testmod(scoring, extraglobs={"tfjest": tfjest}, verbose=False)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0)

  @parameterized.parameters(
      (("greedy",), "Unknown method.*Received: method='greedy'"),
      (("jest", "hardest"), "Received: score='hardest'"),
      (("uniform", "hardest"), "Received: score='hardest'"),
      (("uniform", None), "Received: score=None"),
  )
  def test_errors_are_those_of_select(self, args, message):
    with self.assertRaisesRegex(ValueError, message):
      tfjest.models_read(*args)
    method, score = (args + ("learnability",))[:2]
    with self.assertRaisesRegex(ValueError, message):
      tfjest.select(batch_size=8, super_batch_size=32, method=method, score=score,
                    **self.models)

  @parameterized.parameters(*itertools.product(("jest", "independent", "uniform"),
                                               ("learnability", "hard_learner",
                                                "easy_reference")))
  def test_select_calls_exactly_these_and_requires_them(self, method, score):
    reads = tfjest.models_read(method, score)
    kwargs = dict(batch_size=8, super_batch_size=32, num_chunks=2, method=method, score=score)
    # Given every model, select calls only those read ...
    selector = tfjest.select(**kwargs, **self.models)
    called = () if selector.scorer is None else tuple(selector.scorer.models)
    self.assertEqual(called, reads)
    # ... works with nothing else ...
    selector = tfjest.select(**kwargs, **{role: self.models[role] for role in reads})
    batches = list(self.stream.apply(selector))
    self.assertLen(batches, 2)
    self.assertEqual(batches[0]["id"].shape, (8,))
    # ... and fails without any one of them, naming it.
    for role in reads:
      others = {r: self.models[r] for r in reads if r != role}
      with self.assertRaisesRegex(ValueError, f"Received: {role}=None"):
        tfjest.select(**kwargs, **others)


if __name__ == "__main__":
  tf.test.main()
