"""Online proxy scorers ("Bad Students Make Great Teachers"): a small model scores for the learner.

Scoring every candidate with the learner costs `F_L * N` FLOPs per step. A much smaller model of
the same kind, trained online on the same selected batches as the learner, tracks what the
learner still gets wrong well enough to score for it (Bad Students, arXiv 2312.05328): scoring
then costs `F_proxy * N`, plus the proxy's own training step `3 * F_proxy * b`.

tfjest trains the proxy itself, as part of the selection step (in the input pipeline, or in the
train step under `tfjest.attach`): after each selection, one gradient
step of the proxy's own optimizer on the batch just emitted (at the scoring view, if any). Its
loss is the SigLIP loss of its embeddings for a dual encoder, and the mean per-example loss
(`loss_fn`, else the compiled loss) for a classifier, weighted by the sample weights if the
elements carry them. So the next super-batch is scored with the updated proxy. The learner is
trained by the user's `fit`, as always; tfjest never calls it when a proxy scores.
"""

from typing import Any, Optional

import keras
import tensorflow as tf

from tfjest import adapters
from tfjest import devices
from tfjest import losses


class OnlineProxy:
  """A small model that scores for the learner and that tfjest trains on the emitted batches.

  >>> import keras
  >>> import tfjest
  >>> from tfjest import testing
  >>> model = testing.classifier(seed=0)   # the learner, trained by fit
  >>> small = testing.classifier(seed=2)   # the proxy: same contract, much smaller in practice
  >>> proxy = tfjest.OnlineProxy(small, optimizer=keras.optimizers.SGD(0.1))
  >>> selector = tfjest.select(learner=model, proxy=proxy, reference=testing.classifier(seed=1),
  ...                          batch_size=8, super_batch_size=32, method="independent")
  >>> history = model.fit(testing.stream("classification", n=64).apply(selector), verbose=0)
  >>> int(model.optimizer.iterations), int(proxy.steps)   # one proxy step per emitted batch
  (2, 2)

  Args:
    model: the proxy, a Keras model following the same contract as the learner (dual encoder
      or classifier); never the learner itself.
    optimizer: its own optimizer; defaults to the one the proxy was compiled with. Must not be
      shared with the learner.
    loss_fn: a classifier proxy's loss in any form `compile` takes for one output (a name, a
      `keras.losses.Loss`, a function), applied as `fit` applies it; default: its compiled
      loss. Ignored for dual encoders, which train on the SigLIP loss.

  Attributes:
    model, optimizer, loss_fn: as given.
    steps: a `tf.Variable` counting the training steps taken.

  Raises:
    TypeError: if `model` is not a `keras.Model` or `optimizer` not a Keras optimizer.
    ValueError: if no optimizer is given and the model was not compiled with one, or
      `loss_fn` is a loss name Keras does not know.
    TypeError: if `loss_fn` is not a loss.
  """

  def __init__(self, model: keras.Model, *,
               optimizer: Optional[keras.optimizers.Optimizer] = None,
               loss_fn: Optional[Any] = None):
    if not isinstance(model, keras.Model):
      raise TypeError(f"The proxy must be a keras.Model. Received: model of type "
                      f"{type(model).__name__}")
    if optimizer is None:
      optimizer = getattr(model, "optimizer", None)
      if optimizer is None:
        raise ValueError(
            "The proxy trains with its own optimizer: pass optimizer= or compile the proxy with "
            f"one. Received: optimizer=None (model {model.name!r} has no optimizer)")
    if not isinstance(optimizer, keras.optimizers.Optimizer):
      raise TypeError(f"optimizer must be a keras.optimizers.Optimizer. Received: optimizer of "
                      f"type {type(optimizer).__name__}")
    if loss_fn is not None:  # any loss `compile` takes for one output, checked now
      adapters.resolve_loss_fn(None, loss_fn, "proxy")
    self.model = model
    self.optimizer = optimizer
    self.loss_fn = loss_fn
    with tf.init_scope(), tf.device("/cpu:0"):
      self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="proxy_steps")
    self._task = None
    self._embedding_keys = None
    self._train_loss_fn = None

  def place_steps(self, device: str):
    """Recreates `steps` on `device`, keeping its value (a train step compiled whole with XLA
    updates only variables on its own device). Call it before checkpointing `steps`."""
    if devices.same_device(self.steps.device, device):
      return
    with tf.init_scope(), tf.device(device):
      self.steps = tf.Variable(self.steps.read_value(), trainable=False, name="proxy_steps")

  def prepare(self, task: str, embedding_keys=("image_embeddings", "text_embeddings")):
    """Fixes the task and builds the optimizer (eagerly, once the model is built)."""
    self._task = task
    self._embedding_keys = tuple(embedding_keys)
    if task == "classification":
      self._train_loss_fn = adapters.resolve_loss_fn(self.model, self.loss_fn, "proxy")
    if not self.model.trainable_variables:
      raise ValueError(f"The proxy has no trainable weights, so it cannot follow training. "
                       f"Received: model={self.model.name!r}")
    if not self.optimizer.built:
      self.optimizer.build(self.model.trainable_variables)

  def loss(self, x, y=None, sample_weight=None) -> tf.Tensor:
    """The proxy's training loss on a batch (graph-safe, `training=True`)."""
    if self._task == "contrastive":
      return losses.siglip_loss(adapters.contrastive_embeddings(
          self.model, x, self._embedding_keys, "proxy", training=True))
    per_example = losses.per_example_loss(self._train_loss_fn, y, self.model(x, training=True))
    if sample_weight is None:
      return tf.reduce_mean(per_example)
    weights = tf.cast(tf.reshape(sample_weight, tf.shape(per_example)), per_example.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_example * weights), tf.reduce_sum(weights))

  def train_step(self, x, y=None, sample_weight=None, *, replicas: int = 1,
                 count: bool = True) -> tf.Tensor:
    """One gradient step on a batch (graph-safe; call `prepare` first). Returns the loss.

    Args:
      x, y, sample_weight: the batch (a replica's part of it under a strategy).
      replicas: replicas in sync; the loss is divided by it, because the optimizer sums the
        replicas' gradients (as Keras' own train step does).
      count: add 1 to `steps` here (the selection step counts once over the replicas itself).
    """
    if self._task is None:
      raise RuntimeError("OnlineProxy.prepare(task) must run before training.")
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      loss = self.loss(x, y, sample_weight)
      scaled = loss / replicas if replicas > 1 else loss
    self.optimizer.apply(tape.gradient(scaled, variables), variables)
    if not count:
      return tf.identity(loss)
    # Program order (automatic control dependencies) puts the count after the update.
    with tf.control_dependencies([self.steps.assign_add(1)]):
      return tf.identity(loss)
