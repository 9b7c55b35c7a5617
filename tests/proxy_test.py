"""OnlineProxy: a small model scores for the learner and trains on the batches tfjest emits."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

N, B = 40, 8
LEARNING_RATE = 0.5


def _built(model):
  model({"image": np.zeros((1, 16, 16, 3), np.float32), "text": np.ones((1, 3), np.int32)})
  return model


def _one_by_one(dataset):
  """No prefetching: pulling element t runs the selection of super-batch t, and only it."""
  options = tf.data.Options()
  options.autotune.enabled = False
  options.experimental_optimization.inject_prefetch = False
  return dataset.with_options(options)


class ProxyFollowsTrainingTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    keras.utils.set_random_seed(0)
    cls.reference = _built(testing.PairDualEncoder(name="reference"))
    cls.data = testing.make_pairs(3 * N, 0.5, seed=1)
    cls.stream = tf.data.Dataset.from_tensor_slices(
        {"image": cls.data["image"], "text": cls.data["text"], "id": cls.data["id"]})

  def _proxy_and_twin(self):
    keras.utils.set_random_seed(2)
    proxy = _built(testing.PairDualEncoder(width=16, name="proxy"))
    twin = _built(testing.PairDualEncoder(width=16, name="twin"))
    twin.set_weights(proxy.get_weights())
    return tfjest.OnlineProxy(proxy, optimizer=keras.optimizers.SGD(LEARNING_RATE)), twin

  def _twin_step(self, twin, batch):
    """The proxy's training step by hand: SGD on the SigLIP loss of the emitted batch."""
    x = {"image": batch["image"], "text": batch["text"]}
    with tf.GradientTape() as tape:
      out = twin(x, training=True)
      loss = tfjest.siglip_loss(tfjest.Embeddings(
          out["image_embeddings"], out["text_embeddings"], twin.logit_scale, twin.logit_bias))
    for v, g in zip(twin.trainable_variables, tape.gradient(loss, twin.trainable_variables)):
      v.assign_sub(LEARNING_RATE * tf.convert_to_tensor(g))

  def _twin_losses(self, twin, super_batch):
    out = twin({"image": super_batch["image"], "text": super_batch["text"]})
    return tfjest.sigmoid_pair_loss_diagonal(tfjest.Embeddings(
        out["image_embeddings"], out["text_embeddings"], twin.logit_scale,
        twin.logit_bias)).numpy()

  @parameterized.parameters("pipeline", "eager")
  def test_weights_change_and_scores_follow(self, mode):
    proxy, twin = self._proxy_and_twin()
    selector = tfjest.select(proxy=proxy, reference=self.reference, batch_size=B,
                             filter_ratio=0.8, num_chunks=4, seed=3)
    super_batches = list(self.stream.batch(N))
    batches = iter(_one_by_one(self.stream.apply(selector)))
    before = selector.stats.snapshot()
    for step, super_batch in enumerate(super_batches):
      start = [w.numpy().copy() for w in proxy.model.trainable_weights]
      if mode == "pipeline":
        batch = next(batches)
      else:
        batch = selector.select_batch(super_batch, step=step)
      now = selector.stats.snapshot()
      # The scores of super-batch t come from the proxy after t training steps (the twin).
      losses = self._twin_losses(twin, super_batch)
      chosen = np.isin(super_batch["id"].numpy(), batch["id"].numpy())
      self.assertAllClose(now["proxy_loss_selected"] - before["proxy_loss_selected"],
                          losses[chosen].mean(), rtol=1e-4)
      self.assertAllClose(now["proxy_loss_rejected"] - before["proxy_loss_rejected"],
                          losses[~chosen].mean(), rtol=1e-4)
      before = now
      # ... and then the proxy trains on the batch just emitted.
      self._twin_step(twin, batch)
      self.assertEqual(int(proxy.steps.numpy()), step + 1)
      changed = [not np.allclose(a, w.numpy()) for a, w in
                 zip(start, proxy.model.trainable_weights)]
      self.assertTrue(all(changed))
      for got, want in zip(proxy.model.trainable_weights, twin.trainable_weights):
        self.assertAllClose(got, want, rtol=1e-4, atol=1e-5)

  def test_step_cost_counts_the_proxy_not_the_learner(self):
    proxy, _ = self._proxy_and_twin()
    learner = _built(testing.PairDualEncoder(width=64, name="learner"))
    selector = tfjest.select(learner=learner, proxy=proxy, reference=self.reference,
                             batch_size=B, filter_ratio=0.8, num_chunks=4)
    self.stream.apply(selector)
    spec = {"image": tf.TensorSpec([16, 16, 3]), "text": tf.TensorSpec([3], tf.int32),
            "id": tf.TensorSpec([], tf.int64)}
    f_proxy = tfjest.forward_flops(proxy.model, spec)
    cost = selector.step_cost()
    self.assertEqual(cost.learner_scoring, f_proxy * N)
    self.assertEqual(cost.proxy_training, 3 * f_proxy * B)
    self.assertEqual(cost.training, 3 * tfjest.forward_flops(learner, spec) * B)


class ClassifierProxyTest(tf.test.TestCase):

  def test_fit_with_a_classifier_proxy(self):
    keras.utils.set_random_seed(0)
    data = testing.make_pairs(200, 0.0, seed=3)
    stream = tf.data.Dataset.from_tensor_slices((data["image"], data["label"]))
    learner = testing.pair_classifier()
    small = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.AveragePooling2D(4),
                              keras.layers.Flatten(), keras.layers.Dense(48)])
    small.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    proxy = tfjest.OnlineProxy(small)
    selector = tfjest.select(learner=learner, proxy=proxy, batch_size=B, filter_ratio=0.8,
                             score="hard_learner", method="independent")
    before = [w.numpy().copy() for w in small.trainable_weights]
    history = learner.fit(stream.apply(selector), epochs=2, verbose=0)
    self.assertTrue(np.all(np.isfinite(history.history["loss"])))
    self.assertEqual(int(proxy.steps.numpy()), 10)
    self.assertFalse(any(np.allclose(a, w.numpy()) for a, w in
                         zip(before, small.trainable_weights)))
    stats = selector.stats.result()
    self.assertGreater(stats["proxy_loss_selected"], stats["proxy_loss_rejected"])
    self.assertNotIn("learner_loss_selected", stats)  # the learner is never called


class ProxyArgumentsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = _built(testing.PairDualEncoder(name="m"))

  def test_constructor_errors(self):
    with self.assertRaisesRegex(TypeError, "Received: model of type str"):
      tfjest.OnlineProxy("model")
    with self.assertRaisesRegex(ValueError, "own optimizer.*Received: optimizer=None"):
      tfjest.OnlineProxy(testing.PairDualEncoder())
    with self.assertRaisesRegex(TypeError, "Received: optimizer of type str"):
      tfjest.OnlineProxy(self.model, optimizer="sgd")
    with self.assertRaisesRegex(TypeError, "Expected a loss.*Received: loss_fn=3"):
      tfjest.OnlineProxy(self.model, optimizer=keras.optimizers.SGD(), loss_fn=3)
    with self.assertRaisesRegex(ValueError, "Unknown loss name.*Received: loss_fn='nope'"):
      tfjest.OnlineProxy(self.model, optimizer=keras.optimizers.SGD(), loss_fn="nope")

  def test_loss_names_and_losses_are_accepted(self):
    for loss_fn in ("mae", keras.losses.MeanAbsoluteError(), keras.losses.MeanAbsoluteError,
                    keras.losses.mean_absolute_error):
      proxy = tfjest.OnlineProxy(self.model, optimizer=keras.optimizers.SGD(), loss_fn=loss_fn)
      self.assertIs(proxy.loss_fn, loss_fn)

  def test_proxy_sharing_the_learners_optimizer_is_refused(self):
    learner = testing.classifier(seed=0, name="learner")
    small = testing.classifier(seed=2, name="small_proxy")
    proxy = tfjest.OnlineProxy(small, optimizer=learner.optimizer)
    with self.assertRaisesRegex(
        ValueError, "shares the learner's optimizer.*own optimizer.*"
        "Received: proxy='small_proxy' with optimizer SGD of learner='learner'"):
      tfjest.select(learner=learner, reference=testing.classifier(1, "reference"), proxy=proxy,
                    batch_size=8, super_batch_size=32, method="independent")

  def test_shared_optimizer_compiled_after_select_is_refused_when_applied(self):
    learner = testing.TinyClassifier(0, name="learner")
    learner({"x": np.zeros((1, testing.D), np.float32)})
    shared = keras.optimizers.SGD(0.1)
    proxy = tfjest.OnlineProxy(testing.classifier(seed=2, name="small_proxy"), optimizer=shared)
    selector = tfjest.select(learner=learner, reference=testing.classifier(1, "reference"),
                             proxy=proxy, batch_size=8, super_batch_size=32,
                             method="independent")
    learner.compile(optimizer=shared, loss="mse")
    with self.assertRaisesRegex(ValueError, "shares the learner's optimizer.*"
                                "Received: proxy='small_proxy'"):
      testing.stream("classification", n=64).apply(selector)

  def test_select_errors(self):
    proxy = tfjest.OnlineProxy(self.model, optimizer=keras.optimizers.SGD())
    with self.assertRaisesRegex(TypeError, "Received: proxy of type Sequential"):
      tfjest.select(proxy=keras.Sequential([keras.Input((2,))]), reference=self.model,
                    batch_size=8, num_chunks=4)
    with self.assertRaisesRegex(ValueError, "not the learner.*Received: proxy.model='m'"):
      tfjest.select(learner=self.model, proxy=proxy, score="hard_learner", batch_size=8,
                    num_chunks=4)
    with self.assertRaisesRegex(ValueError, "score='easy_reference' does not do. "
                                "Received: proxy="):
      tfjest.select(proxy=proxy, reference=self.model, batch_size=8, num_chunks=4,
                    score="easy_reference")

  def test_classifier_proxy_without_a_loss(self):
    plain = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    proxy = tfjest.OnlineProxy(plain, optimizer=keras.optimizers.SGD())
    data = testing.make_pairs(N, 0.0)
    stream = tf.data.Dataset.from_tensor_slices((data["image"], data["label"] % 3))
    with self.assertRaisesRegex(ValueError, "compile the proxy with a loss or pass `loss_fn="):
      stream.apply(tfjest.select(proxy=proxy, batch_size=B, score="hard_learner",
                                 method="independent"))

  def test_frozen_proxy_cannot_follow_training(self):
    frozen = _built(testing.PairDualEncoder(name="frozen"))
    frozen.trainable = False
    proxy = tfjest.OnlineProxy(frozen, optimizer=keras.optimizers.SGD())
    data = testing.make_pairs(N, 0.0)
    stream = tf.data.Dataset.from_tensor_slices({"image": data["image"], "text": data["text"]})
    with self.assertRaisesRegex(ValueError, "no trainable weights.*Received: model='frozen'"):
      stream.apply(tfjest.select(proxy=proxy, batch_size=B, num_chunks=4,
                                 score="hard_learner"))


if __name__ == "__main__":
  tf.test.main()
