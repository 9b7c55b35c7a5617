"""SelectionStatsCallback: epoch windows, History keys and TensorBoard scalars."""

import glob
import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest


def _with_built_optimizer(model):
  """`model`, its optimizer's variables created now rather than on `fit`'s first step.

  A train function that creates variables is traced twice; built first, `fit` traces it once.
  """
  model.optimizer.build(model.trainable_variables)
  return model


def _linear_classifier():
  """A seeded linear 3-class classifier of 4 features, compiled on logits."""
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
  model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
      from_logits=True))
  return _with_built_optimizer(model)


class SelectionStatsCallbackTest(tf.test.TestCase):

  def _fit(self, callbacks_for, epochs=2):
    model = _linear_classifier()
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(100, 4)).astype(np.float32), rng.integers(0, 3, 100)))
    selector = tfjest.select(learner=model, batch_size=5, filter_ratio=0.5,
                             score="hard_learner", method="independent")
    history = model.fit(data.apply(selector), epochs=epochs, verbose=0,
                        callbacks=callbacks_for(selector))
    return selector, history.history

  def test_history_holds_counts_and_epoch_means(self):
    selector, history = self._fit(lambda s: [tfjest.SelectionStatsCallback(s, prefix="jest/")])
    self.assertEqual(history["jest/read"], [100, 200])
    self.assertEqual(history["jest/selected"], [50, 100])
    self.assertEqual(history["jest/filtered"], [50, 100])
    self.assertLen(history["jest/learner_loss_selected"], 2)
    # hard_learner keeps the examples the learner finds hardest.
    for chosen, rejected in zip(history["jest/learner_loss_selected"],
                                history["jest/learner_loss_rejected"]):
      self.assertGreater(chosen, rejected)
    self.assertEqual(selector.stats.result()["batches"], 20)

  def test_an_epoch_of_non_finite_batches_has_its_entry(self):
    # Epoch 1 reads finite inputs, epoch 2 only NaN ones: no batch of epoch 2 has a finite
    # learner loss, and its mean is NaN, not missing (one entry per epoch).
    model = _linear_classifier()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    x[100:] = np.nan
    data = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, 200)))
    selector = tfjest.select(learner=model, batch_size=5, filter_ratio=0.5,
                             score="hard_learner", method="independent")
    history = model.fit(data.apply(selector), epochs=2, steps_per_epoch=10, verbose=0,
                        callbacks=[tfjest.SelectionStatsCallback(selector)]).history
    # The pipeline reads a few super-batches (10 examples each) ahead of training: tf.data's
    # autotuned prefetch buffers, 0-2 on an idle machine, 4 seen under a loaded `make test`.
    # So epoch 1 has read its 100 and maybe more, never the whole 200 (that would take 10
    # ahead); by the end of epoch 2 everything is read, whatever the lag.
    self.assertEqual(history["selection_read"][1], 200)
    self.assertEqual(history["selection_non_finite"][1], 100)
    self.assertBetween(history["selection_read"][0], 100, 190)
    means = history["selection_learner_loss_selected"]
    self.assertLen(means, 2)
    self.assertTrue(np.isfinite(means[0]))
    self.assertTrue(np.isnan(means[1]))

  def test_writes_tensorboard_scalars(self):
    log_dir = self.get_temp_dir()
    self._fit(lambda s: [tfjest.SelectionStatsCallback(s, log_dir=log_dir)], epochs=1)
    events = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    self.assertNotEmpty(events)
    tags = set()
    for event in tf.compat.v1.train.summary_iterator(events[0]):
      tags.update(v.tag for v in event.summary.value)
    self.assertIn("selection_selected", tags)
    self.assertIn("selection_learner_loss_selected", tags)


def _classifier(name):
  return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                           keras.layers.Dense(3)], name=name)


def _event_tags(log_dir):
  tags = set()
  for path in glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  return tags


class TensorBoardOrderTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("tensorboard_first", True), ("tensorboard_last", False))
  def test_tensorboard_writes_selection_scalars(self, tensorboard_first):
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    reference = _classifier("reference")
    reference.compile(loss=loss)
    model = _classifier("learner")
    model.compile(optimizer="sgd", loss=loss)
    _with_built_optimizer(model)
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 3, 64)))
    selector = tfjest.select(learner=model, reference=reference, batch_size=8, filter_ratio=0.5,
                             method="independent")
    log_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
    tensorboard = keras.callbacks.TensorBoard(log_dir)
    stats = tfjest.SelectionStatsCallback(selector)
    callbacks = [tensorboard, stats] if tensorboard_first else [stats, tensorboard]
    given = list(callbacks)
    history = model.fit(data.apply(selector), epochs=2, verbose=0, callbacks=callbacks).history
    self.assertEqual(callbacks, given)  # fit's own list is reordered, not the caller's
    self.assertEqual(history["selection_read"], [64, 128])
    # The callback reports exactly the keys the statistics report, and invents none.
    self.assertEqual({k for k in history if k.startswith("selection_")},
                     {"selection_" + k for k in selector.stats.result()})
    tags = _event_tags(log_dir)
    for key in ("read", "selected", "filtered", "batches", "learner_loss_selected",
                "reference_loss_selected", "batch_score"):
      self.assertIn(f"epoch_selection_{key}", tags)
    self.assertIn("epoch_loss", tags)

  def test_hooks_called_outside_fit(self):
    model = _classifier("learner")
    selector = tfjest.select(learner=model, batch_size=8, method="uniform")
    callback = tfjest.SelectionStatsCallback(selector)
    callback.set_model(model)
    callback.on_train_begin()  # no CallbackList to reorder: the caller's order stands
    callback.on_epoch_begin(0)
    logs = {}
    callback.on_epoch_end(0, logs)
    self.assertEqual(logs["selection_read"], 0)


if __name__ == "__main__":
  tf.test.main()
