"""How each split of the synthetic captions benchmark is drawn, in plain NumPy.

* curated: clean, balanced over the 40 classes (the reference model's small, good data).
* test: clean and balanced like curated, from an independent random stream.
* web: large, long-tailed and noisy. Every object's concept follows a Zipf law over the
  classes (a seeded ranking, frequency proportional to `1 / rank ** zipf_exponent`), so rare
  colour-shape combinations form a long tail; a share `noise` of the examples is corrupted as
  described in `tfjest.datasets.noise`.

`label` is what the caption says: the class of the caption's main object (for an
uninformative caption, a uniformly random class, as a label with no signal). `true_label` is
the class of the image's main object, -1 for clutter images. In curated and test the two agree.

Everything is a deterministic function of the arguments: each split draws from its own random
streams keyed by (seed, split), so the three splits are independent and reproducible.
"""

import dataclasses
from typing import Iterator

import numpy as np

from tfjest.datasets import captions as captions_lib
from tfjest.datasets import noise as noise_lib
from tfjest.datasets import scenes as scenes_lib

SPLITS = ("curated", "web", "test")
_CHUNK = 512  # examples rendered at once: large enough to vectorise, small enough for cache
_ZIPF_STREAM = 1000


def web_class_probs(*, seed: int = 0, zipf_exponent: float = 1.0) -> np.ndarray:
  """Class frequencies of the web split: Zipf over a seeded ranking of the classes.

  Args:
    seed: the dataset seed; it fixes which classes are frequent.
    zipf_exponent: `s` in `p(rank) ~ 1 / rank ** s`; 0 is uniform.

  Returns:
    A float64 array `[NUM_CLASSES]` of probabilities summing to 1, indexed by label.
  """
  ranking = np.random.default_rng([seed, _ZIPF_STREAM]).permutation(scenes_lib.NUM_CLASSES)
  weights = 1.0 / np.arange(1, scenes_lib.NUM_CLASSES + 1) ** zipf_exponent
  probs = np.empty(scenes_lib.NUM_CLASSES)
  probs[ranking] = weights / weights.sum()
  return probs


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Everything about a split but its pixels; `scenes[i]` is what example `i` shows."""

  scenes: scenes_lib.Scenes
  caption: list
  clean_caption: list  # describes `scenes[i]`, drawn or (for clutter) not
  label: np.ndarray
  true_label: np.ndarray
  corruption: np.ndarray


def _partners(rng, labels, index, pool):
  """For each example in `index`, another one from `pool`, with another label when possible."""
  if not len(pool):
    return index.copy()
  partner = pool[rng.integers(0, len(pool), size=len(index))]
  for _ in range(20):
    redraw = (partner == index) | (labels[partner] == labels[index])
    if not redraw.any():
      break
    partner[redraw] = pool[rng.integers(0, len(pool), size=redraw.sum())]
  return partner


def _plan(split, size, noise, seed, zipf_exponent) -> _Plan:
  stream = SPLITS.index(split)
  scene_rng = np.random.default_rng([seed, stream, 0])
  noise_rng = np.random.default_rng([seed, stream, 1])
  if split == "web":
    probs = web_class_probs(seed=seed, zipf_exponent=zipf_exponent)
    labels = scene_rng.choice(scenes_lib.NUM_CLASSES, size=size, p=probs)
  else:
    probs = None
    labels = scene_rng.permutation(np.arange(size) % scenes_lib.NUM_CLASSES)
  drawn = scenes_lib.sample_scenes(scene_rng, labels, class_probs=probs)
  drawn_template = scene_rng.integers(0, len(captions_lib.TEMPLATES), size=size)
  drawn_joiner = scene_rng.integers(0, 2, size=size)
  corruption = noise_lib.assign_corruptions(noise_rng, size, noise if split == "web" else 0.0)

  # Near-duplicates show (and describe) a clean example's scene; everything else its own.
  shown = np.arange(size)
  idx = np.flatnonzero(corruption == noise_lib.NEAR_DUPLICATE)
  sources = np.flatnonzero(corruption == noise_lib.NONE)
  if not len(sources):  # noise = 1: re-emit corrupted examples that show a scene
    sources = np.flatnonzero(~np.isin(corruption, [noise_lib.NEAR_DUPLICATE, noise_lib.CLUTTER]))
  if len(idx) and len(sources):
    shown[idx] = noise_rng.choice(sources, size=len(idx))
  scenes, template, joiner = drawn.take(shown), drawn_template[shown], drawn_joiner[shown]
  clean = np.array(captions_lib.describe(scenes, template, joiner), dtype=object)
  caption, label, true_label = clean.copy(), scenes.label.astype(np.int64), scenes.label

  idx = np.flatnonzero(corruption == noise_lib.SWAPPED)
  partner = _partners(noise_rng, true_label, idx,
                      pool=np.flatnonzero(corruption != noise_lib.CLUTTER))
  caption[idx], label[idx] = clean[partner], true_label[partner]

  idx = np.flatnonzero(corruption == noise_lib.WRONG_ATTRIBUTE)
  wrong = captions_lib.with_wrong_attributes(
      noise_rng, scenes.take(idx), noise_rng.integers(1, 3, size=len(idx)))
  caption[idx] = captions_lib.describe(wrong, template[idx], joiner[idx])
  label[idx] = wrong.label

  idx = np.flatnonzero(corruption == noise_lib.UNINFORMATIVE)
  caption[idx] = captions_lib.uninformative(noise_rng, len(idx))
  label[idx] = noise_rng.integers(0, scenes_lib.NUM_CLASSES, size=len(idx))

  true_label = np.where(corruption == noise_lib.CLUTTER, -1, true_label).astype(np.int64)
  return _Plan(scenes=scenes, caption=caption.tolist(), clean_caption=clean.tolist(),
               label=label, true_label=true_label, corruption=corruption)


def generate_split(split: str, *, size: int, noise: float = 0.0, seed: int = 0,
                   image_size: int = 32, zipf_exponent: float = 1.0) -> Iterator[dict]:
  """Generates a split in chunks of a few hundred examples, as NumPy arrays.

  Args:
    split: one of `SPLITS`.
    size: number of examples.
    noise: share of corrupted examples in the web split, in [0, 1]; curated and test are
      always clean.
    seed: the dataset seed.
    image_size: height and width of the images, in pixels.
    zipf_exponent: the web split's long-tail exponent (see `web_class_probs`).

  Yields:
    Dicts with `id` (int64 `[m]`, 0 to `size - 1` in order), `image` (uint8
    `[m, image_size, image_size, 3]`), `caption` (list of `m` str), `label`, `true_label` and
    `corruption` (int64 `[m]`; `corruption` indexes `noise.CORRUPTIONS`).

  Raises:
    ValueError: if `split` is unknown, or `size`, `noise` are out of range.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split. Expected one of {SPLITS}. Received: split={split!r}")
  if size < 0:
    raise ValueError(f"`size` must be non-negative. Received: size={size}")
  plan = _plan(split, size, noise, seed, zipf_exponent)
  pixel_rng = np.random.default_rng([seed, SPLITS.index(split), 2])
  for start in range(0, size, _CHUNK):
    index = np.arange(start, min(start + _CHUNK, size))
    images = scenes_lib.render(plan.scenes.take(index), image_size)
    corruption = plan.corruption[index]
    clutter = corruption == noise_lib.CLUTTER
    if clutter.any():
      images[clutter] = scenes_lib.render_clutter(pixel_rng, int(clutter.sum()), image_size)
    duplicate = corruption == noise_lib.NEAR_DUPLICATE
    if duplicate.any():
      images[duplicate] = scenes_lib.jitter(pixel_rng, images[duplicate])
    yield {
        "id": index.astype(np.int64),
        "image": images,
        "caption": plan.caption[start:start + len(index)],
        "label": plan.label[index],
        "true_label": plan.true_label[index],
        "corruption": corruption,
    }
