"""One replica's selection: the selection step with the replica context's collectives.

`ReplicaSelection` runs the selector's one `step.SelectionStep` (the one the `tf.data` map runs)
on one replica's shard of a super-batch, with `ReplicaCollective` for what crosses replicas
(all-reduce of the statistics, all-gather of chosen embeddings for global selection, recording
once). Selection is per replica by default; `replica_selection="global"` conditions every chunk
of joint selection on every replica's choices (docs/SPEC.md §6, `global_scores.GlobalScores`).
"""

import tensorflow as tf

from tfjest import step as step_lib
from tfjest import transform
from tfjest.distribute import guards

REPLICA_SELECTIONS = ("local", "global")
# Keys of the elements an attached transformation emits: the super-batch, and the cached
# reference values joined to it on the host.
SUPER_BATCH, JOINED = "tfjest_super_batch", "tfjest_reference_values"


class ReplicaCollective(step_lib.Collective):
  """The selection step's collectives in a replica context: all-reduce, all-gather, record once."""

  def __init__(self, ctx: tf.distribute.ReplicaContext, global_selection: bool):
    self.ctx = ctx
    self.num_replicas = ctx.num_replicas_in_sync
    self.replica_id = ctx.replica_id_in_sync_group
    self.global_selection = global_selection

  def reduce_sum(self, value):
    if self.num_replicas == 1:
      return value
    return self.ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)

  def all_gather(self, value):
    if self.num_replicas == 1:
      return value
    return self.ctx.all_gather(value, axis=0)

  def record(self, stats, values, proxy=None):
    # The values are already reduced over the replicas; the host-side variables are updated
    # once, with the first replica's copy.
    def record(strategy, values):
      first = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], values)
      return step_lib.Collective.record(self, stats, first, proxy)
    return self.ctx.merge_call(record, args=(values,))

  def count_proxy_step(self, proxy):
    return self.ctx.merge_call(lambda strategy: proxy.steps.assign_add(1))

  def record_local(self, fn, values):
    # Scalars are the same on every replica (the step, a flag): the first replica's is kept.
    def record(strategy, values):
      def join(v):
        parts = strategy.experimental_local_results(v)
        return parts[0] if parts[0].shape.rank == 0 else tf.concat(parts, axis=0)
      return fn(tf.nest.map_structure(join, values))
    return self.ctx.merge_call(record, args=(values,))


class ReplicaSelection:
  """Selects `b / R` examples from one replica's shard of a super-batch.

  Call it in replica context (inside `strategy.run`, a Keras train step, or anywhere with the
  default strategy, where `R = 1`). It runs the selector's one `step.SelectionStep` (the one the
  `tf.data` map runs) with the replica's collectives: the learner and reference are called in
  the caller's graph; the selection maths runs in an inner `tf.function(jit_compile=True)` when
  `jit_compile` and the selection is per replica. (Global selection all-gathers after every
  chunk, and `MirroredStrategy`'s all-gather is a `merge_call`, which cannot run inside a nested
  function: there the chunk loop stays in the step's graph; under `TPUStrategy` the whole step
  is XLA.) An online proxy is trained on the replica's selected examples, its gradients summed
  over the replicas by its optimizer.

  Args:
    selector: the `Selector` returned by `tfjest.select`.
    replica_selection: "local" (each replica selects from its own shard) or "global" (joint
      selection conditions on every replica's chosen chunks).
    jit_compile: compile the per-replica selection maths with XLA.
    record_stats: add every step to `selector.stats` (all-reduced over replicas).

  Raises:
    TypeError: if `selector` is not a `tfjest.Selector`.
    ValueError: on an unknown `replica_selection` or a non-bool `jit_compile`.
  """

  def __init__(self, selector: transform.Selector, *, replica_selection: str = "local",
               jit_compile: bool = True, record_stats: bool = True):
    selector = transform.check_selector(selector)
    if replica_selection not in REPLICA_SELECTIONS:
      raise ValueError(f"Expected replica_selection in {REPLICA_SELECTIONS}. "
                       f"Received: replica_selection={replica_selection!r}")
    if not isinstance(jit_compile, bool):
      raise ValueError(f"jit_compile must be a bool. Received: jit_compile={jit_compile!r}")
    self.selector = selector
    self.replica_selection = replica_selection
    self.jit_compile = jit_compile
    self.record_stats = record_stats
    self.step = step_lib.SelectionStep(
        selector.rule, selector.scorer, selector.stats, batch_size=selector.batch_size,
        super_batch_size=selector.super_batch_size, jit_compile=jit_compile,
        summaries=selector.summaries)

  def record_on(self, device: str):
    """Records this selection's statistics (and an online proxy's step count) on `device`.

    For a train step that Keras compiles whole with XLA on one device: such a program updates
    only variables on its own device (that of the model's variables), so the counters must live
    there (`SelectionStats.on_device`; tested on CPU with a model on a second logical CPU
    device; untested on a GPU). Readings of `selector.stats` include them.
    """
    self.step.stats = self.selector.stats.on_device(device)
    if self.selector.proxy is not None:
      self.selector.proxy.place_steps(device)

  def prepare(self, element_spec):
    """Builds and checks the scoring models for elements of `element_spec` (single examples).

    Applying the attached transformation does this; call it directly when calling this object
    in a custom loop. Call it under the strategy's scope, as models built here get their
    variables on the replicas.
    """
    self.selector.prepare(element_spec)

  def __call__(self, shard, step):
    """Returns the selected `b / R` examples of `shard` (`N / R` examples), in shard order.

    Args:
      shard: this replica's part of the super-batch, in the stream's element structure.
      step: int scalar; with the selector's seed and this replica's id it keys the noise.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
      raise RuntimeError("ReplicaSelection must be called in a replica context (inside "
                         "strategy.run or a Keras train step).")
    replicas = ctx.num_replicas_in_sync
    guards.check_divisible(self.selector, replicas)
    n = self.selector.super_batch_size // replicas
    joined = None
    if isinstance(shard, dict) and SUPER_BATCH in shard:  # from the attached pipeline
      shard, joined = shard[SUPER_BATCH], shard.get(JOINED)
    shard = tf.nest.map_structure(lambda t: ensure_leading(t, n), shard)
    if joined is not None:
      joined = tf.nest.map_structure(lambda t: ensure_leading(t, n), joined)
    collective = ReplicaCollective(ctx, self.replica_selection == "global")
    return self.step(shard, step, collective=collective, record=self.record_stats,
                     joined=joined)


def ensure_leading(t, n):
  if t.shape.rank and t.shape[0] is not None and t.shape[0] != n:
    raise ValueError(
        f"Each replica expected its shard of N / R = {n} examples of the super-batch. Apply "
        "the attached selector to the dataset given to fit (it emits super-batches of N) and "
        f"do not batch it again. Received: a shard of {t.shape[0]} examples")
  return tf.ensure_shape(t, [n] + t.shape[1:])
