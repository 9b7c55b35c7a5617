"""A Keras callback that puts tfjest's selection statistics into `fit`'s logs."""

import inspect
from typing import Optional

import keras
import tensorflow as tf

from tfjest import stats as stats_lib
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
  that each epoch has one entry. With `log_dir`, it also writes them as TensorBoard scalars itself.

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

  Raises:
    TypeError: if `selector` is not a `tfjest.Selector`.
  """

  def __init__(self, selector: transform.Selector, prefix: str = "selection_",
               log_dir: Optional[str] = None):
    super().__init__()
    transform.check_selector(selector)
    if not isinstance(prefix, str):
      raise TypeError(f"prefix must be a string. Received: prefix={prefix!r}")
    self.selector = selector
    self.prefix = prefix
    self.log_dir = log_dir
    self._writer = None
    self._epoch_start = None

  def on_train_begin(self, logs=None):
    self._epoch_start = None
    _move_to_front(self)
    if self.log_dir and self._writer is None:
      self._writer = tf.summary.create_file_writer(self.log_dir)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = self.selector.stats.snapshot()

  def on_epoch_end(self, epoch, logs=None):
    stats = self.selector.stats
    values = stats_lib.summarize(stats.snapshot(), self._epoch_start, stats.unit_costs(),
                                 recorded=stats.recorded())
    values = {self.prefix + k: v for k, v in values.items()}
    if logs is not None:
      logs.update(values)
    if self._writer is not None:
      with self._writer.as_default():
        for k, v in values.items():
          tf.summary.scalar(k, v, step=epoch)
      self._writer.flush()


def _move_to_front(callback: keras.callbacks.Callback, max_depth: int = 4) -> bool:
  """Puts `callback` first in the `CallbackList` calling it; returns whether one was found.

  The list is replaced, not edited in place, so a loop over the old list (the caller's own
  `on_train_begin`) runs every callback exactly once.
  """
  frame = inspect.currentframe()
  try:
    for _ in range(max_depth):
      frame = frame.f_back
      if frame is None:
        return False
      owner = frame.f_locals.get("self")
      if (isinstance(owner, keras.callbacks.CallbackList) and
          any(c is callback for c in owner.callbacks)):
        owner.callbacks = [callback] + [c for c in owner.callbacks if c is not callback]
        return True
    return False
  finally:
    del frame
