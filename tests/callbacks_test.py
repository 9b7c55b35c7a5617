"""SelectionStatsCallback: epoch windows, History keys and TensorBoard scalars."""

import glob
import os

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


if __name__ == "__main__":
  tf.test.main()
