"""Scoring a super-batch: from elements and models to a score object and per-example losses.

This is the one place that calls the learner and the reference. The `tf.data` transformation
(`transform`) and a replicated train step both use a `Scorer`, so a super-batch is scored the same
way wherever it runs. The maths it feeds (`scores`, `selection`) never sees a model.
"""

from typing import Callable, Dict, NamedTuple, Optional, Sequence

import keras
import tensorflow as tf

from tfjest import adapters
from tfjest import scores as scores_lib


class Scored(NamedTuple):
  """A scored super-batch.

  Attributes:
    scores: a score object (`PairwiseScores` or `DiagonalScores`) over the `N` candidates.
    losses: `{"learner": [N], "reference": [N]}` per-example losses of the models that were read
      (positive-pair losses `l_ii` for dual encoders), for statistics.
  """

  scores: object
  losses: Dict[str, tf.Tensor]


class Scorer:
  """Calls the models a score variant needs on super-batches.

  Args:
    learner: the model scoring for the learner (the learner itself or its proxy), or None
      where the variant does not read it.
    reference: the frozen reference, or None where the variant does not read it or its
      outputs come from `reference_cache`.
    score: one of `scores.SCORE_VARIANTS`.
    task: "auto", "contrastive" or "classification".
    embedding_keys: `(image_key, text_key)` of a dual encoder's outputs.
    loss_fn: per-example loss for classifiers (default: the compiled loss).
    learner_view: optional function applied to the super-batch's inputs `x` before the
      learner is called (a cheap scoring view); the reference sees `x` unchanged.
    reference_cache: optional `cache.ReferenceCache` standing in for the reference.
    id_key: the id feature that joins `reference_cache` to the elements.
  """

  def __init__(self, *, learner: Optional[keras.Model], reference: Optional[keras.Model],
               score: str, task: str = "auto",
               embedding_keys: Sequence[str] = ("image_embeddings", "text_embeddings"),
               loss_fn: Optional[Callable] = None,
               learner_view: Optional[Callable] = None,
               reference_cache=None, id_key: Optional[str] = None):
    self.score = scores_lib.check_variant(score)
    self.models = {}
    if scores_lib.NEEDS_LEARNER[score]:
      self.models["learner"] = learner
    self.reference_cache = reference_cache if scores_lib.NEEDS_REFERENCE[score] else None
    if scores_lib.NEEDS_REFERENCE[score] and self.reference_cache is None:
      self.models["reference"] = reference
    self.task_option = task
    self.task = None if task == "auto" else task
    self.embedding_keys = tuple(embedding_keys)
    self.loss_fn = loss_fn
    self.learner_view = learner_view
    self.id_key = id_key
    # What each model is called on (one example, no batch axis) and the embedding width:
    # set by `prepare`, read by cost accounting.
    self.input_specs = {}
    self.width = None
    self._loss_fns = {}
    self._prepared_for = None

  @property
  def roles(self):
    """The roles whose scores enter: "learner" and/or "reference" (cached or live)."""
    return tuple(self.models) + (("reference",) if self.reference_cache is not None else ())

  def prepare(self, element_spec):
    """Builds unbuilt models, checks their outputs and fixes the task (once per spec).

    Raises:
      ValueError: if a model cannot be called on the elements' inputs (or the learner on
        their scoring view), the models (or the cache) disagree on the task, a classifier has
        no labels or no loss, or the reference cache does not fit the elements.
    """
    if self._prepared_for == element_spec:
      return
    x_spec, y_spec, _ = adapters.unpack(element_spec)
    resolved = None
    kinds = []
    for role, model in self.models.items():
      spec = x_spec
      if role == "learner" and self.learner_view is not None:
        spec = view_spec(self.learner_view, x_spec)
      outputs = build_and_probe(model, spec, role)
      self.input_specs[role] = spec
      task = (self.task_option if self.task_option != "auto"
              else adapters.infer_task(outputs, self.embedding_keys))
      kinds.append((role, task))
      if task == "contrastive":
        self.width = _embedding_width(outputs, self.embedding_keys) or self.width
      if task == "classification":
        if y_spec is None:
          raise ValueError(
              "Classification scoring needs labels: elements must be (x, y) or (x, y, "
              f"sample_weight) tuples. Received: element_spec={element_spec}")
        self._loss_fns[role] = adapters.resolve_loss_fn(model, self.loss_fn, role)
    if self.reference_cache is not None:
      kinds.append(("reference cache", self.reference_cache.task))
      self.reference_cache.check_element_spec(element_spec, self.id_key)
      if self.width is None and self.reference_cache.task == "contrastive":
        self.width = self.reference_cache.metadata["outputs"]["image_embeddings"][0]
    for role, task in kinds:
      if resolved is not None and task != resolved:
        raise ValueError(
            "The learner and the reference must be models of the same kind (both dual "
            f"encoders or both classifiers). Received: {kinds[0][0]} task {resolved!r}, "
            f"{role} task {task!r}")
      resolved = task
    if self.task_option != "auto" and resolved != self.task_option:
      raise ValueError(f"The reference cache holds {resolved!r} outputs. "
                       f"Received: task={self.task_option!r}")
    self.task = resolved
    self._prepared_for = element_spec

  def __call__(self, super_batch) -> Scored:
    """Scores `N` stacked elements (graph-safe; call `prepare` first)."""
    if self._prepared_for is None:
      raise RuntimeError("Scorer.prepare(element_spec) must run before scoring.")
    x, y, _ = adapters.unpack(super_batch)
    inputs = {role: x for role in self.models}
    if "learner" in inputs and self.learner_view is not None:
      inputs["learner"] = self.learner_view(x)
    if self.task == "contrastive":
      emb = {role: adapters.contrastive_embeddings(m, inputs[role], self.embedding_keys, role)
             for role, m in self.models.items()}
      if self.reference_cache is not None:
        emb["reference"] = self.reference_cache.outputs_for(super_batch, self.id_key)
      scores = scores_lib.PairwiseScores(self.score, emb.get("learner"), emb.get("reference"))
      per_example = scores.role_diagonals()
    else:
      per_example = {role: adapters.classification_losses(m, inputs[role], y,
                                                          self._loss_fns[role], role)
                     for role, m in self.models.items()}
      if self.reference_cache is not None:
        per_example["reference"] = self.reference_cache.outputs_for(super_batch, self.id_key)
      scores = scores_lib.DiagonalScores(scores_lib.combine(
          self.score, per_example.get("learner", 0.0), per_example.get("reference", 0.0)))
    n = tf.nest.flatten(super_batch)[0].shape[0]
    for role, values in per_example.items():
      if n is not None and values.shape.rank == 1 and values.shape[0] not in (None, n):
        raise ValueError(
            f"The {role} must give one score per example of the super-batch ({n}), but gave "
            f"{values.shape[0]}: does it reduce or reshape the batch axis? Received: {role} "
            f"scores of shape {values.shape} for {n} examples")
    return Scored(scores, per_example)


def view_spec(view: Callable, x_spec):
  """The per-example spec of `view(x)`, found by applying `view` to one zero example."""
  try:
    out = view(tf.nest.map_structure(_zeros, x_spec))
    return tf.nest.map_structure(
        lambda t: tf.TensorSpec(tf.convert_to_tensor(t).shape[1:], tf.convert_to_tensor(t).dtype),
        out)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        "scoring_view could not be applied to the elements' inputs (it is called on the x of "
        "a super-batch, with a leading batch axis, and must return what the learner accepts). "
        f"Received: scoring_view={view!r}, inputs spec={x_spec}. Error: {e}") from e


def _embedding_width(outputs, embedding_keys):
  image = (outputs[embedding_keys[0]] if isinstance(outputs, dict) and
           embedding_keys[0] in outputs else
           outputs[0] if isinstance(outputs, (tuple, list)) else None)
  shape = getattr(image, "shape", None)
  return int(shape[-1]) if shape is not None and shape[-1] is not None else None


def _zeros(s):
  shape = [1] + s.shape.as_list()
  if s.dtype == tf.string:
    return tf.fill(shape, "")
  return tf.zeros(shape, s.dtype)


def build_and_probe(model: keras.Model, x_spec, role: str):
  """Calls a model eagerly on one zero example (building it if needed); returns its outputs."""
  dummy = tf.nest.map_structure(_zeros, x_spec)
  try:
    return model(dummy, training=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"tfjest could not call the {role} on the elements' inputs (it calls the model once on "
        f"a zero example to build it and check its outputs). Make sure the model accepts the "
        f"dataset's x as `fit` would pass it. Received: {role}={model.name!r}, "
        f"inputs spec={x_spec}. Error: {e}") from e
