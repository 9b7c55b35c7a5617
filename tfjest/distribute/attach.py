"""`tfjest.attach` and `tfjest.detach`: selection inside a model's (replicated) train step.

Under a `tf.distribute` strategy the learner's variables live on the replicas and `tf.data`
runs on the host, so scoring with the live learner belongs in the train step. `attach` makes
that so with one line and no change to the model's class:

- the selector's pipeline emits super-batches of `N` examples (a global batch, as
  `tf.distribute` expects); the strategy gives each of the `R` replicas its shard of `N / R`;
- the model's train step, on each replica, scores its shard with that step's weights (learner)
  and the replicated frozen reference, chooses `b / R` examples, and runs the model's own
  `train_step` on them.

Without a strategy, `attach` leaves the model alone and selection stays in the `tf.data` map
when the models it reads live on the host CPU; when one of them lives on a GPU or TPU
(`tfjest.devices`), selection goes into the train step, with its statistics' counters on the
model's device so that a step Keras compiles whole with XLA (its default on one GPU) updates
them. So the same user code runs everywhere. `detach` gives the model its own train step back.
"""

import weakref

import keras
import tensorflow as tf

from tfjest import adapters
from tfjest import devices
from tfjest import transform
from tfjest.distribute import guards
from tfjest.distribute import keras_compat
from tfjest.distribute import replica as replica_lib
from tfjest.distribute import train_step as train_step_lib

PLACEMENTS = ("auto", "train_step")
# Selectors attached to a model's train step (one model per selector), without marking them.
_ATTACHED = weakref.WeakKeyDictionary()


def attach(model: keras.Model, selector: transform.Selector, *, replica_selection: str = "local",
           placement: str = "auto", jit_compile: bool = True):
  """Runs a selector's scoring and selection inside `model`'s (replicated) train step.

  The one extra line that makes `dataset.apply(tfjest.select(...))` + `model.fit` work under
  any `tf.distribute` strategy:

  >>> import tensorflow as tf
  >>> import tfjest
  >>> from tfjest import testing
  >>> strategy = tf.distribute.MirroredStrategy(["/cpu:0"])  # one replica; () for every GPU
  >>> with strategy.scope():
  ...   model = testing.classifier(seed=0)       # compiled under the scope
  ...   reference = testing.classifier(seed=1)   # created (or loaded) under the scope, frozen
  ...   reference.trainable = False
  ...   attached = tfjest.attach(model, tfjest.select(
  ...       learner=model, reference=reference, batch_size=8, super_batch_size=32,
  ...       method="independent"))
  >>> attached.placement, attached.strategy is strategy
  ('train_step', True)
  >>> train_ds = testing.stream("classification", n=64)
  >>> element = next(iter(train_ds.apply(attached)))   # apply what attach returns
  >>> (x, y), = element.values()   # one super-batch, marked as the attached step's own
  >>> x["id"].shape  # the pipeline emits super-batches; each replica selects from its shard
  TensorShape([32])
  >>> history = model.fit(train_ds.apply(attached), verbose=0)
  >>> stats = attached.stats.result()
  >>> stats["batches"], stats["selected"]  # 2 super-batches of 32: 2 steps of 8 examples
  (2, 16)

  Without a strategy, with the models on the host CPU, the selector is returned unchanged and
  selects in the `tf.data` map:

  >>> model = testing.classifier(seed=0)
  >>> selector = tfjest.select(learner=model, reference=testing.classifier(seed=1), batch_size=8,
  ...                          super_batch_size=32, method="independent")
  >>> tfjest.attach(model, selector) is selector
  True

  With a strategy (or `placement="train_step"`), the selector's pipeline emits super-batches
  of `N` examples, the strategy gives each of the `R` replicas `N / R`, and the model's train
  step, on each replica, scores its shard with that step's weights, selects `b / R` and runs
  the model's own `train_step` on them. The noise is keyed by `(seed,
  optimizer.iterations * R + replica id)`: different per step and replica, reproducible and
  resumable. Without a strategy (`placement="auto"`), the model is left unchanged and the
  selector selects in the `tf.data` map as usual, unless a model the selection reads (learner,
  proxy, reference; a cached reference reads none) has its variables on a GPU or TPU: the
  pipeline runs on the host, so selection then goes into the train step (`tfjest.devices`).

  On one device the train step records the statistics into counters created on the device of
  the model's variables (`SelectionStats.on_device`), which a step compiled whole with XLA
  (`compile(jit_compile=True)`, Keras' "auto" on one GPU) can update; an online proxy's step
  count moves there too. This is tested on CPU with the model on a second logical CPU device;
  on a GPU it is untested. Under `TPUStrategy` the statistics are not recorded (not known to
  work without a TPU to test on); under other strategies they are recorded on the host
  through the replica context (a `merge_call`), with `jit_compile=False` as those need.

  The frozen reference must score alike on every replica. A reference trained under the
  strategy can end with replicas a little apart (plain `fit` is not bitwise deterministic
  across replicas on CPU); `attach` then gives each of this worker's replicas the first one's
  values and logs a warning with the largest absolute difference it found. Replicas that agree
  are left as they are, without a warning. The learner and an online proxy train, so they are
  not touched.

  Args:
    model: the compiled Keras model being trained, created under the strategy's scope.
    selector: the object returned by `tfjest.select(...)`, not yet applied to a dataset.
    replica_selection: "local" (default): each replica selects `b / R` from its own `N / R`.
      "global": JEST chunks are chosen per replica but conditioned on every replica's choices
      (their embeddings are all-gathered after each chunk; examples never move). Only joint
      selection of dual encoders differs; per-example scores have no cross terms.
    placement: "auto" (in the train step under a strategy or when a model the selection reads
      lives on a GPU or TPU, in the pipeline otherwise) or "train_step" (always in the train
      step).
    jit_compile: compile the selection maths with XLA inside the step (an inner
      `tf.function(jit_compile=True)`; the models run in the step's own graph).

  Returns:
    With the selection in the train step: a `TrainStepSelection`, the transformation to apply
    to the training dataset (it emits super-batches of `N` and shares `selector.stats`; pass
    either to `SelectionStatsCallback` or `selection_checkpoint`). Otherwise `selector`
    itself, unchanged. The selector's configuration is never modified (the reference's
    replicas may be aligned, and on one device its `stats` gain counters on the model's
    device and a proxy's `steps` moves there, as above).

  Raises:
    TypeError: if `model` is not a `keras.Model` or `selector` not a `tfjest.Selector`.
    ValueError: on an unknown option; if the selector is already attached; if the batch sizes
      do not split evenly over the replicas; if a scoring model is among the trained weights or
      was created outside the strategy's scope.
  """
  if not isinstance(model, keras.Model):
    raise TypeError(f"model must be a keras.Model. Received: model of type "
                    f"{type(model).__name__}")
  if placement not in PLACEMENTS:
    raise ValueError(f"Expected placement in {PLACEMENTS}. Received: placement={placement!r}")
  if isinstance(selector, train_step_lib.TrainStepSelection):
    raise ValueError("This selector is already attached to a model. Create one selector per "
                     "model. Received: selector returned by tfjest.attach")
  # Checks the selector and the options before anything changes.
  selection = replica_lib.ReplicaSelection(selector, replica_selection=replica_selection,
                               jit_compile=jit_compile)
  if getattr(model.train_step, "_tfjest_selection", None) is not None:
    raise ValueError("This model already selects in its train step (tfjest.attach was called "
                     f"before). Received: model={model.name!r}")
  if selector in _ATTACHED:
    raise ValueError("This selector is already attached to a model. Create one selector per "
                     f"model. Received: selector attached to {_ATTACHED[selector]!r}")
  strategy = adapters.model_strategy(model)
  if placement == "auto" and strategy is None and (
      selector.models_location() == devices.HOST):
    return selector
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  guards.check_divisible(selector, replicas)
  guards.check_models(selector, model, strategy)
  if strategy is not None:
    keras_compat.ensure_multi_worker_fit(strategy)
    guards.align_reference_replicas(selector, strategy)
  if strategy is None:
    # One device: the step's counters live with the model's variables, where a step compiled
    # whole with XLA can update them (on a GPU as on the host CPU).
    selection.record_on(devices.model_device(model))
  # Under TPUStrategy the replicas cannot update the host-side statistics variables (recording
  # there through replicated counters is not known to work: untested without a TPU).
  record_stats = strategy is None or not guards.is_tpu(strategy)
  own_train_step = model.train_step

  def train_step(data):
    if not train_step_lib.is_marked(data):
      raise ValueError(
          f"Model {model.name!r} selects in its train step (tfjest.attach), so it trains only "
          "on what the attached transformation emits: fit it on `dataset.apply(attached)` "
          "(super-batches of N), or call `tfjest.detach(model)` first to train it on other "
          "data as a plain Keras model. Received: a batch of structure "
          f"{tf.nest.map_structure(lambda t: tuple(t.shape), data)}")
    optimizer = model.optimizer
    if optimizer is None:
      raise ValueError("tfjest.attach: compile the model before training it. "
                       f"Received: model={model.name!r} with optimizer=None")
    selection.record_stats = record_stats and guards.can_record(model, selection.step.stats.device)
    return own_train_step(selection(data, optimizer.iterations))

  train_step._tfjest_selection = selection  # pylint: disable=protected-access
  model.train_step = train_step
  model.train_function = None  # rebuilt around the new step on the next fit
  _ATTACHED[selector] = model.name
  return train_step_lib.TrainStepSelection(selector, selection, strategy, model)


def detach(model: keras.Model) -> keras.Model:
  """Gives a model that `tfjest.attach` made select in its train step its own step back.

  After `detach`, `fit` trains `model` on whatever it is given, as a plain Keras model; the
  selector can be attached again (to this model or another). The model's weights, optimizer
  and compile state are untouched.

  >>> import tfjest
  >>> from tfjest import testing
  >>> model = testing.classifier(seed=0)
  >>> attached = tfjest.attach(model, tfjest.select(
  ...     learner=model, reference=testing.classifier(seed=1), batch_size=8,
  ...     super_batch_size=32, method="independent"), placement="train_step")
  >>> tfjest.detach(model) is model
  True

  Args:
    model: a model passed to `tfjest.attach` (with the selection in its train step).

  Returns:
    `model`.

  Raises:
    TypeError: if `model` is not a `keras.Model`.
    ValueError: if `model` does not select in its train step (nothing to detach).
  """
  if not isinstance(model, keras.Model):
    raise TypeError(f"model must be a keras.Model. Received: model of type "
                    f"{type(model).__name__}")
  selection = getattr(model.train_step, "_tfjest_selection", None)
  if selection is None:
    raise ValueError("This model does not select in its train step (tfjest.attach did not "
                     "move the selection there), so there is nothing to detach. "
                     f"Received: model={model.name!r}")
  del model.train_step  # the instance attribute `attach` set; the class's step shows again
  model.train_function = None
  _ATTACHED.pop(selection.selector, None)
  return model
