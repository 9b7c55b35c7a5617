"""A Keras callback that puts tfjest's selection statistics into `fit`'s logs."""

from typing import Optional

import keras
import tensorflow as tf

from tfjest import stats as stats_lib
from tfjest import transform


class SelectionStatsCallback(keras.callbacks.Callback):
  """Logs a `Selector`'s statistics at the end of every epoch.

  Adds to the epoch logs (so to `History`, and to a `keras.callbacks.TensorBoard` placed after
  this callback) the counts so far (`<prefix>read`, `selected`, `filtered`, `left_over`,
  `batches`) and, over the epoch's batches, the mean learner and reference loss of selected and
  rejected examples and the mean batch score `s(B)`, and the epoch's FLOPs by part
  (`flops_training`, `flops_learner_scoring`, `flops_reference_scoring`, `flops_proxy_training`,
  `flops_selection`, `flops_total`, `flops_per_step`; see `tfjest.cost`). With `log_dir`, it
  also writes them as TensorBoard scalars itself.

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
    if self.log_dir and self._writer is None:
      self._writer = tf.summary.create_file_writer(self.log_dir)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = self.selector.stats.snapshot()

  def on_epoch_end(self, epoch, logs=None):
    stats = self.selector.stats
    values = stats_lib.summarize(stats.snapshot(), self._epoch_start, stats.unit_costs())
    values = {self.prefix + k: v for k, v in values.items()}
    if logs is not None:
      logs.update(values)
    if self._writer is not None:
      with self._writer.as_default():
        for k, v in values.items():
          tf.summary.scalar(k, v, step=epoch)
      self._writer.flush()
