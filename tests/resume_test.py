"""Exact resume from checkpoints, determinism, and Keras BackupAndRestore on a selected stream."""

import os
import shutil

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

B = 8
STEPS, SAVE_AT = 9, 4


# The models are `testing.TinyDualEncoder`s (two linear towers over `testing.D` features): what
# is resumed (weights, optimizer slots, the selected stream's state) does not depend on the
# model's size, and a fresh linear model traces in a fraction of a CNN's time.


def _learner(init_seed):
  """A compiled learner whose weights (from `init_seed`) and optimizer variables exist.

  Built now rather than by the first train step: Keras traces a train step that creates the
  optimizer's variables twice, so every fresh learner here would be traced twice. Nothing else
  changes: `fit` would build the optimizer before its first update, and `BackupAndRestore` builds
  it before restoring a backup anyway.
  """
  keras.utils.set_random_seed(init_seed)
  learner = testing.TinyDualEncoder(seed=init_seed, name="learner")
  learner.compile(optimizer=keras.optimizers.Adam(1e-2))
  zeros = np.zeros((1, testing.D), np.float32)
  learner({"image": zeros, "text": zeros})
  learner.optimizer.build(learner.trainable_variables)
  return learner


def _reference():
  return testing.TinyDualEncoder(seed=7, name="reference")


def _pairs(n):
  """`n` image-text pairs with ids `0..n-1` (from seed 0)."""
  return testing.stream("contrastive", n=n, seed=0)


def _world(init_seed, with_proxy=False):
  """Learner, reference and selector; weights depend on `init_seed` (the data does not)."""
  learner = _learner(init_seed)
  reference = _reference()
  proxy = None
  if with_proxy:  # a smaller dual encoder that scores for the learner and trains online
    proxy = tfjest.OnlineProxy(testing.TinyDualEncoder(seed=11, width=2, name="proxy"),
                               optimizer=keras.optimizers.Adam(1e-2))
  selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                           filter_ratio=0.8, num_chunks=4, seed=3, proxy=proxy)
  stream = _pairs(800).shuffle(800, seed=1)
  selected = stream.apply(selector).with_options(tfjest.deterministic_options())
  return learner, selector, selected


def _weights(model):
  return [w.numpy().copy() for w in model.weights]


class ExactResumeTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    tf.config.experimental.enable_op_determinism()

  def test_restart_from_checkpoint_continues_the_same_stream_a_stale_learner_would_not(self):
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
    # (`_world` builds the learner and its optimizer, which restoring needs: with a proxy,
    # tfjest never calls the learner.)
    learner, selector, selected = _world(init_seed=42, with_proxy=with_proxy)
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
    else:
      # The same iterator state with the learner left at other weights (here those of step
      # STEPS, not SAVE_AT) gives other batches: this is why selection_checkpoint saves the
      # models with the iterator. Checked last, on this run's world (no fresh one to trace),
      # as its pulls move the selector's statistics.
      stale_iterator = iter(selected)
      tf.train.Checkpoint(iterator=stale_iterator).restore(path)
      stale = [next(stale_iterator)["id"].numpy() for _ in range(3)]
      self.assertNotAllEqual(np.concatenate(ids[SAVE_AT:SAVE_AT + 3]), np.concatenate(stale))


class DeterminismTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    tf.config.experimental.enable_op_determinism()

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # One learner and reference for the three runs: each run starts from the same initial
    # weights and optimizer state (put back by `_fit_ids`), and the learner's train step,
    # traced by the first `fit`, is reused instead of traced again for each fresh model.
    cls.learner = _learner(0)
    cls.reference = _reference()
    cls.initial = _weights(cls.learner) + [
        v.numpy().copy() for v in cls.learner.optimizer.variables]

  def _fit_ids(self, seed):
    learner, reference = self.learner, self.reference
    for variable, value in zip(learner.weights + learner.optimizer.variables, self.initial):
      variable.assign(value)
    stream = _pairs(320)
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
    self.assertEqual(int(self.learner.optimizer.iterations.numpy()), 8)  # put back each time


class BackupAndRestoreTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    tf.config.experimental.enable_op_determinism()

  def _fit(self, backup_dir, init_seed, interrupt_at=None):
    learner = _learner(init_seed)
    keras.utils.set_random_seed(1)
    reference = _reference()
    stream = _pairs(160)  # 4 super-batches of 40 per epoch
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
    # 3 epochs (each a new iterator over the finite stream): one trained before the
    # preemption and two after it, so the resumed run also crosses an epoch boundary.
    learner.fit(selected, epochs=3, verbose=0, callbacks=callbacks)
    return learner, selector

  def test_interrupted_fit_resumes_and_ends_like_the_uninterrupted_one(self):
    straight, _ = self._fit(os.path.join(self.get_temp_dir(), "a"), init_seed=0)
    backup = os.path.join(self.get_temp_dir(), "b")
    with self.assertRaisesRegex(RuntimeError, "preempted"):
      self._fit(backup, init_seed=0, interrupt_at=1)
    resumed, selector = self._fit(backup, init_seed=42)
    # The resumed run trained epochs 1 and 2 only: 2 epochs of 4 selected batches.
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
    learner = _learner(init_seed)
    keras.utils.set_random_seed(1)
    reference = _reference()
    stream = _pairs(200).repeat()  # 200 is no multiple of 32: epochs straddle
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

  _unselected = {}  # "backup" -> directory of a backup written without the selector

  def _backup_without_selector(self):
    """A copy, for this test alone, of the backup of a run preempted before epoch 2 whose
    callback had no selector. Both tests below resume from such a backup: the preempted run
    (a fresh learner and fit) is made once."""
    if "backup" not in self._unselected:
      backup = os.path.join(self.get_temp_dir(), "unselected")
      with self.assertRaisesRegex(RuntimeError, "preempted"):
        self._fit(backup, init_seed=0, interrupt_at=2, with_selector=False)
      self._unselected["backup"] = backup
    copy = os.path.join(self.get_temp_dir(), "b")
    shutil.copytree(self._unselected["backup"], copy)
    return copy

  def test_without_the_selector_only_the_model_and_epoch_are_restored(self):
    # What Keras' callback alone restores: the resumed stream starts again at its first
    # super-batch and the statistics at zero (the defect the selector argument fixes).
    straight_weights, _ = self._straight_run("pipeline")
    backup = self._backup_without_selector()
    resumed, selector = self._fit(backup, init_seed=42, with_selector=False)
    self.assertEqual(selector.stats.result()["read"], 2 * self.STEPS * self.N)  # 256 of 512
    self.assertEqual(int(resumed.optimizer.iterations.numpy()), self.EPOCHS * self.STEPS)
    self.assertGreater(max(np.max(np.abs(a - b))
                           for a, b in zip(straight_weights, _weights(resumed))), 1e-3)

  def test_a_backup_without_selection_state_is_refused(self):
    backup = self._backup_without_selector()
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
