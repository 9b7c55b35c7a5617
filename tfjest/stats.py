"""Selection statistics: one batch's as a pure function, and their running totals.

`batch_statistics` turns one selection (which candidates were read, chosen, usable, and the
per-example losses of the models that were read) into sums and counts. It is pure, so both
placements call it: the `tf.data` map records its result directly; the replicated train step
first all-reduces the sums and counts over the replicas (`reduce_sum`), so `R` shards give the
same numbers as one super-batch of `N`.

`SelectionStats` keeps the running totals in variables. Counts are exact: every example read is
either selected, filtered out, or left over in a final partial super-batch that was dropped, so
`read == selected + filtered + left_over` always holds. `non_finite` counts real candidates whose
score was NaN or infinite (selection takes them last). Loss means are per emitted batch, over
usable candidates only (real, finite score, non-zero sample weight), summed so that a reader can
take differences over a window (an epoch) and divide by the number of batches that had a value.
A statistic no batch had (the learner's loss under "easy_reference") is not reported at all;
one the step records but no batch of a window had a value for (every candidate non-finite) is
NaN for that window.

Because `fit` prefetches, the pipeline runs 0-2 batches ahead of the training step: statistics
read during training describe the batches produced so far, which may not yet be consumed.

FLOPs (docs/SPEC.md §7) need no variables: each part is a fixed cost per selected example
(training the learner, and a proxy) or per super-batch (scoring, selection), so totals follow
from the counts. The transformation computes those unit costs once, when it is applied, and
hands them to `set_unit_costs`; `result()` and the callback then report `flops_<part>` totals and
`flops_per_step` (see `tfjest.cost` for how FLOPs are counted).
"""

from typing import Callable, Dict, Optional

import tensorflow as tf

COUNTS = ("read", "selected", "filtered", "left_over", "batches", "non_finite")
# The models whose per-example losses can be read: the learner, an online proxy scoring for it,
# and the reference (live or cached).
ROLES = ("learner", "proxy", "reference")
PARTS = ("selected", "rejected")
# Per-batch means summed over the batches that had a value; each has its own batch count.
SUMS = tuple(f"{role}_loss_{part}" for role in ROLES for part in PARTS) + ("batch_score",)
# The warnings a selector prints once (`SelectionStats.warned`).
WARNINGS = ("non_finite",)
# FLOP parts, and what each is paid per: a selected example or a (scored) super-batch.
PER_SELECTED = ("training", "proxy_training")
PER_SCORED_BATCH = ("learner_scoring", "reference_scoring")
PER_BATCH = ("selection",)


def batch_statistics(*, read, selected, chosen, usable, finite, real,
                     losses: Dict[str, tf.Tensor], batch_score=None,
                     reduce_sum: Callable[[tf.Tensor], tf.Tensor] = tf.identity
                     ) -> Dict[str, tf.Tensor]:
  """Sums and counts of one selection (graph-safe, XLA-safe, pure).

  Args:
    read: examples of the super-batch (or shard) that are real (not padding).
    selected: examples emitted.
    chosen: `[n]` bool, the emitted candidates.
    usable: `[n]` bool, candidates whose losses enter the means (real, finite, weight > 0).
    finite: `[n]` bool, candidates with a finite score.
    real: `[n]` bool, candidates that are examples of the stream (not padding).
    losses: `{role: [n]}` per-example losses of the models read (roles from `ROLES`).
    batch_score: `s(B)` of the emitted batch (already global under replicas), or None.
    reduce_sum: sums a tensor over replicas (identity in the pipeline; an all-reduce in a
      replicated step). Applied to the stacked sums and counts in one call.

  Returns:
    `{"read", "selected", "non_finite"}` int64 counts and, per role read and part,
    `"<role>_loss_<part>_sum"` / `"_count"` float32, plus `"batch_score"` when given.
  """
  names, values = ["read", "selected", "non_finite"], [
      tf.cast(read, tf.float32), tf.cast(selected, tf.float32),
      tf.reduce_sum(tf.cast(~finite & real, tf.float32))]
  for role in ROLES:
    if role not in losses:
      continue
    loss = tf.cast(losses[role], tf.float32)
    for part, mask in (("selected", chosen & usable), ("rejected", ~chosen & usable)):
      names += [f"{role}_loss_{part}_sum", f"{role}_loss_{part}_count"]
      values += [tf.reduce_sum(tf.where(mask, loss, 0.0)), tf.reduce_sum(tf.cast(mask, tf.float32))]
  totals = tf.unstack(reduce_sum(tf.stack(values)))
  out = dict(zip(names, totals))
  for k in ("read", "selected", "non_finite"):
    out[k] = tf.cast(tf.round(out[k]), tf.int64)
  if batch_score is not None:
    out["batch_score"] = tf.cast(batch_score, tf.float32)
  return out


class SelectionStats(tf.Module):
  """Counters and sums of per-batch statistics, as `tf.Variable`s on the host CPU.

  A `tf.Module`, so it can be saved in a `tf.train.Checkpoint` next to the model and the input
  iterator, and restored with them.

  The `tf.data` pipeline records on the host. A train step that Keras compiles whole with XLA
  (`compile(jit_compile=True)`, the default "auto" on one GPU) can update only variables on its
  own device, so selection in such a step records into a second set of the same counters
  created on the model's device (`on_device`), which XLA updates like an optimizer's slots;
  every reading (`snapshot`, `result`) adds the two sets, and `reset` clears both.

  Args:
    name: the module's name.
    device: where the counters live ("/cpu:0", the host, by default).
  """

  def __init__(self, name: str = "selection_stats", *, device: str = "/cpu:0"):
    super().__init__(name=name)
    with tf.init_scope(), tf.device(device):
      self._counts = {k: tf.Variable(0, dtype=tf.int64, trainable=False, name=k)
                      for k in COUNTS}
      self._sums = {k: tf.Variable(0.0, dtype=tf.float64, trainable=False, name=k)
                    for k in SUMS}
      self._valued = {k: tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{k}_batches")
                      for k in SUMS}
    self._unit_costs = None
    self._step_totals = None
    # The statistics a step records (known when it is traced): a window in which none of its
    # batches had a value reports NaN for them, so that every epoch has an entry.
    self._recorded = set()
    # Once-per-selector warnings, in a plain holder: not part of a checkpoint of the totals.
    # Created now: a variable created while the step is traced makes tf.function (and so
    # `Dataset.map`) trace the whole step a second time.
    self._flags = _Flags(device, WARNINGS)
    # More readings for `result()` and what resets them (the selector's `SelectionSummaries`):
    # bound methods, so that a checkpoint of these counters does not track that module.
    self.extra_result = None
    self.extra_reset = None

  def warned(self, name: str) -> tf.Variable:
    """A bool variable for a warning printed once per selector (e.g. "non_finite")."""
    return self._flags.get(name)

  def recorded(self) -> frozenset:
    """The `SUMS` a step of this selection records (once its step has been traced)."""
    step = self._step_totals.recorded() if self._step_totals is not None else frozenset()
    return frozenset(self._recorded) | step

  @property
  def device(self) -> str:
    """The device of this set of counters."""
    return self._counts["read"].device

  def on_device(self, device: str) -> "SelectionStats":
    """The counters a train step on `device` records into (`record_batch`).

    Created on the first call; later calls return the same counters (a selector is attached
    to one model, whose train step runs on one device). Their totals are part of this
    object's readings.
    """
    if self._step_totals is None:
      self._step_totals = SelectionStats(f"{self.name}_step", device=device)
    return self._step_totals

  def set_unit_costs(self, costs: Optional[Dict[str, Optional[float]]]):
    """Sets FLOPs per unit (`PER_SELECTED` parts per selected example, the others per
    super-batch; a part may be None when unknown), or None when they are not known."""
    self._unit_costs = None if costs is None else dict(costs)

  def unit_costs(self) -> Optional[Dict[str, Optional[float]]]:
    """The unit costs set when the transformation was applied, or None."""
    return self._unit_costs

  def reset(self):
    for v in (list(self._counts.values()) + list(self._sums.values()) +
              list(self._valued.values())):
      v.assign(tf.zeros_like(v))
    if self._step_totals is not None:
      self._step_totals.reset()
    if self.extra_reset is not None:
      self.extra_reset()

  def record_batch(self, values: Dict[str, tf.Tensor]):
    """Adds one selection's `batch_statistics` (graph-safe). Returns the update op."""
    read = tf.cast(values["read"], tf.int64)
    selected = tf.cast(values["selected"], tf.int64)
    ops = [self._counts["read"].assign_add(read),
           self._counts["non_finite"].assign_add(tf.cast(values["non_finite"], tf.int64)),
           self._counts["selected"].assign_add(selected),
           self._counts["filtered"].assign_add(read - selected),
           self._counts["batches"].assign_add(1)]
    for key in SUMS:
      if key == "batch_score":
        if key not in values:
          continue
        mean, has = tf.cast(values[key], tf.float64), tf.constant(True)
      elif f"{key}_sum" in values:
        count = values[f"{key}_count"]
        mean = tf.cast(tf.math.divide_no_nan(values[f"{key}_sum"], count), tf.float64)
        has = count > 0
      else:
        continue
      self._recorded.add(key)
      ops.append(self._sums[key].assign_add(tf.where(has, mean, tf.zeros([], tf.float64))))
      ops.append(self._valued[key].assign_add(tf.cast(has, tf.int64)))
    return tf.group(ops)

  def record_left_over(self, count):
    """Counts examples of a final partial super-batch that was dropped (graph-safe)."""
    count = tf.cast(count, tf.int64)
    return tf.group(self._counts["read"].assign_add(count),
                    self._counts["left_over"].assign_add(count))

  def snapshot(self) -> Dict[str, float]:
    """Current totals: the `COUNTS`, the `SUMS` and `<sum>_batches`, as Python numbers."""
    out = {k: int(v.numpy()) for k, v in self._counts.items()}
    out.update({k: float(v.numpy()) for k, v in self._sums.items()})
    out.update({f"{k}_batches": int(v.numpy()) for k, v in self._valued.items()})
    if self._step_totals is not None:
      step = self._step_totals.snapshot()
      out = {k: value + step[k] for k, value in out.items()}
    return out

  def result(self) -> Dict[str, float]:
    """Counts so far and the mean of each per-batch statistic over the batches that had it."""
    out = summarize(self.snapshot(), None, self.unit_costs(), recorded=self.recorded())
    if self.extra_result is not None:
      extra = self.extra_result(self.unit_costs())
      if "flops_fidelity" in extra:
        out["flops_total"] = out.get("flops_total", 0.0) + extra["flops_fidelity"]
      out.update(extra)
    return out


class _Flags:
  """Bool variables on `device`: those of `names` at once, others on first use."""

  def __init__(self, device: str, names=()):
    self._device = device
    self._flags = {}
    for name in names:
      self.get(name)

  def get(self, name: str) -> tf.Variable:
    if name not in self._flags:
      with tf.init_scope(), tf.device(self._device):
        self._flags[name] = tf.Variable(False, trainable=False, name=f"warned_{name}")
    return self._flags[name]


def summarize(now: Dict[str, float], before, costs: Optional[Dict[str, float]] = None,
              recorded=()) -> Dict[str, float]:
  """Counts at `now` and per-batch means over the window `before -> now` (`None`: since 0).

  A statistic no batch of the window had is NaN if it is one of `recorded` (the statistics
  the step records, `SelectionStats.recorded()`: e.g. the learner's loss while every candidate
  scored NaN), so that each window has an entry; otherwise it is left out. With `costs` (see
  `SelectionStats.set_unit_costs`), also the window's FLOPs: `flops_<part>` for each known part,
  `flops_total`, and `flops_per_step` (per emitted batch).
  """
  before = before or {}
  out = {k: now[k] for k in COUNTS}
  for k in SUMS:
    valued = now[f"{k}_batches"] - before.get(f"{k}_batches", 0)
    if valued > 0:
      out[k] = (now[k] - before.get(k, 0.0)) / valued
    elif k in recorded:
      out[k] = float("nan")
  if costs:
    scored = now["batch_score_batches"] - before.get("batch_score_batches", 0)
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

