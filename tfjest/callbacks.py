"""A Keras callback that puts tfjest's selection statistics into `fit`'s logs."""

import inspect
import os
from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from tfjest import checks
from tfjest import stats as stats_lib
from tfjest import tensorboard
from tfjest import transform


class SelectionStatsCallback(keras.callbacks.Callback):
  """Logs a `Selector`'s statistics at the end of every epoch.

  Adds to the epoch logs (so to `History`, `keras.callbacks.TensorBoard`, `CSVLogger` and any
  callback that monitors them, wherever they stand in `fit`'s list) the counts so far
  (`<prefix>read`, `selected`, `filtered`, `left_over`, `batches`) and, over the epoch's
  batches, the mean learner and reference loss of selected and rejected examples and the mean
  batch score `s(B)`, and the epoch's FLOPs by part (`flops_training`, `flops_learner_scoring`,
  `flops_reference_scoring`, `flops_proxy_training`, `flops_selection`, `flops_total`,
  `flops_per_step`; see `tfjest.cost`). Only the keys `tfjest.SelectionStats` reports for the
  window are added; a loss mean of an epoch in which every batch was non-finite is NaN, so
  that each epoch has one entry. The selector's per-group rates (`group_rate/<value>`, with
  `select(group_key=...)`) and proxy fidelity (`fidelity_overlap`, `fidelity_rank_correlation`,
  `flops_fidelity`) are added when recorded. With `log_dir`, it also writes them as
  TensorBoard scalars itself.

  Pictures of selection (`tfjest.tensorboard`): while it has somewhere to write (`log_dir`, or
  else `<log_dir>/selection` of a `keras.callbacks.TensorBoard` in the same `fit`), every
  `every_n_steps` steps the selection step keeps one super-batch's scores and its highest- and
  lowest-scoring candidates, which this callback writes as images, text, histograms and
  scalars after that training batch. Without a place to write, nothing is sampled.

  Keras calls the callbacks of `fit` in list order, all with one `logs` dict, and
  `keras.callbacks.TensorBoard` writes that dict as it is when its own `on_epoch_end` runs, so
  the entries must be in `logs` before any other callback reads them. `on_train_begin`
  therefore moves this callback to the front of the `keras.callbacks.CallbackList` calling it,
  found as the `self` of a calling frame; it assigns a new list to `CallbackList.callbacks`, and
  the list passed to `fit` is not changed. This callback depends on no other, so running first
  changes no other callback's result. The alternatives need another callback's private state
  (TensorBoard's writer) or change the model (a metric traced into `train_function`). When no
  `CallbackList` calls it (a custom loop calling the hooks), the caller's order stands.

  Args:
    selector: the object returned by `tfjest.select(...)` and applied to the training data.
    prefix: prepended to every key.
    log_dir: optional directory for TensorBoard event files.
    every_n_steps: sample a super-batch for the pictures every this many steps (0: never).
    images: path(s) of the image features to show (default: found by shape and dtype).
    captions: path of the caption or label feature to show (default: a string feature, else
      one named caption/text/label, else the labels).
    vocabulary: words by token id, to show token-id captions as text.
    decode_fn: a function from a caption's token ids (NumPy) to a string.

  Raises:
    TypeError: if `selector` is not a `tfjest.Selector`.
    ValueError: if `every_n_steps` is not an integer >= 0, or both `vocabulary` and
      `decode_fn` are given, or `decode_fn` is not callable.
  """

  def __init__(self, selector: transform.Selector, prefix: str = "selection_",
               log_dir: Optional[str] = None, *, every_n_steps: int = 100,
               images: Optional[Sequence[str]] = None, captions: Optional[str] = None,
               vocabulary: Optional[Sequence[str]] = None,
               decode_fn: Optional[Callable] = None):
    super().__init__()
    selector = transform.check_selector(selector)
    if not isinstance(prefix, str):
      raise TypeError(f"prefix must be a string. Received: prefix={prefix!r}")
    every_n_steps = checks.integer(every_n_steps, "every_n_steps", minimum=0)
    if decode_fn is not None and not callable(decode_fn):
      raise ValueError(f"decode_fn must be callable. Received: decode_fn={decode_fn!r}")
    if decode_fn is not None and vocabulary is not None:
      raise ValueError("Pass vocabulary or decode_fn, not both. Received: both")
    self.selector = selector
    self.prefix = prefix
    self.log_dir = log_dir
    self.every_n_steps = every_n_steps
    self.pictures = tensorboard.SummaryWriter(
        selector.summaries, score=selector.setup.score, images=images, captions=captions,
        vocabulary=vocabulary, decode_fn=decode_fn, prefix=prefix)
    self._writer = None
    self._epoch_start = None
    self._fidelity_start = 0

  def on_train_begin(self, logs=None):
    self._epoch_start = None
    callbacks = _move_to_front(self)
    log_dir = self.log_dir
    if not log_dir and callbacks is not None:
      board = next((c for c in callbacks.callbacks
                    if isinstance(c, keras.callbacks.TensorBoard)), None)
      log_dir = os.path.join(board.log_dir, "selection") if board is not None else None
    if log_dir and self._writer is None:
      self._writer = tf.summary.create_file_writer(log_dir)
    # The step samples only while there is somewhere to write the samples.
    self.selector.summaries.set_every(self.every_n_steps if self._writer is not None else 0)

  def on_train_batch_end(self, batch, logs=None):
    if self._writer is not None and self.every_n_steps:
      self.pictures.write_if_new(self._writer, self._step(batch))

  def _step(self, default: int = 0) -> int:
    """The summaries' step: the optimizer's iterations (`default` without a model)."""
    optimizer = getattr(self.model, "optimizer", None) if self.model is not None else None
    return int(optimizer.iterations.numpy()) if optimizer is not None else default

  def on_train_end(self, logs=None):
    self.selector.summaries.set_every(0)
    if self._writer is not None:
      self._writer.flush()

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = self.selector.stats.snapshot()
    self._fidelity_start = int(self.selector.summaries.fidelity_checks.numpy())

  def on_epoch_end(self, epoch, logs=None):
    stats = self.selector.stats
    values = stats_lib.summarize(stats.snapshot(), self._epoch_start, stats.unit_costs(),
                                 recorded=stats.recorded())
    extra = self.selector.summaries.result(stats.unit_costs())
    if "flops_fidelity" in extra:  # this epoch's checks, as the other FLOPs
      checks = int(self.selector.summaries.fidelity_checks.numpy()) - self._fidelity_start
      extra["flops_fidelity"] = self.selector.summaries.fidelity_flops * checks
      values["flops_total"] = values.get("flops_total", 0.0) + extra["flops_fidelity"]
    values.update(extra)
    values = {self.prefix + k: v for k, v in values.items()}
    if logs is not None:
      logs.update(values)
    if self._writer is not None:
      with self._writer.as_default():
        if self.log_dir:  # else a keras.callbacks.TensorBoard writes `logs` itself
          for k, v in values.items():
            if not k.startswith((self.prefix + "group_rate/", self.prefix + "fidelity_")):
              tf.summary.scalar(k, v, step=epoch)  # those two are written per step
        self.pictures.write_if_new(self._writer, self._step())
      self._writer.flush()


def _move_to_front(callback: keras.callbacks.Callback, max_depth: int = 4):
  """Puts `callback` first in the `CallbackList` calling it; returns that list (or None).

  The list is replaced, not edited in place, so a loop over the old list (the caller's own
  `on_train_begin`) runs every callback exactly once.
  """
  frame = inspect.currentframe()
  try:
    for _ in range(max_depth):
      frame = frame.f_back
      if frame is None:
        return None
      owner = frame.f_locals.get("self")
      if (isinstance(owner, keras.callbacks.CallbackList) and
          any(c is callback for c in owner.callbacks)):
        owner.callbacks = [callback] + [c for c in owner.callbacks if c is not callback]
        return owner
    return None
  finally:
    del frame
