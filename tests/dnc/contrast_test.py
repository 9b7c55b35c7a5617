"""`tfjest.by_cluster`: cluster-conditioned super-batches (Divide and Contrast)."""

import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

M = 96


class ByClusterTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _, cls.stream, cls.cache, cls.clusters = testing.cached_clusters(tempfile.mkdtemp(), n=M)
    cls.truth = dict(zip(cls.clusters.ids.tolist(), cls.clusters.assignments.tolist()))

  def _clusters_of(self, ids):
    return np.array([self.truth[i] for i in np.asarray(ids).tolist()])

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
