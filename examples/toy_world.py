"""A tiny image–caption world for the quickstart and the tests: data and two models.

Images are 16x16 RGB with one coloured shape in one quadrant on a noisy background; captions
are three word ids (colour, shape, position) in one of two word orders. `make_pairs` swaps the
captions of a chosen share of examples with other examples' captions: the corrupted pairs that
learnability-based selection should avoid.

The models follow tfjest's contracts the way a user would write them: `DualEncoder` trains with
plain `compile(optimizer=...)` / `fit` (its SigLIP loss is its `compute_loss`) and exposes
`logit_scale` and `logit_bias`; `Classifier` is an ordinary compiled classifier.
"""

import keras
import numpy as np
import tensorflow as tf

import tfjest

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
  """Generates `num_examples` image–caption pairs.

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


class DualEncoder(keras.Model):
  """A small CNN image tower and a bag-of-words text tower, trained with the SigLIP loss."""

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
    # SigLIP's initialisation: t = exp(log 10) = 10, beta = -10.
    self.log_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(
        np.log(10.0)), name="log_scale")
    self.bias = self.add_weight(shape=(), initializer=keras.initializers.Constant(-10.0),
                                name="bias")

  @property
  def logit_scale(self):
    return keras.ops.exp(self.log_scale)

  @property
  def logit_bias(self):
    return self.bias

  def call(self, inputs, training=False):
    image = keras.ops.normalize(self.image_tower(inputs["image"], training=training), axis=-1)
    text = keras.ops.normalize(self.text_tower(inputs["text"], training=training), axis=-1)
    return {"image_embeddings": image, "text_embeddings": text}

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    del x, y, sample_weight, training
    # The mean over the global batch under a strategy too (see siglip_replica_loss).
    return tfjest.siglip_replica_loss(tfjest.Embeddings(
        y_pred["image_embeddings"], y_pred["text_embeddings"], self.logit_scale,
        self.logit_bias))

  def get_config(self):
    return {**super().get_config(), "width": self.width}


def pair_logits(model: DualEncoder, images, texts) -> np.ndarray:
  """`t * <x_i, y_i> + beta` for matching rows of images and texts."""
  out = model({"image": images, "text": texts}, training=False)
  cos = tf.reduce_sum(out["image_embeddings"] * out["text_embeddings"], axis=-1)
  return (model.logit_scale * cos + model.logit_bias).numpy()


def pair_accuracy(model: DualEncoder, num_examples: int = 1000, seed: int = 999) -> float:
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


def make_classifier(num_classes: int = NUM_CONCEPTS) -> keras.Model:
  """An ordinary compiled image classifier (per-example loss: sparse cross-entropy)."""
  model = keras.Sequential([
      keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
      keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
      keras.layers.Flatten(),
      keras.layers.Dense(num_classes),
  ])
  model.compile(optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model
