"""The web split's noise: which corruptions exist, their mixture, and how many of each.

A noise level `p` is the share of web examples that are corrupted. The corrupted examples
split over the types by `NOISE_MIXTURE`; counts are exact (largest-remainder rounding), so a
split of `n` examples has `round(p * n)` corrupted ones and each type is within one example of
`p * n * NOISE_MIXTURE[type]`.

The types, as a web scrape produces them:
  * swapped: the caption belongs to another image of the split (with another main concept).
  * wrong_attribute: the caption is right except one or two attributes (colour, shape, size,
    position) of the main object.
  * uninformative: the caption is file-name-like or filler ("IMG_0412.jpg", "photo").
  * clutter: the image is random blobs and noise; the caption describes objects not there.
  * near_duplicate: a clean example re-emitted with tiny pixel jitter, same caption.
"""

import numpy as np

CORRUPTIONS = ("none", "swapped", "wrong_attribute", "uninformative", "clutter",
               "near_duplicate")
NONE, SWAPPED, WRONG_ATTRIBUTE, UNINFORMATIVE, CLUTTER, NEAR_DUPLICATE = range(6)
NOISE_MIXTURE = {
    "swapped": 0.25,
    "wrong_attribute": 0.25,
    "uninformative": 0.2,
    "clutter": 0.15,
    "near_duplicate": 0.15,
}


def corruption_counts(size: int, noise: float) -> dict:
  """How many examples of each type in `CORRUPTIONS` a split of `size` gets at `noise`.

  Args:
    size: number of examples in the split.
    noise: share of corrupted examples, in [0, 1].

  Returns:
    A dict from every name in `CORRUPTIONS` to a count; the counts sum to `size`.

  Raises:
    ValueError: if `size` is negative or `noise` is outside [0, 1].
  """
  if size < 0:
    raise ValueError(f"`size` must be non-negative. Received: size={size}")
  if not 0.0 <= noise <= 1.0:
    raise ValueError(f"`noise` must be in [0, 1]. Received: noise={noise}")
  corrupted = int(round(noise * size))
  exact = np.array(list(NOISE_MIXTURE.values())) * corrupted
  counts = np.floor(exact).astype(int)
  # Largest remainder first; ties go to the type listed first (stable sort).
  order = np.argsort(-(exact - counts), kind="stable")
  counts[order[:corrupted - counts.sum()]] += 1
  return {"none": size - corrupted, **dict(zip(NOISE_MIXTURE, counts.tolist()))}


def assign_corruptions(rng: np.random.Generator, size: int, noise: float) -> np.ndarray:
  """A random corruption code (index into `CORRUPTIONS`) per example, with exact counts.

  Args:
    rng: the random source.
    size: number of examples in the split.
    noise: share of corrupted examples, in [0, 1].

  Returns:
    An int64 array `[size]` holding `corruption_counts(size, noise)[name]` of each code.

  Raises:
    ValueError: if `size` is negative or `noise` is outside [0, 1].
  """
  counts = corruption_counts(size, noise)
  codes = np.repeat(np.arange(len(CORRUPTIONS), dtype=np.int64),
                    [counts[name] for name in CORRUPTIONS])
  return rng.permutation(codes)
