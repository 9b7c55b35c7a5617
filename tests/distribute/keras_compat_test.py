"""tfjest.ensure_multi_worker_fit: when it applies, and that it leaves every other case alone.

The fix itself is exercised end to end by multi_worker_test.py (two worker processes, where
Keras 3 fit fails without it). Here, in one process: the version guard, the no-op for
strategies that do not need it, and that the patched functions delegate to Keras' originals.
"""

from unittest import mock

import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest.distribute import keras_compat
from keras.src.backend.tensorflow import trainer as keras_trainer


class KerasCompatTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self._reduce = keras_trainer.reduce_per_replica
    self._build = keras_trainer.TensorFlowTrainer._maybe_symbolic_build

  def tearDown(self):
    # Leave Keras as found: other tests in this process must see the originals.
    keras_trainer.reduce_per_replica = self._reduce
    keras_trainer.TensorFlowTrainer._maybe_symbolic_build = self._build
    super().tearDown()

  def test_versions(self):
    self.assertEqual(keras_compat._version("3.15.1"), (3, 15))
    self.assertEqual(keras_compat._version("3.16.0.dev2026"), (3, 16))
    low, high = keras_compat.VERIFIED_VERSIONS
    self.assertBetween(keras_compat.keras_version(), low, high)  # the pinned Keras

  def test_not_applied_without_a_multi_worker_strategy(self):
    for strategy in (tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy("/cpu:0")):
      self.assertFalse(tfjest.ensure_multi_worker_fit(strategy))
    self.assertFalse(keras_compat.is_applied())
    self.assertIs(keras_trainer.reduce_per_replica, self._reduce)

  def test_not_applied_outside_the_verified_versions(self):
    with mock.patch.object(keras_compat, "needs_multi_worker_fix", return_value=True), \
         mock.patch.object(keras_compat, "keras_version", return_value=(3, 99)), \
         self.assertLogs(tf.get_logger(), "WARNING") as logs:
      self.assertFalse(tfjest.ensure_multi_worker_fit(object()))
    self.assertRegex(logs.output[0], r"outside the versions .* leaving Keras unchanged.*"
                     r"keras-team/keras#20585")
    self.assertFalse(keras_compat.is_applied())

  def test_applied_once_and_delegates_for_other_strategies(self):
    with mock.patch.object(keras_compat, "needs_multi_worker_fix", return_value=True):
      self.assertTrue(tfjest.ensure_multi_worker_fit(object()))
    patched = keras_trainer.reduce_per_replica
    self.assertTrue(keras_compat.is_applied())
    with mock.patch.object(keras_compat, "needs_multi_worker_fix", return_value=True):
      self.assertTrue(tfjest.ensure_multi_worker_fit(object()))
    self.assertIs(keras_trainer.reduce_per_replica, patched)  # idempotent

    # No multi-worker strategy here: Keras' own code paths, same results.
    values = {"loss": tf.constant(2.0), "out": tf.ones([3, 2])}
    strategy = tf.distribute.get_strategy()
    for reduction in ("auto", "concat", "sum"):
      tf.nest.map_structure(self.assertAllEqual, patched(values, strategy, reduction),
                            self._reduce(values, strategy, reduction))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=4, verbose=0)
    self.assertTrue(np.isfinite(history.history["loss"][-1]))


if __name__ == "__main__":
  tf.test.main()
