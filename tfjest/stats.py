"""Running selection statistics, kept in variables the input pipeline updates.

Counts are exact: every example read is either selected, filtered out, or left over in a final
partial super-batch that was dropped, so `read == selected + filtered + left_over` always holds.
`non_finite` counts candidates whose score was NaN or infinite (selection takes them last).
Loss means are per emitted batch, summed so that a reader can take differences over a window
(an epoch) and divide by the number of batches in it.

Because `fit` prefetches, the pipeline runs 0-2 batches ahead of the training step: statistics
read during training describe the batches produced so far, which may not yet be consumed.
"""

from typing import Dict

import tensorflow as tf

COUNTS = ("read", "selected", "filtered", "left_over", "batches", "non_finite")
# Per-batch means summed over batches (NaN-free: batches without a value add 0 and are not
# counted in the matching `*_batches` denominator).
SUMS = ("learner_loss_selected", "learner_loss_rejected", "reference_loss_selected",
        "reference_loss_rejected", "batch_score")


class SelectionStats(tf.Module):
  """Counters and sums of per-batch statistics, as `tf.Variable`s on the host CPU.

  A `tf.Module`, so it can be saved in a `tf.train.Checkpoint` next to the model and the input
  iterator, and restored with them.
  """

  def __init__(self, name: str = "selection_stats"):
    super().__init__(name=name)
    with tf.init_scope(), tf.device("/cpu:0"):
      self._counts = {k: tf.Variable(0, dtype=tf.int64, trainable=False, name=k)
                      for k in COUNTS}
      self._sums = {k: tf.Variable(0.0, dtype=tf.float64, trainable=False, name=k)
                    for k in SUMS}
      self._scored = tf.Variable(0, dtype=tf.int64, trainable=False, name="scored_batches")

  def reset(self):
    for v in list(self._counts.values()) + list(self._sums.values()) + [self._scored]:
      v.assign(tf.zeros_like(v))

  def record_batch(self, read, selected, values: Dict[str, tf.Tensor], non_finite=0):
    """Adds one super-batch (graph-safe).

    Args:
      read: examples in the super-batch.
      selected: examples emitted.
      values: the `SUMS` entries for this batch, or empty when nothing was scored.
      non_finite: candidates whose score was NaN or infinite.
    """
    read = tf.cast(read, tf.int64)
    selected = tf.cast(selected, tf.int64)
    ops = [self._counts["read"].assign_add(read),
           self._counts["non_finite"].assign_add(tf.cast(non_finite, tf.int64)),
           self._counts["selected"].assign_add(selected),
           self._counts["filtered"].assign_add(read - selected),
           self._counts["batches"].assign_add(1)]
    if values:
      ops.append(self._scored.assign_add(1))
      for k in SUMS:
        ops.append(self._sums[k].assign_add(tf.cast(values[k], tf.float64)))
    return tf.group(ops)

  def record_left_over(self, count):
    """Counts examples of a final partial super-batch that was dropped (graph-safe)."""
    count = tf.cast(count, tf.int64)
    return tf.group(self._counts["read"].assign_add(count),
                    self._counts["left_over"].assign_add(count))

  def snapshot(self) -> Dict[str, float]:
    """Current totals: the `COUNTS`, the `SUMS` and `scored_batches`, as Python numbers."""
    out = {k: int(v.numpy()) for k, v in self._counts.items()}
    out.update({k: float(v.numpy()) for k, v in self._sums.items()})
    out["scored_batches"] = int(self._scored.numpy())
    return out

  def result(self) -> Dict[str, float]:
    """Counts so far and the mean of each per-batch statistic over all scored batches."""
    return summarize(self.snapshot(), None)


def summarize(now: Dict[str, float], before) -> Dict[str, float]:
  """Counts at `now` and per-batch means over the window `before -> now` (`None`: since 0)."""
  before = before or {}
  out = {k: now[k] for k in COUNTS}
  scored = now["scored_batches"] - before.get("scored_batches", 0)
  if scored > 0:
    for k in SUMS:
      out[k] = (now[k] - before.get(k, 0.0)) / scored
  return out
