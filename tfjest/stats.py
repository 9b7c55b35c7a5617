"""Running selection statistics, kept in variables the input pipeline updates.

Counts are exact: every example read is either selected, filtered out, or left over in a final
partial super-batch that was dropped, so `read == selected + filtered + left_over` always holds.
`non_finite` counts candidates whose score was NaN or infinite (selection takes them last).
Loss means are per emitted batch, summed so that a reader can take differences over a window
(an epoch) and divide by the number of batches in it.

Because `fit` prefetches, the pipeline runs 0-2 batches ahead of the training step: statistics
read during training describe the batches produced so far, which may not yet be consumed.

FLOPs (JEST_SPEC section 7) need no variables: each part is a fixed cost per selected example
(training the learner, and a proxy) or per super-batch (scoring, selection), so totals follow
from the counts. A `Selector` attaches its unit costs; `result()` and the callback then report
`flops_<part>` totals and `flops_per_step` (see `tfjest.cost` for how FLOPs are counted).
"""

from typing import Callable, Dict, Optional

from absl import logging

import tensorflow as tf

COUNTS = ("read", "selected", "filtered", "left_over", "batches", "non_finite")
# Per-batch means summed over batches (NaN-free: batches without a value add 0 and are not
# counted in the matching `*_batches` denominator).
SUMS = ("learner_loss_selected", "learner_loss_rejected", "reference_loss_selected",
        "reference_loss_rejected", "batch_score")
# FLOP parts, and what each is paid per: a selected example or a (scored) super-batch.
PER_SELECTED = ("training", "proxy_training")
PER_SCORED_BATCH = ("learner_scoring", "reference_scoring")
PER_BATCH = ("selection",)


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
    self._cost_source = None

  def set_cost_source(self, source: Optional[Callable[[], Optional[Dict[str, float]]]]):
    """Attaches a function returning FLOPs per unit (`PER_SELECTED` parts per selected example,
    the others per super-batch; a part may be None when unknown), or None before use."""
    self._cost_source = source

  def unit_costs(self) -> Optional[Dict[str, float]]:
    """The attached unit costs, or None (no source, not applied yet, or counting failed)."""
    if self._cost_source is None:
      return None
    try:
      return self._cost_source()
    except Exception as e:  # pylint: disable=broad-except
      # FLOPs are a report; a model the counter cannot trace must not stop training.
      logging.warning("tfjest: FLOP accounting is off for these statistics: %s", e)
      self._cost_source = None
      return None

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
    return summarize(self.snapshot(), None, self.unit_costs())


def summarize(now: Dict[str, float], before, costs: Optional[Dict[str, float]] = None
             ) -> Dict[str, float]:
  """Counts at `now` and per-batch means over the window `before -> now` (`None`: since 0).

  With `costs` (see `SelectionStats.set_cost_source`), also the window's FLOPs:
  `flops_<part>` for each known part, `flops_total`, and `flops_per_step` (per emitted batch).
  """
  before = before or {}
  out = {k: now[k] for k in COUNTS}
  scored = now["scored_batches"] - before.get("scored_batches", 0)
  if scored > 0:
    for k in SUMS:
      out[k] = (now[k] - before.get(k, 0.0)) / scored
  if costs:
    units = {"selected": now["selected"] - before.get("selected", 0), "scored": scored,
             "batches": now["batches"] - before.get("batches", 0)}
    per = dict([(p, "selected") for p in PER_SELECTED] + [(p, "scored") for p in PER_SCORED_BATCH]
               + [(p, "batches") for p in PER_BATCH])
    flops = {f"flops_{part}": float(costs[part]) * units[unit]
             for part, unit in per.items() if costs.get(part) is not None}
    out.update(flops)
    out["flops_total"] = sum(flops.values())
    if units["batches"] > 0:
      out["flops_per_step"] = out["flops_total"] / units["batches"]
  return out
