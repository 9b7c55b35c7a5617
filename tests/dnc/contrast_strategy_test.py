"""`tfjest.by_cluster` under MirroredStrategy (2 logical CPUs): where the cluster mix holds.

Each replica receives a contiguous `N / R` of every global batch of `N`; with
`negatives="per_replica"` each replica's slice is one cluster (and the replicas' clusters may
differ), with `negatives="global"` the whole batch is. The two logical CPU devices are
configured when this module is imported, before any op (pytest's conftest.py does it earlier).
"""

from tfjest import testing

testing.configure_cpu_devices(2)  # before any op; a no-op if conftest.py did it

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import tempfile

import numpy as np
import tensorflow as tf

import tfjest

N, R = 16, 2


def setUpModule():
  testing.require_cpu_devices(2)


class ByClusterStrategyTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.strategy = testing.cpu_mirrored_strategy(2)  # the process's one (collective keys)
    work = tempfile.mkdtemp()
    cls.stream = testing.stream("contrastive", n=128)
    cache = tfjest.cache_reference(testing.dual_encoder(seed=1, name="base"), cls.stream,
                                   os.path.join(work, "cache"))
    cls.clusters = tfjest.cluster_reference(cache, os.path.join(work, "k"), num_clusters=4)
    cls.truth = dict(zip(cls.clusters.ids.tolist(), cls.clusters.assignments.tolist()))

  def _replica_clusters(self, negatives):
    grouping = tfjest.by_cluster(self.clusters, group_size=N, num_replicas=R,
                                 negatives=negatives)
    batches = self.stream.repeat().apply(grouping).batch(N).take(6)
    seen = []
    for batch in self.strategy.experimental_distribute_dataset(batches):
      shards = self.strategy.experimental_local_results(batch["id"])
      self.assertLen(shards, R)
      seen.append([{self.truth[i] for i in shard.numpy().tolist()} for shard in shards])
    return seen

  def test_per_replica_negatives_give_each_replica_one_cluster(self):
    seen = self._replica_clusters("per_replica")
    for replicas in seen:
      for clusters in replicas:
        self.assertLen(clusters, 1, seen)
    # The replicas' clusters are chosen independently: some steps mix two clusters.
    self.assertTrue(any(replicas[0] != replicas[1] for replicas in seen), seen)

  def test_global_negatives_give_every_replica_the_same_cluster(self):
    for replicas in self._replica_clusters("global"):
      self.assertLen(replicas[0] | replicas[1], 1, replicas)

  def test_attach_trains_on_cluster_conditioned_super_batches(self):
    with self.strategy.scope():
      model = testing.dual_encoder(seed=0)
    selector = tfjest.attach(model, tfjest.select(learner=model, batch_size=4,
                                                  super_batch_size=N, method="uniform"))
    grouping = tfjest.by_cluster(self.clusters, group_size=N, num_replicas=R,
                                 negatives="per_replica")
    model.fit(self.stream.repeat().apply(grouping).apply(selector), steps_per_epoch=3,
              epochs=1, verbose=0)
    self.assertEqual(int(model.optimizer.iterations.numpy()), 3)
    self.assertTrue(np.all(np.isfinite(model.get_weights()[0])))
    self.assertGreaterEqual(grouping.stats.result()["emitted"], 3 * N)


if __name__ == "__main__":
  tf.test.main()
