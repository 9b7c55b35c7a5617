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

from typing import Any, Callable, Optional, Sequence

import keras
import tensorflow as tf

from tfjest import losses

TASKS = ("auto", "contrastive", "classification")


def unpack(element):
  """Splits an element as `fit` does: returns `(x, y, sample_weight)`."""
  if isinstance(element, tuple) and 1 <= len(element) <= 3:
    return element + (None,) * (3 - len(element))
  return element, None, None


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


def logit_parameters(model: keras.Model):
  """A dual encoder's `(logit_scale, logit_bias)` as scalar tensors (see the contract)."""
  return _scalar(model, "logit_scale"), _scalar(model, "logit_bias")


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
  outputs = model(x, training=training)
  if isinstance(outputs, dict):
    missing = [k for k in embedding_keys if k not in outputs]
    if missing:
      raise ValueError(
          f"The {role} returned a mapping without the embedding keys {missing}. Pass "
          f"`embedding_keys=(image_key, text_key)` naming its outputs. "
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
  text = tf.cast(text, image.dtype)
  return losses.Embeddings(image, text, *logit_parameters(model))


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


def classification_losses(model: keras.Model, x, y, loss_fn: Callable, role: str) -> tf.Tensor:
  """Per-example losses `[N]` float32 of a classifier on `(x, y)` (`loss_fn` as resolved)."""
  if y is None:
    raise ValueError(
        f"Classification scoring needs labels: elements must be (x, y) or (x, y, "
        f"sample_weight) tuples. Received: elements without labels for the {role}")
  predictions = model(x, training=False)
  values = losses.per_example_loss(loss_fn, y, predictions)
  return tf.cast(values, tf.float32)


def infer_task(outputs: Any, embedding_keys: Sequence[str]) -> str:
  """Guesses the task from a model's outputs: embeddings mean "contrastive"."""
  if isinstance(outputs, dict) and all(k in outputs for k in embedding_keys):
    return "contrastive"
  if isinstance(outputs, (tuple, list)) and len(outputs) == 2:
    return "contrastive"
  return "classification"


def _describe(outputs) -> str:
  if isinstance(outputs, dict):
    return f"a mapping with keys {sorted(outputs)}"
  if isinstance(outputs, (tuple, list)):
    return f"a {type(outputs).__name__} of {len(outputs)}"
  shape = getattr(outputs, "shape", None)
  return f"of type {type(outputs).__name__}" + (f" and shape {shape}" if shape is not None else "")
