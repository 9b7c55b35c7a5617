"""Selection rules against brute-force NumPy oracles and their sampling distributions."""

import itertools

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import selection


def _oracle_gains(s, chosen):
  """u_k(A) straight from the definition, with loops."""
  n = s.shape[0]
  return np.array([s[k, k] + sum(s[k, j] for j in chosen) + sum(s[i, k] for i in chosen)
                   for k in range(n)])


def _oracle_greedy(s, b, num_chunks):
  """Brute-force greedy blocked selection: top-c of diag, then top-c of u(A), chunk by chunk."""
  c = b // num_chunks
  chosen = []
  for k in range(num_chunks):
    gains = np.diag(s).copy() if k == 0 else _oracle_gains(s, chosen)
    gains[chosen] = -np.inf
    chunk = list(np.argsort(-gains, kind="stable")[:c])
    chosen.extend(chunk)
  return [sorted(chosen[i * c:(i + 1) * c]) for i in range(num_chunks)]


def _softmax(x):
  e = np.exp(x - np.max(x))
  return e / e.sum()


def _draws(fn, num):
  """Runs `fn(step)` for steps 0..num-1 inside one graph; returns a NumPy array."""
  steps = tf.range(num, dtype=tf.int64)
  out = tf.function(lambda: tf.map_fn(fn, steps, fn_output_signature=tf.int32))()
  return out.numpy()


class ConditionalGainsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((7, [2]), (9, [0, 4, 5]), (12, [1, 3, 5, 7, 11]))
  def test_gains_equal_definition(self, n, chosen):
    s = np.random.default_rng(n).normal(size=(n, n)).astype(np.float32)
    got = tfjest.conditional_gains(tfjest.DenseScores(s), chosen)
    self.assertAllClose(got, _oracle_gains(s, chosen), rtol=1e-5, atol=1e-5)


class JointSelectionOracleTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(sizes=[(8, 4, 2), (16, 8, 4), (20, 6, 3), (30, 10, 10), (12, 6, 1)],
                         normalization=["none", "set_size"])
  def test_greedy_equals_brute_force(self, sizes, normalization):
    n, b, num_chunks = sizes
    s = np.random.default_rng(n * b).normal(size=(n, n)).astype(np.float32)
    picks = tfjest.joint_selection(tfjest.DenseScores(s), b, num_chunks=num_chunks,
                                   first_chunk="scores", greedy=True,
                                   normalization=normalization).numpy()
    c = b // num_chunks
    got = [sorted(picks[i * c:(i + 1) * c]) for i in range(num_chunks)]
    self.assertEqual(got, _oracle_greedy(s, b, num_chunks))

  def test_conditional_draw_matches_softmax(self):
    # N = 5, b = 2 in two chunks of one: the first is uniform, the second is drawn with
    # probability softmax(u(A) / tau) over the others. 6000 draws, about 1200 per
    # conditioning set: the standard error of a frequency is below 0.015; we allow 0.045.
    n, tau = 5, 0.7
    s = np.random.default_rng(3).normal(size=(n, n)).astype(np.float32)
    scores = tfjest.DenseScores(s)
    draws = _draws(lambda step: tfjest.joint_selection(
        scores, 2, num_chunks=2, seed=11, step=step, temperature=tau), 6000)
    first_counts = np.bincount(draws[:, 0], minlength=n) / len(draws)
    self.assertAllClose(first_counts, np.full(n, 1 / n), atol=0.03)
    for a in range(n):
      seconds = draws[draws[:, 0] == a, 1]
      gains = _oracle_gains(s, [a]) / tau
      others = [k for k in range(n) if k != a]
      expected = _softmax(gains[others])
      observed = np.array([np.mean(seconds == k) for k in others])
      self.assertAllClose(observed, expected, atol=0.045, msg=f"conditioned on A={{{a}}}")

  def test_first_chunk_from_scores_matches_softmax(self):
    n, tau = 6, 0.5
    diag = np.linspace(-1.0, 1.0, n).astype(np.float32)
    scores = tfjest.DenseScores(np.diag(diag))
    draws = _draws(lambda step: tfjest.joint_selection(
        scores, 2, num_chunks=2, seed=5, step=step, temperature=tau,
        first_chunk="scores"), 5000)
    observed = np.bincount(draws[:, 0], minlength=n) / len(draws)
    # Standard error below 0.007 per frequency; tolerance 0.025.
    self.assertAllClose(observed, _softmax(diag / tau), atol=0.025)

  def test_independent_single_draw_matches_softmax(self):
    values = np.array([0.0, 0.5, 1.0, 2.0], np.float32)
    draws = _draws(lambda step: tfjest.independent_selection(values, 1, seed=1, step=step),
                   5000)
    observed = np.bincount(draws[:, 0], minlength=4) / len(draws)
    self.assertAllClose(observed, _softmax(values), atol=0.025)


class SelectionPropertiesTest(tf.test.TestCase, parameterized.TestCase):

  def _all_methods(self, s, b, seed=0, step=0):
    return {
        "jest": tfjest.joint_selection(tfjest.DenseScores(s), b, num_chunks=4, seed=seed,
                                       step=step),
        "independent": tfjest.independent_selection(np.diag(s), b, seed=seed, step=step),
        "uniform": tfjest.uniform_selection(s.shape[0], b, seed=seed, step=step),
    }

  def test_exact_size_no_duplicates_in_range(self):
    s = np.random.default_rng(0).normal(size=(40, 40)).astype(np.float32)
    for name, picks in self._all_methods(s, 12).items():
      picks = picks.numpy()
      self.assertEqual(picks.shape, (12,), name)
      self.assertLen(set(picks.tolist()), 12, name)
      self.assertTrue(np.all((picks >= 0) & (picks < 40)), name)

  def test_same_seed_same_selection_other_seed_or_step_differs(self):
    s = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    a = self._all_methods(s, 16, seed=3, step=7)
    again = self._all_methods(s, 16, seed=3, step=7)
    other_seed = self._all_methods(s, 16, seed=4, step=7)
    other_step = self._all_methods(s, 16, seed=3, step=8)
    for name in a:
      self.assertAllEqual(a[name], again[name])
      self.assertNotAllEqual(np.sort(a[name]), np.sort(other_seed[name]))
      self.assertNotAllEqual(np.sort(a[name]), np.sort(other_step[name]))

  def test_uniform_is_independent_on_zero_scores(self):
    # Same procedure, same noise: uniform differs from the others only by its scores.
    for step in range(5):
      self.assertAllEqual(
          tfjest.uniform_selection(30, 7, seed=2, step=step),
          tfjest.independent_selection(np.zeros(30, np.float32), 7, seed=2, step=step))

  def test_identical_models_give_zero_scores_and_uniform_selection(self):
    rng = np.random.default_rng(0)
    n, b = 20, 4
    emb = tfjest.Embeddings(tf.math.l2_normalize(rng.normal(size=(n, 8)).astype(np.float32), -1),
                            tf.math.l2_normalize(rng.normal(size=(n, 8)).astype(np.float32), -1),
                            10.0, -10.0)
    scores = tfjest.PairwiseScores("learnability", emb, emb)
    self.assertAllEqual(scores.diagonal(), np.zeros(n))
    self.assertAllEqual(scores.chunk_gain(tf.constant([1, 5])), np.zeros(n))
    draws = _draws(lambda step: tfjest.joint_selection(scores, b, num_chunks=2, seed=9,
                                                       step=step), 3000)
    inclusion = np.bincount(draws.ravel(), minlength=n) / len(draws)
    # Each index is included with probability b / N = 0.2; standard error 0.0073, allow 0.03.
    self.assertAllClose(inclusion, np.full(n, b / n), atol=0.03)

  def test_invalid_and_non_finite_candidates_are_taken_last(self):
    n, b = 12, 6
    values = np.arange(n, dtype=np.float32)
    values[[10, 11]] = [np.nan, np.inf]
    valid = np.ones(n, bool)
    valid[[8, 9]] = False
    for greedy in (False, True):
      picks = tfjest.joint_selection(tfjest.DiagonalScores(values), b, num_chunks=2,
                                     first_chunk="scores", valid=valid, greedy=greedy).numpy()
      self.assertEmpty(set(picks) & {8, 9, 10, 11})
    # With only 3 usable candidates, the 3 others fill up, without duplicates.
    valid[:7] = False
    picks = tfjest.joint_selection(tfjest.DiagonalScores(values), b, num_chunks=2,
                                   first_chunk="scores", valid=valid).numpy()
    self.assertLen(set(picks), b)
    self.assertTrue({7}.issubset(set(picks)))

  def test_greedy_temperature_changes_only_sampled_draws(self):
    s = np.random.default_rng(2).normal(size=(30, 30)).astype(np.float32)
    cold = tfjest.joint_selection(tfjest.DenseScores(s), 10, num_chunks=5, greedy=True,
                                  first_chunk="scores", temperature=0.1)
    hot = tfjest.joint_selection(tfjest.DenseScores(s), 10, num_chunks=5, greedy=True,
                                 first_chunk="scores", temperature=10.0)
    self.assertAllEqual(cold, hot)


class SelectionXlaTest(tf.test.TestCase):

  def test_streaming_joint_selection_compiles_with_xla(self):
    rng = np.random.default_rng(0)

    def emb(seed_offset):
      del seed_offset
      return tfjest.Embeddings(
          tf.math.l2_normalize(rng.normal(size=(64, 16)).astype(np.float32), -1),
          tf.math.l2_normalize(rng.normal(size=(64, 16)).astype(np.float32), -1),
          tf.constant(10.0), tf.constant(-10.0))

    learner, reference = emb(0), emb(1)

    @tf.function(jit_compile=True)
    def select(step):
      scores = tfjest.PairwiseScores("learnability", learner, reference)
      return tfjest.joint_selection(scores, 16, num_chunks=4, seed=1, step=step)

    first = select(tf.constant(3, tf.int64)).numpy()
    self.assertEqual(first.shape, (16,))
    self.assertLen(set(first.tolist()), 16)
    self.assertAllEqual(first, select(tf.constant(3, tf.int64)))
    self.assertNotAllEqual(np.sort(first), np.sort(select(tf.constant(4, tf.int64))))


class SelectionErrorsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("chunks_do_not_divide", dict(num_chunks=3), "num_chunks=3"),
      ("zero_chunks", dict(num_chunks=0), "num_chunks=0"),
      ("temperature", dict(temperature=0.0), "temperature=0.0"),
      ("first_chunk", dict(first_chunk="best"), "first_chunk='best'"),
      ("normalization", dict(normalization="sqrt"), "normalization='sqrt'"),
  )
  def test_bad_options(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      tfjest.joint_selection(tfjest.DiagonalScores(np.zeros(8, np.float32)), 4, **kwargs)

  def test_more_than_candidates(self):
    with self.assertRaisesRegex(ValueError, "num_select=9"):
      tfjest.joint_selection(tfjest.DiagonalScores(np.zeros(8, np.float32)), 9, num_chunks=1)

  def test_dynamic_candidate_count(self):
    fn = tf.function(lambda v: tfjest.independent_selection(v, 2),
                     input_signature=[tf.TensorSpec([None], tf.float32)])
    with self.assertRaisesRegex(ValueError, "must be static"):
      fn.get_concrete_function()


if __name__ == "__main__":
  tf.test.main()
