"""Scoring a super-batch: from elements and models to a score object and per-example losses.

This is the one place that calls the learner and the reference. The `tf.data` transformation
(`transform`) and a replicated train step both use a `Scorer`, so a super-batch is scored the same
way wherever it runs. The maths it feeds (`scores`, `selection`) never sees a model.
"""

from typing import Callable, Dict, NamedTuple, Optional, Sequence

import keras
import tensorflow as tf

from tfjest import adapters
from tfjest import losses
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
    learner: the model being trained, or None where the variant does not read it.
    reference: the frozen reference, or None where the variant does not read it.
    score: one of `scores.SCORE_VARIANTS`.
    task: "auto", "contrastive" or "classification".
    embedding_keys: `(image_key, text_key)` of a dual encoder's outputs.
    loss_fn: per-example loss for classifiers (default: the compiled loss).
  """

  def __init__(self, *, learner: Optional[keras.Model], reference: Optional[keras.Model],
               score: str, task: str = "auto",
               embedding_keys: Sequence[str] = ("image_embeddings", "text_embeddings"),
               loss_fn: Optional[Callable] = None):
    self.score = scores_lib.check_variant(score)
    self.models = {}
    if scores_lib.NEEDS_LEARNER[score]:
      self.models["learner"] = learner
    if scores_lib.NEEDS_REFERENCE[score]:
      self.models["reference"] = reference
    self.task_option = task
    self.task = None if task == "auto" else task
    self.embedding_keys = tuple(embedding_keys)
    self.loss_fn = loss_fn
    self._loss_fns = {}
    self._prepared_for = None

  def prepare(self, element_spec):
    """Builds unbuilt models, checks their outputs and fixes the task (once per spec).

    Raises:
      ValueError: if a model cannot be called on the elements' inputs, the models disagree on
        the task, or a classifier has no labels or no loss.
    """
    if self._prepared_for == element_spec:
      return
    x_spec, y_spec, _ = adapters.unpack(element_spec)
    resolved = None
    for role, model in self.models.items():
      outputs = build_and_probe(model, x_spec, role)
      task = (self.task_option if self.task_option != "auto"
              else adapters.infer_task(outputs, self.embedding_keys))
      if resolved is not None and task != resolved:
        raise ValueError(
            "The learner and the reference must be models of the same kind (both dual "
            f"encoders or both classifiers). Received: learner task {resolved!r}, reference "
            f"task {task!r}")
      resolved = task
      if task == "classification":
        if y_spec is None:
          raise ValueError(
              "Classification scoring needs labels: elements must be (x, y) or (x, y, "
              f"sample_weight) tuples. Received: element_spec={element_spec}")
        self._loss_fns[role] = adapters.resolve_loss_fn(model, self.loss_fn, role)
    self.task = resolved
    self._prepared_for = element_spec

  def __call__(self, super_batch) -> Scored:
    """Scores `N` stacked elements (graph-safe; call `prepare` first)."""
    if self._prepared_for is None:
      raise RuntimeError("Scorer.prepare(element_spec) must run before scoring.")
    x, y, _ = adapters.unpack(super_batch)
    if self.task == "contrastive":
      emb = {role: adapters.contrastive_embeddings(m, x, self.embedding_keys, role)
             for role, m in self.models.items()}
      scores = scores_lib.PairwiseScores(self.score, emb.get("learner"), emb.get("reference"))
      per_example = {role: losses.sigmoid_pair_loss_diagonal(e) for role, e in emb.items()}
    else:
      per_example = {role: adapters.classification_losses(m, x, y, self._loss_fns[role], role)
                     for role, m in self.models.items()}
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


def build_and_probe(model: keras.Model, x_spec, role: str):
  """Calls a model eagerly on one zero example (building it if needed); returns its outputs."""
  def zeros(s):
    shape = [1] + s.shape.as_list()
    if s.dtype == tf.string:
      return tf.fill(shape, "")
    return tf.zeros(shape, s.dtype)

  dummy = tf.nest.map_structure(zeros, x_spec)
  try:
    return model(dummy, training=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"tfjest could not call the {role} on the elements' inputs (it calls the model once on "
        f"a zero example to build it and check its outputs). Make sure the model accepts the "
        f"dataset's x as `fit` would pass it. Received: {role}={model.name!r}, "
        f"inputs spec={x_spec}. Error: {e}") from e
