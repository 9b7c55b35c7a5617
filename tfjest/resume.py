"""Exact resume and determinism for selected streams.

What a selection depends on: the candidates (the input pipeline's position), the models' weights
when the super-batch is scored, `seed`, and the super-batch index (the RNG step). The position and
the index live in the `tf.data` iterator; the weights and the selection statistics live in
variables outside it. A checkpoint that holds all of them restores the stream exactly:
`selection_checkpoint` builds one, so the iterator is never saved without the state it reads.

Determinism also needs the weights to be read at a fixed point of training. With `tf.data`'s
default prefetching and autotuning, the pipeline scores the next super-batch while the current
step trains, so the scores lag training by 0-2 steps depending on thread timing.
`deterministic_options()` turns those off: each super-batch is then scored exactly after the
previous training step, and the same seed gives the same selected examples run after run (on the
same machine, with `tf.config.experimental.enable_op_determinism()` for the training itself).

A preempted `fit` resumes with Keras' `BackupAndRestore`; `backup_and_restore` makes one that
works on a cluster, where only the chief may write the backup and every worker must read it.
"""

import json
import os
from typing import Optional

import keras
import tensorflow as tf

from tfjest import transform


def deterministic_options() -> tf.data.Options:
  """`tf.data.Options` under which a selected stream is reproducible.

  Deterministic element order, no autotuning and no injected prefetch: the learner is read
  exactly one training step after the previous super-batch, never ahead of it. This costs the
  overlap of input and training; use it for reproducible runs and resume tests.

  >>> import numpy as np
  >>> import tfjest
  >>> from tfjest import testing
  >>> options = tfjest.deterministic_options()
  >>> options.deterministic, options.autotune.enabled
  (True, False)
  >>> def train_and_list_ids():
  ...   model = testing.classifier(seed=0)
  ...   selector = tfjest.select(learner=model, reference=testing.classifier(seed=1),
  ...                            batch_size=8, super_batch_size=32, method="independent")
  ...   selected = testing.stream("classification", n=128).apply(selector).with_options(options)
  ...   ids = []
  ...   for x, y in selected:   # each super-batch is scored after the previous step
  ...     ids.append(x["id"].numpy())
  ...     loss = model.train_on_batch(x, y)
  ...   return np.concatenate(ids)
  >>> first = train_and_list_ids()
  >>> first.shape
  (32,)
  >>> np.array_equal(first, train_and_list_ids())
  True
  """
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = False
  options.experimental_optimization.inject_prefetch = False
  return options


def selection_checkpoint(selector: transform.Selector, iterator, **objects) -> tf.train.Checkpoint:
  """A `tf.train.Checkpoint` of a selected stream's iterator and everything it reads.

  Holds the iterator (input position, super-batch index, buffers), the selector's statistics,
  the learner and the reference, an online proxy's model, optimizer and step count, plus
  `objects` (the optimizer, a step counter, ...). Restoring
  it into freshly built objects continues the stream exactly where it was saved.

  >>> import os
  >>> import tempfile
  >>> import numpy as np
  >>> import tfjest
  >>> from tfjest import testing
  >>> def selected_stream(seed):
  ...   model = testing.classifier(seed=seed)
  ...   selector = tfjest.select(learner=model, reference=testing.classifier(seed=1), batch_size=8,
  ...                            super_batch_size=32, method="independent")
  ...   train_ds = testing.stream("classification", n=320).shuffle(320, seed=0)
  ...   return model, selector, train_ds.apply(selector).with_options(
  ...       tfjest.deterministic_options())
  >>> model, selector, selected = selected_stream(seed=0)
  >>> iterator = iter(selected)
  >>> ckpt = tfjest.selection_checkpoint(selector, iterator, optimizer=model.optimizer)
  >>> for _ in range(3):
  ...   loss = model.train_on_batch(*next(iterator))
  >>> path = ckpt.save(os.path.join(tempfile.mkdtemp(), "ckpt"))
  >>> x, y = next(iterator)   # the batch after the save
  >>> x["id"].shape
  TensorShape([8])

  After a restart, fresh objects restored from the checkpoint continue the same stream:

  >>> model, selector, selected = selected_stream(seed=5)   # other initial weights
  >>> iterator = iter(selected)
  >>> ckpt = tfjest.selection_checkpoint(selector, iterator, optimizer=model.optimizer)
  >>> status = ckpt.restore(path)
  >>> np.array_equal(next(iterator)[0]["id"], x["id"])
  True

  Args:
    selector: the `Selector` whose output `iterator` iterates.
    iterator: an iterator created by `iter()` on the selected dataset.
    **objects: further trackable objects to save alongside.

  Returns:
    A `tf.train.Checkpoint`.

  Raises:
    TypeError: if `selector` is not a `Selector` or `iterator` is not a `tf.data` iterator.
    ValueError: if `objects` reuses a name tfjest saves under.
  """
  selector = transform.check_selector(selector)
  if not isinstance(iterator, tf.data.Iterator):
    raise TypeError("iterator must come from iter() on the selected dataset. "
                    f"Received: iterator of type {type(iterator).__name__}")
  items = {"iterator": iterator, "selection_stats": selector.stats}
  for role in ("learner", "reference"):  # the models given to select(), scoring or not
    model = getattr(selector, role)
    if isinstance(model, keras.Model):
      items[role] = model
  if selector.proxy is not None:  # it trains in the pipeline: its state is the stream's too
    items.update(proxy=selector.proxy.model, proxy_optimizer=selector.proxy.optimizer,
                 proxy_steps=selector.proxy.steps)
  clash = sorted(set(objects) & set(items))
  if clash:
    raise ValueError(f"These names are saved by tfjest already: {clash}. "
                     f"Received: objects named {sorted(objects)}")
  return tf.train.Checkpoint(**items, **objects)


def _selection_state(selector: transform.Selector, consumed: tf.Variable) -> tf.train.Checkpoint:
  """What a backup holds besides the model: statistics, an online proxy, the stream position."""
  items = {"selection_stats": selector.stats, "consumed": consumed}
  if selector.proxy is not None:
    items.update(proxy=selector.proxy.model, proxy_optimizer=selector.proxy.optimizer,
                 proxy_steps=selector.proxy.steps)
  return tf.train.Checkpoint(**items)


class _Backup(keras.callbacks.BackupAndRestore):
  """Keras' callback, which also backs up a selected stream's state with the weights.

  With a selector, every save also writes `selection-<epoch>` (a `tf.train.Checkpoint` of the
  statistics, an online proxy, and the number of super-batches trained on since the stream
  started), and `on_train_begin` restores the one of the epoch Keras restores; an endless
  stream then skips that many super-batches when `fit` starts its iterator.
  """

  def __init__(self, backup_dir, selector=None, **kwargs):
    super().__init__(backup_dir, **kwargs)
    self._selector = selector
    if selector is not None:
      with tf.init_scope(), tf.device("/cpu:0"):
        self._consumed = tf.Variable(0, dtype=tf.int64, trainable=False, name="consumed")
      self._state = _selection_state(selector, self._consumed)
    self._seen = self._epoch_start = 0

  def _state_path(self, epoch) -> str:
    return os.path.join(self.backup_dir, f"selection-{epoch}")

  def on_train_begin(self, logs=None):
    super().on_train_begin(logs)
    self._seen = self._epoch_start = 0
    if self._selector is None:
      return
    self._consumed.assign(0)
    if tf.io.gfile.exists(self._training_metadata_path):
      with tf.io.gfile.GFile(self._training_metadata_path) as f:
        epoch = json.loads(f.read())["epoch"]
      path = self._state_path(epoch)
      if not tf.io.gfile.exists(path + ".index"):
        raise ValueError(
            f"The backup in {self.backup_dir} holds the model at epoch {epoch} but not the "
            "selected stream's state, so the stream would restart from its first super-batch. "
            "Resume from a backup written by tfjest.backup_and_restore with the same selector, "
            f"or start from an empty backup_dir. Received: no {path}")
      self._state.read(path).assert_existing_objects_matched()
      self._seen = self._epoch_start = int(self._consumed.numpy())
    self._selector.super_batches.start.assign(self._seen)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = self._seen

  def on_train_batch_end(self, batch, logs=None):
    self._seen = self._epoch_start + batch + 1  # `batch` is the last of the execution
    super().on_train_batch_end(batch, logs)

  def _save_model(self):
    super()._save_model()
    if self._selector is not None:
      self._consumed.assign(self._seen)
      self._state.write(self._state_path(self._current_epoch))

  def on_train_end(self, logs=None):
    super().on_train_end(logs)
    if self._selector is not None:  # a later fit without a backup starts at the beginning
      self._selector.super_batches.start.assign(0)


class _RestoreOnly(_Backup):
  """Restores the backup when training begins; never writes or deletes one.

  Keras 3 (3.15) documents `save_freq=False` as no saving, but compares the batch count with it
  as with 0 and saves after every batch; so the hooks that save and delete are switched off.
  """

  def on_epoch_end(self, epoch, logs=None):
    pass

  def on_train_batch_end(self, batch, logs=None):
    pass

  def on_train_end(self, logs=None):
    if self._selector is not None:
      self._selector.super_batches.start.assign(0)


def backup_and_restore(backup_dir: str, strategy: Optional[tf.distribute.Strategy] = None, *,
                       selector=None, **kwargs) -> keras.callbacks.BackupAndRestore:
  """Keras' `BackupAndRestore` callback for one worker of a cluster: only the chief writes.

  Use it in place of `keras.callbacks.BackupAndRestore` when `fit` may be preempted, with or
  without a strategy. Under `MultiWorkerMirroredStrategy` a preemption restarts the whole
  cluster (tf.distribute's fault-tolerance model), and every worker must resume from the same
  backup, while only the chief may write it: workers writing the same files would race.

  On the chief (`strategy.extended.should_checkpoint`, also true without a strategy) this returns
  Keras' own callback, which restores the backup when training begins, writes one at the end
  of every epoch and deletes it when `fit` completes. On the other workers it returns a
  callback that only restores. `save_freq=False` is refused: Keras 3 documents it as no saving
  but saves after every batch. `backup_dir` must be a path every worker reads (a shared file
  system or a bucket).

  With a selected stream, pass its `selector` (what `select` or `attach` returned): each backup
  then also holds the selection statistics, an online proxy's state and how many super-batches
  the model has trained on, and a resumed `fit` goes on exactly. On an endless stream
  (`repeat()` before `select`, `fit(..., steps_per_epoch=...)`, the usual setup) the new
  iterator skips the super-batches already trained on, keeping their indices (which key the
  noise): the resumed run reads, selects and trains like the uninterrupted one, and the
  statistics continue (tested with `deterministic_options()` and op determinism). Skipping reads
  those examples through the pipeline above `select` again, without scoring them. A finite
  stream restarts with each epoch anyway, so an epoch is the unit there with or without
  `selector`. Without `selector`, only the model (weights and optimizer) and the epoch are
  restored: an endless stream starts again from its first super-batch, with noise keys from 0,
  and the statistics from zero. `selection_checkpoint` resumes at any step.

  >>> import os
  >>> import tempfile
  >>> import tfjest
  >>> from tfjest import testing
  >>> model = testing.classifier(seed=0)
  >>> train_ds = testing.stream("classification", n=32).batch(8)
  >>> backup_dir = os.path.join(tempfile.mkdtemp(), "backup")
  >>> callback = tfjest.backup_and_restore(backup_dir, delete_checkpoint=False)
  >>> history = model.fit(train_ds, epochs=2, verbose=0, callbacks=[callback])
  >>> sorted(os.listdir(backup_dir))   # this process is the chief: it wrote the backup
  ['latest.weights.h5', 'latest.weights.h5.bkp', 'training_metadata.json',
   'training_metadata.json.bkp']
  >>> history = model.fit(train_ds, epochs=3, verbose=0, callbacks=[callback])
  >>> len(history.history["loss"])   # restored at the end of epoch 2: one epoch left
  1

  Args:
    backup_dir: the backup directory, as for `keras.callbacks.BackupAndRestore`; one per
      training run.
    strategy: the strategy the model trains under; None for the strategy in scope
      (`tf.distribute.get_strategy()`, the default one outside any scope, which is the chief).
    selector: the `Selector` (or `attach`'s `TrainStepSelection`) whose stream `fit` trains on,
      to back up and restore its state too; None for a model alone.
    **kwargs: further arguments of `keras.callbacks.BackupAndRestore`. `double_checkpoint`
      defaults to True here: two generations, so that a backup torn by the preemption falls
      back to the one before it.

  Returns:
    A `keras.callbacks.BackupAndRestore` to pass to `fit` on every worker.

  Raises:
    ValueError: if `backup_dir` is empty or `save_freq=False`; when training begins, if
      `selector` is given and the backup holds a model but no selection state.
    TypeError: if `strategy` is not a `tf.distribute.Strategy` (nothing with
      `extended.should_checkpoint`), or `selector` is not a selector.
  """
  if not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir):
    raise ValueError(f"backup_dir must be a non-empty path. Received: backup_dir={backup_dir!r}")
  if kwargs.get("save_freq", "epoch") is False:
    raise ValueError(
        "save_freq=False does not turn saving off in Keras 3: it saves after every batch. Use "
        "'epoch' or a number of batches; on workers other than the chief, "
        "tfjest.backup_and_restore never writes. Received: save_freq=False")
  if strategy is None:
    strategy = tf.distribute.get_strategy()
  chief = getattr(getattr(strategy, "extended", None), "should_checkpoint", None)
  if chief is None:
    raise TypeError("strategy must be a tf.distribute.Strategy (or None for the one in scope). "
                    f"Received: strategy of type {type(strategy).__name__}")
  if selector is not None:
    selector = transform.check_selector(selector)
  kwargs.setdefault("double_checkpoint", True)
  if not chief:
    return _RestoreOnly(os.fspath(backup_dir), selector, **kwargs)
  if selector is None:
    return keras.callbacks.BackupAndRestore(os.fspath(backup_dir), **kwargs)
  return _Backup(os.fspath(backup_dir), selector, **kwargs)
