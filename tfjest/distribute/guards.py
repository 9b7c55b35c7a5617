"""Checks `tfjest.attach` runs before a model selects in its train step.

Each guard fails early, naming the argument and the remedy: sizes that do not split over the
replicas, a scoring model among the trained weights or created outside the strategy's scope, a
whole-step XLA program that could not update the statistics. One repair is made rather than
refused: a frozen reference whose replicas drifted apart is realigned (with a warning).
"""

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfjest import devices


def is_tpu(strategy) -> bool:
  return any(k.__name__.startswith("TPUStrategy") for k in type(strategy).__mro__)


def check_divisible(selector, replicas: int):
  n, b, k = selector.super_batch_size, selector.batch_size, selector.num_chunks
  if n % replicas or b % replicas or (b // replicas) % k:
    raise ValueError(
        f"Selection on {replicas} replicas gives each replica N / R candidates and b / R "
        f"picks in chunks of b / (R * K), so super_batch_size, batch_size and batch_size / "
        f"num_chunks must all be divisible by the number of replicas. Received: "
        f"super_batch_size={n}, batch_size={b}, num_chunks={k}, replicas={replicas}")


def _tf_variable(v):
  return getattr(v, "value", v) if isinstance(v, keras.Variable) else v


def check_models(selector, model: keras.Model, strategy):
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


def align_reference_replicas(selector, strategy):
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


def can_record(model: keras.Model, stats_device: str) -> bool:
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
