"""What `tfjest.attach` returns: the `tf.data` side of a selecting train step.

`TrainStepSelection` cuts the stream into super-batches of `N` (a global batch, as
`tf.distribute` expects) and wraps each in a marked element, so that the attached train step
selects from what this transformation emits and refuses anything else (a model fitted later on
plain batches must not select from them silently). Cached reference values are joined here, on
the host.
"""

import contextlib

import tensorflow as tf

from tfjest.distribute import replica as replica_lib


class TrainStepSelection:
  """What `attach` returns: the `tf.data` transformation feeding a selecting train step.

  Applied to a stream of single examples it emits super-batches of `N` (a global batch, as
  `tf.distribute` expects; a final partial one is dropped and counted as `left_over`); the
  model's train step selects from them. It shares the selector's `stats`. Each element is the
  super-batch wrapped in a dict under `"tfjest_super_batch"` (with the cached reference values
  beside it, when the selector reads a cache): the attached train step selects only from such
  elements and refuses any other, so a later `fit` on plain batches cannot select silently.

  Attributes:
    selector: the `Selector` it was built from.
    selection: the `ReplicaSelection` the train step runs.
    stats: the selector's statistics.
    placement: "train_step".
    strategy: the model's strategy (None on one device).
  """

  placement = "train_step"

  def __init__(self, selector, selection: replica_lib.ReplicaSelection, strategy, model=None):
    self.selector = selector
    self.model = model
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
      _build_for_fit(self.model, self.selector.model_spec(dataset.element_spec),
                     self.selector.batch_size)
    super_batches = self.selector.super_batches(dataset, cardinality, full_only=True)
    scorer = self.selector.scorer
    values = scorer.reference_values if scorer is not None else None
    if values is None or values.streamed:  # stored values, if any, are features already
      return super_batches.map(_mark)
    # Stored reference values are looked up here, on the host, where the table lives: the
    # train step then needs no table lookup (which XLA cannot compile) and each replica gets
    # its shard of them with its shard of the examples.
    @tf.autograph.experimental.do_not_convert
    def join(*parts):  # `map` passes a tuple element's parts as separate arguments
      batch = parts if len(parts) > 1 else parts[0]
      return {replica_lib.SUPER_BATCH: batch, replica_lib.JOINED: values.values(batch)}

    return super_batches.map(join)


def _build_for_fit(model, element_spec, batch_size: int):
  """Builds what Keras' `fit` would build from the first batch, from a batch of `b` examples.

  `fit` builds an unbuilt model, its compiled loss and metrics from the first element it reads
  (`Trainer._symbolic_build`); the elements here are marked super-batches, not the batches the
  model's own train step sees, so they are built here from the selected batch's structure.
  """
  if model is None or not hasattr(model, "_symbolic_build"):
    return
  batch = tf.nest.map_structure(
      lambda s: tf.TensorSpec([batch_size] + s.shape.as_list(), s.dtype), element_spec)
  model._symbolic_build(data_batch=batch)  # pylint: disable=protected-access


def _mark(*parts):
  """Wraps a super-batch in the element the attached train step recognises as its own."""
  return {replica_lib.SUPER_BATCH: parts if len(parts) > 1 else parts[0]}


def is_marked(data) -> bool:
  """Whether a train step's `data` came from a `TrainStepSelection`."""
  return isinstance(data, dict) and replica_lib.SUPER_BATCH in data
