"""The captions data of the offline benchmark: from `tfjest.datasets` to model inputs.

`tfjest.datasets` yields dicts `{id, image, caption, label, true_label, corruption}`.
`to_element` turns one into what `tfjest.select` and `fit` see: `(inputs, meta)` with
`inputs = {"image": float32 [32, 32, 3] in [0, 1], "tokens": int32 [32]}` (the caption through
`CaptionTokenizer`, inside the `tf.data` map) and `meta = {"id", "corruption"}`. A 2-tuple is
`(x, y)` to tfjest and to Keras: the models are called on `inputs` only, and the contrastive
scorer never reads `y`, so the corruption flags travel with their example through selection
without the selection reading them. `strip_meta` drops them (after counting, for analysis)
before `fit`. The vocabulary is learnt from the config's own curated and web captions and cached
next to the data (`vocab_path`).

For runs that read the same split many times (benchmarks), `load_split` decodes and tokenizes a
split once through the same map into NumPy arrays, `load_world` does it for every split of a
config (cached), and `stream` serves shuffled elements of the same structure from memory.
"""

import dataclasses
import functools
import os
from typing import Dict, NamedTuple, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfjest import datasets

MAX_LENGTH = 32
IMAGE_SIZE = 32
VOCAB_FILENAME = "captions_vocab.txt"
_MAP_BATCH = 1024

Config = Union[str, datasets.SyntheticCaptionsConfig]


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
             data_dir: Optional[str] = None, read_config=None) -> tf.data.Dataset:
  """A split as a stream of single `(inputs, meta)` elements, straight from TFDS (read with
  `read_config`, a `tfds.ReadConfig`, when given: see `tfjest.datasets.load`)."""
  examples = datasets.load(split, config=config, data_dir=data_dir, read_config=read_config)
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


def lower_resolution(size: int):
  """A `scoring_view` for `tfjest.select`: the `"image"` feature average-pooled to `size`.

  The learner then scores candidates at `size x size` (Flexi-JEST's cheap scoring: a fraction
  of the image tower's FLOPs), while it trains at full resolution. Other features unchanged.
  """
  if not isinstance(size, int) or size < 1:
    raise ValueError(f"Expected a positive image size. Received: size={size!r}")

  def view(x):
    image = x["image"]
    full = image.shape[-2]
    if full is None or full % size:
      raise ValueError(f"The image side must be a multiple of the scoring resolution. "
                       f"Received: size={size}, images of side {full}")
    factor = full // size
    return {**x, "image": tf.nn.avg_pool2d(image, factor, factor, "VALID")}

  view.__name__ = f"lower_resolution_{size}"
  return view


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


class World(NamedTuple):
  """A config's data, decoded once: tokenizer and in-memory splits (`web` None when not read)."""

  config: Union[str, datasets.SyntheticCaptionsConfig]
  tokenizer: datasets.CaptionTokenizer
  curated: Split
  web: Optional[Split]
  test: Split


@functools.lru_cache(maxsize=2)
def load_world(config: Union[str, datasets.SyntheticCaptionsConfig] = "noise_0.5",
               data_dir: Optional[str] = None, web: bool = True) -> World:
  """Builds the dataset and vocabulary if needed and reads every split into memory (cached).

  With `web=False` the web split is left on disk (`World.web` is None): at a million examples
  its images alone are 3 GB in memory; read it with `pipeline("web", ...)` instead.
  """
  tokenizer = tokenizer_for(config, data_dir)
  splits = {split: load_split(split, tokenizer=tokenizer, config=config, data_dir=data_dir)
            if split != "web" or web else None for split in ("curated", "web", "test")}
  return World(config=config, tokenizer=tokenizer, **splits)


def config_for(noise: float, config=None, sizes: Optional[Sequence] = None):
  """The registered config of a noise level, or `config` when given.

  `sizes` (`web, curated, test` example counts, e.g. the programs' `--sizes` flag) makes a
  custom config of that noise level instead (`datasets.make_config`; small ones for tests).
  """
  if config is not None:
    return config
  if sizes:
    web, curated, test = (int(size) for size in sizes)
    return datasets.make_config(noise=noise, web_size=web, curated_size=curated,
                                test_size=test)
  name = f"noise_{float(noise)!r}"
  if float(noise) not in datasets.NOISE_LEVELS:
    raise ValueError(f"No registered config for this noise level; expected one of "
                     f"{datasets.NOISE_LEVELS} or pass config=datasets.make_config(...). "
                     f"Received: noise={noise!r}")
  return name
