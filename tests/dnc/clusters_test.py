"""`tfjest.kmeans` against a NumPy oracle, and the stored clusters (`tfjest.cluster_reference`)."""

import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest.dnc import clusters as clusters_lib
from tfjest import testing

M = 96


def _numpy_lloyd(x, centroids, iterations):
  """The oracle: textbook Lloyd in float64; an empty cluster keeps its centroid."""
  x, centroids = x.astype(np.float64), np.array(centroids, np.float64)
  for _ in range(iterations):
    assign = np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    for c in range(len(centroids)):
      if (assign == c).any():
        centroids[c] = x[assign == c].mean(0)
  assign = np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
  return assign, centroids


def _blobs(num_clusters, per_cluster, seed=0, d=6):
  rng = np.random.default_rng(seed)
  centres = rng.normal(scale=8.0, size=(num_clusters, d))
  labels = np.repeat(np.arange(num_clusters), per_cluster)
  return (centres[labels] + rng.normal(size=(len(labels), d))).astype(np.float32), labels


class KMeansTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(1, 2, 5)
  def test_matches_numpy_lloyd_for_a_fixed_initialisation(self, iterations):
    x = np.random.default_rng(3).normal(size=(200, 5)).astype(np.float32)
    init = x[[0, 1, 2, 3]]
    want_assign, want_centroids = _numpy_lloyd(x, init, iterations)
    # Streamed in batches that do not divide the data: the sums must not depend on them.
    got = tfjest.kmeans(tf.data.Dataset.from_tensor_slices(x), 4, initial_centroids=init,
                        iterations=iterations, batch_size=37)
    self.assertAllClose(got.centroids, want_centroids, atol=1e-9)
    assign, distance = clusters_lib.nearest_centroid(x, got.centroids)
    self.assertAllEqual(assign, want_assign)
    self.assertAllClose(distance.numpy().sum(), got.inertia, rtol=1e-9)
    self.assertEqual((got.iterations, got.num_examples), (iterations, 200))

  def test_empty_cluster_keeps_its_centroid(self):
    x = np.array([[0.0], [1.0], [10.0]], np.float32)
    got = tfjest.kmeans(x, 3, initial_centroids=[[0.0], [1.0], [100.0]], iterations=1)
    self.assertAllClose(got.centroids, [[0.0], [5.5], [100.0]])
    got = tfjest.kmeans(x, 3, initial_centroids=[[0.0], [1.0], [100.0]], iterations=2)
    self.assertAllClose(got.centroids, [[0.5], [10.0], [100.0]])

  def test_kmeans_plus_plus_is_deterministic_from_the_seed_and_finds_separated_blobs(self):
    x, labels = _blobs(4, 30)
    a = tfjest.kmeans(x, 4, seed=7)
    b = tfjest.kmeans(x, 4, seed=7)
    self.assertAllEqual(a.centroids, b.centroids)
    assign = clusters_lib.nearest_centroid(x, a.centroids)[0].numpy()
    # Every blob is one cluster (a permutation of the labels).
    self.assertEqual(len({(l, c) for l, c in zip(labels, assign)}), 4)
    self.assertLess(a.iterations, 20)  # converged (tolerance 0): the centroids stopped moving

  @parameterized.named_parameters(
      ("zero_clusters", dict(num_clusters=0), r"Received: num_clusters=0"),
      ("bool_clusters", dict(num_clusters=True), r"Received: num_clusters=True"),
      ("more_clusters_than_examples", dict(num_clusters=11),
       r"at least as many examples as clusters, but there are 10\. Received: num_clusters=11"),
      ("iterations", dict(num_clusters=2, iterations=0), r"Received: iterations=0"),
      ("seed", dict(num_clusters=2, seed=-1), r"Received: seed=-1"),
      ("init_shape", dict(num_clusters=2, initial_centroids=[[0.0, 1.0]]),
       r"\[2, 3\]\. Received: initial_centroids of shape \(1, 2\)"),
  )
  def test_bad_arguments(self, kwargs, message):
    x = np.zeros((10, 3), np.float32)
    with self.assertRaisesRegex(ValueError, message):
      tfjest.kmeans(x, **kwargs)

  def test_bad_embeddings(self):
    with self.assertRaisesRegex(ValueError, r"Received: embeddings of shape \(4,\)"):
      tfjest.kmeans(np.zeros(4), 2)
    with self.assertRaisesRegex(ValueError, r"one float vector \[d\] per element"):
      tfjest.kmeans(tf.data.Dataset.range(4), 2)


class ClusterReferenceTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.base, cls.stream, cls.cache, cls.clusters = testing.cached_clusters(cls.dir, n=M)

  def test_assignments_are_kmeans_of_the_cached_image_embeddings(self):
    embeddings = self.cache.array("image_embeddings")
    want = tfjest.kmeans(embeddings, 4, seed=0)
    self.assertAllClose(self.clusters.centroids, want.centroids)
    assign = clusters_lib.nearest_centroid(embeddings, want.centroids)[0].numpy()
    self.assertAllEqual(self.clusters.assignments, assign)
    self.assertAllEqual(self.clusters.ids, self.cache.ids)
    self.assertEqual(int(self.clusters.sizes.sum()), M)

  def test_reuse_load_and_staleness(self):
    path = os.path.join(self.get_temp_dir(), "reuse")
    first = tfjest.cluster_reference(self.cache, path, num_clusters=3, reuse=True)
    self.assertFalse(first.reused)
    self.assertEqual(first.rebuild_reason, "no clusters at this path")
    again = tfjest.cluster_reference(self.cache, path, num_clusters=3, reuse=True)
    self.assertTrue(again.reused)
    self.assertAllEqual(again.assignments, first.assignments)
    other = tfjest.cluster_reference(self.cache, path, num_clusters=3, seed=1, reuse=True)
    self.assertRegex(other.rebuild_reason, "other settings")
    # Clusters of another base model's embeddings are stale for this one.
    other_base = testing.dual_encoder(seed=5, name="other")
    other_cache = tfjest.cache_reference(other_base, self.stream,
                                         os.path.join(self.get_temp_dir(), "other_cache"))
    stale = tfjest.cluster_reference(other_cache, path, num_clusters=3, seed=1, reuse=True)
    self.assertRegex(stale.rebuild_reason, "reference cache's contents .* differ")
    self.assertNotEqual(stale.source_fingerprint, again.source_fingerprint)
    loaded = tfjest.Clusters.load(path)
    self.assertAllEqual(loaded.assignments, stale.assignments)
    with self.assertRaisesRegex(ValueError, "already exists there"):
      tfjest.cluster_reference(self.cache, path, num_clusters=3)
    with self.assertRaisesRegex(ValueError, "holding clusters. Received: format='tfjest.store', "
                                "version=3, kind='reference_cache'"):
      tfjest.Clusters.load(self.cache.path)

  @parameterized.named_parameters(
      ("zero", dict(num_clusters=0), r"Received: num_clusters=0"),
      ("too_many", dict(num_clusters=M + 1),
       rf"at most the number of examples in the cache \({M}\)\. Received: num_clusters={M + 1}"),
      ("features", dict(num_clusters=2, features="audio"), r"Received: features='audio'"),
      ("iterations", dict(num_clusters=2, iterations=0), r"Received: iterations=0"),
  )
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      tfjest.cluster_reference(self.cache, os.path.join(self.get_temp_dir(), "bad"), **kwargs)

  def test_bad_caches(self):
    with self.assertRaisesRegex(TypeError, r"Received: cache of type str"):
      tfjest.cluster_reference("cache", self.get_temp_dir(), num_clusters=2)
    classifier_cache = tfjest.cache_reference(
        testing.classifier(seed=1), testing.stream("classification", n=16),
        os.path.join(self.get_temp_dir(), "classifier_cache"))
    with self.assertRaisesRegex(ValueError, r"Received: cache with task='classification'"):
      tfjest.cluster_reference(classifier_cache, self.get_temp_dir(), num_clusters=2)


if __name__ == "__main__":
  tf.test.main()
