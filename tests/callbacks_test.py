"""SelectionStatsCallback: epoch windows, History keys and TensorBoard scalars."""

import glob
import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest


class SelectionStatsCallbackTest(tf.test.TestCase):

  def _fit(self, callbacks_for, epochs=2):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
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
