"""The worlds a run can train in, behind one interface: the captions data and the toy pairs.

A task gives the harness (`examples.lib.harness`) and the reference recipe
(`examples.lib.reference`) everything they need, so neither knows which world it trains in:

* `stream(seed, clean_only=False)`: single `(inputs, meta)` elements of the noisy training
  split, reshuffled every epoch and repeated; `meta = {"id", "corruption"}` is for analysis
  only (no model reads it; `data.strip_meta` drops it after selection).
* `reference_stream(seed)` and `reference_examples`: the clean data the reference trains on.
* `cache_stream()`: the training split once, in a fixed order (what a reference cache covers).
* `make_model(name, width=..., filters=...)`: a fresh, unbuilt dual encoder; `example_inputs(n)`
  builds it.
* `evaluate(model)`: `{"accuracy": ..., ...}` on clean held-out data.
* `id_key`, `training_examples`, `describe()`.
"""

from typing import Callable, Dict, Optional, Sequence

import keras
import tensorflow as tf

from examples.lib import data
from examples.lib import evaluation
from examples.lib import models
from tfjest import datasets
from tfjest import testing

# Examples in the shuffle buffer of a web split read from its files.
_WEB_SHUFFLE = 10_000


class CaptionsTask:
  """The offline benchmark: `tfjest.datasets` synthetic captions, `web` to train on.

  Args:
    config: a registered config name (`"noise_0.5"`) or `datasets.make_config(...)`.
    data_dir: TFDS data directory (TFDS' default when None); built there offline if needed.
    web_in_memory: read the web split into memory (fast to serve from, many times over);
      False leaves it in its TFDS files, read through `data.pipeline` in the files' order (a
      web split of millions of examples: 3 GB of images per million).
  """

  name = "captions"
  id_key = "id"

  def __init__(self, config: data.Config = "noise_0.5", data_dir: Optional[str] = None,
               web_in_memory: bool = True):
    self.config, self.data_dir = config, data_dir
    self.world = data.load_world(config, data_dir, web=web_in_memory)

  @property
  def config_name(self) -> str:
    return self.config if isinstance(self.config, str) else self.config.name

  @property
  def training_examples(self) -> int:
    if self.world.web is None:
      builder = datasets.SyntheticCaptions(config=self.config, data_dir=self.data_dir)
      return builder.info.splits["web"].num_examples
    return len(self.world.web)

  @property
  def reference_examples(self) -> int:
    return len(self.world.curated)

  def describe(self) -> str:
    world = self.world
    web = (f"{self.training_examples} web (on disk)" if world.web is None else
           f"{len(world.web)} web ({(world.web.corruption != 0).mean():.0%} corrupted)")
    return (f"{self.config_name}: {web}, {len(world.curated)} curated, {len(world.test)} test "
            f"examples; vocabulary of {world.tokenizer.vocab_size} tokens")

  def stream(self, seed: int, clean_only: bool = False) -> tf.data.Dataset:
    web = self.world.web
    if web is None:  # from the files: a shuffle buffer, not a permutation of the split
      stream = self.web_pipeline()
      if clean_only:
        stream = stream.filter(lambda inputs, meta: meta["corruption"] == 0)
      return stream.shuffle(_WEB_SHUFFLE, seed=seed, reshuffle_each_iteration=True).repeat()
    if clean_only:
      web = web.take(web.corruption == 0)
    return data.stream(web, seed=seed)

  def reference_stream(self, seed: int) -> tf.data.Dataset:
    return data.stream(self.world.curated, seed=seed)

  def cache_stream(self) -> tf.data.Dataset:
    if self.world.web is None:
      return self.web_pipeline()
    return data.stream(self.world.web, seed=0, repeat=False)

  def web_pipeline(self, split: str = "web", read_config=None) -> tf.data.Dataset:
    """`split` (the web split, or a slice of it such as "web[:1000]") from its TFDS files, in
    their order: single `(inputs, meta)` elements (`data.pipeline`, `read_config` included)."""
    return data.pipeline(split, tokenizer=self.world.tokenizer, config=self.config,
                         data_dir=self.data_dir, read_config=read_config)

  def make_model(self, name: str, width: int = 64,
                 filters: Sequence[int] = models.FILTERS) -> keras.Model:
    return models.DualEncoder(self.world.tokenizer.vocab_size, width=width, filters=filters,
                              name=name)

  def example_inputs(self, n: int = 1):
    return data.example_inputs(n)

  def evaluate(self, model: keras.Model) -> Dict[str, float]:
    """Zero-shot accuracy and recall@1 on the clean `test` split (`evaluation.evaluate`)."""
    return evaluation.evaluate(model, self.world.test, self.world.tokenizer)


class ToyTask:
  """`tfjest.testing`'s image-caption pairs: fast, generated in memory.

  Args:
    noise: share of training pairs whose caption is swapped with another example's.
    seed: seed of the data.
    training_examples: distinct pairs in the training stream.
    reference_examples: clean pairs the reference trains on.
    image_size: the images' side; other than 16, the pairs' images are resized (bilinear).
    model_fn: `model_fn(name, width)` -> an unbuilt dual encoder reading `{"image", "text"}`
      (default: `tfjest.testing.PairDualEncoder`, which reads 16 x 16 images).
  """

  name = "toy"
  id_key = "id"

  def __init__(self, noise: float = 0.5, seed: int = 0, training_examples: int = 4096,
               reference_examples: int = 4096, image_size: int = testing.IMAGE_SIZE,
               model_fn: Optional[Callable[[str, int], keras.Model]] = None):
    self.noise, self.seed = noise, seed
    self.training_examples, self.reference_examples = training_examples, reference_examples
    self.image_size, self._model_fn = image_size, model_fn
    self.pairs = self._resized(testing.make_pairs(training_examples, noise, seed=seed + 2))
    self._clean = self._resized(testing.make_pairs(reference_examples, 0.0, seed=seed + 1))

  def _resized(self, pairs):
    if self.image_size != testing.IMAGE_SIZE:
      size = (self.image_size, self.image_size)
      pairs["image"] = tf.image.resize(pairs["image"], size).numpy().astype("float32")
    return pairs

  def describe(self) -> str:
    return (f"toy pairs: {self.training_examples} training ({self.pairs['corrupted'].mean():.0%}"
            f" corrupted), {self.reference_examples} clean reference pairs")

  @staticmethod
  def _elements(pairs, index=None) -> tf.data.Dataset:
    take = (lambda a: a) if index is None else (lambda a: a[index])
    return tf.data.Dataset.from_tensor_slices((
        {"image": take(pairs["image"]), "text": take(pairs["text"])},
        {"id": take(pairs["id"]), "corruption": take(pairs["corrupted"]).astype("int64")}))

  def stream(self, seed: int, clean_only: bool = False) -> tf.data.Dataset:
    index = self.pairs["corrupted"] == 0 if clean_only else None
    elements = self._elements(self.pairs, index)
    return elements.shuffle(self.training_examples, seed=seed).repeat()

  def reference_stream(self, seed: int) -> tf.data.Dataset:
    return self._elements(self._clean).shuffle(self.reference_examples, seed=seed).repeat()

  def cache_stream(self) -> tf.data.Dataset:
    return self._elements(self.pairs)

  def make_model(self, name: str, width: int = 32, filters=None) -> keras.Model:
    del filters  # one architecture
    if self._model_fn is not None:
      return self._model_fn(name, width)
    return testing.PairDualEncoder(width=width, name=name)

  def example_inputs(self, n: int = 1):
    return {"image": tf.zeros([n, self.image_size, self.image_size, 3]),
            "text": tf.zeros([n, 3], tf.int32)}

  def evaluate(self, model: keras.Model) -> Dict[str, float]:
    """Pair accuracy on fresh clean pairs (the true caption ranked above a swapped one)."""
    return {"accuracy": testing.pair_accuracy(model, num_examples=500, seed=self.seed + 999)}


def make_task(name: str, *, noise: float = 0.5, sizes: Optional[Sequence[int]] = None,
              seed: int = 0, data_dir: Optional[str] = None):
  """The task `name` ("captions" or "toy") at a noise level.

  `sizes` is `(training, reference[, test])` example counts: a custom captions config
  (`datasets.make_config`, data generated from `seed`) or the toy stream's sizes; None: the
  registered captions config of `noise` (the toy default sizes).
  """
  if name == "captions":
    if not sizes:
      return CaptionsTask(data.config_for(noise), data_dir)
    web, curated, *test = (int(s) for s in sizes)
    return CaptionsTask(datasets.make_config(
        noise=noise, web_size=web, curated_size=curated, seed=seed,
        **({"test_size": test[0]} if test else {})), data_dir)
  if name == "toy":
    sizes = tuple(int(s) for s in sizes[:2]) if sizes else (4096, 4096)
    return ToyTask(noise, seed, *sizes)
  raise ValueError(f"Expected task in ('captions', 'toy'). Received: task={name!r}")
