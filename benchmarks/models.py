"""Models and data for the benchmarks: a dual encoder whose forward passes dominate a step.

`ConvDualEncoder` is `tfjest.testing.PairDualEncoder` (same text tower, same SigLIP loss and
logit parameters) with a larger image tower ending in global average pooling, so it accepts
images of any size: a scoring view at lower resolution really costs less. `images_at` upsamples
the toy pairs' 16 x 16 images; `embeddings` reads a dual encoder's outputs as the
`tfjest.Embeddings` its scores are computed from.
"""

import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing


class ConvDualEncoder(testing.PairDualEncoder):
  """Three convolutions (32, 64, 128 filters; the last two strided), pooling, a projection."""

  def __init__(self, width: int = 128, filters=(32, 64, 128), **kwargs):
    super().__init__(width=width, **kwargs)
    self.filters = tuple(filters)
    self.image_tower = keras.Sequential(
        [keras.layers.Conv2D(f, 3, strides=1 if i == 0 else 2, padding="same",
                             activation="relu") for i, f in enumerate(self.filters)] +
        [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(width)])

  def get_config(self):
    return {**super().get_config(), "filters": self.filters}


def images_at(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes `[n, h, w, 3]` images to `size x size` (bilinear)."""
  if images.shape[1] == size:
    return images
  return tf.image.resize(images, (size, size)).numpy().astype(np.float32)


def downscale(factor: int):
  """A scoring view: average-pools the "image" feature by `factor`, other features unchanged."""
  def view(x):
    return {**x, "image": tf.nn.avg_pool2d(x["image"], factor, factor, "VALID")}
  view.__name__ = f"downscale_{factor}"
  return view


def built(model, image_size: int):
  """Builds `model` on one zero example of `image_size x image_size` images; returns it."""
  model({"image": np.zeros((1, image_size, image_size, 3), np.float32),
         "text": np.ones((1, 3), np.int32)})
  return model


def embeddings(model, x) -> tfjest.Embeddings:
  """A dual encoder's `tfjest.Embeddings` of inputs `x`: its forward pass and logit parameters.

  The logit parameters are converted to tensors, as the selection step converts them: a
  `tf.function` timed on these embeddings then times what the step runs (a Keras variable
  passed as an argument instead costs a few tenths of a millisecond more per call).
  """
  out = model(x, training=False)
  return tfjest.Embeddings(out["image_embeddings"], out["text_embeddings"],
                           tf.convert_to_tensor(model.logit_scale),
                           tf.convert_to_tensor(model.logit_bias))
