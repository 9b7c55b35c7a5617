"""FLOP accounting: forward FLOPs against hand counts, selection and step costs, stats."""

import logging
from unittest import mock
import warnings

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.util import deprecation

import tfjest
from tfjest import testing


def _cnn():
  return keras.Sequential([
      keras.Input((8, 8, 3)),
      keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
      keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(5),
  ])


def _toy_stream(n=200):
  data = testing.make_pairs(n, 0.5, seed=0)
  return tf.data.Dataset.from_tensor_slices(
      {"image": data["image"], "text": data["text"], "id": data["id"]})


class ForwardFlopsTest(tf.test.TestCase):

  def test_dense_by_hand(self):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    # 4 x 3 multiply-adds at 2 FLOPs each, plus 3 bias adds.
    self.assertEqual(tfjest.forward_flops(model, tf.TensorSpec([4])), 2 * 4 * 3 + 3)

  def test_conv_pool_dense_by_hand(self):
    conv = 2 * 8 * 8 * 4 * (3 * 3 * 3)  # "same" padding: 8 x 8 outputs of 4 channels
    conv_bias = 8 * 8 * 4
    pool = 8 * 8 * 4  # the mean reads every input once
    dense = 2 * 4 * 5 + 5
    self.assertEqual(tfjest.forward_flops(_cnn(), tf.TensorSpec([8, 8, 3])),
                     conv + conv_bias + pool + dense)

  def test_embedding_lookup_is_free_and_dict_inputs(self):

    class Towers(keras.Model):

      def __init__(self):
        super().__init__()
        self.embed = keras.layers.Embedding(10, 6)
        self.dense = keras.layers.Dense(2, use_bias=False)

      def call(self, x, training=False):
        return self.dense(keras.ops.reshape(self.embed(x["tokens"]), (-1, 18))) + x["bias"]

    spec = {"tokens": tf.TensorSpec([3], tf.int32), "bias": tf.TensorSpec([2])}
    # The lookup's index handling (a comparison and an add per token) 6, the gather itself 0,
    # the 18 x 2 matmul 72, the final add 2 (element-wise ops count 1 per output element).
    self.assertEqual(tfjest.forward_flops(Towers(), spec), 2 * 3 + 2 * 18 * 2 + 2)

  def test_toy_dual_encoder_towers(self):
    model = testing.PairDualEncoder()
    spec = {"image": tf.TensorSpec([16, 16, 3]), "text": tf.TensorSpec([3], tf.int32)}
    convs = 2 * 8 * 8 * 16 * 27 + 2 * 4 * 4 * 32 * (9 * 16)
    dense = 2 * 512 * 32 + 2 * 96 * 64 + 2 * 64 * 32
    self.assertBetween(tfjest.forward_flops(model, spec) - convs - dense, 0, 2000)

  def test_no_deprecation_warning(self):
    # TensorFlow warns about a deprecated function once per process: it records each function
    # it has warned about in `deprecation._PRINTED_WARNING`. With that record emptied (and
    # warnings on), this call is a first call, in this process, as every user makes it.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tf.get_logger().addHandler(handler)
    try:
      with mock.patch.object(deprecation, "_PRINTED_WARNING", {}), \
          mock.patch.object(deprecation, "_PRINT_DEPRECATION_WARNINGS", True), \
          warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flops = tfjest.forward_flops(model, tf.TensorSpec([4]))
        first_calls = len(deprecation._PRINTED_WARNING)  # pylint: disable=protected-access
    finally:
      tf.get_logger().removeHandler(handler)
    self.assertEqual(flops, 2 * 4 * 3 + 3)
    self.assertEqual([r.getMessage() for r in records], [])
    self.assertEqual([str(w.message) for w in caught], [])
    self.assertEqual(first_calls, 0)  # no deprecated function warned, nor would have

  def test_errors(self):
    with self.assertRaisesRegex(TypeError, "Received: model of type function"):
      tfjest.forward_flops(lambda x: x, tf.TensorSpec([2]))
    with self.assertRaisesRegex(ValueError, "fully defined.*Received: input_spec="):
      tfjest.forward_flops(_cnn(), tf.TensorSpec([None, 8, 3]))


class SelectionFlopsTest(tf.test.TestCase, parameterized.TestCase):

  def test_jest_terms_by_hand(self):
    n, b, d, k = 64, 16, 8, 4
    c = b // k
    diagonal = 2 * (2 * n * d + 3 * n)
    updates = (k - 1) * 2 * (2 * (2 * n * c * d + 4 * n * c) + 2 * c * d + 3 * n)
    keys = 6 * n * k + 2 * n * k
    stats = 2 * (2 * b * b * d + 5 * b * b)
    self.assertEqual(tfjest.selection_flops(n, b, width=d, num_chunks=k),
                     diagonal + updates + keys + stats)
    self.assertEqual(tfjest.selection_flops(n, b, width=d, num_chunks=k, batch_statistics=False),
                     diagonal + updates + keys)

  def test_leading_term_is_the_specs_4nbd_multiply_adds(self):
    n, b, d, k = 65536, 6560, 128, 16
    flops = tfjest.selection_flops(n, b, width=d, num_chunks=k)
    multiply_adds = 4 * n * b * d * (k - 1) / k
    # The rest: element-wise pair ops (4 per pair and direction against 2d) and, for the
    # statistics, the [b, b] block of the chosen batch (5% here, as b = N / 10).
    self.assertBetween(flops / (2 * multiply_adds), 1.0, 1.1)

  def test_per_example_methods_are_linear_in_n(self):
    self.assertEqual(tfjest.selection_flops(100, 10, method="uniform"), 600)
    self.assertEqual(tfjest.selection_flops(100, 10, task="classification", method="independent"),
                     6 * 100 + 2 * 100 + 100 + 10)
    self.assertLess(tfjest.selection_flops(100, 10, width=8, method="independent"),
                    tfjest.selection_flops(100, 10, width=8, method="jest", num_chunks=2))

  @parameterized.named_parameters(
      ("n", dict(super_batch_size=0), "Received: super_batch_size=0"),
      ("b_above_n", dict(batch_size=200), "Received: batch_size=200"),
      ("method", dict(method="best"), "Received: method='best'"),
      ("task", dict(task="regression"), "Received: task='regression'"),
      ("models", dict(num_models=3), "Received: num_models=3"),
      ("width", dict(width=None), "Received: width=None"),
  )
  def test_errors(self, kwargs, message):
    args = dict(super_batch_size=100, batch_size=10, width=8, num_chunks=2)
    args.update(kwargs)
    n, b = args.pop("super_batch_size"), args.pop("batch_size")
    with self.assertRaisesRegex(ValueError, message):
      tfjest.selection_flops(n, b, **args)


class StepCostTest(tf.test.TestCase, parameterized.TestCase):

  def test_parts(self):
    cost = tfjest.step_cost(batch_size=10, super_batch_size=50, learner_flops=100.0,
                            learner_scoring_flops=40.0, reference_flops=30.0, selection=7.0)
    self.assertEqual(cost, tfjest.StepCost(training=3000.0, learner_scoring=2000.0,
                                           reference_scoring=1500.0, proxy_training=0.0,
                                           selection=7.0))
    self.assertEqual(cost.total, 6507.0)
    self.assertEqual(cost.overhead, 3507.0)

  def test_uniform_cached_and_proxy(self):
    uniform = tfjest.step_cost(batch_size=10, super_batch_size=10, learner_flops=100.0,
                               learner_scoring_flops=0)
    self.assertEqual(uniform.total, 3 * 100 * 10)
    cached = tfjest.step_cost(batch_size=10, super_batch_size=50, learner_flops=100.0,
                              reference_flops=30.0, reference_cached=True)
    self.assertEqual(cached.reference_scoring, 0.0)
    self.assertEqual(cached.learner_scoring, 100.0 * 50)
    proxy = tfjest.step_cost(batch_size=10, super_batch_size=50, learner_flops=100.0,
                             learner_scoring_flops=5.0, proxy_flops=5.0)
    self.assertEqual((proxy.learner_scoring, proxy.proxy_training), (250.0, 150.0))
    unknown = tfjest.step_cost(batch_size=10, super_batch_size=50, learner_scoring_flops=5.0)
    self.assertIsNone(unknown.training)
    self.assertEqual(unknown.total, 250.0)

  @parameterized.named_parameters(
      ("batch", dict(batch_size=0), "Received: batch_size=0"),
      ("negative", dict(learner_flops=-1.0), "Received: learner_flops=-1.0"),
      ("infinite", dict(reference_flops=float("inf")), "Received: reference_flops=inf"),
      ("selection", dict(selection=None), "Received: selection=None"),
  )
  def test_errors(self, kwargs, message):
    args = dict(batch_size=10, super_batch_size=50, learner_flops=1.0)
    args.update(kwargs)
    with self.assertRaisesRegex(ValueError, message):
      tfjest.step_cost(**args)


class SelectorCostTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    keras.utils.set_random_seed(0)
    cls.learner = testing.PairDualEncoder(name="learner")
    cls.reference = testing.PairDualEncoder(name="reference")
    cls.spec = {"image": tf.TensorSpec([16, 16, 3]), "text": tf.TensorSpec([3], tf.int32),
                "id": tf.TensorSpec([], tf.int64)}

  def test_step_cost_of_a_selector(self):
    selector = tfjest.select(learner=self.learner, reference=self.reference, batch_size=8,
                             filter_ratio=0.8, num_chunks=4)
    with self.assertRaisesRegex(ValueError, "apply the selector.*Received: a selector never"):
      selector.step_cost()
    _toy_stream().apply(selector)
    f_l = tfjest.forward_flops(self.learner, self.spec)
    f_r = tfjest.forward_flops(self.reference, self.spec)
    cost = selector.step_cost()
    self.assertEqual(cost.training, 3 * f_l * 8)
    self.assertEqual(cost.learner_scoring, f_l * 40)
    self.assertEqual(cost.reference_scoring, f_r * 40)
    self.assertEqual(cost.selection, tfjest.selection_flops(40, 8, width=32, num_chunks=4))

  def test_uniform_costs_only_training(self):
    selector = tfjest.select(learner=self.learner, batch_size=8, method="uniform")
    _toy_stream().apply(selector)
    cost = selector.step_cost()
    self.assertEqual(cost.learner_scoring + cost.reference_scoring, 0.0)
    self.assertEqual(cost.training, 3 * tfjest.forward_flops(self.learner, self.spec) * 8)

  def test_stats_and_callback_report_flops(self):
    learner = testing.PairDualEncoder(name="fit_learner")
    learner.compile(optimizer="adam")
    # Built with its optimizer before `fit`: Keras traces a train step that creates the
    # optimizer's variables twice.
    learner({"image": np.zeros((1, 16, 16, 3), np.float32), "text": np.ones((1, 3), np.int32)})
    learner.optimizer.build(learner.trainable_variables)
    selector = tfjest.select(learner=learner, reference=self.reference, batch_size=8,
                             filter_ratio=0.8, num_chunks=4)
    history = learner.fit(_toy_stream().apply(selector), epochs=2, verbose=0,
                          callbacks=[tfjest.SelectionStatsCallback(selector)]).history
    cost = selector.step_cost()
    self.assertAllClose(history["selection_flops_per_step"], [cost.total] * 2)
    self.assertAllClose(history["selection_flops_total"], [5 * cost.total] * 2)
    self.assertAllClose(history["selection_flops_reference_scoring"],
                        [5 * cost.reference_scoring] * 2)
    result = selector.stats.result()
    self.assertAllClose(result["flops_total"], 10 * cost.total)
    self.assertAllClose(result["flops_training"], 10 * cost.training)

  def test_stats_without_unit_costs(self):
    stats = tfjest.SelectionStats()
    self.assertNotIn("flops_total", stats.result())
    stats.set_unit_costs({"selection": 5.0})
    self.assertEqual(stats.result()["flops_total"], 0.0)  # no batch yet
    stats.set_unit_costs(None)  # what a selector sets when its models cannot be counted
    self.assertIsNone(stats.unit_costs())
    self.assertNotIn("flops_total", stats.result())


if __name__ == "__main__":
  tf.test.main()
