"""Scoring a super-batch: from elements and models to a score object and per-example losses.

This is the one place that calls models: the learner (or the online proxy that scores for it),
the reference, and a reference cache standing in for the reference. The selection step (used by
the `tf.data` map and by the replicated train step alike) and `cache_reference` all go through a
`Scorer`, so an example is scored the same way wherever it runs. The maths it feeds (`scores`,
`selection`) never sees a model.

`Setup` is the scoring configuration as one frozen value that checks itself; `models_read` is
the public rule of which models it calls.
"""

import dataclasses
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import keras
import tensorflow as tf

from tfjest import adapters
from tfjest import proxy as proxy_lib
from tfjest import scores as scores_lib
from tfjest import selection
from tfjest.store import reference as reference_lib

ROLES = ("learner", "reference")


def models_read(method: str, score: str = "learnability") -> Tuple[str, ...]:
  """The models a selection configuration reads: a subset of `("learner", "reference")`.

  The rule `tfjest.select` applies (docs/SPEC.md §3): "uniform" selection reads no model;
  "jest" and "independent" read what the score variant combines: "learnability" both models,
  "hard_learner" only the learner, "easy_reference" only the reference. `select` requires
  exactly these models (a reference may come as `reference_cache=`, the learner's scores from
  an online `proxy=`), and calls no other.

  >>> tfjest.models_read("jest", "hard_learner")
  ('learner',)
  >>> tfjest.models_read("uniform")
  ()

  Args:
    method: "jest", "independent" or "uniform", as `select` takes it.
    score: "learnability", "hard_learner" or "easy_reference" (checked also for "uniform",
      as `select` checks it).

  Returns:
    The roles read, in the order `("learner", "reference")`.

  Raises:
    ValueError: if `method` or `score` is not one `select` accepts, naming the value received.
  """
  selection.check_method(method)
  scores_lib.check_variant(score)
  if method == "uniform":
    return ()
  reads = {"learner": scores_lib.NEEDS_LEARNER[score],
           "reference": scores_lib.NEEDS_REFERENCE[score]}
  return tuple(role for role in ROLES if reads[role])


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
  """What to score with, as `select` was told (see its docstring for each field).

  Raises:
    ValueError, TypeError: naming the first field outside its domain and the value received.
  """

  score: str = "learnability"
  learner: Optional[keras.Model] = None
  reference: Optional[keras.Model] = None
  proxy: Optional[proxy_lib.OnlineProxy] = None
  task: str = "auto"
  embedding_keys: Tuple[str, str] = ("image_embeddings", "text_embeddings")
  loss_fn: Any = None
  scoring_view: Optional[Callable] = None
  reference_cache: Optional[reference_lib.ReferenceCache] = None
  id_key: Optional[str] = None
  reference_features: Optional[Mapping[str, str]] = None
  logit_scale: Optional[float] = None
  logit_bias: Optional[float] = None
  # With `score`, which models are called (`models_read`): none for "uniform".
  method: str = "jest"

  def __post_init__(self):
    score = scores_lib.check_variant(self.score)
    reads = self.models_read
    for name, model in (("learner", self.learner), ("reference", self.reference)):
      if model is not None and not isinstance(model, keras.Model):
        raise TypeError(f"{name} must be a keras.Model. "
                        f"Received: {name} of type {type(model).__name__}")
    if self.reference is not None and self.reference is self.learner:
      raise ValueError(
          "reference is the learner itself, so every learnability score would be 0 and "
          "selection silently uniform. The reference must be a frozen model: pass a trained "
          "copy, e.g. `reference = keras.models.clone_model(model); reference.set_weights("
          "model.get_weights()); reference.trainable = False`, or a cache of it. "
          f"Received: reference={self.reference.name!r} (the learner)")
    if self.reference_cache is not None and not isinstance(self.reference_cache,
                                                           reference_lib.ReferenceCache):
      raise TypeError("reference_cache must be a tfjest.ReferenceCache (from "
                      "tfjest.cache_reference or ReferenceCache.load). Received: "
                      f"reference_cache of type {type(self.reference_cache).__name__}")
    if self.proxy is not None and not isinstance(self.proxy, proxy_lib.OnlineProxy):
      raise TypeError("proxy must be a tfjest.OnlineProxy. "
                      f"Received: proxy of type {type(self.proxy).__name__}")
    if "learner" in reads and self.learner is None and self.proxy is None:
      raise ValueError(f"score={score!r} scores with the learner. Pass learner=<the model "
                       "being trained> (or proxy=). Received: learner=None")
    elif "reference" in reads and self.reference is None and self.reference_cache is None \
        and self.reference_features is None:
      raise ValueError(f"score={score!r} needs a frozen reference model. Pass reference=, "
                       "reference_cache= or reference_features=, or use score='hard_learner'. "
                       "Received: reference=None")
    elif reads and self.reference_cache is not None and "reference" not in reads:
      raise ValueError(f"score={score!r} does not read the reference, so reference_cache "
                       f"would be unused. Received: reference_cache={self.reference_cache.path!r}")
    elif reads and self.reference_features is not None and "reference" not in reads:
      raise ValueError(f"score={score!r} does not read the reference, so reference_features "
                       f"would be unused. Received: reference_features={self.reference_features!r}")
    values = None
    if self.reference_features is not None:
      if self.reference_cache is not None or self.reference is not None:
        raise ValueError("reference_features are the reference's stored outputs: pass them "
                         "instead of reference= and reference_cache=, not with them. Received: "
                         f"reference_features={self.reference_features!r}")
      values = reference_lib.ReferenceValues.from_features(
          self.reference_features, self.logit_scale, self.logit_bias)
    elif self.logit_scale is not None or self.logit_bias is not None:
      raise ValueError("logit_scale and logit_bias only serve reference_features, which were "
                       f"not given. Received: logit_scale={self.logit_scale!r}, "
                       f"logit_bias={self.logit_bias!r}")
    for name in ("scoring_view", "proxy"):
      value = getattr(self, name)
      if reads and value is not None and "learner" not in reads:
        raise ValueError(f"{name} applies to learner scoring, which score={score!r} does not "
                         f"do. Received: {name}={value!r}")
    if self.reference_cache is not None:
      if not isinstance(self.id_key, str) or not self.id_key:
        raise ValueError("reference_cache is joined to the stream by example id: pass "
                         f"id_key=<the id feature>. Received: id_key={self.id_key!r}")
      if self.reference is not None:
        self.reference_cache.check_reference(self.reference)
      values = reference_lib.ReferenceValues.from_cache(self.reference_cache, self.id_key)
    elif self.id_key is not None:
      raise ValueError(f"id_key only serves reference_cache, which was not given. "
                       f"Received: id_key={self.id_key!r}")
    # How scoring reads the reference's stored outputs (features, or the cache by id).
    object.__setattr__(self, "reference_values", values)
    if self.scoring_view is not None and not callable(self.scoring_view):
      raise ValueError(f"scoring_view must be a function of the inputs x. "
                       f"Received: scoring_view={self.scoring_view!r}")
    if self.proxy is not None and self.proxy.model in (self.learner, self.reference):
      raise ValueError("The proxy must be a separate (smaller) model, not the learner or the "
                       "reference: tfjest trains the proxy itself. "
                       f"Received: proxy.model={self.proxy.model.name!r}")
    check_proxy_optimizer(self.proxy, self.learner)
    if self.task not in adapters.TASKS:
      raise ValueError(f"Expected task in {adapters.TASKS}. Received: task={self.task!r}")
    keys = self.embedding_keys
    if (isinstance(keys, str) or len(tuple(keys)) != 2 or
        not all(isinstance(k, str) for k in keys)):
      raise ValueError("embedding_keys must be two strings (image_key, text_key). "
                       f"Received: embedding_keys={keys!r}")
    object.__setattr__(self, "embedding_keys", tuple(keys))
    if self.loss_fn is not None:
      # Any loss `compile` takes for one output (a name, a Loss or its class, a function),
      # resolved now so that a wrong one fails here rather than when the stream is scored.
      adapters.resolve_loss_fn(None, self.loss_fn, "learner")

  @property
  def models_read(self) -> Tuple[str, ...]:
    """`models_read(method, score)`: the roles whose models (or cache, or proxy) are read."""
    return models_read(self.method, self.score)

  @property
  def learner_role(self) -> str:
    """"proxy" when an online proxy scores for the learner, else "learner"."""
    return "proxy" if self.proxy is not None else "learner"

  def scoring_models(self) -> Dict[str, keras.Model]:
    """`{role: model}` of the models this score calls (a cached reference is not called)."""
    models, reads = {}, self.models_read
    if "learner" in reads:
      models[self.learner_role] = (self.proxy.model if self.proxy is not None
                                   else self.learner)
    if "reference" in reads and self.reference_values is None:
      models["reference"] = self.reference
    return models


def check_proxy_optimizer(proxy, learner):
  """Raises ValueError if `proxy` trains with `learner`'s optimizer (None: nothing to check).

  Called by `select` and again when the selector is applied (the learner may be compiled in
  between).
  """
  learner_optimizer = getattr(learner, "optimizer", None)
  if proxy is not None and learner_optimizer is not None and (
      proxy.optimizer is learner_optimizer):
    raise ValueError(
        "The proxy shares the learner's optimizer, which is built for the learner's "
        "variables only (fit would then fail with \"Unknown variable\"). Give the proxy its "
        "own optimizer: `tfjest.OnlineProxy(model, optimizer=keras.optimizers.SGD(...))`. "
        f"Received: proxy={proxy.model.name!r} with optimizer "
        f"{type(proxy.optimizer).__name__} of learner={learner.name!r}")


class Scored(NamedTuple):
  """A scored super-batch.

  Attributes:
    scores: a score object (`PairwiseScores` or `DiagonalScores`) over the `N` candidates.
    losses: `{role: [N]}` per-example losses of the models that were read ("learner" or
      "proxy", and "reference"; positive-pair losses `l_ii` for dual encoders), for statistics.
  """

  scores: object
  losses: Dict[str, tf.Tensor]


class Scorer:
  """Calls the models of a `Setup` on super-batches.

  Attributes:
    setup: the `Setup`.
    models: `{role: model}` of the models called.
    task: "contrastive" or "classification" once prepared.
    input_specs: `{role: spec}` of one example as each model is called (after the view).
    width: the embedding width of a dual encoder (for cost accounting), else None.
  """

  def __init__(self, setup: Setup):
    self.setup = setup
    self.models = setup.scoring_models()
    self.reference_values = (setup.reference_values
                             if "reference" in setup.models_read else None)
    self.task = None if setup.task == "auto" else setup.task
    self.input_specs = {}
    self.width = None
    self._loss_fns = {}
    self._prepared_for = None

  @property
  def roles(self):
    """The roles whose scores enter: the learner's (or proxy's) and/or "reference"."""
    return tuple(self.models) + (("reference",) if self.reference_values is not None else ())

  def strip(self, element):
    """`element` (or its spec) without the reference's stored features: what models see."""
    return self.reference_values.drop(element) if self.reference_values is not None else element

  def prepare(self, element_spec):
    """Builds unbuilt models, checks their outputs and fixes the task (once per spec).

    Raises:
      ValueError: if a model cannot be called on the elements' inputs (or the learner on
        their scoring view), the models (or the cache) disagree on the task or on their
        output shapes, a classifier has no labels or no loss, or the reference cache does not
        fit the elements.
    """
    if self._prepared_for == element_spec:
      return
    setup = self.setup
    stored_width = None
    if self.reference_values is not None:  # first: it finds out whether values are features
      stored_width = self.reference_values.prepare(element_spec)
    x_spec, y_spec, _ = adapters.unpack(self.strip(element_spec))
    kinds, shapes = [], {}
    for role, model in self.models.items():
      spec = x_spec
      if role != "reference" and setup.scoring_view is not None:
        spec = view_spec(setup.scoring_view, x_spec)
      outputs = adapters.build_and_probe(model, spec, role)
      self.input_specs[role] = spec
      task = adapters.resolve_task(
          outputs, task=setup.task, embedding_keys=setup.embedding_keys, loss_fn=setup.loss_fn,
          has_labels=y_spec is not None, role=role, model=model)
      kinds.append((role, task))
      if task == "contrastive":
        self.width = _embedding_width(outputs, setup.embedding_keys) or self.width
      else:
        self._loss_fns[role] = adapters.resolve_loss_fn(model, setup.loss_fn, role)
        shapes[role] = tf.nest.map_structure(lambda t: tuple(t.shape[1:]), outputs)
    if self.reference_values is not None:
      kinds.append(("reference cache" if self.reference_values.cache is not None else
                    "reference features", self.reference_values.task))
      self.width = self.width or stored_width
    resolved = None
    for role, task in kinds:
      if resolved is not None and task != resolved:
        raise ValueError(
            "The learner and the reference must be models of the same kind (both dual "
            f"encoders or both classifiers). Received: {kinds[0][0]} task {resolved!r}, "
            f"{role} task {task!r}")
      resolved = task
    if len(set(map(str, shapes.values()))) > 1:
      raise ValueError(
          "The learner and the reference must predict the same thing for their losses to be "
          "compared (e.g. the same classes). Their outputs for one example differ in shape. "
          f"Received: output shapes {shapes}")
    if setup.task != "auto" and resolved != setup.task:
      raise ValueError(f"The reference cache holds {resolved!r} outputs. "
                       f"Received: task={setup.task!r}")
    self.task = resolved
    self._prepared_for = element_spec

  def outputs(self, super_batch, joined=None) -> Dict[str, object]:
    """`{role: losses.Embeddings or [N] losses}` of every role, in the graph (call `prepare`).

    The reference's stored outputs are `joined` when the pipeline looked them up by id already
    (selection in a train step), else read from the elements' features or looked up here.
    """
    if self._prepared_for is None:
      raise RuntimeError("Scorer.prepare(element_spec) must run before scoring.")
    setup = self.setup
    x, y, _ = adapters.unpack(self.strip(super_batch))
    n = _leading_size(super_batch)
    out = {}
    for role, model in self.models.items():
      inputs = x
      if role != "reference" and setup.scoring_view is not None:
        inputs = setup.scoring_view(x)
      if self.task == "contrastive":
        value = adapters.contrastive_embeddings(model, inputs, setup.embedding_keys, role)
        _check_count(value.image, n, role)
      else:
        value = adapters.classification_losses(model, inputs, y, self._loss_fns[role], role)
        _check_count(value, n, role)
      out[role] = value
    if self.reference_values is not None:
      if joined is None:
        joined = self.reference_values.values(super_batch)
      out["reference"] = self.reference_values.outputs_from(joined)
    return out

  def __call__(self, super_batch, joined=None) -> Scored:
    """Scores `N` stacked elements (graph-safe; call `prepare` first; `joined`: see `outputs`)."""
    outputs = self.outputs(super_batch, joined)
    learner = outputs.get(self.setup.learner_role)
    if self.task == "contrastive":
      scores = scores_lib.PairwiseScores(self.setup.score, learner, outputs.get("reference"))
      diagonals = scores.role_diagonals()
      per_example = {role: diagonals["learner" if role != "reference" else "reference"]
                     for role in outputs}
    else:
      per_example = outputs
      scores = scores_lib.DiagonalScores(scores_lib.combine(
          self.setup.score, 0.0 if learner is None else learner,
          outputs.get("reference", 0.0)))
    return Scored(scores, per_example)


def _leading_size(structure):
  first = tf.nest.flatten(structure)[0]
  return first.shape[0] if first.shape[0] is not None else tf.shape(first)[0]


def _check_count(values, n, role):
  """A super-batch of `n` elements must give `n` scores: catches batches taken for examples."""
  message = (f"The {role} must give one output per element of the super-batch, but its leading "
             "axis differs from the number of elements. If the dataset yields batches, pass "
             "input_batched=True; if the model reduces or reshapes the batch axis, it does not "
             "follow the contract.")
  got = values.shape[0]
  if isinstance(n, int) and got is not None:
    if got != n:
      raise ValueError(f"{message} Received: {role} outputs of shape {values.shape} for "
                       f"{n} elements")
    return
  tf.debugging.assert_equal(tf.shape(values)[0], n, message=message)


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
