"""ReLA-Aid: train a user's Keras model on a prior's targets early, then on its own loss.

`ReLAAid(model, features=...)` wraps the user's model for `fit` (docs/SPEC.md §11). While
in the ReLA phase, a train step regresses the model's features onto the prior's targets (which
the stream carries in `x["rela_target"]`, `PriorTargets.join`) through a linear transport head:

    loss = mean over the batch of (1 - cosine(head(features), target))

and the model's own loss is not computed at all. The step then switches, once and for all, to
the model's own loss (`model.compute_loss`, what its own `fit` would optimise):

- `switch="adaptive"`, the rule of the released code (LINs-lab/ReLA): two moving averages of the
  ReLA loss, `fast <- 0.999 fast + 0.001 loss` (from 1.0) and `slow <- 0.99 slow + 0.01 fast`
  (from 2.0), and `rho = exp(-max(slow - fast, 0))`; the model switches when `rho >= 0.995`,
  i.e. when the fast average has stopped falling. The loss fed to the averages is the mean
  over replicas (an all-reduce), so every replica switches at the same step.
- `switch=<int>`: at that step; `switch=<float in (0, 1)>` with `total_steps`: at that fraction.

The switch state (`step`, `fast`, `slow`, `switched`, `switch_step`) lives in non-trainable
variables of the wrapper: `tf.train.Checkpoint(model=aid)` and `keras.callbacks.BackupAndRestore`
(`aid.fit(..., callbacks=[tfjest.backup_and_restore(dir)])`) save and restore it with the
weights, so a resumed run does not go back to the ReLA loss. The user's model stays the user's:
the wrapper holds it as `aid.model` and trains its variables in place; save, evaluate and call
`model` as before (`aid(x)` and `aid.evaluate` also delegate to it).

Design: one `train_step` whose two losses sit in the branches of a `tf.cond` on the `switched`
variable, so that only one forward runs per step and the step stays one graph (no retrace at
the switch) under `fit` and under a strategy (not tried under XLA). The gradients of both
branches are applied by one optimizer call outside the `cond` (a `merge_call` inside a `cond`
branch is not allowed under `MirroredStrategy`): variables the taken branch does not use get zero gradients (the head after
the switch; e.g. a dual encoder's logit scale before it). With Adam, a zero gradient moves a
variable only through its earlier momentum; decoupled weight decay still applies.

A smooth mixture `lambda(t) * ReLA + (1 - lambda(t)) * own`, which the paper's summary
describes, is not the released rule and is not offered here.
"""

import inspect
import math
from typing import Optional, Union

import keras
import tensorflow as tf

from tfjest import checks
from tfjest import adapters
from tfjest.rela import targets as priors

SWITCH_RULES = ("adaptive",)
FAST_DECAY, SLOW_DECAY, THRESHOLD = 0.999, 0.99, 0.995
FAST_INIT, SLOW_INIT = 1.0, 2.0


def rela_switch_update(fast, slow, loss, *, fast_decay: float = FAST_DECAY,
                       slow_decay: float = SLOW_DECAY):
  """One step of the released switch rule: the new `(fast, slow, rho)`.

  `fast <- d_f fast + (1 - d_f) loss`; `slow <- d_s slow + (1 - d_s) fast` (the new fast);
  `rho = exp(-max(slow - fast, 0))`. Switch when `rho >= 0.995`. Pure: tensors in, tensors out.

  >>> import tfjest
  >>> fast, slow, rho = tfjest.rela_switch_update(1.0, 2.0, 0.5)
  >>> round(float(fast), 4), round(float(slow), 4), round(float(rho), 4)
  (0.9995, 1.99, 0.3714)
  """
  fast = fast_decay * tf.cast(fast, tf.float32) + (1.0 - fast_decay) * tf.cast(loss, tf.float32)
  slow = slow_decay * tf.cast(slow, tf.float32) + (1.0 - slow_decay) * fast
  return fast, slow, tf.exp(-tf.maximum(slow - fast, 0.0))


def rela_loss(predictions, targets):
  """`[B]` ReLA losses: `1 - cosine(predictions, targets)` per example."""
  return 1.0 - tf.reduce_sum(tf.math.l2_normalize(predictions, -1) *
                             tf.math.l2_normalize(tf.cast(targets, predictions.dtype), -1), -1)


class ReLAAid(keras.Model):
  """Wraps a user's model: ReLA loss onto a prior's targets first, then the model's own loss.

  See the module docstring for the rule and the design.

  >>> import os
  >>> import tempfile
  >>> import keras
  >>> import tfjest
  >>> from tfjest import testing
  >>> train_ds = testing.stream("classification", n=64)        # ({"x", "id"}, label)
  >>> path = os.path.join(tempfile.mkdtemp(), "targets")
  >>> targets = tfjest.prior_targets(testing.classifier(seed=9), train_ds, path, width=5)
  >>> model = testing.classifier(seed=0)             # the user's model, compiled with its loss
  >>> aid = tfjest.ReLAAid(model, switch=4)           # features: its output (5 logits)
  >>> aid.compile(optimizer=keras.optimizers.SGD(0.1))
  >>> stream = train_ds.apply(targets.join()).batch(16).repeat()
  >>> history = aid.fit(stream, steps_per_epoch=6, epochs=1, verbose=0)
  >>> int(aid.switch_step), bool(aid.switched.numpy())      # steps 0-3 on ReLA, then its own loss
  (4, True)

  Args:
    model: the user's model, built; compiled with its loss (or overriding `compute_loss`).
    features: the model's features the head reads (`priors.features_fn`): None (its output),
      an output key, a functional model's layer name, or `fn(model, inputs, training)`.
    target_key: the targets' feature in `x` (removed before the model sees `x`).
    switch: "adaptive" (the released rule), an int step (the first step on the model's own
      loss), or a float in (0, 1): that fraction of `total_steps`.
    total_steps: the run's length in steps, with a fractional `switch`.
    threshold, fast_decay, slow_decay: the adaptive rule's constants (released values).
    **kwargs: `keras.Model` arguments (e.g. `name`).

  Attributes:
    model: the user's model.
    head: the linear transport head (a `Dense` layer), built by the first `fit`.
    step, fast, slow, rho, switched, switch_step: the switch state (`switch_step` is -1 before
      the switch, else the first step trained on the model's own loss).

  Raises:
    TypeError: if `model` is not a `keras.Model`.
    ValueError: on a bad `switch`, `total_steps` or constant, a model with no own loss; at
      `fit`, if the stream has no targets or they are wider than the model's features.
  """

  def __init__(self, model: keras.Model, *, features: priors.Features = None,
               target_key: str = priors.TARGET_KEY, switch: Union[str, int, float] = "adaptive",
               total_steps: Optional[int] = None, threshold: float = THRESHOLD,
               fast_decay: float = FAST_DECAY, slow_decay: float = SLOW_DECAY, **kwargs):
    if not isinstance(model, keras.Model):
      raise TypeError(f"model must be a keras.Model (the model to train). Received: model of "
                      f"type {type(model).__name__}")
    if not model.built:
      raise ValueError(f"Build the model (call it once) before wrapping it. Received: "
                       f"model={model.name!r} (not built)")
    if (getattr(model, "_compile_loss", None) is None and
        type(model).compute_loss is keras.Model.compute_loss):
      raise ValueError(f"ReLA switches to the model's own loss: compile the model with its loss "
                       f"(or override compute_loss). Received: model={model.name!r} compiled "
                       f"without a loss")
    self._switch_at = _switch_step(switch, total_steps)
    for name, value in (("threshold", threshold), ("fast_decay", fast_decay),
                        ("slow_decay", slow_decay)):
      if not checks.is_real(value) or not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1). Received: {name}={value!r}")
    if not isinstance(target_key, str) or not target_key:
      raise ValueError(f"target_key must be a non-empty string. Received: "
                       f"target_key={target_key!r}")
    super().__init__(**kwargs)
    self.model = model
    self.target_key = target_key
    self.switch_rule = switch
    self._features = priors.features_fn(model, features, "model")
    self._decays = (float(fast_decay), float(slow_decay))
    self._threshold = float(threshold)
    self._own_has_training = "training" in inspect.signature(model.compute_loss).parameters
    self.head = None
    # Every replica computes the same values (from all-reduced losses): keep the first's.
    state = dict(trainable=False, aggregation="only_first_replica")
    self.step = self.add_weight(shape=(), dtype="int64", initializer="zeros", name="step",
                                **state)
    self.fast = self.add_weight(shape=(), initializer=keras.initializers.Constant(FAST_INIT),
                                name="fast", **state)
    self.slow = self.add_weight(shape=(), initializer=keras.initializers.Constant(SLOW_INIT),
                                name="slow", **state)
    self.rho = self.add_weight(shape=(), initializer="zeros", name="rho", **state)
    self.switched = self.add_weight(shape=(), dtype="bool", initializer="zeros",
                                    name="switched", **state)
    self.switch_step = self.add_weight(shape=(), dtype="int64",
                                       initializer=keras.initializers.Constant(-1),
                                       name="switch_step", **state)

  def call(self, x, training=False):
    if isinstance(x, dict) and self.target_key in x:
      x = {k: v for k, v in x.items() if k != self.target_key}
    return self.model(x, training=training)

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    """The model's own loss (what `evaluate` reports)."""
    if self._own_has_training:
      return self.model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=training)
    return self.model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)

  def build_head(self, inputs):
    """Creates the transport head from a batch (or `TensorSpec`s) of inputs with targets.

    `fit` calls it with the dataset's element spec; call it yourself before restoring a
    `tf.train.Checkpoint` written after training, so that the head's weights have a home.

    Raises:
      ValueError: if the inputs have no targets, or the targets are wider than the features.
    """
    if self.head is not None:
      return
    if not isinstance(inputs, dict) or self.target_key not in inputs:
      got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
      raise ValueError(f"ReLA-Aid reads the prior's targets from x[{self.target_key!r}] (join "
                       f"them with PriorTargets.join()). Received: inputs {got}")
    example = {k: tf.zeros([1 if d is None else d for d in v.shape], v.dtype)
               for k, v in inputs.items() if k != self.target_key}
    target_width = inputs[self.target_key].shape[-1]
    feature_width = self._features(example, False).shape[-1]
    if target_width is None or feature_width is None or target_width > feature_width:
      raise ValueError(
          f"The targets must not be wider than the model's features (the prior targets keep "
          f"min(student width, prior width) PCA components: compute them with width="
          f"{feature_width}). Received: target width={target_width}, feature width="
          f"{feature_width}")
    with self.distribute_strategy.scope():
      self.head = keras.layers.Dense(target_width, name="transport_head")
      self.head.build((None, feature_width))
    self.built = True

  def fit(self, x=None, *args, **kwargs):
    if self.head is None:
      inputs = (adapters.unpack(x.element_spec)[0] if isinstance(x, tf.data.Dataset)
                else adapters.unpack(x)[0] if isinstance(x, tuple) else x)
      self.build_head(inputs)
    if getattr(self, "optimizer", None) is not None and not self.optimizer.built:
      # Its variables made now rather than while Keras traces the train step (a function that
      # creates variables is traced twice): the step it applies to is this model's own.
      with self.distribute_strategy.scope():
        self.optimizer.build(self.trainable_variables)
    return super().fit(x, *args, **kwargs)

  def train_step(self, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    targets = x[self.target_key]
    x = {k: v for k, v in x.items() if k != self.target_key}
    replicas = tf.distribute.get_strategy().num_replicas_in_sync

    def rela():
      predictions = self.head(self._features(x, True))
      value = tf.reduce_mean(rela_loss(predictions, targets))
      return value / replicas, value

    def own():
      y_pred = self.model(x, training=True)
      return self.compute_loss(x, y, y_pred, sample_weight, training=True), tf.constant(0.0)

    with tf.GradientTape() as tape:
      loss, relaloss = tf.cond(self.switched, own, rela)  # the scaled loss; the replica's mean
    variables = self.trainable_variables
    pairs = [(g, v) for g, v in zip(tape.gradient(loss, variables), variables) if g is not None]
    self.optimizer.apply_gradients(pairs)

    ctx = tf.distribute.get_replica_context()
    mean = ctx.all_reduce("MEAN", relaloss) if ctx is not None else relaloss
    fast, slow, rho = rela_switch_update(self.fast, self.slow, mean,
                                         fast_decay=self._decays[0], slow_decay=self._decays[1])
    switched = tf.convert_to_tensor(self.switched)
    step = self.step + 1  # steps done, including this one
    if self._switch_at is None:
      now = tf.logical_and(tf.logical_not(switched), rho >= self._threshold)
    else:
      now = tf.logical_and(tf.logical_not(switched), step >= self._switch_at)
    self.fast.assign(tf.where(switched, self.fast, fast))
    self.slow.assign(tf.where(switched, self.slow, slow))
    self.rho.assign(tf.where(switched, self.rho, rho))
    self.switch_step.assign(tf.where(now, step, self.switch_step))
    self.switched.assign(tf.logical_or(switched, now))
    self.step.assign(step)
    return {"loss": loss * replicas, "rela_loss": mean, "rho": self.rho,
            "switched": tf.cast(self.switched, tf.float32)}


def _switch_step(switch, total_steps) -> Optional[int]:
  """The constant switch step, or None for the adaptive rule (validates both arguments)."""
  if total_steps is not None and (not checks.is_int(total_steps) or total_steps <= 0):
    raise ValueError(f"total_steps must be a positive integer. Received: "
                     f"total_steps={total_steps!r}")
  if isinstance(switch, str):
    if switch not in SWITCH_RULES:
      raise ValueError(f"Expected switch in {SWITCH_RULES}, a step (int) or a fraction in "
                       f"(0, 1). Received: switch={switch!r}")
    return None
  if not checks.is_real(switch):
    raise ValueError(f"Expected switch in {SWITCH_RULES}, a step (int) or a fraction in (0, 1). "
                     f"Received: switch={switch!r}")
  if checks.is_int(switch):
    if switch < 0:
      raise ValueError(f"A switch step must be >= 0. Received: switch={switch}")
    return int(switch)
  if not 0 < switch < 1:
    raise ValueError(f"A fractional switch must be in (0, 1). Received: switch={switch}")
  if total_steps is None:
    raise ValueError(f"A fractional switch needs total_steps (the run's length). Received: "
                     f"switch={switch}, total_steps=None")
  return int(math.ceil(switch * total_steps))
