"""The captions models: a dual encoder and a classifier on `examples.lib.data`'s inputs.

`DualEncoder`: a small CNN image tower (per-image standardisation, three stride-2 convolutions,
`FixedGrid` so that it reads images of any size, layer norm) and a text tower (token embedding, a width-3 convolution that binds neighbouring
words such as "red circle", masked mean pooling, layer norm), both projecting without bias to
L2-normalised `width`-dimensional embeddings; its SigLIP logit parameters and loss come from
`tfjest.SigLIPDualEncoder` (`t = 10, beta = -10` at first). (The standardisation and the
bias-free projections matter: with SigLIP's initialisation and small batches the negatives
barely push at first, and towers whose outputs share a large common component collapse to one
direction for hundreds of steps.) It trains with plain `compile(optimizer=...)` / `fit`.
`Classifier`: the same image tower with a 40-way head, an ordinary compiled classifier for the
per-example task. Both are registered Keras serializables: a saved `.keras` file loads back with
`keras.saving.load_model(path)` once this module is imported.
"""

from typing import Sequence

import keras
import tensorflow as tf

import tfjest
from examples.lib import data
from tfjest import datasets

# Keras' registration package: saved references name their classes with it.
_PACKAGE = "tfjest_captions_world"
IMAGE_SIZE, MAX_LENGTH = data.IMAGE_SIZE, data.MAX_LENGTH


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Standardize(keras.layers.Layer):
  """Per-image standardisation: zero mean and unit variance over each image's pixels."""

  def call(self, images):
    mean = keras.ops.mean(images, axis=(1, 2, 3), keepdims=True)
    std = keras.ops.std(images, axis=(1, 2, 3), keepdims=True)
    return (images - mean) / keras.ops.maximum(std, 1e-3)


# Filters of the image tower's three convolutions; the last is also the text convolution's.
FILTERS = (16, 32, 64)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FixedGrid(keras.layers.Layer):
  """A feature map `[N, h, h, C]` as `[N, grid, grid, C]`, so any image size meets the head.

  The identity when `h == grid` (full resolution: the tower computes exactly what a tower
  without this layer computes); a smaller map (a lower-resolution image, e.g. a scoring view)
  is repeated up to the grid (nearest neighbour), a larger one average-pooled down to it (sides
  that are integer multiples or fractions of the grid's).
  """

  def __init__(self, grid: int, **kwargs):
    super().__init__(**kwargs)
    self.grid = int(grid)

  def call(self, features):
    size = features.shape[1]
    if size == self.grid:
      return features
    if size is not None and self.grid % size == 0:
      factor = self.grid // size
      return keras.ops.repeat(keras.ops.repeat(features, factor, axis=1), factor, axis=2)
    if size is not None and size % self.grid == 0:
      factor = size // self.grid
      return keras.ops.average_pool(features, factor, factor, "valid")
    # A size known only when the graph runs (a multi-resolution stream): the same three cases.
    grid = (self.grid, self.grid)
    dynamic = tf.shape(features)[1]
    out = tf.cond(
        dynamic == self.grid, lambda: features,
        lambda: tf.cond(dynamic < self.grid,
                        lambda: tf.image.resize(features, grid, method="nearest"),
                        # (ResizeArea has no gradient; antialiased bilinear is its smooth kin.)
                        lambda: tf.image.resize(features, grid, antialias=True)))
    return tf.ensure_shape(out, [None, self.grid, self.grid, features.shape[3]])

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.grid, self.grid, input_shape[3])

  def get_config(self):
    return {**super().get_config(), "grid": self.grid}


def _image_tower(width: int, name: str, filters: Sequence[int] = FILTERS) -> keras.Sequential:
  # Any image size (a scoring view scores at lower resolution): three stride-2 convolutions
  # give a map of side `size / 8`, which `FixedGrid` brings to that of IMAGE_SIZE.
  return keras.Sequential([
      keras.Input((None, None, 3)),
      Standardize(),
      *[keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")
        for f in filters],
      FixedGrid(IMAGE_SIZE // 2 ** len(filters)),
      keras.layers.Flatten(),
      keras.layers.LayerNormalization(center=False),
      keras.layers.Dense(width, use_bias=False),
  ], name=name)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedMean(keras.layers.Layer):
  """Mean over the token axis of `features` where `tokens != pad_id`."""

  def __init__(self, pad_id: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.pad_id = pad_id

  def call(self, features, tokens):
    mask = keras.ops.cast(keras.ops.not_equal(tokens, self.pad_id), features.dtype)[..., None]
    total = keras.ops.sum(features * mask, axis=1)
    return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)

  def get_config(self):
    return {**super().get_config(), "pad_id": self.pad_id}


def _text_tower(vocab_size: int, width: int, name: str, filters: int = FILTERS[-1]
                ) -> keras.Model:
  tokens = keras.Input((MAX_LENGTH,), dtype="int32")
  features = keras.layers.Embedding(vocab_size, 32)(tokens)
  features = keras.layers.Conv1D(filters, 3, padding="same", activation="relu")(features)
  pooled = keras.layers.LayerNormalization(center=False)(MaskedMean()(features, tokens))
  return keras.Model(tokens, keras.layers.Dense(width, use_bias=False)(pooled), name=name)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DualEncoder(tfjest.SigLIPDualEncoder):
  """Image and caption towers trained with the SigLIP loss; tfjest's dual-encoder contract.

  Called on `{"image": float32 [N, 32, 32, 3], "tokens": int32 [N, MAX_LENGTH]}` (other keys
  are ignored), returns `{"image_embeddings": [N, width], "text_embeddings": [N, width]}`, both
  L2-normalised.

  Args:
    vocab_size: size of the caption vocabulary (`tokenizer.vocab_size`).
    width: embedding width `d`.
    filters: the image tower's three convolution widths; the last is also the text
      convolution's. Smaller ones make a cheap proxy scorer.
  """

  def __init__(self, vocab_size: int, width: int = 64, filters: Sequence[int] = FILTERS,
               **kwargs):
    super().__init__(**kwargs)  # SigLIP's logit parameters, t = 10 and beta = -10
    self.vocab_size = vocab_size
    self.width = width
    self.filters = tuple(int(f) for f in filters)
    if len(self.filters) != 3 or min(self.filters) < 1:
      raise ValueError(f"filters must be three positive convolution widths. Received: "
                       f"filters={filters!r}")
    self.image_tower = _image_tower(width, "image_tower", self.filters)
    self.text_tower = _text_tower(vocab_size, width, "text_tower", self.filters[-1])

  def encode_image(self, image, training=False):
    return keras.ops.normalize(self.image_tower(image, training=training), axis=-1)

  def encode_text(self, tokens, training=False):
    return keras.ops.normalize(self.text_tower(tokens, training=training), axis=-1)

  def call(self, inputs, training=False):
    return {"image_embeddings": self.encode_image(inputs["image"], training),
            "text_embeddings": self.encode_text(inputs["tokens"], training)}

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size, "width": self.width,
            "filters": list(self.filters)}

  def get_build_config(self):
    return {"built": True}

  def build_from_config(self, config):
    del config
    self(data.example_inputs(1), training=False)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Classifier(keras.Model):
  """The same image tower with a `num_classes`-way linear head (logits).

  Called on images `[N, 32, 32, 3]` or on a dict holding them under `"image"`.
  """

  def __init__(self, num_classes: int = datasets.NUM_CLASSES, width: int = 64, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.width = width
    self.image_tower = _image_tower(width, "image_tower")
    self.head = keras.Sequential([keras.Input((width,)), keras.layers.Dense(num_classes)],
                                 name="head")

  def call(self, inputs, training=False):
    image = inputs["image"] if isinstance(inputs, dict) else inputs
    return self.head(keras.ops.relu(self.image_tower(image, training=training)))

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes, "width": self.width}

  def get_build_config(self):
    return {"built": True}

  def build_from_config(self, config):
    del config
    self(data.example_inputs(1)["image"], training=False)


def make_classifier(learning_rate: float = 3e-3) -> Classifier:
  """A compiled `Classifier` (per-example loss for tfjest: the compiled sparse cross-entropy)."""
  model = Classifier()
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  return model
