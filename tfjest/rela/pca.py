"""ReLA-D's projection: PCA onto a few directions, each standardised, in memory or out of core.

`pca_standardize` defines the map on features held in memory (SVD; the reference the tests
check against). `prior_targets` (`targets.py`) computes the same map out of core: `Moments`
accumulates the mean and the centred scatter (`D x D`, float64) of chunks or of whole shards'
moments (`shard_moments`, TF ops a tf.data service worker runs), combined exactly by `combine`
(Chan et al.), and `Moments.projection` gives the map as TF ops (docs/SPEC.md §11).
"""

from typing import Callable

import numpy as np
import tensorflow as tf


def pca_standardize(features: np.ndarray, components: int) -> np.ndarray:
  """ReLA-D's projection: PCA onto `components` directions, then each one standardised.

  Args:
    features: `[M, D]` features of `M` examples.
    components: `k <= D`, directions kept (those of the largest variance, in order).

  Returns:
    `[M, k]` float32: `(X - mean) @ V_k` with `V_k` the top-`k` right singular vectors of the
    centred `X` (each signed so that its largest-magnitude entry is positive, for
    reproducibility), each column then shifted and scaled to mean 0 and standard deviation 1
    over the `M` examples (a constant column stays 0).
  """
  x = np.asarray(features, np.float64)
  centred = x - x.mean(axis=0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  vt = vt[:components]
  signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
  projected = centred @ (vt * signs[:, None]).T
  projected -= projected.mean(axis=0)
  std = projected.std(axis=0)
  return (projected / np.where(std > 0, std, 1.0)).astype(np.float32)


def combine(a, b):
  """Two `(count, mean, centred scatter)` combined exactly (Chan et al.; NumPy or TF float64).

  `count`s are float64 (exact below 2^53 examples); `b`'s must be positive.
  """
  (count_a, mean_a, scatter_a), (count_b, mean_b, scatter_b) = a, b
  count = count_a + count_b
  delta = mean_b - mean_a
  return (count, mean_a + delta * (count_b / count),
          scatter_a + scatter_b + delta[:, None] * delta[None, :] * (count_a * count_b / count))


def shard_moments(chunks: tf.data.Dataset) -> dict:
  """`{"count", "mean", "scatter"}` (float64) of a raw shard's chunks of features (TF ops).

  Each chunk's own mean and centred scatter, combined with `combine`: on a tf.data service
  worker, which returns these `O(D^2)` numbers only.
  """
  dim = chunks.element_spec["features"].shape[-1]

  def step(state, chunk):
    x = tf.cast(chunk["features"], tf.float64)
    mean = tf.reduce_mean(x, axis=0)
    centred = x - mean
    return combine(state, (tf.cast(tf.shape(x)[0], tf.float64), mean,
                            tf.matmul(centred, centred, transpose_a=True)))

  zero = (tf.constant(0.0, tf.float64), tf.zeros([dim], tf.float64),
          tf.zeros([dim, dim], tf.float64))
  count, mean, scatter = chunks.filter(lambda c: tf.shape(c["features"])[0] > 0).reduce(
      zero, step)
  return {"count": count, "mean": mean, "scatter": scatter}


class Moments:
  """Mean and covariance of `[n, D]` features, from chunks or shards' moments, in float64.

  Each part's mean and centred scatter matrix, combined exactly (`combine`): no sum of
  squares, whatever the features' offset.
  """

  def __init__(self):
    self.count, self.mean, self.scatter = 0.0, None, None

  def add(self, chunk):
    """Adds a chunk `{"features": [n, D]}` (returned unchanged)."""
    x = np.asarray(chunk["features"], np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    self.merge(len(x), mean, centred.T @ centred)
    return chunk

  def merge(self, count, mean, scatter):
    """Adds the moments of `count` examples: their mean and centred scatter matrix."""
    count = float(count)
    if not count:
      return
    mean, scatter = np.asarray(mean, np.float64), np.asarray(scatter, np.float64)
    if self.mean is None:
      self.count, self.mean, self.scatter = count, mean, scatter
    else:
      self.count, self.mean, self.scatter = combine((self.count, self.mean, self.scatter),
                                                     (count, mean, scatter))

  def projection(self, width: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """`pca_standardize`'s map (PCA onto `min(width, D)` directions, each standardised).

    A function of TF ops, `[n, D]` features to `[n, k]` float32 targets, whose constants (the
    mean, the directions, the scales: `O(D k)`) are all it holds: pass 2 runs it here or on
    tf.data service workers alike.
    """
    covariance = self.scatter / self.count
    variances, vectors = np.linalg.eigh(covariance)  # ascending
    k = min(width, len(variances))
    variances, vectors = variances[::-1][:k], vectors[:, ::-1][:, :k].T
    signs = np.sign(vectors[np.arange(k), np.abs(vectors).argmax(axis=1)])
    vectors = (vectors * signs[:, None]).T
    std = np.sqrt(np.maximum(variances, 0.0))
    scale = np.where(std > 1e-12 * max(std.max(), 1e-300), std, np.inf)
    mean = self.mean

    def project(features):
      x = tf.cast(features, tf.float64)
      return tf.cast(tf.matmul(x - mean, vectors) / scale, tf.float32)

    return project
