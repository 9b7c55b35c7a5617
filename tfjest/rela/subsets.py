"""ReLA's data ratio: every epoch trains on a fresh uniform random subset of the data."""

from typing import Optional

import tensorflow as tf

from tfjest import checks


def epoch_subsets(data_ratio: float, *, seed: int = 0, epochs: Optional[int] = None):
  """Repeats a finite dataset, each epoch a fresh uniform random subset of `data_ratio` of it.

  Epoch `e` keeps `round(data_ratio * M)` (at least 1) of the `M` elements: those whose
  position in the dataset is among the first of a permutation drawn with the stateless seed
  `(seed, e)`. The subset is uniform over the subsets of that size, fresh every epoch, and the
  same for the same `seed` (the order within an epoch is the dataset's own; shuffle after this
  transformation, or let the dataset shuffle itself, for a random order). ReLA (docs/SPEC.md
  §11) trains on e.g. 20% or 50% of the data per epoch.

  >>> import tensorflow as tf
  >>> import tfjest
  >>> ds = tf.data.Dataset.range(10).apply(tfjest.epoch_subsets(0.3, seed=1, epochs=2))
  >>> [int(v) for v in ds]   # 3 of 10 per epoch, another 3 the next epoch
  [4, 6, 8, 0, 1, 3]

  Args:
    data_ratio: the share of the data in each epoch, in (0, 1].
    seed: the seed of the subsets.
    epochs: the number of epochs; None repeats forever.

  Returns:
    A `Dataset` transformation function, which can be passed to `tf.data.Dataset.apply`.

  Raises:
    ValueError: if `data_ratio` is not in (0, 1], `epochs` not a positive integer or None; when
      applied, if the dataset's size is infinite or unknown.
  """
  if not checks.is_real(data_ratio) or not 0 < data_ratio <= 1:
    raise ValueError(f"data_ratio must be in (0, 1]. Received: data_ratio={data_ratio!r}")
  seed = checks.integer(seed, "seed")
  if epochs is not None and (not checks.is_int(epochs) or epochs <= 0):
    raise ValueError(f"epochs must be a positive integer or None. Received: epochs={epochs!r}")
  epochs = None if epochs is None else int(epochs)
  data_ratio = float(data_ratio)

  def _apply_fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
    size = int(dataset.cardinality())
    if size < 0:
      raise ValueError(f"epoch_subsets needs a dataset of known, finite size (apply it before "
                       f"repeat; use assert_cardinality after a filter). Received: dataset of "
                       f"cardinality {size}")
    keep = max(1, int(round(data_ratio * size)))

    def epoch(e):
      draw = tf.random.stateless_uniform([size], seed=tf.stack([tf.constant(seed, tf.int64), e]))
      chosen = tf.scatter_nd(tf.argsort(draw)[:keep, None], tf.ones([keep], tf.bool), [size])
      return (dataset.enumerate().filter(lambda i, *element: chosen[i])
              .map(lambda i, *element: element if len(element) > 1 else element[0]))

    epochs_ds = tf.data.Dataset.counter() if epochs is None else tf.data.Dataset.range(epochs)
    return epochs_ds.flat_map(epoch)

  return _apply_fn
