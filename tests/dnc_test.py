"""Divide and Contrast: k-means against a NumPy oracle, the stored clusters, `by_cluster`."""

import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import clusters as clusters_lib
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


class ClusterTestCase(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.base = testing.dual_encoder(seed=1, name="base")
    cls.stream = testing.stream("contrastive", n=M)
    cls.cache = tfjest.cache_reference(cls.base, cls.stream, os.path.join(cls.dir, "cache"))
    cls.clusters = tfjest.cluster_reference(cls.cache, os.path.join(cls.dir, "k4"),
                                            num_clusters=4, seed=0)
    cls.truth = dict(zip(cls.clusters.ids.tolist(), cls.clusters.assignments.tolist()))

  def _clusters_of(self, ids):
    return np.array([self.truth[i] for i in np.asarray(ids).tolist()])


class ClusterReferenceTest(ClusterTestCase):

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
    self.assertRegex(stale.rebuild_reason, "another reference")
    with self.assertRaisesRegex(ValueError, "other reference weights"):
      stale.check_reference(self.base)
    loaded = tfjest.Clusters.load(path)
    self.assertAllEqual(loaded.assignments, stale.assignments)
    with self.assertRaisesRegex(ValueError, "already exist there"):
      tfjest.cluster_reference(self.cache, path, num_clusters=3)
    with self.assertRaisesRegex(ValueError, "Expected a tfjest.clusters of version 1"):
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


class ByClusterTest(ClusterTestCase):

  def _groups(self, dataset, size):
    return [b["id"].numpy() for b in dataset.batch(size)]

  def test_ids_are_joined_to_the_right_examples_under_shuffling(self):
    shuffled = self.stream.shuffle(M, seed=3)
    grouping = tfjest.by_cluster(self.clusters, group_size=8)
    groups = self._groups(shuffled.apply(grouping), 8)
    self.assertNotEmpty(groups)
    emitted = np.concatenate(groups)
    self.assertLen(set(emitted.tolist()), len(emitted))  # no example twice
    for ids in groups:
      self.assertLen(set(self._clusters_of(ids)), 1, ids)
    # In the graph, the join gives each example its own id's cluster.
    batch = next(iter(shuffled.batch(M)))
    self.assertAllEqual(self.clusters.cluster_of(batch), self._clusters_of(batch["id"]))
    self.assertEqual(int(self.clusters.cluster_of({k: v[5] for k, v in batch.items()})),
                     self.truth[int(batch["id"][5])])

  @parameterized.named_parameters(
      ("one_cluster", 12, 1, 1, "global"),
      ("two_clusters", 12, 2, 1, "global"),
      ("three_clusters", 12, 3, 1, "global"),
      ("per_replica_one", 12, 1, 2, "per_replica"),
      ("per_replica_two", 16, 2, 2, "per_replica"),
  )
  def test_each_group_has_the_configured_mix(self, group_size, m, replicas, negatives):
    grouping = tfjest.by_cluster(self.clusters, group_size=group_size, clusters_per_group=m,
                                 num_replicas=replicas, negatives=negatives)
    groups = self._groups(self.stream.shuffle(M, seed=1).apply(grouping), group_size)
    self.assertNotEmpty(groups)
    unit = group_size // (replicas if negatives == "per_replica" else 1)
    w = unit // m
    for ids in groups:
      self.assertLen(ids, group_size)
      for start in range(0, group_size, unit):
        clusters = self._clusters_of(ids[start:start + unit])
        runs = clusters.reshape(m, w)
        # m runs of w consecutive examples, each one cluster, all different clusters.
        self.assertTrue((runs == runs[:, :1]).all(), clusters)
        self.assertLen(set(runs[:, 0]), m, clusters)

  @parameterized.parameters(1, 2)
  def test_every_example_is_emitted_or_counted(self, m):
    grouping = tfjest.by_cluster(self.clusters, group_size=10, clusters_per_group=m)
    emitted = sum(len(ids) for ids in self._groups(self.stream.apply(grouping), 10))
    stats = grouping.stats.result()
    self.assertEqual(stats["read"], M)
    self.assertEqual(stats["emitted"], emitted)
    self.assertEqual(stats["read"], stats["emitted"] + stats["left_over"])
    self.assertGreater(stats["left_over"], 0)  # 4 clusters of ~24 do not fill windows of 10/m
    self.assertEqual(sum(stats["per_cluster"]), emitted)
    self.assertEqual(stats["groups"], emitted // 10)

  def test_infinite_stream_stays_infinite(self):
    grouping = tfjest.by_cluster(self.clusters, group_size=8)
    out = self.stream.repeat().apply(grouping)
    self.assertEqual(int(tf.data.experimental.cardinality(out)),
                     int(tf.data.INFINITE_CARDINALITY))
    ids = np.concatenate(self._groups(out.take(8 * 30), 8))
    self.assertLen(ids, 240)

  def test_composes_with_select_under_fit(self):
    model = testing.dual_encoder(seed=0)
    grouping = tfjest.by_cluster(self.clusters, group_size=16)
    selector = tfjest.select(learner=model, reference_cache=self.cache, id_key="id",
                             batch_size=4, super_batch_size=16, num_chunks=2)
    selected = self.stream.repeat().shuffle(M, seed=0).apply(grouping).apply(selector)
    for batch in selected.take(5):  # every selected batch from one cluster: hard candidates
      self.assertLen(set(self._clusters_of(batch["id"])), 1)
    history = model.fit(selected, steps_per_epoch=3, epochs=2, verbose=0)
    self.assertLen(history.history["loss"], 2)
    self.assertEqual(int(model.optimizer.iterations), 6)
    self.assertGreaterEqual(int(selector.stats.result()["selected"]), 6 * 4)

  def test_missing_id_stops_the_pipeline_naming_it(self):
    grouping = tfjest.by_cluster(self.clusters, group_size=8)
    extra = testing.stream("contrastive", n=M + 1)  # id M was never clustered
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                rf"no entry for example id {M} .*Received: id={M}"):
      for _ in extra.apply(grouping):
        pass

  def test_changed_inputs_stop_the_pipeline(self):
    grouping = tfjest.by_cluster(self.clusters, group_size=8)
    changed = self.stream.map(lambda e: {**e, "image": e["image"] + 1.0})
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "computed from other inputs"):
      for _ in changed.apply(grouping):
        pass

  @parameterized.named_parameters(
      ("group_size", dict(group_size=0), r"Received: group_size=0"),
      ("clusters_per_group", dict(group_size=8, clusters_per_group=0),
       r"Received: clusters_per_group=0"),
      ("more_than_k", dict(group_size=10, clusters_per_group=5),
       r"at most the number of clusters \(4\)\. Received: clusters_per_group=5"),
      ("not_dividing", dict(group_size=10, clusters_per_group=3),
       r"must divide the examples that hold the mix \(10\)\. Received: clusters_per_group=3"),
      ("per_replica", dict(group_size=10, num_replicas=4, negatives="per_replica"),
       r"num_replicas=4 must divide group_size\. Received: group_size=10"),
      ("negatives", dict(group_size=8, negatives="local"), r"Received: negatives='local'"),
      ("id_key", dict(group_size=8, id_key=""), r"Received: id_key=''"),
  )
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      tfjest.by_cluster(self.clusters, **kwargs)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(TypeError, r"Received: clusters of type ReferenceCache"):
      tfjest.by_cluster(self.cache, group_size=8)
    grouping = tfjest.by_cluster(self.clusters, group_size=8)
    with self.assertRaisesRegex(ValueError, r"ends in a batch\(\) op"):
      self.stream.batch(4).apply(grouping)
    with self.assertRaisesRegex(ValueError, r"no feature 'uid'"):
      self.stream.apply(tfjest.by_cluster(self.clusters, group_size=8, id_key="uid"))
    with self.assertRaisesRegex(TypeError, r"Received: dataset of type list"):
      grouping([1, 2])


if __name__ == "__main__":
  tf.test.main()
