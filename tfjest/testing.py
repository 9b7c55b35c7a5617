"""Fixtures for tests of code that uses tfjest (and for tfjest's own): tiny models and streams.

Like `tfds.testing`, this module is imported on its own (`from tfjest import testing`), not by
`import tfjest`. Everything is small, linear and seeded: the models follow tfjest's two model
contracts, NaN inputs give NaN outputs (no ReLU to hide them), and a stream is a
`tf.data.Dataset` of single examples with an `"id"` feature.

    learner, kwargs = testing.selection_setup("contrastive", "proxy")
    selected = testing.stream("contrastive", nan_every=7).apply(tfjest.select(**kwargs))
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfjest import cache as cache_lib
from tfjest import losses
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


def dual_encoder(seed: int = 0, name: str = "dual_encoder") -> keras.Model:
  """A compiled, built `TinyDualEncoder` on `D`-dimensional image and text features."""
  model = TinyDualEncoder(seed, name=name)
  model.compile(optimizer=keras.optimizers.SGD(0.1))
  model({"image": np.zeros((1, D), np.float32), "text": np.zeros((1, D), np.float32)})
  return model


def classifier(seed: int = 0, name: str = "classifier", classes: int = CLASSES) -> keras.Model:
  """A compiled, built `TinyClassifier` (sparse categorical crossentropy)."""
  model = TinyClassifier(seed, classes, name=name)
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
  model({"x": np.zeros((1, D), np.float32)})
  return model


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
