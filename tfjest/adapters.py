"""Getting embeddings or per-example losses out of a user's Keras model.

tfjest never changes how a model trains; it only calls it (with `training=False`) on a
super-batch. The contracts:

Dual encoder ("contrastive" task)
  Calling the model on the element's inputs `x` returns either a mapping holding the image and
  text embeddings under `embedding_keys` (default `"image_embeddings"`, `"text_embeddings"`) or
  a 2-tuple `(image_embeddings, text_embeddings)`, each `[N, d]` with the same `d`. The model has
  attributes `logit_scale` and `logit_bias`: the `t` and `beta` of its sigmoid loss, as values
  (a variable, tensor, float, or a zero-argument callable). A model that learns `log t` can expose
  `logit_scale` as a property returning `exp(log t)`.

Classifier ("classification" task)
  Calling the model on `x` returns predictions that a per-example loss compares with `y`. The
  loss is `loss_fn` if given, else the loss the model was compiled with (a name, a
  `keras.losses.Loss`, or a function).

Elements are read the way `model.fit` reads them: a tuple of 1 to 3 is `(x, y, sample_weight)`,
anything else is `x`.
"""

from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from tfjest import losses

TASKS = ("auto", "contrastive", "classification")


def model_strategy(model: keras.Model):
  """The `tf.distribute` strategy a Keras model was created under, or None (the default)."""
  strategy = getattr(model, "_distribute_strategy", None)
  if strategy is None and tf.distribute.has_strategy():
    strategy = tf.distribute.get_strategy()
  return strategy


def unpack(element):
  """Splits an element as `fit` does: returns `(x, y, sample_weight)`."""
  if isinstance(element, tuple) and 1 <= len(element) <= 3:
    return element + (None,) * (3 - len(element))
  return element, None, None


@tf.autograph.experimental.do_not_convert
def find_feature(element, key: str):
  """`element[key]`, else `x[key]`, else `y[key]` of an element or spec, or None if absent.

  `(x, y, w)` elements are looked into in that order, so a feature may travel with the inputs
  or beside the labels; `key` may be a "/"-separated path into nested mappings.
  """
  x, y, _ = unpack(element)
  for container in (element, x, y):
    node = container
    for part in key.split("/"):
      node = node.get(part) if isinstance(node, Mapping) else None
    if node is not None:
      return node
  return None


def _scalar(model: keras.Model, attr: str) -> tf.Tensor:
  value = getattr(model, attr, None)
  if value is None:
    raise ValueError(
        f"A dual-encoder model must expose `{attr}` (the value used in its sigmoid loss, "
        f"logit = logit_scale * <image, text> + logit_bias). Model {model.name!r} has no "
        f"attribute `{attr}`. Received: model={model.name!r}")
  if callable(value) and not isinstance(value, (tf.Variable, keras.Variable)):
    value = value()
  value = tf.convert_to_tensor(value)
  if value.shape.num_elements() != 1:
    raise ValueError(f"`{attr}` of model {model.name!r} must be a scalar. "
                     f"Received: {attr} of shape {value.shape}")
  return tf.reshape(value, [])


@tf.autograph.experimental.do_not_convert
def logit_parameters(model: keras.Model):
  """A dual encoder's `(logit_scale, logit_bias)` as scalar tensors (see the contract)."""
  return _scalar(model, "logit_scale"), _scalar(model, "logit_bias")


@tf.autograph.experimental.do_not_convert
def contrastive_embeddings(model: keras.Model, x, embedding_keys: Sequence[str],
                           role: str, training: bool = False) -> losses.Embeddings:
  """Calls a dual encoder on `x` and returns its `losses.Embeddings`.

  Args:
    model: the dual encoder.
    x: the model inputs for `N` examples.
    embedding_keys: `(image_key, text_key)` in the model's output mapping.
    role: "learner" or "reference", for error messages.
    training: passed to the model (True only where tfjest trains a proxy).

  Raises:
    ValueError: if the outputs or attributes do not follow the contract.
  """
  image, text = _image_and_text(model(x, training=training), embedding_keys, role)
  return losses.Embeddings(image, tf.cast(text, image.dtype), *logit_parameters(model))


def _image_and_text(outputs, embedding_keys: Sequence[str], role: str):
  """A dual encoder's `(image, text)` embeddings, `[N, d]` each, checked against the contract."""
  if isinstance(outputs, Mapping):
    missing = [k for k in embedding_keys if k not in outputs]
    if missing:
      candidates = _embedding_candidates(outputs)
      keys = repr(candidates) if candidates else "(image_key, text_key)"
      raise ValueError(
          f"The {role} returned a mapping without the embedding keys {missing}. Pass "
          f"`embedding_keys={keys}` naming its outputs. "
          f"Received: {role} outputs with keys {sorted(outputs)}")
    image, text = outputs[embedding_keys[0]], outputs[embedding_keys[1]]
  elif isinstance(outputs, (tuple, list)) and len(outputs) == 2:
    image, text = outputs
  else:
    raise ValueError(
        f"A dual-encoder {role} must return a mapping with keys {tuple(embedding_keys)} or a "
        f"2-tuple (image_embeddings, text_embeddings). Received: {role} output "
        f"{_describe(outputs)}")
  image, text = tf.convert_to_tensor(image), tf.convert_to_tensor(text)
  if image.shape.rank != 2 or text.shape.rank != 2:
    raise ValueError(f"The {role}'s embeddings must be [batch, width]. Received: image "
                     f"embeddings of shape {image.shape}, text embeddings of shape {text.shape}")
  if (image.shape[-1] is not None and text.shape[-1] is not None and
      image.shape[-1] != text.shape[-1]):
    raise ValueError(f"The {role}'s image and text embeddings must have the same width. "
                     f"Received: image width {image.shape[-1]}, text width {text.shape[-1]}")
  return image, text


def resolve_loss_fn(model: keras.Model, loss_fn: Optional[Any],
                    role: str) -> losses.PerExampleLoss:
  """The per-example loss of a classifier: `loss_fn`, else the loss `model` was compiled with.

  A single loss given in a list or mapping (`compile(loss=["mse"])`,
  `compile(loss={"output_name": "mse"})`) is that loss.

  Args:
    model: the classifier.
    loss_fn: a loss for one output, in any form `compile` takes, or None for the compiled one.
    role: "learner", "reference" or "proxy", for error messages.

  Returns:
    A callable `(y_true, y_pred) -> [N]` float32: each example's loss alone, as `fit`
    computes it on a batch of one (see `tfjest.per_example_loss`).

  Raises:
    ValueError: if there is no loss, several losses (or one compiled loss for several
      outputs), or a loss name Keras does not know.
    TypeError: if the loss is not a loss.
  """
  if loss_fn is not None:
    loss = _single_loss(loss_fn)
    if loss is None:
      raise ValueError(
          f"`loss_fn` must be one loss, for the {role}'s one output. Pass a single loss "
          f"(a name, a `keras.losses.Loss` or a function). Received: loss_fn={loss_fn!r}")
    return losses.PerExampleLoss(loss)
  compiled = getattr(model, "loss", None)
  if compiled is None:
    raise ValueError(
        f"Classification scoring needs a per-example loss: compile the {role} with a loss or "
        f"pass `loss_fn=`. Received: {role}={model.name!r} (not compiled with a loss), "
        "loss_fn=None")
  loss = _single_loss(compiled)
  if loss is None:
    raise ValueError(
        f"The {role} was compiled with several losses; tfjest cannot tell which one scores an "
        f"example. Pass `loss_fn=` (a function of the labels and all outputs). "
        f"Received: loss={compiled!r}")
  outputs = _output_count(model)
  if outputs is not None and outputs > 1:
    raise ValueError(
        f"The {role} has {outputs} outputs, and a single compiled loss is applied to each of "
        f"them and summed; tfjest scores one loss of one output. Pass `loss_fn=` (a function "
        f"of the labels and all outputs). Received: loss={compiled!r}")
  return losses.PerExampleLoss(loss)


def _single_loss(loss):
  """The loss in `loss`, `[loss]` or `{name: loss}`; None when it holds several."""
  while isinstance(loss, (list, tuple, dict)):
    if len(loss) != 1:
      return None
    loss = next(iter(loss.values())) if isinstance(loss, dict) else loss[0]
  return loss


def _output_count(model) -> Optional[int]:
  """How many outputs a functional model has; None where Keras does not say (subclassed)."""
  try:
    outputs = model.outputs
  except (AttributeError, ValueError):
    return None
  return None if outputs is None else len(tf.nest.flatten(outputs))


@tf.autograph.experimental.do_not_convert
def classification_losses(model: keras.Model, x, y, loss_fn: Callable, role: str) -> tf.Tensor:
  """Per-example losses `[N]` float32 of a classifier on `(x, y)` (`loss_fn` as resolved)."""
  if y is None:
    raise ValueError(
        f"Classification scoring needs labels: elements must be (x, y) or (x, y, "
        f"sample_weight) tuples. Received: elements without labels for the {role}")
  predictions = model(x, training=False)
  values = losses.per_example_loss(loss_fn, y, predictions)
  return tf.cast(values, tf.float32)


def resolve_task(outputs: Any, *, task: str, embedding_keys: Sequence[str],
                 loss_fn: Optional[Any], has_labels: bool, role: str,
                 model: Optional[keras.Model] = None) -> str:
  """Whether a model is scored as a dual encoder or a classifier, from what it returns.

  With `task="contrastive"` or `"classification"` the outputs are checked against that
  contract (see the module docstring) and `task` is returned. With `task="auto"`:

  - A mapping holding both `embedding_keys` is a dual encoder.
  - A mapping without them whose entries include two `[batch, width]` tensors of one width
    could be a dual encoder under other keys or a classifier of several outputs, and which
    key is the image cannot be guessed: a `ValueError` names `embedding_keys=` and `task=`.
    Any other mapping is a classifier, so the elements must have labels.
  - A 2-tuple or list of `[batch, width]` tensors of one width is a dual encoder if `model`
    has `logit_scale` and `logit_bias` and no `loss_fn` is given. If `model` lacks them it
    cannot be a dual encoder, so with `loss_fn` (and labels) it is a classifier of two
    outputs; compiled with a loss instead, or if `model` is unknown while `loss_fn` is given,
    both readings remain plausible and a `ValueError` names `task=` (tfjest does not guess).
    Without `model` and `loss_fn` it is taken for a dual encoder, whose attributes are then
    checked when it scores: pass `model=` so they are read here.
  - Anything else is a classifier: its elements need labels, and several outputs need a
    `loss_fn` that reads them all (a compiled loss scores one output).

  Args:
    outputs: the model's output on one example (any batch size), e.g.
      `model(zeros[1, ...], training=False)`.
    task: "auto", "contrastive" or "classification".
    embedding_keys: `(image_key, text_key)` of a dual encoder's output mapping.
    loss_fn: the scorer's `loss_fn` option, or None.
    has_labels: whether the elements have labels `y`.
    role: "learner", "reference" or "proxy", for error messages.
    model: the model, to read `logit_scale`, `logit_bias` and its compiled `loss`.

  Returns:
    "contrastive" or "classification".

  Raises:
    ValueError: if `task` is unknown, the outputs do not fit the task's contract, or (with
      `task="auto"`) two readings are plausible or none fits; the message names the option
      that settles it.
  """
  if task not in TASKS:
    raise ValueError(f"Expected task in {TASKS}. Received: task={task!r}")
  received = f"Received: {role} output {_describe_shapes(outputs)}"
  if task == "contrastive":
    _image_and_text(outputs, embedding_keys, role)
    if model is not None:
      logit_parameters(model)
    return task
  if task == "classification":
    _check_classifier(outputs, loss_fn, has_labels, role, received, explicit=True)
    return task

  if isinstance(outputs, Mapping):
    if all(k in outputs for k in embedding_keys):
      return resolve_task(outputs, task="contrastive", embedding_keys=embedding_keys,
                          loss_fn=loss_fn, has_labels=has_labels, role=role, model=model)
    candidates = _embedding_candidates(outputs)
    if candidates:
      raise ValueError(
          f"The {role} returns a mapping without the embedding keys {tuple(embedding_keys)}, "
          f"but with [batch, width] tensors of one width under {candidates}: a dual encoder "
          f"under other keys, or a classifier of several outputs. Pass "
          f"`embedding_keys={candidates!r}` (image first) for a dual encoder, or "
          f"`task=\"classification\"` with a `loss_fn=` for a classifier. {received}")
    if not has_labels:
      raise ValueError(
          f"The {role} returns a mapping without the embedding keys {tuple(embedding_keys)}, "
          f"and the elements have no labels, so it is neither a dual encoder nor a "
          f"classifier tfjest can score. Pass `embedding_keys=(image_key, text_key)` naming "
          f"its embeddings, or `task=\"classification\"` with elements (x, y). {received}, "
          f"elements without labels")
  elif (isinstance(outputs, (tuple, list)) and len(outputs) == 2 and
        _embedding_candidates(dict(enumerate(outputs)))):
    return _resolve_pair(outputs, loss_fn=loss_fn, has_labels=has_labels, role=role,
                         model=model, received=received)
  _check_classifier(outputs, loss_fn, has_labels, role, received, explicit=False)
  return "classification"


def _resolve_pair(outputs, *, loss_fn, has_labels: bool, role: str, model, received: str) -> str:
  """`resolve_task` of a 2-tuple of `[batch, width]` tensors of one width (see there)."""
  both = ("Pass `task=\"contrastive\"` for a dual encoder (with `logit_scale` and "
          "`logit_bias` attributes), or `task=\"classification\"` with a `loss_fn=` of the "
          "labels and both outputs for a classifier.")
  if model is None:
    if loss_fn is None:
      return "contrastive"
    raise ValueError(
        f"The {role} returns two [batch, width] tensors of one width, which a dual encoder "
        f"returns, but `loss_fn=` is given, which only a classifier uses. {both} {received}, "
        f"loss_fn={loss_fn!r}")
  has_parameters = all(getattr(model, a, None) is not None for a in ("logit_scale", "logit_bias"))
  if has_parameters:
    if loss_fn is None:
      logit_parameters(model)
      return "contrastive"
    raise ValueError(
        f"The {role} looks like a dual encoder (two [batch, width] embeddings, `logit_scale` "
        f"and `logit_bias`), but `loss_fn=` is given, which only a classifier uses. {both} "
        f"{received}, loss_fn={loss_fn!r}")
  if loss_fn is not None and has_labels:
    return "classification"  # Without logit_scale and logit_bias it is no dual encoder.
  if loss_fn is not None:
    raise ValueError(
        f"The {role} returns two outputs and `loss_fn=` is given, but the elements have no "
        f"labels for a classifier, and a dual encoder needs `logit_scale` and `logit_bias`. "
        f"{both} {received}, elements without labels")
  compiled = getattr(model, "loss", None)
  if compiled is not None:
    raise ValueError(
        f"The {role} returns two [batch, width] tensors of one width and was compiled with a "
        f"loss: a classifier of two outputs, or a dual encoder without `logit_scale` and "
        f"`logit_bias`. {both} {received}, loss={compiled!r}")
  raise ValueError(
      f"The {role} returns two [batch, width] embeddings, so it is scored as a dual encoder, "
      f"which must expose `logit_scale` and `logit_bias` (logit = logit_scale * <image, text> "
      f"+ logit_bias). Add them to the model, or pass `task=\"classification\"` with a "
      f"`loss_fn=` for a classifier of two outputs. {received}, {role}={model.name!r}")


def _check_classifier(outputs, loss_fn, has_labels: bool, role: str, received: str,
                      explicit: bool):
  """Raises unless a classifier's per-example loss can be computed from `outputs`."""
  if not has_labels:
    why = ("`task=\"classification\"` is given" if explicit else
           "it returns neither the embedding mapping nor a pair of embeddings a dual encoder "
           "returns")
    raise ValueError(
        f"Classification scoring needs labels: elements must be (x, y) or (x, y, "
        f"sample_weight) tuples. The {role} is scored as a classifier because {why}; "
        f"for a dual encoder pass `task=\"contrastive\"` and `embedding_keys=`. {received}, "
        f"elements without labels")
  if loss_fn is None and len(tf.nest.flatten(outputs)) > 1:
    raise ValueError(
        f"The {role} is scored as a classifier, but it has several outputs and a compiled "
        f"loss scores one. Pass `loss_fn=` (a per-example loss of the labels and all "
        f"outputs){'' if explicit else ', or `task=` to choose the task'}. {received}")


def _embedding_candidates(outputs: Mapping) -> Optional[Tuple]:
  """Keys of the first two `[batch, width]` entries of one width, in order; None if none."""
  widths = {}
  for key, value in outputs.items():
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) != 2:
      continue
    width = tf.TensorShape(shape)[-1]
    for other, other_width in widths.items():
      if width is None or other_width is None or width == other_width:
        return (other, key)
    widths[key] = width
  return None


def _describe_shapes(outputs) -> str:
  shapes = tf.nest.map_structure(lambda t: tuple(getattr(t, "shape", ())), outputs)
  if isinstance(outputs, (Mapping, tuple, list)):
    return f"{_describe(outputs)} of shapes {shapes}"
  return _describe(outputs)


def _describe(outputs) -> str:
  if isinstance(outputs, dict):
    return f"a mapping with keys {sorted(outputs)}"
  if isinstance(outputs, (tuple, list)):
    return f"a {type(outputs).__name__} of {len(outputs)}"
  shape = getattr(outputs, "shape", None)
  return f"of type {type(outputs).__name__}" + (f" and shape {shape}" if shape is not None else "")


def _zeros_like_spec(s):
  shape = [1] + s.shape.as_list()
  if s.dtype == tf.string:
    return tf.fill(shape, "")
  return tf.zeros(shape, s.dtype)


def build_and_probe(model: keras.Model, x_spec, role: str):
  """Calls a model eagerly on one zero example (building it if needed); returns its outputs."""
  dummy = tf.nest.map_structure(_zeros_like_spec, x_spec)
  try:
    return model(dummy, training=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"tfjest could not call the {role} on the elements' inputs (it calls the model once on "
        f"a zero example to build it and check its outputs). Make sure the model accepts the "
        f"dataset's x as `fit` would pass it (if the dataset yields batches, pass "
        f"input_batched=True). Received: {role}={model.name!r}, inputs spec={x_spec}. "
        f"Error: {e}") from e
