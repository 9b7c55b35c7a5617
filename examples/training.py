"""What examples/train_learner.py does, importable: strategies, datasets, training with selection.

`run(TrainConfig(...))` builds the strategy, trains (or loads) a frozen reference, and trains a
learner with `model.fit` on `dataset.apply(tfjest.select(...))` with `tfjest.attach`, evaluating
every `eval_every` steps. A dataset is a small class (`ToyTask` is the one so far) that gives
the training stream, the reference's clean data, the model and the evaluation: another one plugs
in through `DATASETS`.
"""

import contextlib
import dataclasses
import hashlib
import math
import os
import socket
from typing import Callable, Dict, List, Optional
from urllib import parse

import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import datasets as tfjest_datasets
from examples import captions_world
from examples import toy_world

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
METHODS = ("uniform", "independent", "jest")
SCORES = ("learnability", "hard_learner", "easy_reference")


def configure_cpu_devices(count: int) -> bool:
  """Splits the physical CPU into `count` logical devices (replicas for MirroredStrategy).

  Must run before TensorFlow initialises its devices (before any op). Returns True if at least
  `count` logical CPUs exist afterwards, False if devices were initialised with fewer.
  """
  if count <= 1:
    return True
  cpu = tf.config.list_physical_devices("CPU")[0]
  current = tf.config.get_logical_device_configuration(cpu)
  if current is not None:
    return len(current) >= count
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    return True
  except RuntimeError:  # devices already initialised
    return len(tf.config.list_logical_devices("CPU")) >= count


def _tpu_strategy(address: str) -> tf.distribute.Strategy:
  if not address:
    raise ValueError("--strategy=tpu needs the TPU's address: --tpu=<name> (Cloud TPU), "
                     "--tpu=grpc://<host>:<port>, or --tpu=local on a TPU VM. Received: tpu=''")
  remedy = ("Run on a Cloud TPU VM (--tpu=local) or pass a reachable TPU (--tpu=<name> or "
            "--tpu=grpc://<host>:8470); use --strategy=mirrored to try replicas on this machine.")
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    master = resolver.master()
    url = parse.urlparse(master)
    if url.scheme == "grpc":
      # Connecting to an address where nothing listens blocks for minutes: check it first.
      with socket.create_connection((url.hostname, url.port), timeout=5):
        pass
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(f"No TPU found at the address given. {remedy} Received: tpu={address!r} "
                       f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})") from e
  return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str, *, tpu: str = "") -> Optional[tf.distribute.Strategy]:
  """The strategy named by `--strategy` (None for "default").

  "mirrored" uses every GPU, or every logical CPU when there is no GPU (see
  `configure_cpu_devices`); "multi_worker" reads the cluster from `TF_CONFIG`; "tpu" resolves
  `tpu` with `TPUClusterResolver`.

  Raises:
    ValueError: on an unknown name, or a missing `TF_CONFIG` / `tpu` address.
    RuntimeError: if no TPU is reachable at `tpu`.
  """
  if name not in STRATEGIES:
    raise ValueError(f"Expected strategy in {STRATEGIES}. Received: strategy={name!r}")
  if name == "default":
    return None
  if name == "mirrored":
    devices = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  if name == "multi_worker":
    if not os.environ.get("TF_CONFIG"):
      raise ValueError("--strategy=multi_worker reads the cluster and this worker's index from "
                       "the TF_CONFIG environment variable, which is not set. "
                       "Received: TF_CONFIG=''")
    return tf.distribute.MultiWorkerMirroredStrategy()
  return _tpu_strategy(tpu)


def local_replica_values(variable, strategy) -> List[np.ndarray]:
  """A variable's value on each of this worker's replicas."""
  value = getattr(variable, "value", variable)
  if strategy is None:
    return [np.asarray(value)]
  return [np.asarray(v) for v in strategy.experimental_local_results(value)]


def replica_weights_identical(model: keras.Model, strategy) -> bool:
  """True if every weight holds the same values on every local replica."""
  for w in model.weights:
    values = local_replica_values(w, strategy)
    if any(not np.array_equal(values[0], v) for v in values[1:]):
      return False
  return True


def weights_digest(model: keras.Model) -> str:
  """A hash of the model's weights (first replica): equal across workers iff weights are."""
  digest = hashlib.sha256()
  for w in model.weights:
    digest.update(np.ascontiguousarray(np.asarray(w)).tobytes())
  return digest.hexdigest()[:16]


class ToyTask:
  """The toy image–caption world: noisy stream, clean reference data, a dual encoder.

  Args:
    noise: share of stream pairs whose caption is swapped with another example's.
    seed: seed for the data.
    stream_examples: distinct examples in the training stream (it repeats, reshuffled).
    reference_examples: clean pairs the reference trains on.
  """

  name = "toy"
  custom_objects = {"DualEncoder": toy_world.DualEncoder}

  def __init__(self, *, noise: float, seed: int, stream_examples: int = 4096,
               reference_examples: int = 4096, data_dir: Optional[str] = None):
    del data_dir  # generated in memory
    self.noise = noise
    self.seed = seed
    self.stream_examples = stream_examples
    self.reference_examples = reference_examples

  def stream(self) -> tf.data.Dataset:
    """Single examples `{"image", "text"}`, shuffled and repeated, the same on every worker."""
    pairs = toy_world.make_pairs(self.stream_examples, self.noise, seed=self.seed + 2)
    data = tf.data.Dataset.from_tensor_slices({"image": pairs["image"], "text": pairs["text"]})
    return data.shuffle(self.stream_examples, seed=self.seed).repeat()

  def reference_data(self) -> tf.data.Dataset:
    pairs = toy_world.make_pairs(self.reference_examples, 0.0, seed=self.seed + 1)
    data = tf.data.Dataset.from_tensor_slices({"image": pairs["image"], "text": pairs["text"]})
    return data.shuffle(self.reference_examples, seed=self.seed)

  def make_model(self, name: str) -> keras.Model:
    model = toy_world.DualEncoder(name=name)
    model({"image": tf.zeros([1, toy_world.IMAGE_SIZE, toy_world.IMAGE_SIZE, 3]),
           "text": tf.zeros([1, 3], tf.int32)})
    return model

  def evaluate(self, model: keras.Model) -> float:
    """Pair accuracy on fresh clean pairs (true caption ranked above a swapped one)."""
    return toy_world.pair_accuracy(model, num_examples=500, seed=self.seed + 999)


class CaptionsTask:
  """The offline benchmark's world: `tfjest.datasets` synthetic captions (`web` to train on).

  The dataset config is `noise_<noise>` with a `web` split of `stream_examples` and a `curated`
  split of `reference_examples` (built offline on first use, in TFDS' data directory, or in
  `data_dir`). The learner trains on `web`, the reference on `curated`; evaluation is zero-shot
  accuracy on the clean `test` split (`captions_world.evaluate`).

  Args:
    noise: share of corrupted `web` examples (the dataset's noise mixture).
    seed: seed for the dataset's generation and the stream's shuffle.
    stream_examples: size of the `web` split.
    reference_examples: size of the `curated` split.
    data_dir: TFDS data directory, or None for TFDS' default.
  """

  name = "captions"

  def __init__(self, *, noise: float, seed: int, stream_examples: int = 4096,
               reference_examples: int = 4096, data_dir: Optional[str] = None):
    self.seed = seed
    self.config = tfjest_datasets.make_config(noise=noise, web_size=stream_examples,
                                              curated_size=reference_examples, seed=seed)
    self.tokenizer = captions_world.tokenizer_for(self.config, data_dir)
    self._load = lambda split: captions_world.load_split(
        split, tokenizer=self.tokenizer, config=self.config, data_dir=data_dir)
    self._web, self._curated, self._test = None, None, None
    self.custom_objects = {"DualEncoder": captions_world.DualEncoder}

  def stream(self) -> tf.data.Dataset:
    """Single `{"image", "tokens"}` examples of `web`, reshuffled and repeated."""
    if self._web is None:
      self._web = self._load("web")
    return captions_world.stream(self._web, seed=self.seed).map(lambda inputs, meta: inputs)

  def reference_data(self) -> tf.data.Dataset:
    if self._curated is None:
      self._curated = self._load("curated")
    return captions_world.stream(self._curated, seed=self.seed, repeat=False).map(
        lambda inputs, meta: inputs)

  def make_model(self, name: str) -> keras.Model:
    return captions_world.DualEncoder(self.tokenizer.vocab_size, name=name)  # built already

  def evaluate(self, model: keras.Model) -> float:
    """Zero-shot classification accuracy on the clean `test` split."""
    if self._test is None:
      self._test = self._load("test")
    return captions_world.evaluate(model, self._test, self.tokenizer)["accuracy"]


DATASETS: Dict[str, Callable[..., object]] = {"toy": ToyTask, "captions": CaptionsTask}


@dataclasses.dataclass
class TrainConfig:
  """Everything `run` needs; train_learner.py's flags map one to one onto these fields."""
  strategy: str = "default"
  tpu: str = ""
  dataset: str = "captions"
  method: str = "jest"
  score: str = "learnability"
  replica_selection: str = "local"
  filter_ratio: float = 0.8
  batch_size: int = 64
  num_chunks: int = 16
  steps: int = 100
  eval_every: int = 20
  seed: int = 0
  noise: float = 0.5
  learning_rate: float = 1e-3
  reference_path: str = ""
  reference_examples: int = 4096
  reference_epochs: int = 3
  stream_examples: int = 4096
  backup_dir: str = ""
  data_dir: str = ""


class _Evaluate(keras.callbacks.Callback):
  """Evaluates every `eval_every` steps and after the last one; records the curve.

  `fit` runs 'epochs' of `steps_per_epoch` steps on one iterator; evaluation happens at the end
  of the epochs that reach a multiple of `eval_every` or the last step.
  """

  def __init__(self, task, steps_per_epoch: int, eval_every: int, steps: int,
               curve: Dict[str, list], log):
    super().__init__()
    self.task, self.curve, self.log = task, curve, log
    self.steps_per_epoch, self.eval_every, self.steps = steps_per_epoch, eval_every, steps

  def on_epoch_end(self, epoch, logs=None):
    step = (epoch + 1) * self.steps_per_epoch
    if step % self.eval_every and step != self.steps:
      return
    accuracy = self.task.evaluate(self.model)
    self.curve["steps"].append(step)
    self.curve["accuracy"].append(accuracy)
    self.log(f"step {step}: accuracy {accuracy:.3f}, loss {(logs or {}).get('loss', np.nan):.3f}")


def _reference(config: TrainConfig, task, strategy, log) -> Optional[keras.Model]:
  """The frozen reference, created under the strategy's scope so that it is replicated."""
  needs = config.method != "uniform" and config.score != "hard_learner"
  if not needs:
    return None
  if config.reference_path:
    reference = keras.models.load_model(config.reference_path,
                                        custom_objects=task.custom_objects, compile=False)
    log(f"reference: loaded {config.reference_path}")
  else:
    keras.utils.set_random_seed(config.seed)
    reference = task.make_model("reference")
    reference.compile(optimizer=keras.optimizers.Adam(3e-3))
    # Trained under the same strategy as the learner, so every replica ends with the same
    # weights; the global batch splits over the replicas.
    reference.fit(task.reference_data().batch(128, drop_remainder=True),
                  epochs=config.reference_epochs, verbose=0)
    log(f"reference: trained on {config.reference_examples} clean examples, "
        f"accuracy {task.evaluate(reference):.3f}")
  reference.trainable = False
  if strategy is not None:
    # Plain fit on this model's towers is not bitwise deterministic across replicas on CPU (the
    # captions reference's replicas were seen to differ by ~1e-5 after training), and the frozen
    # reference must score alike on every replica: give all replicas the first one's values.
    for weight in reference.weights:
      weight.assign(local_replica_values(weight, strategy)[0])
  return reference


class _RestoreOnly(keras.callbacks.BackupAndRestore):
  """Restores the chief's backup when training begins and never writes one.

  (Keras 3.15 documents `save_freq=False` as "no saving" but compares batch counts with it as 0
  and saves after every batch, so the hooks that save are switched off here instead.)
  """

  def on_epoch_end(self, epoch, logs=None):
    pass

  def on_train_batch_end(self, batch, logs=None):
    pass

  def on_train_end(self, logs=None):
    pass


def _backup_and_restore(backup_dir: str, strategy) -> keras.callbacks.BackupAndRestore:
  """Keras' BackupAndRestore, written by the chief only and read by every worker.

  After a preemption the whole cluster restarts (tf.distribute's fault-tolerance model) and
  every worker resumes from the chief's last backup, at the end of an 'epoch' of
  `steps_per_epoch` steps. Workers writing the same files themselves would race.
  """
  chief = strategy is None or strategy.extended.should_checkpoint
  callback = keras.callbacks.BackupAndRestore if chief else _RestoreOnly
  # Two generations, so that a backup torn by the preemption falls back to the previous one.
  return callback(backup_dir, double_checkpoint=True)


def run(config: TrainConfig, log: Callable[[str], None] = print) -> dict:
  """Trains a learner on selected data; returns the evaluation curve and replica checks.

  Returns:
    A dict with `steps`, `flops` (cumulative) and `accuracy` (the evaluation curve, step 0
    included), `strategy`,
    `replicas`, `identical_replica_weights` (this worker's replicas), `weights_digest`, the
    selection statistics and the config.
  """
  if config.dataset not in DATASETS:
    raise ValueError(f"Expected dataset in {tuple(DATASETS)}. Received: dataset={config.dataset!r}")
  if config.steps <= 0 or config.eval_every <= 0:
    raise ValueError("steps and eval_every must be positive. Received: "
                     f"steps={config.steps}, eval_every={config.eval_every}")
  strategy = make_strategy(config.strategy, tpu=config.tpu)
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  log(f"strategy: {config.strategy}, {replicas} replica(s)")
  task = DATASETS[config.dataset](noise=config.noise, seed=config.seed,
                                  stream_examples=config.stream_examples,
                                  reference_examples=config.reference_examples,
                                  data_dir=config.data_dir or None)
  # The reference trains with plain fit, before attach would apply the fix.
  if strategy is not None and tfjest.ensure_multi_worker_fit(strategy):
    log("keras: tfjest's MultiWorkerMirroredStrategy fit fix is active (keras-team/keras#20585)")
  scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
  with scope:
    reference = _reference(config, task, strategy, log)
    keras.utils.set_random_seed(config.seed + 3)
    learner = task.make_model("learner")
    learner.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    selector = tfjest.attach(
        learner,
        tfjest.select(learner=learner, reference=reference, batch_size=config.batch_size,
                      filter_ratio=config.filter_ratio, method=config.method,
                      score=config.score, num_chunks=config.num_chunks, seed=config.seed),
        replica_selection=config.replica_selection)
  log(f"selection: {config.method} ({config.score}) keeps {config.batch_size} of "
      f"{selector.super_batch_size} per step, in the {selector.placement}")

  curve = {"steps": [0], "accuracy": [task.evaluate(learner)]}
  # One fit over one iterator (a second fit would restart the stream); 'epochs' of this many
  # steps land on every evaluation point.
  steps_per_epoch = math.gcd(config.steps, config.eval_every)
  callbacks = [_Evaluate(task, steps_per_epoch, config.eval_every, config.steps, curve, log)]
  if config.backup_dir:
    callbacks.append(_backup_and_restore(config.backup_dir, strategy))
  learner.fit(task.stream().apply(selector), epochs=config.steps // steps_per_epoch,
              steps_per_epoch=steps_per_epoch, verbose=0, callbacks=callbacks)
  # Cumulative FLOPs of the curve's steps (JEST_SPEC section 7: training, scoring, selection).
  step_flops = selector.step_cost().total
  curve["flops"] = [step * step_flops for step in curve["steps"]]
  identical = all(replica_weights_identical(m, strategy)
                  for m in (learner, reference) if m is not None)
  stats = selector.stats.result()
  log(f"selected {stats['selected']} of {stats['read']} examples")
  log(f"identical replica weights: {identical} ({replicas} replicas, "
      f"{len(learner.weights)} learner variables)")
  return {**curve, "strategy": config.strategy, "replicas": replicas,
          "identical_replica_weights": identical, "weights_digest": weights_digest(learner),
          "selection": stats, "config": dataclasses.asdict(config)}
