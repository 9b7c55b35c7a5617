"""The selection noise: one counter-based generator, the same in every compilation mode.

`tf.random.stateless_uniform` gave other bits under XLA than without it, so the `tf.data` map and
`attach(placement="train_step")` (whose selection maths are an XLA function by default) picked
different examples for the same seed at the default temperature. The noise is now MurmurHash3 of
`(seed, step, index)` in plain int64 ops (tfjest/selection.py); these tests hold every mode to the
same bits and both placements to the same picks through `fit`.
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import selection
from tfjest import testing

SHAPE = [16, 4096]  # K chunks x N candidates: 65,536 draws per key


def _noise(seed, step):
  key = selection.stateless_seed(seed, step)
  return selection.counter_uniform(SHAPE, key), selection.gumbel_noise(SHAPE, key)


# One graph and one XLA function for every key: seed and step are int64 tensors, so each is traced
# (and compiled) once for all the parameterized keys rather than once per key.
_GRAPH = tf.function(_noise)
_XLA = tf.function(_noise, jit_compile=True)


def _modes(seed, step):
  """(uniforms, Gumbel noise) eagerly, in a graph, in a tf.data map and under XLA."""
  seed, step = tf.constant(seed, tf.int64), tf.constant(step, tf.int64)
  return {
      "eager": _noise(seed, step),
      "graph": _GRAPH(seed, step),
      "tf.data": next(iter(tf.data.Dataset.from_tensors((seed, step)).map(_noise))),
      "xla": _XLA(seed, step),
  }


def _murmur3(words):
  """MurmurHash3_x86_32 (seed 0) of 32-bit words, in Python integers: the oracle."""
  mask = 0xFFFFFFFF
  rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & mask
  h = 0
  for k in words:
    k = (rotl((k * 0xCC9E2D51) & mask, 15) * 0x1B873593) & mask
    h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & mask
  h ^= 4 * len(words)
  h = ((h ^ (h >> 16)) * 0x85EBCA6B) & mask
  h = ((h ^ (h >> 13)) * 0xC2B2AE35) & mask
  return h ^ (h >> 16)


class CounterNoiseTest(tf.test.TestCase, parameterized.TestCase):

  def test_bits_are_murmur3_of_seed_step_index(self):
    seed, step = 7, (3 << 32) + 11  # a step beyond 32 bits uses its high word
    got = selection.counter_bits([2, 5], selection.stateless_seed(seed, step)).numpy().ravel()
    want = [_murmur3([seed, 0, 11, 3, i]) for i in range(10)]
    self.assertAllEqual(got, want)

  @parameterized.parameters((0, 0), (0, 1), (5, 123456), (2**31 + 3, 2**40 + 1))
  def test_bit_identical_in_every_mode(self, seed, step):
    modes = _modes(seed, step)
    want_u, want_g = (t.numpy() for t in modes.pop("eager"))
    for mode, (u, g) in modes.items():
      self.assertAllEqual(u.numpy().view(np.uint32), want_u.view(np.uint32), msg=mode)
      self.assertAllEqual(g.numpy().view(np.uint32), want_g.view(np.uint32), msg=mode)
    self.assertAllEqual(want_g, -np.log(-np.log(want_u.astype(np.float64))).astype(np.float32))

  def test_selection_picks_identical_in_every_mode(self):
    # Default temperature, scores on the scale of the noise: the keys mix both.
    scores = tf.constant(np.random.default_rng(0).normal(size=[512]), tf.float32)

    def pick(step):
      return tfjest.joint_selection(tfjest.DiagonalScores(scores), 64, num_chunks=4, seed=3,
                                    step=step, first_chunk="scores")

    steps = tf.range(20, dtype=tf.int64)
    eager = np.stack([pick(s).numpy() for s in steps])
    xla = tf.function(lambda: tf.map_fn(pick, steps, fn_output_signature=tf.int32),
                      jit_compile=True)()
    mapped = np.stack(list(tf.data.Dataset.from_tensor_slices(steps).map(pick)))
    self.assertAllEqual(xla, eager)
    self.assertAllEqual(mapped, eager)

  def test_uniform(self):
    # 2**20 draws of one key: mean 1/2 and variance 1/12 within 5 standard errors; chi-square over
    # 10 equal bins (9 degrees of freedom) below 27.9, its 0.999 quantile.
    u = selection.counter_uniform([1 << 20], selection.stateless_seed(1, 2)).numpy()
    n = u.size
    self.assertTrue(np.all((u > 0) & (u < 1)))
    self.assertLess(abs(u.mean() - 0.5), 5 * np.sqrt(1 / 12 / n))
    self.assertLess(abs(u.var() - 1 / 12), 5 * np.sqrt(1 / 180 / n))
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    self.assertLess(np.sum((counts - n / 10) ** 2 / (n / 10)), 27.9)
    self.assertLen(np.unique(u), np.unique(u).size)
    self.assertGreater(np.unique(u).size, 0.9 * n)  # 2**23 values: few repeats in 2**20 draws

  def test_gumbel_moments(self):
    g = selection.gumbel_noise([1 << 20], selection.stateless_seed(4, 0)).numpy()
    # Standard Gumbel: mean Euler's gamma, variance pi**2 / 6 (5 standard errors).
    self.assertLess(abs(g.mean() - np.euler_gamma), 5 * np.sqrt(np.pi**2 / 6 / g.size))
    self.assertAllClose(g.var(), np.pi**2 / 6, rtol=0.02)

  def test_streams_of_other_keys_look_independent(self):
    # Streams of neighbouring seeds, steps and indices: correlations within 5 / sqrt(n) of 0,
    # and the 2-D histogram of pairs passes a chi-square over 10 x 10 bins (99 dof, 0.999
    # quantile 148.2).
    n = 1 << 18
    base = selection.counter_uniform([n], selection.stateless_seed(0, 0)).numpy()
    others = {
        "seed+1": selection.counter_uniform([n], selection.stateless_seed(1, 0)).numpy(),
        "step+1": selection.counter_uniform([n], selection.stateless_seed(0, 1)).numpy(),
        "step+2**32": selection.counter_uniform([n], selection.stateless_seed(0, 2**32)).numpy(),
        "index+1": selection.counter_uniform([n + 1], selection.stateless_seed(0, 0)).numpy()[1:],
    }
    for name, other in others.items():
      self.assertLess(abs(np.corrcoef(base, other)[0, 1]), 5 / np.sqrt(n), msg=name)
      counts = np.histogram2d(base, other, bins=10, range=[[0, 1], [0, 1]])[0]
      self.assertLess(np.sum((counts - n / 100) ** 2 / (n / 100)), 148.2, msg=name)
      self.assertLess(np.mean(base == other), 1e-3, msg=name)


def _recording(model, steps, batch_size):
  """Makes `model`'s train step record the ids it trains on; returns the `[steps, b]` record."""
  seen = tf.Variable(tf.fill([steps, batch_size], tf.constant(-1, tf.int64)), trainable=False)
  own_train_step = model.train_step

  def train_step(data):
    row = tf.cast(model.optimizer.iterations, tf.int32)
    seen.scatter_nd_update([[row]], data[0]["id"][None])
    return own_train_step(data)

  model.train_step = train_step
  return seen


class PlacementParityTest(tf.test.TestCase, parameterized.TestCase):
  """Same seed, default temperature: the pipeline and the train step train on the same ids."""

  STEPS, B, N = 4, 8, 32

  def _trained_ids(self, placement, jit_compile):
    model = testing.classifier(seed=0)
    if jit_compile is not None:
      model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                    jit_compile=jit_compile)
    seen = _recording(model, self.STEPS, self.B)
    selector = tfjest.select(learner=model, reference=testing.classifier(seed=1),
                             batch_size=self.B, super_batch_size=self.N, method="independent",
                             seed=5)
    if placement == "train_step":
      selector = tfjest.attach(model, selector, placement="train_step")
    stream = testing.stream("classification", n=self.STEPS * self.N)
    model.fit(stream.apply(selector).with_options(tfjest.deterministic_options()), verbose=0)
    self.assertEqual(selector.stats.result()["selected"], self.STEPS * self.B)
    return seen.numpy()

  @parameterized.named_parameters(("keras_default", None), ("no_xla", False), ("xla", True))
  def test_pipeline_and_train_step_train_on_the_same_ids(self, jit_compile):
    # The attached step's selection maths are an XLA function (attach's jit_compile=True);
    # compile(jit_compile=True) compiles the whole Keras step, the pipeline's too.
    want = self._trained_ids("pipeline", jit_compile)
    got = self._trained_ids("train_step", jit_compile)
    self.assertTrue(np.all(want >= 0))
    self.assertAllEqual(got, want)


if __name__ == "__main__":
  tf.test.main()
