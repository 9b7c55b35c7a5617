"""Fixtures for tests of code that uses tfjest (and for tfjest's own): tiny models and streams.

Like `tfds.testing`, this module is imported on its own (`from tfjest import testing`), not by
`import tfjest`. Everything is small, linear and seeded: the models follow tfjest's two model
contracts, NaN inputs give NaN outputs (no ReLU to hide them), and a stream is a
`tf.data.Dataset` of single examples with an `"id"` feature.

    learner, kwargs = testing.selection_setup("contrastive", "proxy")
    selected = testing.stream("contrastive", nan_every=7).apply(tfjest.select(**kwargs))

Two worlds: feature streams (`stream`, `D`-dimensional features for `TinyDualEncoder` and
`TinyClassifier`) for exact checks, and image-caption pairs with known corruption (`make_pairs`,
`PairDualEncoder`, `pair_classifier`, `pair_accuracy`) where selection has something to find:
a share of the captions is swapped with other examples' captions, and the flag says which.
`configure_cpu_devices` splits the CPU into logical devices, replicas for a
`tf.distribute.MirroredStrategy` on a machine without accelerators.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfjest.dnc import clusters as clusters_lib
from tfjest.store import reference as cache_lib
from tfjest import losses
from tfjest import models
from tfjest import proxy as proxy_lib

# Feature width of every stream, and classes of the classifier.
D, CLASSES = 6, 5


class TinyDualEncoder(keras.Model):
  """A linear dual encoder following tfjest's contract."""

  def __init__(self, seed=0, width=4, **kwargs):
    super().__init__(**kwargs)
    init = keras.initializers.GlorotUniform
    self.image_tower = keras.layers.Dense(width, kernel_initializer=init(seed))
    self.text_tower = keras.layers.Dense(width, kernel_initializer=init(seed + 100))
    self.log_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(2.3),
                                     name="log_scale")
    self.logit_bias = -5.0

  @property
  def logit_scale(self):
    return tf.exp(self.log_scale)

  def call(self, x, training=False):
    return {"image_embeddings": tf.math.l2_normalize(self.image_tower(x["image"]), -1),
            "text_embeddings": tf.math.l2_normalize(self.text_tower(x["text"]), -1)}

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    return losses.siglip_replica_loss(losses.Embeddings(
        y_pred["image_embeddings"], y_pred["text_embeddings"], self.logit_scale,
        self.logit_bias))


class TinyClassifier(keras.Model):
  """A linear classifier reading `x["x"]` (the element's `x` also carries an id)."""

  def __init__(self, seed=0, classes=CLASSES, **kwargs):
    super().__init__(**kwargs)
    self.dense = keras.layers.Dense(classes, kernel_initializer=keras.initializers.GlorotUniform(
        seed))

  def call(self, x, training=False):
    return self.dense(x["x"])


def _with_built_optimizer(model: keras.Model) -> keras.Model:
  """`model` with its optimizer's variables created now, as `fit` would on its first step.

  Keras creates them while it traces its train step, and a `tf.function` that creates variables
  is traced twice: built first, `fit` traces once (the tests' models then start in half the time).
  """
  model.optimizer.build(model.trainable_variables)
  return model


def dual_encoder(seed: int = 0, name: str = "dual_encoder") -> keras.Model:
  """A compiled, built `TinyDualEncoder` on `D`-dimensional image and text features."""
  model = TinyDualEncoder(seed, name=name)
  model.compile(optimizer=keras.optimizers.SGD(0.1))
  model({"image": np.zeros((1, D), np.float32), "text": np.zeros((1, D), np.float32)})
  return _with_built_optimizer(model)


def classifier(seed: int = 0, name: str = "classifier", classes: int = CLASSES) -> keras.Model:
  """A compiled, built `TinyClassifier`: logits, sparse categorical crossentropy of logits."""
  model = TinyClassifier(seed, classes, name=name)
  # The model outputs logits (linear, so NaN and inf inputs reach the loss), so the loss must
  # read logits: the default `from_logits=False` would take them for probabilities.
  model.compile(optimizer=keras.optimizers.SGD(0.1),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model({"x": np.zeros((1, D), np.float32)})
  return _with_built_optimizer(model)


def stream(task: str, n: int = 160, nan_every: int = 0, seed: int = 0,
           weights=None) -> tf.data.Dataset:
  """Single examples with ids `0..n-1`; examples with `id % nan_every == 3` have a NaN feature.

  "contrastive": `{"image", "text", "id"}` with each text close to its image; "classification":
  `({"x", "id"}, label)`, or `({"x", "id"}, label, weight)` with `weights`.
  """
  rng = np.random.default_rng(seed)
  ids = np.arange(n, dtype=np.int64)
  bad = (ids % nan_every == 3) if nan_every else np.zeros(n, bool)
  if task == "contrastive":
    image = rng.normal(size=(n, D)).astype(np.float32)
    text = (image + 0.3 * rng.normal(size=(n, D))).astype(np.float32)
    image[bad, 0] = np.nan
    return tf.data.Dataset.from_tensor_slices({"image": image, "text": text, "id": ids})
  x = rng.normal(size=(n, D)).astype(np.float32)
  x[bad, 0] = np.nan
  y = rng.integers(0, CLASSES, size=n).astype(np.int64)
  parts = ({"x": x, "id": ids}, y) if weights is None else ({"x": x, "id": ids}, y, weights)
  return tf.data.Dataset.from_tensor_slices(parts)


def ids(batch) -> np.ndarray:
  """The ids of a batch of `stream` elements."""
  element = batch[0] if isinstance(batch, tuple) else batch
  return element["id"].numpy()


def selection_setup(task: str, variant: str = "plain", seed: int = 0):
  """A fresh learner and `select` keyword arguments for one configuration.

  Args:
    task: "contrastive" (JEST) or "classification" (independent selection).
    variant: "plain", "proxy" (an `OnlineProxy` scores) or "cache" (a reference cache over
      `stream(task, nan_every=7)`, in a new temporary directory).
    seed: equal seeds give identical models.

  Returns:
    `(learner, kwargs)`: `tfjest.select(**kwargs)` keeps 8 of every 32.
  """
  keras.utils.set_random_seed(seed)
  make = dual_encoder if task == "contrastive" else classifier
  learner, reference = make(seed, "learner"), make(seed + 1, "reference")
  kwargs = dict(learner=learner, reference=reference, batch_size=8, super_batch_size=32,
                num_chunks=2, seed=3)
  if task == "classification":
    kwargs["method"] = "independent"
  if variant == "proxy":
    kwargs["proxy"] = proxy_lib.OnlineProxy(make(seed + 2, "proxy"),
                                         optimizer=keras.optimizers.SGD(0.5))
  if variant == "cache":
    path = os.path.join(tempfile.mkdtemp(), "cache")
    kwargs["reference_cache"] = cache_lib.cache_reference(reference, stream(task, nan_every=7),
                                                       path, id_key="id")
    kwargs["id_key"] = "id"
  return learner, kwargs


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


def require_cpu_devices(count: int):
  """Raises unless `count` logical CPU devices exist (a test module's `setUpModule`).

  Raises:
    RuntimeError: naming how to run the tests, when fewer devices exist.
  """
  if len(tf.config.list_logical_devices("CPU")) < count:
    raise RuntimeError(f"These tests need {count} logical CPU devices, configured before any "
                       "op. Run them with pytest (conftest.py) or as a script.")


def cached_clusters(directory: str, *, n: int = 96, num_clusters: int = 4, seed: int = 0):
  """A dual encoder's cached outputs over a contrastive stream, and k-means clusters of them.

  Returns:
    `(base, stream, cache, clusters)`: the frozen `dual_encoder(seed=1)`, `stream("contrastive",
    n)`, its `ReferenceCache` under `directory/cache` and its `Clusters` under `directory/k<k>`.
  """
  base = dual_encoder(seed=1, name="base")
  data = stream("contrastive", n=n)
  cache = cache_lib.cache_reference(base, data, os.path.join(directory, "cache"))
  clusters = clusters_lib.cluster_reference(cache, os.path.join(directory, f"k{num_clusters}"),
                                            num_clusters=num_clusters, seed=seed)
  return base, data, cache, clusters


_CPU_STRATEGIES = {}


def cpu_mirrored_strategy(count: int = 2) -> tf.distribute.MirroredStrategy:
  """A MirroredStrategy over `count` logical CPUs, one per process (`configure_cpu_devices`).

  Several MirroredStrategy objects in one process number their collective ops independently,
  so the collectives of one (an all-reduce) can take the keys of another's (an all-gather) and
  fail with "Collective ... expected type ... but got type ...". Tests that run in one process
  (pytest) share this one.

  Raises:
    RuntimeError: if fewer than `count` logical CPUs exist (configure them before any op).
  """
  if count not in _CPU_STRATEGIES:
    if len(tf.config.list_logical_devices("CPU")) < count:
      raise RuntimeError(f"Expected {count} logical CPU devices (call configure_cpu_devices "
                         f"before any op). Received: count={count}")
    _CPU_STRATEGIES[count] = tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(count)])
  return _CPU_STRATEGIES[count]


def local_service(num_workers: int = 2):
  """An in-process tf.data service: `(dispatcher, workers)`, on ports the OS picks.

  For tests and benchmarks of builds with `service=`: pass `dispatcher.target`, and keep both
  objects alive while the service is used (the servers stop when they are collected).
  """
  service = tf.data.experimental.service
  dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
  address = dispatcher.target.split("://")[1]
  workers = [service.WorkerServer(service.WorkerConfig(
      dispatcher_address=address, worker_address="127.0.0.1:%port%"))
             for _ in range(num_workers)]
  return dispatcher, workers


class ServiceTestCase(tf.test.TestCase):
  """A test case with, for the whole class, an in-process tf.data service of 2 workers
  (`dispatcher`, `workers`), a dual-encoder reference (`reference`) and a contrastive stream
  of `NUM_EXAMPLES` examples (`stream`): for tests of builds with `service=`."""

  NUM_EXAMPLES = 64

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dispatcher, cls.workers = local_service(2)
    cls.reference = dual_encoder(1, "reference")
    cls.stream = stream("contrastive", n=cls.NUM_EXAMPLES)


def replica_values(variable, strategy=None) -> list:
  """A variable's value on each of this worker's replicas (one value without a strategy)."""
  value = getattr(variable, "value", variable)
  if strategy is None:
    return [np.asarray(value)]
  return [np.asarray(v) for v in strategy.experimental_local_results(value)]


def replicas_identical(model: keras.Model, strategy=None) -> bool:
  """True if every weight of `model` holds the same values on every local replica."""
  for weight in model.weights:
    values = replica_values(weight, strategy)
    if any(not np.array_equal(values[0], v) for v in values[1:]):
      return False
  return True


# The pair world: 16x16 RGB images with one coloured shape in one quadrant on a noisy
# background; captions of three word ids (colour, shape, position) in one of two word orders.
COLORS = np.array([[1.0, 0.1, 0.1], [0.1, 0.9, 0.1], [0.2, 0.3, 1.0], [1.0, 0.9, 0.1]],
                  np.float32)
SHAPES = ("square", "disc", "bar")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
NUM_CONCEPTS = len(COLORS) * len(SHAPES) * len(POSITIONS)
# Word ids: 0 padding, 1..4 colours, 5..7 shapes, 8..11 positions.
VOCAB_SIZE = 1 + len(COLORS) + len(SHAPES) + len(POSITIONS)
IMAGE_SIZE = 16


def _draw(color, shape, position, rng):
  image = rng.uniform(0.0, 0.35, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  half = IMAGE_SIZE // 2
  oy, ox = (position // 2) * half, (position % 2) * half
  yy, xx = np.mgrid[0:half, 0:half]
  c = (half - 1) / 2.0
  if shape == 0:
    mask = (np.abs(yy - c) <= 2.5) & (np.abs(xx - c) <= 2.5)
  elif shape == 1:
    mask = (yy - c) ** 2 + (xx - c) ** 2 <= 3.2 ** 2
  else:
    mask = np.abs(yy - c) <= 1.0
  patch = image[oy:oy + half, ox:ox + half]
  patch[mask] = COLORS[color]
  return image


def make_pairs(num_examples: int, corrupt_share: float = 0.0, seed: int = 0):
  """Generates `num_examples` image-caption pairs, a share of them with a swapped caption.

  Returns:
    A dict of NumPy arrays: `image` `[n, 16, 16, 3]` float32, `text` `[n, 3]` int32, `label`
    `[n]` int32 (the concept of the image), `id` `[n]` int64 and `corrupted` `[n]` int32 (1 where
    the caption belongs to another example; for analysis only).
  """
  rng = np.random.default_rng(seed)
  color = rng.integers(0, len(COLORS), num_examples)
  shape = rng.integers(0, len(SHAPES), num_examples)
  position = rng.integers(0, len(POSITIONS), num_examples)
  images = np.stack([_draw(c, s, p, rng) for c, s, p in zip(color, shape, position)])
  words = np.stack([1 + color, 1 + len(COLORS) + shape,
                    1 + len(COLORS) + len(SHAPES) + position], axis=1).astype(np.int32)
  reorder = rng.random(num_examples) < 0.5  # "position colour shape" word order
  words[reorder] = words[reorder][:, [2, 0, 1]]
  corrupted = rng.random(num_examples) < corrupt_share
  victims = np.flatnonzero(corrupted)
  text = words.copy()
  if victims.size > 1:
    text[victims] = words[np.roll(victims, 1)]  # each takes another corrupted example's caption
  label = (color * len(SHAPES) + shape) * len(POSITIONS) + position
  return {"image": images, "text": text, "label": label.astype(np.int32),
          "id": np.arange(num_examples, dtype=np.int64), "corrupted": corrupted.astype(np.int32)}


@keras.saving.register_keras_serializable(package="tfjest_testing")
class PairDualEncoder(models.SigLIPDualEncoder):
  """A small CNN image tower and a bag-of-words text tower for `make_pairs` (SigLIP loss).

  Called on `{"image": [N, 16, 16, 3], "text": int [N, 3]}` (other keys ignored). Registered
  with Keras: a saved `.keras` file loads back with `keras.saving.load_model`.
  """

  def __init__(self, width: int = 32, **kwargs):
    super().__init__(**kwargs)
    self.width = width
    self.image_tower = keras.Sequential([
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(width),
    ])
    self.text_tower = keras.Sequential([
        keras.layers.Embedding(VOCAB_SIZE, 32),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(width),
    ])

  def call(self, inputs, training=False):
    return self.embeddings(self.image_tower(inputs["image"], training=training),
                           self.text_tower(inputs["text"], training=training))

  def get_config(self):
    return {**super().get_config(), "width": self.width}


def pair_logits(model: keras.Model, images, texts) -> np.ndarray:
  """`t * <x_i, y_i> + beta` for matching rows of images and texts."""
  out = model({"image": images, "text": texts}, training=False)
  cos = tf.reduce_sum(out["image_embeddings"] * out["text_embeddings"], axis=-1)
  return (model.logit_scale * cos + model.logit_bias).numpy()


def pair_accuracy(model: keras.Model, num_examples: int = 1000, seed: int = 999) -> float:
  """How often the model scores an image's true caption above a swapped one.

  Ranking, not a threshold: with SigLIP's initial `t = 10, beta = -10` no logit exceeds 0 until
  the scale grows, so "logit > 0" says little about an early model.
  """
  clean = make_pairs(num_examples, 0.0, seed)
  swapped = np.roll(clean["text"], 1, axis=0)
  distinct = np.any(swapped != clean["text"], axis=1)
  true_logits = pair_logits(model, clean["image"], clean["text"])
  swapped_logits = pair_logits(model, clean["image"], swapped)
  return float(np.mean(true_logits[distinct] > swapped_logits[distinct]))


def pair_classifier(num_classes: int = NUM_CONCEPTS) -> keras.Model:
  """An ordinary compiled classifier of `make_pairs` images (sparse cross-entropy)."""
  model = keras.Sequential([
      keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
      keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
      keras.layers.Flatten(),
      keras.layers.Dense(num_classes),
  ])
  model.compile(optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return _with_built_optimizer(model)
