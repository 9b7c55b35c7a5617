"""What a training step costs, in FLOPs (docs/SPEC.md §7).

    uniform step  = 3 * F_L * b
    selected step = 3 * F_L * b            training on the chosen b
                  + F_L(view) * N          learner scoring (F_proxy * N with a proxy)
                  + 3 * F_proxy * b        a proxy's own training step (0 without one)
                  + F_R * N                reference scoring (0 when cached)
                  + selection              score blocks and sampling, counted below

How FLOPs are counted:

- `forward_flops` traces one forward call of a model (`training=False`) for a single example
  into a graph and adds up, op by op, the FLOPs TensorFlow registers for each op at its static
  shapes (what the v1 profiler's `float_operation` view sums): a matmul or convolution counts 2 per
  multiply-add (`Dense(m -> n)`: `2 m n`; `Conv2D`: `2 * kh * kw * c_in * c_out * h_out *
  w_out`), a bias add or an element-wise arithmetic op 1 per output element, a mean (pooling,
  normalisation) 1 per input element. Ops TensorFlow registers no count for (activations such
  as ReLU, gathers and embedding lookups, reshapes) count 0, and so does anything inside a
  nested function call or control-flow op in the traced graph; these are small next to the
  matmuls and convolutions of a vision or text tower.
- Training is counted as 3 forward passes (forward + backward), as in the spec.
- `selection_flops` counts what `tfjest.joint_selection` on `tfjest.PairwiseScores` does:
  per model, the diagonal (`2 N d` for the dot products plus a few ops per example) and, after
  every chunk but the last, two `[N, d] x [d, c]` matmuls (`2 * 2 N c d`) and 4 element-wise ops
  per pair and direction (scale, bias, softplus, sum; softplus counted as one); per chunk, a
  few ops per candidate for the keys; and, for the statistics, the `[b, b]` block of the chosen
  batch per model. Its leading term is `8 N b d (K - 1) / K` for two models: the spec's
  `~4 N b d` multiply-adds. Per-example scores (classifiers, "independent", "uniform") cost a
  few ops per candidate.

Everything here but `forward_flops` is arithmetic on Python numbers.
"""

from typing import NamedTuple, Optional

import keras
import tensorflow as tf
# The per-op FLOP counts the v1 profiler sums: `flops_registry` registers them with
# `ops.RegisterStatistics`, `ops.get_stats_for_node_def` reads them.
from tensorflow.python.framework import ops as framework_ops
from tensorflow.python.profiler.internal import flops_registry  # pylint: disable=unused-import
from tensorflow.python.util import deprecation

from tfjest import checks

# Element-wise ops per pair and direction in a chunk update: scale, bias, softplus, sum.
_PAIR_OPS = 4
# Ops per candidate and chunk to form the sampling keys (divide, noise, mask, top-k).
_KEY_OPS = 6
# Per-example ops of a diagonal beyond the dot product: scale, bias, softplus.
_DIAGONAL_OPS = 3
# Nested graph calls whose FLOPs the per-op registry does not see.
_OPAQUE_OPS = ("PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If",
               "StatelessIf")


class StepCost(NamedTuple):
  """FLOPs of one selected training step, by part (see the module docstring).

  Attributes:
    training: `3 * F_L * b`; None when the learner is unknown (then `total` leaves it out).
    learner_scoring: `F_L(view) * N`, or `F_proxy(view) * N` with a proxy.
    reference_scoring: `F_R * N`; 0 when the reference outputs come from a cache.
    proxy_training: `3 * F_proxy * b` with an online proxy, else 0.
    selection: the score blocks and sampling (`selection_flops`).
  """

  training: Optional[float]
  learner_scoring: float
  reference_scoring: float
  proxy_training: float
  selection: float

  @property
  def total(self) -> float:
    return ((self.training or 0.0) + self.learner_scoring + self.reference_scoring +
            self.proxy_training + self.selection)

  @property
  def overhead(self) -> float:
    """Everything but training on the chosen batch."""
    return self.total - (self.training or 0.0)


def _check_count(name, value, allow_none=False):
  if value is None and allow_none:
    return
  if not checks.is_real(value) or not value >= 0 or value == float("inf"):
    raise ValueError(f"{name} must be a finite number >= 0. Received: {name}={value!r}")


def selection_flops(super_batch_size: int, batch_size: int, *, width: Optional[int] = None,
                    num_chunks: int = 16, num_models: int = 2, task: str = "contrastive",
                    method: str = "jest", batch_statistics: bool = True) -> float:
  """FLOPs of one selection step, counted as the code does it (see the module docstring).

  Args:
    super_batch_size: `N`.
    batch_size: `b`.
    width: `d`, the embedding width (dual encoders; ignored for classifiers).
    num_chunks: `K` ("jest" only).
    num_models: 1 or 2, the models whose scores enter (`learnability` reads two).
    task: "contrastive" or "classification".
    method: "jest", "independent" or "uniform".
    batch_statistics: whether the `[b, b]` block of the chosen batch is computed for the
      statistics (`s(B)`).

  Returns:
    FLOPs as a float.

  Raises:
    ValueError: for sizes or options outside their domain.
  """
  n, b, k = super_batch_size, batch_size, num_chunks
  n, b, k = (checks.positive_int(value, name) for name, value in
             (("super_batch_size", n), ("batch_size", b), ("num_chunks", k)))
  if b > n:
    raise ValueError(f"batch_size must be at most super_batch_size={n}. "
                     f"Received: batch_size={b}")
  if method not in ("jest", "independent", "uniform"):
    raise ValueError(f"Expected method in ('jest', 'independent', 'uniform'). "
                     f"Received: method={method!r}")
  if task not in ("contrastive", "classification"):
    raise ValueError(f"Expected task in ('contrastive', 'classification'). "
                     f"Received: task={task!r}")
  if num_models not in (1, 2):
    raise ValueError(f"num_models must be 1 or 2. Received: num_models={num_models!r}")
  if method == "uniform":
    return float(_KEY_OPS * n)
  chunks = k if method == "jest" else 1
  keys = _KEY_OPS * n * chunks + 2 * n * chunks  # the keys and their Gumbel noise
  if task == "classification":
    # Per-example scores: one subtraction per candidate, then the keys; s(B) sums b values.
    return float(keys + n * (num_models - 1) + (b if batch_statistics else 0))
  if not checks.is_int(width) or width <= 0:
    raise ValueError("Contrastive selection FLOPs need the embedding width. "
                     f"Received: width={width!r}")
  d = width
  diagonal = num_models * (2 * n * d + _DIAGONAL_OPS * n)
  updates = 0
  if method == "jest":
    c = b // k
    per_update = num_models * (2 * (2 * n * c * d + _PAIR_OPS * n * c) + 2 * c * d + 3 * n)
    updates = (k - 1) * per_update
  stats = num_models * (2 * b * b * d + 5 * b * b) if batch_statistics else 0
  return float(diagonal + updates + keys + stats)


def step_cost(*, batch_size: int, super_batch_size: int,
              learner_flops: Optional[float] = None,
              learner_scoring_flops: Optional[float] = None,
              reference_flops: Optional[float] = None,
              reference_cached: bool = False,
              proxy_flops: Optional[float] = None,
              selection: float = 0.0) -> StepCost:
  """FLOPs of one selected training step from per-example forward FLOPs.

  For a data-efficiency benchmark: cumulative FLOPs are steps times `step_cost(...).total`,
  and a uniform baseline costs `step_cost(batch_size=b, super_batch_size=b,
  learner_flops=F_L).total`, i.e. `3 * F_L * b`.

  Args:
    batch_size: `b`.
    super_batch_size: `N`.
    learner_flops: `F_L`, forward FLOPs per example of the learner at full inputs (its
      training cost); None if unknown.
    learner_scoring_flops: forward FLOPs per example of whatever scores for the learner: the
      learner at the scoring view, or the proxy. Defaults to `learner_flops`. 0 when the
      score variant does not read the learner.
    reference_flops: `F_R`; None or 0 when the variant does not read the reference.
    reference_cached: the reference outputs come from a cache: reference scoring costs 0.
    proxy_flops: forward FLOPs per example of an online proxy at full inputs; its training
      step on the chosen batch costs `3 * proxy_flops * b`.
    selection: FLOPs of the selection maths (`selection_flops`).

  Returns:
    A `StepCost`.

  Raises:
    ValueError: if a count is negative, not finite, or the sizes are not positive integers.
  """
  batch_size = checks.positive_int(batch_size, "batch_size")
  super_batch_size = checks.positive_int(super_batch_size, "super_batch_size")
  for name, value in (("learner_flops", learner_flops),
                      ("learner_scoring_flops", learner_scoring_flops),
                      ("reference_flops", reference_flops), ("proxy_flops", proxy_flops)):
    _check_count(name, value, allow_none=True)
  _check_count("selection", selection)
  b, n = batch_size, super_batch_size
  scoring = learner_flops if learner_scoring_flops is None else learner_scoring_flops
  return StepCost(
      training=None if learner_flops is None else 3.0 * learner_flops * b,
      learner_scoring=float(scoring or 0.0) * n,
      reference_scoring=0.0 if reference_cached else float(reference_flops or 0.0) * n,
      proxy_training=3.0 * float(proxy_flops or 0.0) * b,
      selection=float(selection))


def forward_flops(model: keras.Model, input_spec) -> int:
  """Forward FLOPs per example of `model(x, training=False)` (see the module docstring).

  Args:
    model: a Keras model (built or not).
    input_spec: the structure of one example's `x`: a nest of `tf.TensorSpec` without the
      batch axis (e.g. from `dataset.element_spec`).

  Returns:
    The FLOPs TensorFlow registers for the traced forward graph at batch size 1.

  Raises:
    TypeError: if `model` is not a `keras.Model`.
    ValueError: if `input_spec` is not a nest of fully defined `tf.TensorSpec`.
  """
  if not isinstance(model, keras.Model):
    raise TypeError(f"model must be a keras.Model. Received: model of type "
                    f"{type(model).__name__}")
  flat = tf.nest.flatten(input_spec)
  if not flat or not all(isinstance(s, tf.TensorSpec) and s.shape.is_fully_defined()
                         for s in flat):
    raise ValueError("input_spec must be a nest of fully defined tf.TensorSpec (one example, "
                     f"no batch axis). Received: input_spec={input_spec!r}")
  batched = tf.nest.map_structure(lambda s: tf.TensorSpec([1] + s.shape.as_list(), s.dtype),
                                  input_spec)
  graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(batched).graph
  opaque = sorted({op.type for op in graph.get_operations() if op.type in _OPAQUE_OPS})
  if opaque:
    tf.get_logger().warning(
        "forward_flops(%s): the traced graph holds %s ops; FLOPs inside them are not counted.",
        model.name, ", ".join(opaque))
  return _registered_flops(graph, model.name)


def _registered_flops(graph: tf.Graph, name: str) -> int:
  """Sums the FLOPs TensorFlow registers per op of `graph`.

  This is what `tf.compat.v1.profiler.profile(graph, options=float_operation())` adds up, read
  from the same per-op registry without the v1 profiler. The registry's shape helper is a
  deprecated v1 function that logs a deprecation warning on first use in every process; the
  warning is about TensorFlow's own code, so it is silenced here, and only here.
  """
  total = 0
  incomplete = 0
  with deprecation.silence():
    for op in graph.get_operations():
      try:
        stats = framework_ops.get_stats_for_node_def(graph, op.node_def, "flops")
      except ValueError:  # an op whose count needs a shape the graph does not know
        incomplete += 1
        continue
      total += int(stats.value or 0)
  if incomplete:
    tf.get_logger().warning(
        "forward_flops(%s): %d ops have incomplete shapes; their FLOPs are not counted.",
        name, incomplete)
  return total


def selector_step_cost(*, rule, setup, scorer, sizes, x_spec) -> StepCost:
  """The `StepCost` of one step of a selector's batches (what `Selector.step_cost` returns).

  Counts, per full super-batch: training the learner on `b` (when a learner was given), learner
  scoring on `N` at the scoring view (or the proxy's scoring and training), reference scoring
  (0 with a cache) and the selection maths.

  Args:
    rule: the selector's `selection.Rule`.
    setup: its `scoring.Setup`.
    scorer: its `scoring.Scorer`, prepared for the elements (None for uniform selection).
    sizes: its `batching.Sizes`.
    x_spec: the spec of one example's model inputs.
  """
  n, b = sizes.super_batch_size, sizes.batch_size
  learner = setup.learner
  learner_flops = None if learner is None else forward_flops(learner, x_spec)
  if scorer is None:
    return step_cost(batch_size=b, super_batch_size=n, learner_flops=learner_flops,
                     learner_scoring_flops=0,
                     selection=selection_flops(n, b, method="uniform"))
  models, specs = scorer.models, scorer.input_specs
  role = setup.learner_role
  scoring_flops = forward_flops(models[role], specs[role]) if role in models else 0
  reference_flops = (forward_flops(models["reference"], x_spec)
                     if "reference" in models else 0)
  selection = selection_flops(
      n, b, width=scorer.width, num_chunks=rule.num_chunks, num_models=len(scorer.roles),
      task=scorer.task, method=rule.method)
  return step_cost(
      batch_size=b, super_batch_size=n, learner_flops=learner_flops,
      learner_scoring_flops=scoring_flops, reference_flops=reference_flops,
      reference_cached=scorer.reference_values is not None,
      proxy_flops=scoring_flops if setup.proxy is not None else None, selection=selection)


def unit_costs(cost: Optional[StepCost], batch_size: int) -> Optional[dict]:
  """Per selected example and per super-batch FLOPs, for the statistics (None if unknown)."""
  if cost is None:
    return None
  return {"training": None if cost.training is None else cost.training / batch_size,
          "proxy_training": cost.proxy_training / batch_size,
          "learner_scoring": cost.learner_scoring,
          "reference_scoring": cost.reference_scoring,
          "selection": cost.selection}
