"""Divide and Contrast (DnC, arXiv 2105.08054): a cluster id per example, built once.

Divide: `cluster_reference(cache, path, num_clusters=k)` runs k-means on a frozen model's
embeddings, streamed from a reference cache's shards (`tfjest.cache_reference` of that model:
the reference, or any frozen base model), and stores one cluster id per example in the store
every per-example value uses (`tfjest/store/`): one value shard per shard of the cache, in its
order, with its ids and input fingerprints, the cache's contents fingerprinted as the store's
`source`. In the stream every id must be present and (with `verify_inputs`) every example's
inputs must hash to what was clustered, or the pipeline stops with an error naming the id.
`reuse=True` returns the stored clusters when they were computed from the same cache contents
with the same k-means settings (`tfjest.store.shards.stale_reason`).

Why our own k-means: `kmeans` is Lloyd's algorithm written as passes over a `tf.data.Dataset`
(one `reduce` of per-cluster sums and counts per iteration, memory `O(k * d)`), seeded k-means++
initialisation on the first `init_size` rows, float64 accumulation, and a fixed iteration order,
so the result is deterministic from the seed and the same on every machine. Exact Lloyd
rather than mini-batch k-means, because the input (a cache of `M * d` floats, streamed from
disk) is cheap enough to pass over a few dozen times and mini-batch updates depend on batch
order and size.
scikit-learn's `KMeans` (Lloyd or Elkan, several k-means++ restarts, `n_init`) is better
tuned and well kept and would give lower inertia for the same k; it is not a dependency of
tfjest and needs the embeddings as one in-memory NumPy array. Users who prefer it can pass
its centroids as `initial_centroids` with `iterations=1`: tfjest then only assigns and stores.
(`tf.compat.v1.estimator.experimental.KMeans` is gone from TensorFlow 2.x.)

Contrast: `tfjest.by_cluster` (`tfjest/dnc/contrast.py`) reorders a stream into cluster-conditioned
groups that `tfjest.select` reads as super-batches.
"""

import dataclasses
import hashlib
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from tfjest import checks
from tfjest.store import fingerprints
from tfjest.store import reference as reference_lib
from tfjest.store import values as values_lib

FEATURES = ("image", "text", "both")


@dataclasses.dataclass(frozen=True)
class KMeansResult:
  """What `kmeans` found.

  Attributes:
    centroids: `[k, d]` float64.
    inertia: sum of squared distances of the examples to their centroids (last pass).
    iterations: Lloyd iterations run (fewer than asked when the centroids stopped moving).
    num_examples: `M`, examples seen per pass.
  """

  centroids: np.ndarray
  inertia: float
  iterations: int
  num_examples: int


def nearest_centroid(x, centroids):
  """`([n] int64 cluster, [n] squared distance)` of each row of `x` `[n, d]` (graph-safe).

  Ties go to the lowest cluster index.
  """
  x = tf.cast(x, tf.float64)
  centroids = tf.cast(centroids, tf.float64)
  distances = (tf.reduce_sum(x * x, axis=1, keepdims=True) - 2.0 * tf.matmul(
      x, centroids, transpose_b=True) + tf.reduce_sum(centroids * centroids, axis=1)[None, :])
  return tf.argmin(distances, axis=1), tf.maximum(tf.reduce_min(distances, axis=1), 0.0)


@tf.function
def _lloyd_pass(batches, centroids):
  """Per-cluster sums `[k, d]`, counts `[k]`, inertia and example count over one pass."""
  k, d = tf.shape(centroids)[0], tf.shape(centroids)[1]

  def accumulate(state, x):
    sums, counts, inertia, seen = state
    assignment, distance = nearest_centroid(x, centroids)
    x = tf.cast(x, tf.float64)
    return (sums + tf.math.unsorted_segment_sum(x, assignment, k),
            counts + tf.math.unsorted_segment_sum(tf.ones_like(distance), assignment, k),
            inertia + tf.reduce_sum(distance), seen + tf.shape(x, out_type=tf.int64)[0])

  start = (tf.zeros([k, d], tf.float64), tf.zeros([k], tf.float64), tf.constant(0.0, tf.float64),
           tf.constant(0, tf.int64))
  return batches.reduce(start, accumulate)


def _kmeans_plus_plus(rows: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """k-means++ seeding (Arthur and Vassilvitskii 2007) on `rows` `[n, d]` float64."""
  centroids = [rows[rng.integers(len(rows))]]
  closest = np.sum((rows - centroids[0]) ** 2, axis=1)
  for _ in range(1, k):
    total = closest.sum()
    # All rows on a centroid already (duplicates): any row is as good as another.
    index = rng.integers(len(rows)) if total <= 0 else rng.choice(len(rows), p=closest / total)
    centroids.append(rows[index])
    closest = np.minimum(closest, np.sum((rows - rows[index]) ** 2, axis=1))
  return np.stack(centroids)


def kmeans(embeddings, num_clusters: int, *, seed: int = 0, iterations: int = 20,
           initial_centroids=None, batch_size: int = 4096, init_size: Optional[int] = None,
           tolerance: float = 0.0) -> KMeansResult:
  """Lloyd's k-means over a stream of embeddings, deterministic from `seed`.

  Each iteration is one pass over `embeddings` that sums the examples of each cluster (memory
  `O(k * d)`, whatever the number of examples); the centroids then move to the means. A
  cluster that receives no example keeps its centroid. Stops after `iterations` passes, or
  earlier once no centroid moves by more than `tolerance` (Euclidean).

  >>> import numpy as np
  >>> import tfjest
  >>> points = np.array([[0., 0.], [0., 1.], [10., 0.], [10., 1.]], np.float32)
  >>> result = tfjest.kmeans(points, 2, initial_centroids=[[1., 0.], [9., 0.]])
  >>> result.centroids.tolist(), result.inertia
  ([[0.0, 0.5], [10.0, 0.5]], 1.0)

  Args:
    embeddings: a `tf.data.Dataset` of `[d]` float vectors (one example per element), or an
      `[M, d]` array.
    num_clusters: `k >= 1`; at most the number of examples.
    seed: int >= 0, seeds k-means++ (unused with `initial_centroids`).
    iterations: Lloyd passes, >= 1.
    initial_centroids: optional `[k, d]` starting centroids instead of k-means++.
    batch_size: examples per step of a pass.
    init_size: rows (the stream's first) that k-means++ seeds from; default `max(1024, 20 k)`.
    tolerance: stop once every centroid moves less than this.

  Returns:
    A `KMeansResult`.

  Raises:
    ValueError: on an argument outside its domain, fewer examples than `num_clusters`, or
      `initial_centroids` of another shape than `[num_clusters, d]`.
  """
  checks.integer(num_clusters, "num_clusters", minimum=1)
  checks.integer(seed, "seed", minimum=0)
  checks.integer(iterations, "iterations", minimum=1)
  checks.integer(batch_size, "batch_size", minimum=1)
  init_size = max(1024, 20 * num_clusters) if init_size is None else init_size
  checks.integer(init_size, "init_size", minimum=num_clusters)
  if not isinstance(embeddings, tf.data.Dataset):
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
      raise ValueError(f"embeddings must be a Dataset of vectors or an [M, d] array. "
                       f"Received: embeddings of shape {embeddings.shape}")
    embeddings = tf.data.Dataset.from_tensor_slices(embeddings)
  spec = embeddings.element_spec
  if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 1 or not spec.dtype.is_floating:
    raise ValueError(f"embeddings must yield one float vector [d] per element. "
                     f"Received: element_spec={spec}")
  if initial_centroids is None:
    sample = np.concatenate([b.numpy() for b in embeddings.take(init_size).batch(4096)])
    if len(sample) < num_clusters:
      raise ValueError(f"k-means needs at least as many examples as clusters, but there are "
                       f"{len(sample)}. Received: num_clusters={num_clusters}")
    centroids = _kmeans_plus_plus(sample.astype(np.float64), num_clusters,
                                  np.random.default_rng(seed))
  else:
    centroids = np.asarray(initial_centroids, np.float64)
    if centroids.shape != (num_clusters, spec.shape[0]):
      raise ValueError(f"initial_centroids must have shape [num_clusters, d] = "
                       f"[{num_clusters}, {spec.shape[0]}]. Received: initial_centroids of "
                       f"shape {centroids.shape}")
  batches = embeddings.batch(batch_size)
  done = 0
  for done in range(1, iterations + 1):
    sums, counts, inertia, seen = (t.numpy() for t in _lloyd_pass(batches, centroids))
    if seen < num_clusters:
      raise ValueError(f"k-means needs at least as many examples as clusters, but there are "
                       f"{seen}. Received: num_clusters={num_clusters}")
    moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids)
    shift = float(np.max(np.linalg.norm(moved - centroids, axis=1)))
    centroids = moved
    if shift <= tolerance:
      break
  # The inertia of the final centroids: one more pass.
  _, _, inertia, seen = (t.numpy() for t in _lloyd_pass(batches, centroids))
  return KMeansResult(centroids, float(inertia), done, int(seen))


def balanced_slots(sizes, num_slots: int) -> np.ndarray:
  """`[k]` slot of each cluster: greedy by size so the slots hold similar numbers of examples.

  Largest cluster first, each into the slot with the fewest examples so far (ties: lowest
  slot); deterministic.
  """
  sizes = np.asarray(sizes)
  slots, totals = np.zeros(len(sizes), np.int64), np.zeros(num_slots, np.int64)
  for c in np.argsort(-sizes, kind="stable"):
    slots[c] = int(np.argmin(totals))
    totals[slots[c]] += sizes[c]
  return slots


class Clusters(values_lib.Store):
  """One k-means cluster id per example id (DnC's divide step), joined to a stream by id.

  Create one with `cluster_reference` or `Clusters.load(path)`. Besides a store's attributes
  (`path`, `metadata`, `num_examples`, `num_shards`, `verify_inputs`, `reused`,
  `rebuild_reason`):

  Attributes:
    num_clusters: `k`.
    centroids: `[k, d]` float64.
    sizes: `[k]` int64, examples per cluster.
    assignments: `[M]` int64, the cluster of `ids[i]` (reads the store once).
  """

  KIND = "clusters"
  NAME = "clusters"
  BUILDER = "tfjest.cluster_reference(...)"
  SOURCE = "reference cache's contents (weights, ids, inputs)"
  FEATURES = {"cluster": "cluster"}

  def __init__(self, path: str, metadata: dict, verify_inputs: bool = True):
    super().__init__(path, metadata, verify_inputs=verify_inputs)
    kmeans_meta = metadata["kmeans"]
    self.num_clusters = int(kmeans_meta["num_clusters"])
    self.centroids = np.asarray(kmeans_meta["centroids"], np.float64)
    self.sizes = np.asarray(kmeans_meta["sizes"], np.int64)

  @property
  def assignments(self) -> np.ndarray:
    return self.array("cluster").astype(np.int64)

  def cluster_of(self, element, id_key: str = "id") -> tf.Tensor:
    """int64 cluster id of an element (scalar), or `[n]` of `n` stacked ones (graph-safe).

    Raises:
      tf.errors.InvalidArgumentError: when run, if an id is missing or (with `verify_inputs`)
        an example's inputs differ from those that were clustered.
    """
    single = fingerprints.find_id(element, id_key).shape.rank == 0
    if single:
      element = tf.nest.map_structure(lambda t: tf.expand_dims(t, 0), element)
    clusters = self.values_for(element, id_key)["cluster"]
    return clusters[0] if single else clusters


def cluster_reference(cache: reference_lib.ReferenceCache, path: str, *, num_clusters: int,
                      features: str = "image", seed: int = 0, iterations: int = 20,
                      initial_centroids=None, overwrite: bool = False,
                      reuse: bool = False) -> Clusters:
  """Clusters the examples of a reference cache by k-means on their stored embeddings.

  >>> import os
  >>> import tempfile
  >>> import tfjest
  >>> from tfjest import testing
  >>> base = testing.dual_encoder(seed=1)   # the frozen base model (e.g. the reference)
  >>> train_ds = testing.stream("contrastive", n=64)
  >>> cache = tfjest.cache_reference(base, train_ds, os.path.join(tempfile.mkdtemp(), "c"))
  >>> clusters = tfjest.cluster_reference(cache, os.path.join(tempfile.mkdtemp(), "k"),
  ...                                     num_clusters=4, seed=0)
  >>> clusters.num_clusters, int(clusters.sizes.sum())
  (4, 64)

  Args:
    cache: a contrastive `ReferenceCache` (from `tfjest.cache_reference` of the base model).
    path: the directory to write (created).
    num_clusters: `k`, between 1 and the number of examples.
    features: the embeddings clustered: "image", "text" or "both" (concatenated).
    seed: int >= 0, seeds k-means++.
    iterations: Lloyd passes.
    initial_centroids: `[k, d]` starting centroids instead of k-means++ (e.g. from
      scikit-learn; see the module docstring).
    overwrite: replace clusters already at `path`.
    reuse: return the clusters at `path` when they were computed from this cache's contents
      (reference fingerprint, ids, inputs) with the same settings, else compute them again
      (no `overwrite` needed); `reused` and `rebuild_reason` say which and why.

  Returns:
    The `Clusters`.

  Raises:
    ValueError: on an argument outside its domain (naming it and the value received), a
      cache of a classifier (it holds losses, not embeddings), more clusters than examples,
      or existing clusters at `path` without `overwrite` or `reuse`.
    TypeError: if `cache` is not a `ReferenceCache`.
  """
  if not isinstance(cache, reference_lib.ReferenceCache):
    raise TypeError(f"cache must be a tfjest.ReferenceCache (tfjest.cache_reference of the base "
                    f"model). Received: cache of type {type(cache).__name__}")
  if cache.task != "contrastive":
    raise ValueError(f"k-means needs embeddings, but the cache at {cache.path!r} holds a "
                     f"classifier's losses. Cache a dual encoder. Received: cache with "
                     f"task={cache.task!r}")
  checks.integer(num_clusters, "num_clusters", minimum=1)
  if num_clusters > cache.num_examples:
    raise ValueError(f"num_clusters must be at most the number of examples in the cache "
                     f"({cache.num_examples}). Received: num_clusters={num_clusters}")
  if features not in FEATURES:
    raise ValueError(f"Expected features in {FEATURES}. Received: features={features!r}")
  checks.integer(seed, "seed", minimum=0)
  checks.integer(iterations, "iterations", minimum=1)
  given = None
  if initial_centroids is not None:  # recorded by a digest of the exact float64 values
    given = hashlib.sha256(np.ascontiguousarray(initial_centroids, np.float64)).hexdigest()
  settings = {"num_clusters": num_clusters, "features": features, "seed": seed,
              "iterations": iterations, "initial_centroids": given}
  # What the clusters are computed from: the cache's source and contents, shard by shard.
  contents = fingerprints.Digest().update(np.array(
      [cache.source_fingerprint, cache.metadata["ids"]["fingerprint"]], object)).hexdigest()
  keys = {"image": ["image_embeddings"], "text": ["text_embeddings"],
          "both": ["image_embeddings", "text_embeddings"]}[features]
  embed = lambda v: tf.concat([v[k] for k in keys], axis=-1)
  result = {}

  def chunks():
    result["kmeans"] = kmeans(cache.read().map(embed), num_clusters, seed=seed,
                              iterations=iterations, initial_centroids=initial_centroids)
    sizes = np.zeros(num_clusters, np.int64)
    for index in range(cache.num_shards):
      yield _assigned(cache.shard_dataset(index).batch(65536), embed, result["kmeans"], sizes)
    result["sizes"] = sizes

  clusters = Clusters.build(
      os.fspath(path), source={"name": cache.path, "fingerprint": contents},
      expected={"task": cache.task, "inputs": cache.metadata["inputs"], "settings": settings},
      metadata={"ids": {"dtype": cache.metadata["ids"]["dtype"]}, "source_cache": cache.path},
      late_metadata=lambda: {"kmeans": {
          "num_clusters": num_clusters, "centroids": result["kmeans"].centroids.tolist(),
          "inertia": result["kmeans"].inertia, "iterations_run": result["kmeans"].iterations,
          "sizes": result["sizes"].tolist()}},
      chunks=chunks, num_shards=cache.num_shards, overwrite=overwrite, reuse=reuse)
  return clusters


def _assigned(batches, embed, found: KMeansResult, sizes: np.ndarray):
  for batch in batches:
    cluster = nearest_centroid(embed(batch), found.centroids)[0].numpy()
    np.add.at(sizes, cluster, 1)
    yield {"id": batch["id"].numpy(), "input_fingerprint": batch["input_fingerprint"].numpy(),
           "cluster": cluster.astype(np.int64)}
