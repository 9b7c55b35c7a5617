"""The synthetic-captions world: from the TFDS dataset to model inputs, the models, evaluation.

This is the offline benchmark's model side, kept out of the library (`tfjest` only calls models).

Data. `tfjest.datasets` yields dicts `{id, image, caption, label, true_label, corruption}`.
`to_element` turns one into what `tfjest.select` and `fit` see: `(inputs, meta)` with
`inputs = {"image": float32 [32, 32, 3] in [0, 1], "tokens": int32 [32]}` (the caption through
`CaptionTokenizer`, inside the `tf.data` map) and `meta = {"id", "corruption"}`. A 2-tuple is
`(x, y)` to tfjest and to Keras: the models are called on `inputs` only, and the contrastive
scorer never reads `y`, so the corruption flags travel with their example through selection
without the selection reading them. `strip_meta` drops them (after counting, for analysis)
before `fit`. The vocabulary is learnt from the config's own curated and web captions and cached
next to the data (`vocab_path`).

For runs that read the same split many times (benchmarks), `load_split` decodes and tokenizes a
split once through the same map into NumPy arrays, and `stream` serves shuffled elements of the
same structure from memory.

Models. `DualEncoder`: a small CNN image tower (per-image standardisation, three stride-2
convolutions, layer norm) and a text tower (token embedding, a width-3 convolution that binds
neighbouring words such as "red circle", masked mean pooling, layer norm), both projecting
without bias to L2-normalised `width`-dimensional embeddings, with a learnable SigLIP log-scale
and bias initialised at `t = 10, beta = -10`. (The standardisation and the bias-free
projections matter: with SigLIP's initialisation and small batches the negatives barely push
at first, and towers whose outputs share a large common component collapse to one direction
for hundreds of steps.) It satisfies tfjest's dual-encoder contract
(outputs `{"image_embeddings", "text_embeddings"}`, attributes `logit_scale`, `logit_bias`) and
trains with plain `compile(optimizer=...)` / `fit` (its SigLIP loss is its `compute_loss`).
`Classifier`: the same image tower with a 40-way head, an ordinary compiled classifier for the
per-example task. Both are registered Keras serializables: a saved `.keras` file loads back with
`keras.saving.load_model(path)` once this module is imported.

Evaluation, on the clean, balanced `test` split: zero-shot classification accuracy against one
caption per concept, and image-to-text recall@1 (`evaluate` defines both exactly).
"""

import dataclasses
import os
from typing import Dict, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import datasets

MAX_LENGTH = 32
IMAGE_SIZE = 32
VOCAB_FILENAME = "captions_vocab.txt"
_PACKAGE = "tfjest_captions_world"
_MAP_BATCH = 1024

Config = Union[str, datasets.SyntheticCaptionsConfig]


# ---------------------------------------------------------------------------------------------
# Data: vocabulary, tokenizer, the element map, in-memory splits.


def _builder(config: Config, data_dir: Optional[str]):
  return datasets.SyntheticCaptions(config=config, data_dir=data_dir)


def vocab_path(config: Config = datasets.synthetic_captions.DEFAULT_CONFIG,
               data_dir: Optional[str] = None) -> str:
  """Where the config's caption vocabulary is cached: in its TFDS directory, next to the data."""
  return os.path.join(str(_builder(config, data_dir).data_dir), VOCAB_FILENAME)


def tokenizer_for(config: Config = datasets.synthetic_captions.DEFAULT_CONFIG,
                  data_dir: Optional[str] = None) -> datasets.CaptionTokenizer:
  """The caption tokenizer of a config, building the dataset and the vocabulary if needed.

  The vocabulary is learnt (`tfjest.datasets.build_vocab`) from the config's own `curated` and
  `web` captions, never from `test`, and written once to `vocab_path(config, data_dir)`; later
  calls read the file.
  """
  curated = datasets.load("curated", config=config, data_dir=data_dir)  # builds if needed
  path = vocab_path(config, data_dir)
  if not tf.io.gfile.exists(path):
    web = datasets.load("web", config=config, data_dir=data_dir)
    captions = curated.concatenate(web).map(lambda ex: ex["caption"])
    vocab = datasets.build_vocab(captions)
    # Write then rename, so that a concurrent reader never sees half a file.
    partial = f"{path}.partial-{os.getpid()}"
    datasets.save_vocab(vocab, partial)
    tf.io.gfile.rename(partial, path, overwrite=True)
  return datasets.CaptionTokenizer(datasets.load_vocab(path), max_length=MAX_LENGTH)


def to_element(example: Dict[str, tf.Tensor], tokenizer: datasets.CaptionTokenizer):
  """One dataset example (or a batch of them) as `(inputs, meta)`; use in a `tf.data` map.

  Args:
    example: a dict from `tfjest.datasets.load` (any leading batch shape).
    tokenizer: the config's `CaptionTokenizer`.

  Returns:
    `(inputs, meta)`: `inputs = {"image": float32 [..., 32, 32, 3] in [0, 1],
    "tokens": int32 [..., MAX_LENGTH]}`, `meta = {"id": int64, "corruption": int64}` (for
    analysis only: no model reads it).
  """
  inputs = {"image": tf.image.convert_image_dtype(example["image"], tf.float32),
            "tokens": tokenizer(example["caption"])}
  meta = {"id": example["id"], "corruption": example["corruption"]}
  return inputs, meta


def pipeline(split: str, *, tokenizer: datasets.CaptionTokenizer,
             config: Config = datasets.synthetic_captions.DEFAULT_CONFIG,
             data_dir: Optional[str] = None) -> tf.data.Dataset:
  """A split as a stream of single `(inputs, meta)` elements, straight from TFDS."""
  examples = datasets.load(split, config=config, data_dir=data_dir)
  return examples.map(lambda ex: to_element(ex, tokenizer),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


@dataclasses.dataclass(frozen=True)
class Split:
  """A split decoded and tokenized once, as NumPy arrays, sorted by `id`.

  Ids run from 0 to `n - 1` in every split, so in a loaded split row `i` is the example with
  id `i` (`take` keeps ids, so a subset's rows are not its ids).

  Attributes:
    image: uint8 `[n, 32, 32, 3]`.
    tokens: int32 `[n, MAX_LENGTH]`.
    caption: object array `[n]` of `bytes`, the raw captions (recall@1 compares them).
    label: int64 `[n]`, the class the caption names.
    id, corruption, true_label: int64 `[n]`, for analysis only.
  """

  image: np.ndarray
  tokens: np.ndarray
  caption: np.ndarray
  label: np.ndarray
  id: np.ndarray
  corruption: np.ndarray
  true_label: np.ndarray

  def __len__(self):
    return len(self.label)

  def take(self, index) -> "Split":
    """The rows at `index` (an int or bool array), keeping their ids."""
    return Split(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def load_split(split: str, *, tokenizer: datasets.CaptionTokenizer,
               config: Config = datasets.synthetic_captions.DEFAULT_CONFIG,
               data_dir: Optional[str] = None) -> Split:
  """Reads a whole split into memory, tokenizing with the same `tf.data` map as `pipeline`."""
  examples = datasets.load(split, config=config, data_dir=data_dir).batch(_MAP_BATCH)

  def columns(ex):
    inputs, meta = to_element(ex, tokenizer)
    return {"image": ex["image"], "tokens": inputs["tokens"], "caption": ex["caption"],
            "label": ex["label"], "id": meta["id"], "corruption": meta["corruption"],
            "true_label": ex["true_label"]}

  parts = list(examples.map(columns, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True).as_numpy_iterator())
  columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
  order = np.argsort(columns["id"], kind="stable")  # TFDS stores a split shuffled
  return Split(**{key: value[order] for key, value in columns.items()})


def stream(split: Split, *, seed: int, repeat: bool = True) -> tf.data.Dataset:
  """Single `(inputs, meta)` elements of an in-memory split, reshuffled every epoch by `seed`.

  Same structure and values as `pipeline` (the images are converted in the map); the order is a
  seeded shuffle of the whole split.
  """
  tables = {"image": tf.constant(split.image), "tokens": tf.constant(split.tokens),
            "id": tf.constant(split.id), "corruption": tf.constant(split.corruption)}

  def gather(index):
    rows = {key: tf.gather(table, index) for key, table in tables.items()}
    inputs = {"image": tf.image.convert_image_dtype(rows["image"], tf.float32),
              "tokens": rows["tokens"]}
    return inputs, {"id": rows["id"], "corruption": rows["corruption"]}

  order = tf.data.Dataset.range(len(split)).shuffle(len(split), seed=seed,
                                                     reshuffle_each_iteration=True)
  if repeat:
    order = order.repeat()
  # Gathering 256 rows at a time and unbatching costs far less than a map per example.
  return order.batch(256).map(gather).unbatch()


class CorruptionCounter(tf.Module):
  """Counts selected examples per corruption type, in a map after selection (analysis only)."""

  def __init__(self, name: str = "corruption_counter"):
    super().__init__(name=name)
    with tf.init_scope(), tf.device("/cpu:0"):
      self.counts = tf.Variable(tf.zeros([len(datasets.CORRUPTIONS)], tf.int64),
                                trainable=False, name="counts")

  def reset(self):
    self.counts.assign(tf.zeros_like(self.counts))

  def record(self, corruption):
    codes = tf.cast(tf.reshape(corruption, [-1]), tf.int32)
    return self.counts.assign_add(tf.math.bincount(
        codes, minlength=len(datasets.CORRUPTIONS), maxlength=len(datasets.CORRUPTIONS),
        dtype=tf.int64))

  def result(self) -> Dict[str, float]:
    """`{"corrupted_share": ..., <type>: share of selected examples}`; NaN before any batch."""
    counts = self.counts.numpy().astype(np.float64)
    total = counts.sum()
    shares = counts / total if total else np.full_like(counts, np.nan)
    out = {"corrupted_share": float(1.0 - shares[0]) if total else float("nan"),
           "selected": int(total)}
    out.update({name: float(s) for name, s in zip(datasets.CORRUPTIONS, shares)})
    return out


def strip_meta(counter: Optional[CorruptionCounter] = None):
  """A map function `(inputs, meta) -> inputs` that counts `meta["corruption"]` first."""
  def fn(inputs, meta):
    if counter is None:
      return inputs
    with tf.control_dependencies([counter.record(meta["corruption"])]):
      return tf.nest.map_structure(tf.identity, inputs)
  return fn


# ---------------------------------------------------------------------------------------------
# Models.


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Standardize(keras.layers.Layer):
  """Per-image standardisation: zero mean and unit variance over each image's pixels."""

  def call(self, images):
    mean = keras.ops.mean(images, axis=(1, 2, 3), keepdims=True)
    std = keras.ops.std(images, axis=(1, 2, 3), keepdims=True)
    return (images - mean) / keras.ops.maximum(std, 1e-3)


# Filters of the image tower's three convolutions; the last is also the text convolution's.
FILTERS = (16, 32, 64)


def _image_tower(width: int, name: str, filters: Sequence[int] = FILTERS) -> keras.Sequential:
  return keras.Sequential([
      keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
      Standardize(),
      *[keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")
        for f in filters],
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
class DualEncoder(keras.Model):
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
    super().__init__(**kwargs)
    self.vocab_size = vocab_size
    self.width = width
    self.filters = tuple(int(f) for f in filters)
    if len(self.filters) != 3 or min(self.filters) < 1:
      raise ValueError(f"filters must be three positive convolution widths. Received: "
                       f"filters={filters!r}")
    self.image_tower = _image_tower(width, "image_tower", self.filters)
    self.text_tower = _text_tower(vocab_size, width, "text_tower", self.filters[-1])
    # SigLIP's initialisation: t = exp(log 10) = 10, beta = -10.
    self.log_scale = self.add_weight(shape=(), name="log_scale",
                                     initializer=keras.initializers.Constant(np.log(10.0)))
    self.bias = self.add_weight(shape=(), name="bias",
                                initializer=keras.initializers.Constant(-10.0))

  @property
  def logit_scale(self):
    return keras.ops.exp(self.log_scale)

  @property
  def logit_bias(self):
    return self.bias

  def encode_image(self, image, training=False):
    return keras.ops.normalize(self.image_tower(image, training=training), axis=-1)

  def encode_text(self, tokens, training=False):
    return keras.ops.normalize(self.text_tower(tokens, training=training), axis=-1)

  def call(self, inputs, training=False):
    return {"image_embeddings": self.encode_image(inputs["image"], training),
            "text_embeddings": self.encode_text(inputs["tokens"], training)}

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    del x, y, sample_weight, training
    # The mean over the global batch under a strategy too (see siglip_replica_loss).
    return tfjest.siglip_replica_loss(tfjest.Embeddings(
        y_pred["image_embeddings"], y_pred["text_embeddings"], self.logit_scale,
        self.logit_bias))

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size, "width": self.width,
            "filters": list(self.filters)}

  def get_build_config(self):
    return {"built": True}

  def build_from_config(self, config):
    del config
    self(example_inputs(1), training=False)


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
    self(example_inputs(1)["image"], training=False)


def make_classifier(learning_rate: float = 3e-3) -> Classifier:
  """A compiled `Classifier` (per-example loss for tfjest: the compiled sparse cross-entropy)."""
  model = Classifier()
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  return model


def classification_stream(split: Split, *, seed: int, repeat: bool = True) -> tf.data.Dataset:
  """Single `(image, label)` elements of an in-memory split for the `Classifier` (labels are
  the caption's class, so noisy in `web`), reshuffled every epoch by `seed`."""
  images, labels = tf.constant(split.image), tf.constant(split.label)

  def gather(index):
    return (tf.image.convert_image_dtype(tf.gather(images, index), tf.float32),
            tf.gather(labels, index))

  order = tf.data.Dataset.range(len(split)).shuffle(len(split), seed=seed,
                                                     reshuffle_each_iteration=True)
  if repeat:
    order = order.repeat()
  return order.batch(256).map(gather).unbatch()


def example_inputs(n: int = 1) -> Dict[str, tf.Tensor]:
  """Zero inputs for `n` examples, to build a model."""
  return {"image": tf.zeros([n, IMAGE_SIZE, IMAGE_SIZE, 3]),
          "tokens": tf.zeros([n, MAX_LENGTH], tf.int32)}


# ---------------------------------------------------------------------------------------------
# Evaluation.


def concept_captions() -> list:
  """One caption per concept, in label order: "a red square", "a red circle", ...

  The concept is what a label names (colour and shape of the main object); the caption says
  nothing about size or position, so it fits every image of the concept equally.
  """
  return [f"a {colour} {shape}" for colour in datasets.COLOURS for shape in datasets.SHAPES]


def embed(model: DualEncoder, split: Split, batch_size: int = 500):
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


def evaluate(model: DualEncoder, test: Split, tokenizer: datasets.CaptionTokenizer
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


def classification_accuracy(model: Classifier, split: Split, batch_size: int = 500) -> float:
  """Share of images of `split` whose arg-max logit is `label`."""
  predictions = [np.argmax(model(tf.image.convert_image_dtype(
      split.image[start:start + batch_size], tf.float32), training=False).numpy(), axis=1)
                 for start in range(0, len(split), batch_size)]
  return float(np.mean(np.concatenate(predictions) == split.label))
