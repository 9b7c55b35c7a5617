"""`tfjest.backup_and_restore`: the chief writes Keras' backup, the other workers only restore it.

A worker that is not the chief is simulated by a stub strategy whose `extended.should_checkpoint`
is False (what `MultiWorkerMirroredStrategy` says on such a worker), so no cluster is needed;
tests/resume_preemption_test.py runs a real one through examples/train_learner.py.
"""

import os
import types

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

_NOT_CHIEF = types.SimpleNamespace(extended=types.SimpleNamespace(should_checkpoint=False))


def _data():
  return testing.stream("classification", n=32).batch(8)


def _files(directory):
  """`{name: bytes}` of the files in `directory`."""
  out = {}
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), "rb") as f:
      out[name] = f.read()
  return out


class _Probe(keras.callbacks.Callback):
  """Records the weights when training begins and the backup's files after each epoch."""

  def __init__(self, backup_dir):
    super().__init__()
    self.backup_dir = backup_dir
    self.weights_at_begin = None
    self.files_after_epoch = []

  def on_train_begin(self, logs=None):
    self.weights_at_begin = [w.numpy().copy() for w in self.model.weights]

  def on_epoch_end(self, epoch, logs=None):
    listed = os.listdir(self.backup_dir) if os.path.isdir(self.backup_dir) else []
    self.files_after_epoch.append(sorted(listed))


class BackupAndRestoreTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("no_strategy", False), ("default_strategy", True))
  def test_the_chief_writes_a_backup_after_each_epoch(self, default_strategy):
    backup_dir = os.path.join(self.get_temp_dir(), f"chief_{default_strategy}")
    strategy = tf.distribute.get_strategy() if default_strategy else None
    callback = tfjest.backup_and_restore(backup_dir, strategy)
    self.assertIs(type(callback), keras.callbacks.BackupAndRestore)
    self.assertTrue(callback.double_checkpoint)
    probe = _Probe(backup_dir)
    testing.classifier(seed=0).fit(_data(), epochs=2, verbose=0, callbacks=[callback, probe])
    self.assertEqual(probe.files_after_epoch,
                     [["latest.weights.h5", "training_metadata.json"],
                      ["latest.weights.h5", "latest.weights.h5.bkp", "training_metadata.json",
                       "training_metadata.json.bkp"]])
    self.assertFalse(os.path.exists(backup_dir))  # Keras deletes it when fit completes

  @parameterized.named_parameters(("by_epoch", {}), ("by_batch", {"save_freq": 1}),
                                  ("delete_at_end", {"delete_checkpoint": True}))
  def test_other_workers_restore_and_never_write(self, kwargs):
    backup_dir = os.path.join(self.get_temp_dir(), f"worker_{sorted(kwargs)}")
    chief = testing.classifier(seed=0)
    chief.fit(_data(), epochs=1, verbose=0,
              callbacks=[tfjest.backup_and_restore(backup_dir, delete_checkpoint=False)])
    backup = _files(backup_dir)
    self.assertEqual(sorted(backup), ["latest.weights.h5", "training_metadata.json"])

    worker = testing.classifier(seed=7)  # other initial weights: the backup must replace them
    callback = tfjest.backup_and_restore(backup_dir, _NOT_CHIEF, **kwargs)
    self.assertIsInstance(callback, keras.callbacks.BackupAndRestore)  # what fit expects
    probe = _Probe(backup_dir)
    history = worker.fit(_data(), epochs=3, verbose=0, callbacks=[callback, probe])

    self.assertLen(history.history["loss"], 2)  # resumed after the chief's epoch 1 of 3
    for restored, saved in zip(probe.weights_at_begin, chief.weights):
      np.testing.assert_array_equal(restored, saved.numpy())
    self.assertEqual(_files(backup_dir), backup)  # same files, same bytes, not deleted

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, r"Received: backup_dir=''"):
      tfjest.backup_and_restore("")
    with self.assertRaisesRegex(ValueError, r"saves after every batch.*Received: save_freq=False"):
      tfjest.backup_and_restore(self.get_temp_dir(), save_freq=False)
    with self.assertRaisesRegex(TypeError, r"Received: strategy of type str"):
      tfjest.backup_and_restore(self.get_temp_dir(), "mirrored")


if __name__ == "__main__":
  tf.test.main()
