"""Exact resume from checkpoints, determinism, and Keras BackupAndRestore on a selected stream."""

import os

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

B = 8
STEPS, SAVE_AT = 9, 4


def _world(init_seed, with_proxy=False):
  """Learner, reference and selector; weights depend on `init_seed` (the data does not)."""
  keras.utils.set_random_seed(init_seed)
  learner = testing.PairDualEncoder(name="learner")
  learner.compile(optimizer=keras.optimizers.Adam(1e-2))
  reference = testing.PairDualEncoder(name="reference")
  proxy = None
  if with_proxy:  # a smaller dual encoder that scores for the learner and trains online
    proxy = tfjest.OnlineProxy(testing.PairDualEncoder(width=8, name="proxy"),
                               optimizer=keras.optimizers.Adam(1e-2))
  selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                           filter_ratio=0.8, num_chunks=4, seed=3, proxy=proxy)
  data = testing.make_pairs(800, 0.5, seed=0)
  stream = tf.data.Dataset.from_tensor_slices(
      {"image": data["image"], "text": data["text"], "id": data["id"]}).shuffle(800, seed=1)
  selected = stream.apply(selector).with_options(tfjest.deterministic_options())
  return learner, selector, selected


def _weights(model):
  return [w.numpy().copy() for w in model.weights]


class ExactResumeTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    tf.config.experimental.enable_op_determinism()

  def test_restart_from_checkpoint_continues_the_same_stream(self):
    self._check_resume(with_proxy=False)

  def test_restart_with_an_online_proxy(self):
    self._check_resume(with_proxy=True)

  def _check_resume(self, with_proxy):
    directory = os.path.join(self.get_temp_dir(), f"resume_{with_proxy}")
    # The uninterrupted run, which saves at step SAVE_AT.
    learner, selector, selected = _world(init_seed=0, with_proxy=with_proxy)
    iterator = iter(selected)
    ckpt = tfjest.selection_checkpoint(selector, iterator, optimizer=learner.optimizer)
    ids = []
    for step in range(STEPS):
      if step == SAVE_AT:
        path = ckpt.save(directory + "/ckpt")
        stats_at_save = selector.stats.snapshot()
      batch = next(iterator)
      ids.append(batch["id"].numpy())
      learner.train_on_batch(batch)
    expected_weights, expected_stats = _weights(learner), selector.stats.snapshot()

    # A new process would build everything afresh, with other initial weights.
    learner, selector, selected = _world(init_seed=42, with_proxy=with_proxy)
    # Built before restoring (with a proxy, tfjest never calls the learner, so it is unbuilt).
    learner({"image": np.zeros((1, 16, 16, 3), np.float32), "text": np.ones((1, 3), np.int32)})
    learner.optimizer.build(learner.trainable_variables)
    iterator = iter(selected)
    ckpt = tfjest.selection_checkpoint(selector, iterator, optimizer=learner.optimizer)
    ckpt.restore(path).assert_existing_objects_matched()
    self.assertEqual(selector.stats.snapshot(), stats_at_save)
    resumed = []
    for _ in range(SAVE_AT, STEPS):
      batch = next(iterator)
      resumed.append(batch["id"].numpy())
      learner.train_on_batch(batch)

    for want, got in zip(ids[SAVE_AT:], resumed):
      self.assertAllEqual(want, got)
    for want, got in zip(expected_weights, _weights(learner)):
      self.assertAllClose(want, got, rtol=0, atol=0)
    self.assertEqual(selector.stats.snapshot(), expected_stats)
    if with_proxy:
      self.assertEqual(int(selector.proxy.steps.numpy()), STEPS)

  def test_a_stale_learner_changes_the_stream(self):
    # The same iterator state with the learner left at other weights gives other batches:
    # this is why selection_checkpoint saves the models with the iterator.
    learner, selector, selected = _world(init_seed=0)
    iterator = iter(selected)
    ckpt = tf.train.Checkpoint(iterator=iterator)
    for _ in range(2):
      learner.train_on_batch(next(iterator))
    path = ckpt.save(os.path.join(self.get_temp_dir(), "stale", "ckpt"))
    following = [next(iterator)["id"].numpy() for _ in range(3)]
    learner2, selector2, selected2 = _world(init_seed=42)
    iterator2 = iter(selected2)
    tf.train.Checkpoint(iterator=iterator2).restore(path)
    stale = [next(iterator2)["id"].numpy() for _ in range(3)]
    self.assertNotAllEqual(np.concatenate(following), np.concatenate(stale))
    del learner2, selector2


class DeterminismTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    tf.config.experimental.enable_op_determinism()

  def _fit_ids(self, seed):
    keras.utils.set_random_seed(0)
    learner = testing.PairDualEncoder(name="learner")
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    reference = testing.PairDualEncoder(name="reference")
    data = testing.make_pairs(320, 0.5, seed=0)
    stream = tf.data.Dataset.from_tensor_slices(
        {"image": data["image"], "text": data["text"], "id": data["id"]})
    selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                             filter_ratio=0.8, num_chunks=4, seed=seed)
    seen = []

    def record(batch):
      def append(ids):
        seen.append(ids.numpy())
        return ids
      tf.py_function(append, [batch["id"]], tf.int64)
      return batch

    selected = stream.apply(selector).map(record).with_options(tfjest.deterministic_options())
    learner.fit(selected, epochs=1, verbose=0)
    return np.concatenate(seen), _weights(learner)

  def test_same_seed_same_ids_and_weights_other_seed_differs(self):
    ids, weights = self._fit_ids(seed=5)
    ids_again, weights_again = self._fit_ids(seed=5)
    other, _ = self._fit_ids(seed=6)
    self.assertLen(ids, 8 * B)
    self.assertAllEqual(ids, ids_again)
    for a, b in zip(weights, weights_again):
      self.assertAllClose(a, b, rtol=0, atol=0)
    self.assertNotAllEqual(ids, other)


class BackupAndRestoreTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    tf.config.experimental.enable_op_determinism()

  def _fit(self, backup_dir, init_seed, interrupt_at=None):
    keras.utils.set_random_seed(init_seed)
    learner = testing.PairDualEncoder(name="learner")
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    keras.utils.set_random_seed(1)
    reference = testing.PairDualEncoder(name="reference")
    data = testing.make_pairs(160, 0.5, seed=0)  # 4 super-batches of 40 per epoch
    stream = tf.data.Dataset.from_tensor_slices({"image": data["image"], "text": data["text"]})
    selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                             filter_ratio=0.8, num_chunks=4)
    selected = stream.apply(selector).with_options(tfjest.deterministic_options())

    class Interrupt(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        if epoch == interrupt_at:
          raise RuntimeError("preempted")

    callbacks = [keras.callbacks.BackupAndRestore(backup_dir)]
    if interrupt_at is not None:
      callbacks.append(Interrupt())
    learner.fit(selected, epochs=4, verbose=0, callbacks=callbacks)
    return learner, selector

  def test_interrupted_fit_resumes_and_ends_like_the_uninterrupted_one(self):
    straight, _ = self._fit(os.path.join(self.get_temp_dir(), "a"), init_seed=0)
    backup = os.path.join(self.get_temp_dir(), "b")
    with self.assertRaisesRegex(RuntimeError, "preempted"):
      self._fit(backup, init_seed=0, interrupt_at=2)
    resumed, selector = self._fit(backup, init_seed=42)
    # The resumed run trained epochs 2 and 3 only: 2 epochs of 4 selected batches.
    self.assertEqual(selector.stats.result()["batches"], 8)
    for a, b in zip(_weights(straight), _weights(resumed)):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)


class EndlessStreamBackupTest(tf.test.TestCase, parameterized.TestCase):
  """`repeat()` + `steps_per_epoch` (the README's setup), preempted after epoch 2 and resumed."""

  EPOCHS, STEPS, N = 4, 4, 32  # 16 steps of 8 selected from 32: 512 examples read in all

  def setUp(self):
    super().setUp()
    tf.config.experimental.enable_op_determinism()

  def _fit(self, backup_dir, init_seed, interrupt_at=None, with_selector=True,
           placement="pipeline"):
    keras.utils.set_random_seed(init_seed)
    learner = testing.PairDualEncoder(name="learner")
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    keras.utils.set_random_seed(1)
    reference = testing.PairDualEncoder(name="reference")
    data = testing.make_pairs(200, 0.5, seed=0)  # 200 is no multiple of 32: epochs straddle
    stream = tf.data.Dataset.from_tensor_slices(
        {"image": data["image"], "text": data["text"], "id": data["id"]}).repeat()
    selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                             super_batch_size=self.N, num_chunks=4, seed=3)
    if placement == "train_step":
      selector = tfjest.attach(learner, selector, placement="train_step")
    selected = stream.apply(selector).with_options(tfjest.deterministic_options())

    class Interrupt(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        if epoch == interrupt_at:
          raise RuntimeError("preempted")

    callbacks = [tfjest.backup_and_restore(
        backup_dir, selector=selector if with_selector else None, delete_checkpoint=False)]
    if interrupt_at is not None:
      callbacks.append(Interrupt())
    learner.fit(selected, epochs=self.EPOCHS, steps_per_epoch=self.STEPS, verbose=0,
                callbacks=callbacks)
    return learner, selector

  _straight = {}  # placement -> (weights, statistics) of the uninterrupted run

  def _straight_run(self, placement):
    """The uninterrupted run's weights and statistics, computed once per placement (with or
    without the selector in the callback, an uninterrupted run trains the same)."""
    if placement not in self._straight:
      learner, selector = self._fit(os.path.join(self.get_temp_dir(), "a"), 0,
                                    placement=placement)
      self._straight[placement] = (_weights(learner), selector.stats.result())
    return self._straight[placement]

  @parameterized.named_parameters(("pipeline", "pipeline"), ("train_step", "train_step"))
  def test_resumed_fit_ends_like_the_uninterrupted_one(self, placement):
    straight_weights, straight_stats = self._straight_run(placement)
    backup = os.path.join(self.get_temp_dir(), "b")
    with self.assertRaisesRegex(RuntimeError, "preempted"):
      self._fit(backup, init_seed=0, interrupt_at=2, placement=placement)
    resumed, selector = self._fit(backup, init_seed=42, placement=placement)
    total = self.EPOCHS * self.STEPS
    self.assertEqual(selector.stats.result()["read"], total * self.N)  # 512 of 512
    self.assertEqual(selector.stats.result()["selected"], total * B)
    self.assertEqual(selector.stats.result(), straight_stats)
    self.assertEqual(int(resumed.optimizer.iterations.numpy()), total)
    for a, b in zip(straight_weights, _weights(resumed)):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
    start = getattr(selector, "selector", selector).super_batches.start
    self.assertEqual(int(start.numpy()), 0)  # reset when fit ends

  def test_without_the_selector_only_the_model_and_epoch_are_restored(self):
    # What Keras' callback alone restores: the resumed stream starts again at its first
    # super-batch and the statistics at zero (the defect the selector argument fixes).
    straight_weights, _ = self._straight_run("pipeline")
    backup = os.path.join(self.get_temp_dir(), "b")
    with self.assertRaisesRegex(RuntimeError, "preempted"):
      self._fit(backup, init_seed=0, interrupt_at=2, with_selector=False)
    resumed, selector = self._fit(backup, init_seed=42, with_selector=False)
    self.assertEqual(selector.stats.result()["read"], 2 * self.STEPS * self.N)  # 256 of 512
    self.assertEqual(int(resumed.optimizer.iterations.numpy()), self.EPOCHS * self.STEPS)
    self.assertGreater(max(np.max(np.abs(a - b))
                           for a, b in zip(straight_weights, _weights(resumed))), 1e-3)

  def test_a_backup_without_selection_state_is_refused(self):
    backup = os.path.join(self.get_temp_dir(), "c")
    with self.assertRaisesRegex(RuntimeError, "preempted"):
      self._fit(backup, init_seed=0, interrupt_at=1, with_selector=False)
    with self.assertRaisesRegex(ValueError, r"not the selected stream's state.*Received: no "):
      self._fit(backup, init_seed=0)

  def test_selector_of_the_wrong_type(self):
    with self.assertRaisesRegex(TypeError, r"Received: selector of type str"):
      tfjest.backup_and_restore(self.get_temp_dir(), selector="selector")


class SelectionCheckpointErrorsTest(tf.test.TestCase):

  def test_errors(self):
    selector = tfjest.select(batch_size=2, method="uniform")
    iterator = iter(tf.data.Dataset.range(20).apply(selector))
    with self.assertRaisesRegex(TypeError, "Received: selector of type dict"):
      tfjest.selection_checkpoint({}, iterator)
    with self.assertRaisesRegex(TypeError, "Received: iterator of type list"):
      tfjest.selection_checkpoint(selector, [])
    with self.assertRaisesRegex(ValueError, "saved by tfjest already.*'selection_stats'"):
      tfjest.selection_checkpoint(selector, iterator, selection_stats=selector.stats)


if __name__ == "__main__":
  tf.test.main()
