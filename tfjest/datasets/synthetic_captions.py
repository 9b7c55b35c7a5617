"""The synthetic captions benchmark as a TFDS dataset: its configs, builder and `load`.

Images of one to three coloured shapes on a 3x3 grid, each with a caption, in three splits:
a small clean `curated` split (the reference model's data), a large noisy long-tailed `web`
split (the stream to select from) and a clean `test` split. Everything is generated from a
seed on the local machine; nothing is downloaded. See `splits` for how each split is drawn and
`noise` for the web corruptions.

Example:

```python
web = tfjest.datasets.load("web", config="noise_0.5")
tiny = tfjest.datasets.make_config(noise=0.5, web_size=1000, curated_size=200, test_size=200)
test = tfjest.datasets.load("test", config=tiny, as_supervised=True)
```
"""

import dataclasses
import re
from typing import Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfjest.datasets import noise as noise_lib
from tfjest.datasets import png
from tfjest.datasets import scenes as scenes_lib
from tfjest.datasets import splits as splits_lib

NOISE_LEVELS = (0.0, 0.3, 0.5, 0.7)
DEFAULT_CONFIG = "noise_0.5"
_DEFAULTS = {"web_size": 100_000, "curated_size": 4_000, "test_size": 2_000, "image_size": 32,
             "seed": 0, "zipf_exponent": 1.0}
# Short names used in a custom config's name, e.g. "noise_0.5-web1000-curated200".
_NAME_PARTS = {"web_size": "web", "curated_size": "curated", "test_size": "test",
               "image_size": "px", "seed": "seed", "zipf_exponent": "zipf"}
_MIN_IMAGE_SIZE = 24
_SPLIT_PATTERN = re.compile(r"^(?P<name>\w+)(\[[^\]]*\])?$")


@dataclasses.dataclass(eq=False)
class SyntheticCaptionsConfig(tfds.core.BuilderConfig):
  """What to generate. Build one with `make_config`, which also gives it a unique name.

  Attributes:
    noise: share of corrupted web examples, in [0, 1].
    web_size, curated_size, test_size: number of examples per split, each at least 1.
    image_size: image height and width in pixels, at least 24.
    seed: non-negative seed of every random draw.
    zipf_exponent: long-tail exponent of the web class frequencies (0 is uniform).
  """

  noise: float = 0.5
  web_size: int = _DEFAULTS["web_size"]
  curated_size: int = _DEFAULTS["curated_size"]
  test_size: int = _DEFAULTS["test_size"]
  image_size: int = _DEFAULTS["image_size"]
  seed: int = _DEFAULTS["seed"]
  zipf_exponent: float = _DEFAULTS["zipf_exponent"]

  def __post_init__(self):
    if not 0.0 <= self.noise <= 1.0:
      raise ValueError(f"`noise` must be in [0, 1]. Received: noise={self.noise}")
    for name in ("web_size", "curated_size", "test_size"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    if not isinstance(self.image_size, (int, np.integer)) or self.image_size < _MIN_IMAGE_SIZE:
      raise ValueError(f"`image_size` must be an integer of at least {_MIN_IMAGE_SIZE}. "
                       f"Received: image_size={self.image_size!r}")
    if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
      raise ValueError(f"`seed` must be a non-negative integer. Received: seed={self.seed!r}")
    if self.zipf_exponent < 0:
      raise ValueError("`zipf_exponent` must be non-negative. "
                       f"Received: zipf_exponent={self.zipf_exponent}")


def _config(noise: float, **overrides) -> SyntheticCaptionsConfig:
  noise = float(round(noise, 4))
  values = {**_DEFAULTS, **overrides}
  name = f"noise_{noise!r}" + "".join(
      f"-{_NAME_PARTS[k]}{v!r}" for k, v in values.items() if v != _DEFAULTS[k])
  description = (f"{noise:.0%} of web examples corrupted; {values['web_size']} web, "
                 f"{values['curated_size']} curated, {values['test_size']} test examples of "
                 f"{values['image_size']}x{values['image_size']} pixels.")
  return SyntheticCaptionsConfig(name=name, description=description, noise=noise, **values)


class SyntheticCaptions(tfds.core.GeneratorBasedBuilder):
  """Synthetic image-caption pairs with a clean curated split and a noisy web split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: curated, web and test splits."}
  BUILDER_CONFIGS = [_config(noise) for noise in NOISE_LEVELS]
  DEFAULT_CONFIG_NAME = DEFAULT_CONFIG

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Images of one to three coloured shapes (8 colours x 5 shapes = 40 classes, 2 "
            "sizes, a 3x3 grid of positions) on plain, gradient or textured backgrounds, with "
            "captions in several templates. `label` is the class of the caption's main object; "
            "`true_label` that of the image's (-1 for clutter). `curated` and `test` are clean "
            "and balanced; `web` is long-tailed and partly corrupted (`corruption`: swapped, "
            "wrong_attribute, uninformative, clutter, near_duplicate). `id`, `true_label` and "
            "`corruption` are for analysis only."),
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64, doc="Unique within a split."),
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "caption": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=scenes_lib.class_names()),
            "true_label": tfds.features.Scalar(
                np.int64, doc="Class of the image's main object; -1 for clutter."),
            "corruption": tfds.features.ClassLabel(names=noise_lib.CORRUPTIONS),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated; nothing is downloaded.
    return {split: self._generate_examples(split=split) for split in splits_lib.SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    chunks = splits_lib.generate_split(
        split, size=getattr(config, f"{split}_size"), noise=config.noise, seed=config.seed,
        image_size=config.image_size, zipf_exponent=config.zipf_exponent)
    for chunk in chunks:
      for i, example_id in enumerate(chunk["id"].tolist()):
        yield example_id, {
            "id": example_id,
            "image": png.encode_png(chunk["image"][i]),
            "caption": chunk["caption"][i],
            "label": int(chunk["label"][i]),
            "true_label": int(chunk["true_label"][i]),
            "corruption": int(chunk["corruption"][i]),
        }


def make_config(*, noise: float = 0.5, web_size: int = _DEFAULTS["web_size"],
                curated_size: int = _DEFAULTS["curated_size"],
                test_size: int = _DEFAULTS["test_size"],
                image_size: int = _DEFAULTS["image_size"], seed: int = _DEFAULTS["seed"],
                zipf_exponent: float = _DEFAULTS["zipf_exponent"]) -> SyntheticCaptionsConfig:
  """A builder config, named after its values so that each variant gets its own directory.

  With default sizes the result is one of the registered configs (`noise_0.0`, `noise_0.3`,
  `noise_0.5`, `noise_0.7`) when the noise level matches. Small sizes give a version that
  builds in seconds, for tests and demos.

  Args:
    noise: share of corrupted web examples, in [0, 1].
    web_size: number of web examples.
    curated_size: number of curated examples.
    test_size: number of test examples.
    image_size: image height and width in pixels, at least 24.
    seed: seed of every random draw.
    zipf_exponent: long-tail exponent of the web class frequencies.

  Returns:
    A `SyntheticCaptionsConfig` to pass to `load` or `SyntheticCaptions(config=...)`.

  Raises:
    ValueError: if a value is out of range (see `SyntheticCaptionsConfig`).
  """
  config = _config(noise, web_size=web_size, curated_size=curated_size, test_size=test_size,
                   image_size=image_size, seed=seed, zipf_exponent=zipf_exponent)
  registered = {c.name: c for c in SyntheticCaptions.BUILDER_CONFIGS}
  return registered.get(config.name, config)


def load(split: str, *, config: Union[str, SyntheticCaptionsConfig] = DEFAULT_CONFIG,
         data_dir: Optional[str] = None, as_supervised: bool = False,
         shuffle_files: bool = False,
         read_config: Optional[tfds.ReadConfig] = None) -> tf.data.Dataset:
  """Builds the dataset if it is not in `data_dir` yet, and returns one split.

  Args:
    split: "curated", "web" or "test", optionally with a TFDS slice such as "web[:10%]".
    config: a registered config name (`noise_0.0`, `noise_0.3`, `noise_0.5`, `noise_0.7`) or
      a config from `make_config`.
    data_dir: where TFDS keeps datasets; TFDS' default (`~/tensorflow_datasets`) when None.
    as_supervised: return `(image, label)` tuples instead of feature dicts.
    shuffle_files: shuffle the order of the split's files when reading.
    read_config: TFDS' `tfds.ReadConfig`, e.g. `tfds.ReadConfig(assert_cardinality=False)`
      for a split read on tf.data service workers ("distributed_epoch": each worker reads some
      of the files, fewer examples than the split holds, which TFDS' check of the count
      would stop).

  Returns:
    A `tf.data.Dataset` of dicts with `id`, `image` (uint8 `[size, size, 3]`), `caption`
    (string), `label`, `true_label` and `corruption` (int64), or of `(image, label)` tuples.

  Raises:
    ValueError: if `split` or `config` is unknown.
    TypeError: if `config` is neither a string nor a `SyntheticCaptionsConfig`.
  """
  match = _SPLIT_PATTERN.match(split) if isinstance(split, str) else None
  if match is None or match.group("name") not in splits_lib.SPLITS:
    raise ValueError(f"Unknown split. Expected one of {splits_lib.SPLITS}, optionally sliced "
                     f"like 'web[:10%]'. Received: split={split!r}")
  if isinstance(config, str):
    names = [c.name for c in SyntheticCaptions.BUILDER_CONFIGS]
    if config not in names:
      raise ValueError(f"Unknown config. Expected one of {names}, or a config from "
                       f"`make_config(...)` for other sizes. Received: config={config!r}")
  elif not isinstance(config, SyntheticCaptionsConfig):
    raise TypeError("`config` must be a config name or a `SyntheticCaptionsConfig`. "
                    f"Received: config={config!r} of type {type(config).__name__}")
  builder = SyntheticCaptions(config=config, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder.as_dataset(split=split, as_supervised=as_supervised,
                            shuffle_files=shuffle_files, read_config=read_config)
