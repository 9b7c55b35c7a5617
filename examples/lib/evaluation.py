"""Evaluation of the captions models on the clean, balanced `test` split.

Zero-shot classification accuracy against one caption per concept, and image-to-text
recall@1 (`evaluate` defines both exactly); `classification_accuracy` for the `Classifier`.
"""

from typing import Dict, Sequence

import keras
import numpy as np
import tensorflow as tf

from examples.lib import data
from tfjest import datasets


def concept_captions() -> list:
  """One caption per concept, in label order: "a red square", "a red circle", ...

  The concept is what a label names (colour and shape of the main object); the caption says
  nothing about size or position, so it fits every image of the concept equally.
  """
  return [f"a {colour} {shape}" for colour in datasets.COLOURS for shape in datasets.SHAPES]


def embed(model: keras.Model, split: data.Split, batch_size: int = 500):
  """L2-normalised `(image_embeddings, text_embeddings)` of a split, NumPy `[n, d]` each."""
  images, texts = [], []
  for start in range(0, len(split), batch_size):
    rows = slice(start, start + batch_size)
    images.append(model.encode_image(
        tf.image.convert_image_dtype(split.image[rows], tf.float32)).numpy())
    texts.append(model.encode_text(tf.constant(split.tokens[rows])).numpy())
  return np.concatenate(images), np.concatenate(texts)


def zero_shot_predictions(image_embeddings: np.ndarray,
                          concept_embeddings: np.ndarray) -> np.ndarray:
  """For each image, the concept whose caption embedding has the largest dot product.

  The logit `t <x, y> + beta` is increasing in `<x, y>` for `t > 0`, so this is the concept
  with the best logit whatever `t` and `beta` are. Ties go to the lowest label.

  Args:
    image_embeddings: `[n, d]`.
    concept_embeddings: `[num_concepts, d]`, row `c` the text embedding of concept `c`.

  Returns:
    int64 `[n]` predicted labels.
  """
  return np.argmax(image_embeddings @ concept_embeddings.T, axis=1)


def recall_at_1_from_embeddings(image_embeddings: np.ndarray, text_embeddings: np.ndarray,
                                captions: Sequence) -> float:
  """Image-to-text recall@1 within a set of pairs.

  For each image `i`, the caption `j` with the largest `<x_i, y_j>` among all `n` captions of
  the set (ties: the lowest `j`); a hit when caption `j` is, as a string, the same as caption
  `i` (so an identical caption of another image counts as right: no model could tell them
  apart). Returns the share of hits.
  """
  captions = np.asarray(captions, dtype=object)
  best = np.argmax(image_embeddings @ text_embeddings.T, axis=1)
  return float(np.mean(captions[best] == captions))


def evaluate(model: keras.Model, test: data.Split, tokenizer: datasets.CaptionTokenizer
             ) -> Dict[str, float]:
  """Zero-shot classification accuracy and image-to-text recall@1 on a clean split.

  * `accuracy` (zero-shot): each image is compared with the `concept_captions()`, one caption
    per concept (`"a red circle"`, ...; 40 of them), through the model's towers; the predicted
    class is the concept with the best logit (`zero_shot_predictions`); accuracy is the share
    of images whose prediction equals `label`, the class of the main object (the first one its
    caption names). Scenes hold one to three objects and nothing in the pixels marks the main
    one, so a model that names one of the drawn objects at random tops out near
    `0.5 + 0.3 / 2 + 0.2 / 3 = 0.72`; chance is `1 / 40`.
  * `recall_at_1`: image-to-text recall@1 among all the split's captions
    (`recall_at_1_from_embeddings`).

  Args:
    model: a `DualEncoder`.
    test: the evaluation split, in memory (`load_split("test", ...)`).
    tokenizer: the config's tokenizer, for the concept captions.

  Returns:
    `{"accuracy": float, "recall_at_1": float}`.
  """
  image_embeddings, text_embeddings = embed(model, test)
  concepts = model.encode_text(tokenizer(concept_captions())).numpy()
  predictions = zero_shot_predictions(image_embeddings, concepts)
  return {"accuracy": float(np.mean(predictions == test.label)),
          "recall_at_1": recall_at_1_from_embeddings(image_embeddings, text_embeddings,
                                                     test.caption)}


def classification_accuracy(model: keras.Model, split: data.Split, batch_size: int = 500) -> float:
  """Share of images of `split` whose arg-max logit is `label`."""
  predictions = [np.argmax(model(tf.image.convert_image_dtype(
      split.image[start:start + batch_size], tf.float32), training=False).numpy(), axis=1)
                 for start in range(0, len(split), batch_size)]
  return float(np.mean(np.concatenate(predictions) == split.label))
