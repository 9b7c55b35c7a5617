"""Scoring and selection inside the replicated train step: `tfjest.attach`.

Under a `tf.distribute` strategy the learner's variables live on the replicas and `tf.data`
runs on the host, so scoring with the live learner belongs in the train step. `attach` makes
that so with one line and no change to the model's class:

- the selector's pipeline emits super-batches of `N` examples (a global batch, as
  `tf.distribute` expects); the strategy gives each of the `R` replicas its shard of `N / R`;
- the model's train step, on each replica, scores its shard with that step's weights (learner)
  and the replicated frozen reference, chooses `b / R` examples, and runs the model's own
  `train_step` on them.

Selection is per replica by default; `replica_selection="global"` conditions every chunk of
joint selection on every replica's choices (JEST_SPEC section 6, `global_scores.GlobalScores`).
Without a strategy, `attach` leaves the model alone and selection stays in the `tf.data` map
when the models it reads live on the host CPU; when one of them lives on a GPU or TPU
(`tfjest.devices`), selection goes into the train step, with its statistics' counters on the
model's device so that a step Keras compiles whole with XLA (its default on one GPU) updates
them. So the same user code runs everywhere.
"""

import contextlib
from typing import Optional
import weakref

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfjest import adapters
from tfjest import devices
from tfjest import keras_compat
from tfjest import step as step_lib
from tfjest import transform

REPLICA_SELECTIONS = ("local", "global")
PLACEMENTS = ("auto", "train_step")
# Keys of the elements an attached transformation emits when it joins cached reference values.
_SUPER_BATCH, _JOINED = "tfjest_super_batch", "tfjest_reference_values"
# Selectors attached to a model's train step (one model per selector), without marking them.
_ATTACHED = weakref.WeakKeyDictionary()


def model_strategy(model: keras.Model) -> Optional[tf.distribute.Strategy]:
  """The strategy a Keras model was created under, or None for the default strategy."""
  return adapters.model_strategy(model)


def _is_tpu(strategy) -> bool:
  return any(k.__name__.startswith("TPUStrategy") for k in type(strategy).__mro__)


def _check_divisible(selector: transform.Selector, replicas: int):
  n, b, k = selector.super_batch_size, selector.batch_size, selector.num_chunks
  if n % replicas or b % replicas or (b // replicas) % k:
    raise ValueError(
        f"Selection on {replicas} replicas gives each replica N / R candidates and b / R "
        f"picks in chunks of b / (R * K), so super_batch_size, batch_size and batch_size / "
        f"num_chunks must all be divisible by the number of replicas. Received: "
        f"super_batch_size={n}, batch_size={b}, num_chunks={k}, replicas={replicas}")


def _tf_variable(v):
  return getattr(v, "value", v) if isinstance(v, keras.Variable) else v


def _check_models(selector: transform.Selector, model: keras.Model, strategy):
  """The reference must be frozen to the step and replicated like the learner."""
  if selector.scorer is None:
    return
  trainable = {id(_tf_variable(v)) for v in model.trainable_weights}
  for role, scorer_model in selector.scorer.models.items():
    if scorer_model is model:
      continue
    if any(id(_tf_variable(v)) in trainable for v in scorer_model.weights):
      raise ValueError(
          f"The {role}'s weights are among the trainable weights of the model being trained, "
          f"so the train step would update them. Set `{role}.trainable = False` (or keep it "
          f"out of the model). Received: {role}={scorer_model.name!r}")
    if strategy is not None and scorer_model.weights and not all(
        strategy.extended.variable_created_in_scope(_tf_variable(v))
        for v in scorer_model.weights):
      raise ValueError(
          f"The {role} must be created (or loaded) under `strategy.scope()`, so that its "
          f"weights are replicated to every replica like the learner's. Received: "
          f"{role}={scorer_model.name!r} with weights created outside "
          f"{type(strategy).__name__}.scope()")


def _replica_difference(first: np.ndarray, other: np.ndarray) -> float:
  """Largest absolute difference: 0 if equal (NaN matches NaN), inf for NaN against a number."""
  first, other = first.astype(np.float64), other.astype(np.float64)
  difference = np.where(np.isnan(first) & np.isnan(other), 0.0, np.abs(first - other))
  return float(np.max(np.where(np.isnan(difference), np.inf, difference), initial=0.0))


def _align_reference_replicas(selector: transform.Selector, strategy):
  """Gives every local replica of the frozen reference the first local replica's values.

  The frozen reference must score alike on every replica, or the replicas of one step would
  select by different scores. Replicas can drift apart when the reference was trained under the
  strategy: plain `fit` is not bitwise deterministic across replicas on CPU (replicas of a
  trained dual encoder were seen to differ by ~1e-5). Only this worker's replicas are compared.
  Logs one warning, with the largest difference, when anything changed.
  """
  if selector.scorer is None or "reference" not in selector.scorer.models:
    return  # not called (uniform selection, a cached reference, or no reference)
  reference = selector.scorer.models["reference"]
  largest, changed = 0.0, []
  for weight in reference.weights:
    replicas = strategy.experimental_local_results(_tf_variable(weight))
    first = replicas[0].numpy()
    for replica in replicas[1:]:
      difference = _replica_difference(first, replica.numpy())
      if difference > 0:
        replica.assign(first)
        largest = max(largest, difference)
        changed.append(getattr(weight, "path", weight.name))
  if changed:
    names = sorted(set(changed))
    logging.warning(
        "tfjest.attach: the frozen reference %r held different values on this worker's "
        "replicas (largest absolute difference %.3g, in %d of its %d weights: %s); every "
        "replica now holds the first replica's values, so that all of them score alike.",
        reference.name, largest, len(names), len(reference.weights), ", ".join(names[:3]) +
        (", ..." if len(names) > 3 else ""))


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
        super_batch_size=selector.super_batch_size, jit_compile=jit_compile)

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
    _check_divisible(self.selector, replicas)
    n = self.selector.super_batch_size // replicas
    joined = None
    if isinstance(shard, dict) and _SUPER_BATCH in shard:  # the pipeline joined cached values
      shard, joined = shard[_SUPER_BATCH], shard[_JOINED]
    shard = tf.nest.map_structure(lambda t: _ensure_leading(t, n), shard)
    if joined is not None:
      joined = tf.nest.map_structure(lambda t: _ensure_leading(t, n), joined)
    collective = ReplicaCollective(ctx, self.replica_selection == "global")
    return self.step(shard, step, collective=collective, record=self.record_stats,
                     joined=joined)


class TrainStepSelection:
  """What `attach` returns: the `tf.data` transformation feeding a selecting train step.

  Applied to a stream of single examples it emits super-batches of `N` (a global batch, as
  `tf.distribute` expects; a final partial one is dropped and counted as `left_over`); the
  model's train step selects from them. It shares the selector's `stats`.

  Attributes:
    selector: the `Selector` it was built from.
    selection: the `ReplicaSelection` the train step runs.
    stats: the selector's statistics.
    placement: "train_step".
    strategy: the model's strategy (None on one device).
  """

  placement = "train_step"

  def __init__(self, selector, selection: ReplicaSelection, strategy):
    self.selector = selector
    self.selection = selection
    self.strategy = strategy
    self.stats = selector.stats

  batch_size = property(lambda self: self.selector.batch_size)
  super_batch_size = property(lambda self: self.selector.super_batch_size)
  task = property(lambda self: self.selector.task)

  def step_cost(self):
    """See `Selector.step_cost`."""
    return self.selector.step_cost()

  def __call__(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    if self.selector.sizes.remainder != "drop":
      raise ValueError(
          "Selection in the train step needs static shapes, so a final partial super-batch "
          "is always dropped. Use remainder='drop'. Received: remainder='keep'")
    dataset, cardinality = self.selector.check_dataset(dataset)
    scope = self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()
    with scope:  # models built here get their variables on the replicas
      self.selector.prepare(dataset.element_spec)
    super_batches = self.selector.super_batches(dataset, cardinality, full_only=True)
    scorer = self.selector.scorer
    if scorer is None or scorer.reference_cache is None:
      return super_batches
    # Cached reference values are joined here, on the host, where the cache lives: the train
    # step then needs no table lookup (which XLA cannot compile) and each replica gets its
    # shard of them with its shard of the examples.
    cache, id_key = scorer.reference_cache, self.selector.setup.id_key

    def join(*parts):  # `map` passes a tuple element's parts as separate arguments
      batch = parts if len(parts) > 1 else parts[0]
      return {_SUPER_BATCH: batch, _JOINED: cache.values_for(batch, id_key)}

    return super_batches.map(join)


def _can_record(model: keras.Model, stats_device: str) -> bool:
  """Whether a train step of `model` can update statistics counters on `stats_device`.

  A step that Keras compiles whole with XLA (`compile(jit_compile=True)`, the default "auto" on
  one GPU) can only update variables on its own device, the device of the model's variables.
  Without a strategy `attach` creates the step's counters there (`SelectionStats.on_device`),
  so this holds; it is the guard for set-ups where it does not (the statistics are then not
  recorded, and a warning says so once).
  """
  if not getattr(model, "jit_compile", False):
    return True
  found = devices.variable_devices(model)
  if all(devices.same_device(d, stats_device) for d in found):
    return True
  logging.warning(
      "tfjest.attach: model %r trains in a whole-step XLA program on %s, but the selection "
      "statistics live on %s, which it cannot update; selection runs there but selector.stats "
      "is not updated. Compile with jit_compile=False to record them.", model.name,
      sorted(found), stats_device)
  return False


def _ensure_leading(t, n):
  if t.shape.rank and t.shape[0] is not None and t.shape[0] != n:
    raise ValueError(
        f"Each replica expected its shard of N / R = {n} examples of the super-batch. Apply "
        "the attached selector to the dataset given to fit (it emits super-batches of N) and "
        f"do not batch it again. Received: a shard of {t.shape[0]} examples")
  return tf.ensure_shape(t, [n] + t.shape[1:])


def attach(model: keras.Model, selector: transform.Selector, *, replica_selection: str = "local",
           placement: str = "auto", jit_compile: bool = True):
  """Runs a selector's scoring and selection inside `model`'s (replicated) train step.

  The one extra line that makes `dataset.apply(tfjest.select(...))` + `model.fit` work under
  any `tf.distribute` strategy:

  >>> import tensorflow as tf
  >>> import tfjest
  >>> from tfjest import testing
  >>> strategy = tf.distribute.MirroredStrategy(["/cpu:0"])  # one replica; () for every GPU
  >>> with strategy.scope():
  ...   model = testing.classifier(seed=0)       # compiled under the scope
  ...   reference = testing.classifier(seed=1)   # created (or loaded) under the scope, frozen
  ...   reference.trainable = False
  ...   attached = tfjest.attach(model, tfjest.select(
  ...       learner=model, reference=reference, batch_size=8, super_batch_size=32,
  ...       method="independent"))
  >>> attached.placement, attached.strategy is strategy
  ('train_step', True)
  >>> train_ds = testing.stream("classification", n=64)
  >>> x, y = next(iter(train_ds.apply(attached)))   # apply what attach returns
  >>> x["id"].shape  # the pipeline emits super-batches; each replica selects from its shard
  TensorShape([32])
  >>> history = model.fit(train_ds.apply(attached), verbose=0)
  >>> stats = attached.stats.result()
  >>> stats["batches"], stats["selected"]  # 2 super-batches of 32: 2 steps of 8 examples
  (2, 16)

  Without a strategy, with the models on the host CPU, the selector is returned unchanged and
  selects in the `tf.data` map:

  >>> model = testing.classifier(seed=0)
  >>> selector = tfjest.select(learner=model, reference=testing.classifier(seed=1), batch_size=8,
  ...                          super_batch_size=32, method="independent")
  >>> tfjest.attach(model, selector) is selector
  True

  With a strategy (or `placement="train_step"`), the selector's pipeline emits super-batches
  of `N` examples, the strategy gives each of the `R` replicas `N / R`, and the model's train
  step, on each replica, scores its shard with that step's weights, selects `b / R` and runs
  the model's own `train_step` on them. The noise is keyed by `(seed,
  optimizer.iterations * R + replica id)`: different per step and replica, reproducible and
  resumable. Without a strategy (`placement="auto"`), the model is left unchanged and the
  selector selects in the `tf.data` map as usual, unless a model the selection reads (learner,
  proxy, reference; a cached reference reads none) has its variables on a GPU or TPU: the
  pipeline runs on the host, so selection then goes into the train step (`tfjest.devices`).

  On one device the train step records the statistics into counters created on the device of
  the model's variables (`SelectionStats.on_device`), which a step compiled whole with XLA
  (`compile(jit_compile=True)`, Keras' "auto" on one GPU) can update; an online proxy's step
  count moves there too. This is tested on CPU with the model on a second logical CPU device;
  on a GPU it is untested. Under `TPUStrategy` the statistics are not recorded (not known to
  work without a TPU to test on); under other strategies they are recorded on the host
  through the replica context (a `merge_call`), with `jit_compile=False` as those need.

  The frozen reference must score alike on every replica. A reference trained under the
  strategy can end with replicas a little apart (plain `fit` is not bitwise deterministic
  across replicas on CPU); `attach` then gives each of this worker's replicas the first one's
  values and logs a warning with the largest absolute difference it found. Replicas that agree
  are left as they are, without a warning. The learner and an online proxy train, so they are
  not touched.

  Args:
    model: the compiled Keras model being trained, created under the strategy's scope.
    selector: the object returned by `tfjest.select(...)`, not yet applied to a dataset.
    replica_selection: "local" (default): each replica selects `b / R` from its own `N / R`.
      "global": JEST chunks are chosen per replica but conditioned on every replica's choices
      (their embeddings are all-gathered after each chunk; examples never move). Only joint
      selection of dual encoders differs; per-example scores have no cross terms.
    placement: "auto" (in the train step under a strategy or when a model the selection reads
      lives on a GPU or TPU, in the pipeline otherwise) or "train_step" (always in the train
      step).
    jit_compile: compile the selection maths with XLA inside the step (an inner
      `tf.function(jit_compile=True)`; the models run in the step's own graph).

  Returns:
    With the selection in the train step: a `TrainStepSelection`, the transformation to apply
    to the training dataset (it emits super-batches of `N` and shares `selector.stats`; pass
    either to `SelectionStatsCallback` or `selection_checkpoint`). Otherwise `selector`
    itself, unchanged. The selector's configuration is never modified (the reference's
    replicas may be aligned, and on one device its `stats` gain counters on the model's
    device and a proxy's `steps` moves there, as above).

  Raises:
    TypeError: if `model` is not a `keras.Model` or `selector` not a `tfjest.Selector`.
    ValueError: on an unknown option; if the selector is already attached; if the batch sizes
      do not split evenly over the replicas; if a scoring model is among the trained weights or
      was created outside the strategy's scope.
  """
  if not isinstance(model, keras.Model):
    raise TypeError(f"model must be a keras.Model. Received: model of type "
                    f"{type(model).__name__}")
  if placement not in PLACEMENTS:
    raise ValueError(f"Expected placement in {PLACEMENTS}. Received: placement={placement!r}")
  if isinstance(selector, TrainStepSelection):
    raise ValueError("This selector is already attached to a model. Create one selector per "
                     "model. Received: selector returned by tfjest.attach")
  # Checks the selector and the options before anything changes.
  selection = ReplicaSelection(selector, replica_selection=replica_selection,
                               jit_compile=jit_compile)
  if getattr(model.train_step, "_tfjest_selection", None) is not None:
    raise ValueError("This model already selects in its train step (tfjest.attach was called "
                     f"before). Received: model={model.name!r}")
  if selector in _ATTACHED:
    raise ValueError("This selector is already attached to a model. Create one selector per "
                     f"model. Received: selector attached to {_ATTACHED[selector]!r}")
  strategy = model_strategy(model)
  if placement == "auto" and strategy is None and (
      selector.models_location() == devices.HOST):
    return selector
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  _check_divisible(selector, replicas)
  _check_models(selector, model, strategy)
  if strategy is not None:
    keras_compat.ensure_multi_worker_fit(strategy)
    _align_reference_replicas(selector, strategy)
  if strategy is None:
    # One device: the step's counters live with the model's variables, where a step compiled
    # whole with XLA can update them (on a GPU as on the host CPU).
    selection.record_on(devices.model_device(model))
  # Under TPUStrategy the replicas cannot update the host-side statistics variables (recording
  # there through replicated counters is not known to work: untested without a TPU).
  record_stats = strategy is None or not _is_tpu(strategy)
  own_train_step = model.train_step

  def train_step(data):
    optimizer = model.optimizer
    if optimizer is None:
      raise ValueError("tfjest.attach: compile the model before training it. "
                       f"Received: model={model.name!r} with optimizer=None")
    selection.record_stats = record_stats and _can_record(model, selection.step.stats.device)
    return own_train_step(selection(data, optimizer.iterations))

  train_step._tfjest_selection = selection  # pylint: disable=protected-access
  model.train_step = train_step
  model.train_function = None  # rebuilt around the new step on the next fit
  _ATTACHED[selector] = model.name
  return TrainStepSelection(selector, selection, strategy)
