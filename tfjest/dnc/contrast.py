"""`tfjest.by_cluster`: cluster-conditioned super-batches (the "contrast" of Divide and Contrast).

DnC (arXiv 2105.08054) trains on batches drawn from one k-means cluster each, so that a
contrastive loss's negatives are hard. As a `tf.data` transformation: the stream of single
examples is reordered so that every consecutive group of `group_size` examples comes from a
controlled cluster mix; `tfjest.select` (which cuts its input into super-batches of `N`
consecutive examples) then picks from cluster-conditioned candidates:

    ds.apply(tfjest.by_cluster(clusters, group_size=N)).apply(
        tfjest.select(..., super_batch_size=N))

How (all in `tf.data`, deterministic for a deterministic input order):
1. join each example's cluster id by example id (`Clusters.values_for`; a missing id or stale
   inputs stop the pipeline with an error naming the id);
2. `group_by_window` by cluster into windows of `w = unit / clusters_per_group` examples;
3. with `clusters_per_group = m > 1`, every cluster is given one of `m` slots (balanced by
   cluster size), each window is numbered within its slot (a `scan`), and windows are grouped
   by that number: a group takes exactly one window from each slot, so its `m` windows come
   from `m` different clusters;
4. with `negatives="per_replica"`, `R` consecutive units of `N / R` make a group of `N`;
5. the groups are flattened back into single examples.

Nothing is dropped silently: at the end of a finite stream the windows and groups that could
not be completed are dropped and counted (`stats.left_over`), so after a full pass
`read == emitted + left_over`. On an infinite stream the incomplete ones stay buffered
(`read - emitted - left_over` examples at any moment: at most about `k * w` examples waiting in
cluster windows, plus windows waiting for a slower slot when `m > 1`).

Under a `tf.distribute` strategy each replica receives a contiguous `N / R` of every
super-batch (`tfjest.attach`, or `fit`'s split of a global batch). `negatives` says where the
cluster mix holds, and so what a contrastive loss's negatives are:
- "global": the mix holds for the whole group of `N`. With one cluster per group every replica's
  shard is from that cluster: the negatives are hard both for a per-replica loss and for a
  loss over all-gathered embeddings (`tfjest.siglip_replica_loss`-style global negatives).
- "per_replica": the mix holds for each replica's slice of `N / num_replicas`: each replica's
  negatives come from its own cluster(s), and a global batch mixes up to `R * m` clusters. Use it
  when each replica's loss sees only its own examples and the global step should still cover
  several clusters.
"""


import tensorflow as tf

from tfjest import batching
from tfjest import checks
from tfjest.dnc import clusters as clusters_lib

NEGATIVES = ("global", "per_replica")
_COUNTS = ("read", "emitted", "left_over")


class ClusterStats(tf.Module):
  """Running counts of a `by_cluster` transformation, kept in variables.

  `read`: examples joined to their cluster; `emitted`: examples in complete groups;
  `left_over`: examples of windows or groups that the end of the stream left incomplete
  (dropped and counted); `groups`: complete groups of `group_size` emitted; `per_cluster`:
  emitted examples per cluster.
  """

  def __init__(self, num_clusters: int, group_size: int, name: str = "cluster_stats"):
    super().__init__(name=name)
    self.group_size = group_size
    with tf.init_scope(), tf.device("/cpu:0"):
      self.counts = {k: tf.Variable(0, dtype=tf.int64, trainable=False, name=k)
                     for k in _COUNTS}
      self.per_cluster = tf.Variable(tf.zeros([num_clusters], tf.int64), trainable=False,
                                     name="per_cluster")

  def result(self) -> dict:
    """`{"read", "emitted", "left_over", "groups": int, "per_cluster": [k] list}`."""
    out = {k: int(v.numpy()) for k, v in self.counts.items()}
    out["groups"] = out["emitted"] // self.group_size
    out["per_cluster"] = self.per_cluster.numpy().tolist()
    return out


class ClusterGrouping:
  """The transformation returned by `by_cluster`: call it (or `dataset.apply` it) on a dataset.

  Attributes:
    clusters: the `Clusters`.
    group_size: `N`, examples per group.
    clusters_per_group: `m`, clusters per group (per replica slice with
      `negatives="per_replica"`).
    num_replicas: `R`.
    negatives: "global" or "per_replica".
    unit: examples that hold the mix: `N`, or `N / R` with "per_replica".
    window_size: `w = unit / m`, consecutive examples of one cluster.
    slots: `[k]` slot of each cluster (`m > 1`).
    stats: the `ClusterStats`.
  """

  def __init__(self, clusters, *, group_size: int, id_key: str, clusters_per_group: int,
               num_replicas: int, negatives: str, join_batch_size: int):
    self.clusters, self.group_size, self.id_key = clusters, group_size, id_key
    self.clusters_per_group, self.num_replicas = clusters_per_group, num_replicas
    self.negatives, self.join_batch_size = negatives, join_batch_size
    self.unit = group_size // num_replicas if negatives == "per_replica" else group_size
    self.window_size = self.unit // clusters_per_group
    self.slots = clusters_lib.balanced_slots(clusters.sizes, clusters_per_group)
    self.stats = ClusterStats(clusters.num_clusters, group_size)
    with tf.init_scope(), tf.device("/cpu:0"):
      self._warned = tf.Variable(False, trainable=False, name="warned_left_over")

  def __call__(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    if not isinstance(dataset, tf.data.Dataset):
      raise TypeError(f"by_cluster(...) applies to a tf.data.Dataset. "
                      f"Received: dataset of type {type(dataset).__name__}")
    batched = batching.batched_by(dataset)
    if batched is not None:
      raise ValueError(
          f"The dataset yields batches (it ends in a {batched} op), but by_cluster(...) takes "
          "one example per element. Apply it before batching (or unbatch() first). "
          f"Received: element_spec={dataset.element_spec}")
    self.clusters.check_element_spec(dataset.element_spec, self.id_key)
    self.clusters.load_in_memory()
    infinite = (int(tf.data.experimental.cardinality(dataset)) ==
                tf.data.INFINITE_CARDINALITY)
    w, m = self.window_size, self.clusters_per_group

    @tf.autograph.experimental.do_not_convert
    def join(*parts):
      element = parts if len(parts) > 1 else parts[0]
      cluster = self.clusters.values_for(element, self.id_key)["cluster"]
      size = tf.shape(cluster, out_type=tf.int64)[0]
      with tf.control_dependencies([self.stats.counts["read"].assign_add(size)]):
        return {"cluster": tf.identity(cluster), "element": element}

    tagged = dataset.batch(self.join_batch_size).map(join).unbatch()
    windows = tagged.group_by_window(
        key_func=lambda e: e["cluster"], reduce_func=lambda _, win: win.batch(w),
        window_size=w).filter(lambda win: self._full_or_count(win, w))
    if m > 1:
      slots = tf.constant(self.slots, tf.int64)

      def number(counters, win):
        slot = tf.gather(slots, win["cluster"][0])
        ordinal = tf.gather(counters, slot)
        counters = tf.tensor_scatter_nd_add(counters, [[slot]], [tf.constant(1, tf.int64)])
        return counters, (ordinal, win)

      windows = (windows.scan(tf.zeros([m], tf.int64), number)
                 .group_by_window(key_func=lambda ordinal, win: ordinal,
                                  reduce_func=lambda _, g: g.map(lambda o, win: win).batch(m),
                                  window_size=m)
                 .filter(lambda group: self._full_or_count(group, m))
                 .map(lambda group: tf.nest.map_structure(
                     lambda t: tf.reshape(t, tf.concat([[m * w], tf.shape(t)[2:]], 0)), group)))
    per_group = self.group_size // self.unit
    if per_group > 1:  # "per_replica": R units of N / R make a group of N
      windows = (windows.batch(per_group)
                 .filter(lambda units: self._full_or_count(units, per_group))
                 .map(lambda units: tf.nest.map_structure(
                     lambda t: tf.reshape(t, tf.concat([[self.group_size], tf.shape(t)[2:]],
                                                       0)), units)))
    out = windows.map(self._count_emitted).unbatch().map(lambda e: e["element"])
    options = tf.data.Options()
    options.experimental_external_state_policy = (
        tf.data.experimental.ExternalStatePolicy.IGNORE)
    out = out.with_options(options)
    # The stream never ends, so neither does this one; say so, for `fit` and `select`.
    return out.repeat() if infinite else out

  @tf.autograph.experimental.do_not_convert
  def _full_or_count(self, block, full: int):
    """True for a complete window or group; counts an incomplete one's examples as left over."""
    size = tf.shape(block["cluster"], out_type=tf.int64)[0]
    return batching.keep_complete(
        tf.equal(size, full), tf.size(block["cluster"], out_type=tf.int64),
        record=self.stats.counts["left_over"].assign_add, warned=self._warned,
        message=("tfjest.by_cluster: the end of the stream left incomplete cluster windows or "
                 "groups; their examples are dropped and counted in stats as left_over (first:",
                 "examples). Shown once."))

  @tf.autograph.experimental.do_not_convert
  def _count_emitted(self, block):
    clusters = tf.reshape(block["cluster"], [-1])
    size = tf.size(clusters, out_type=tf.int64)
    updates = [self.stats.counts["emitted"].assign_add(size),
               self.stats.per_cluster.scatter_nd_add(clusters[:, None], tf.ones_like(clusters))]
    with tf.control_dependencies(updates):
      return tf.nest.map_structure(tf.identity, block)


def by_cluster(clusters: clusters_lib.Clusters, *, group_size: int, id_key: str = "id",
               clusters_per_group: int = 1, num_replicas: int = 1, negatives: str = "global",
               join_batch_size: int = 1024) -> ClusterGrouping:
  """Reorders a stream so that each group of `group_size` examples has a fixed cluster mix.

  Each consecutive group of `group_size` examples is made of `clusters_per_group` runs of
  `group_size / clusters_per_group` examples, each run from one cluster and the runs from
  different clusters (with `negatives="per_replica"`: the same within each replica's
  `group_size / num_replicas`). Apply it before `tfjest.select(super_batch_size=group_size)`
  so that JEST picks from hard (same-cluster) candidates, or before `batch(group_size)` for
  cluster-conditioned batches. See the module docstring for the algorithm, the accounting
  (`stats`) and what `negatives` means under a strategy.

  >>> import os
  >>> import tempfile
  >>> import numpy as np
  >>> import tfjest
  >>> from tfjest import testing
  >>> base = testing.dual_encoder(seed=1)
  >>> train_ds = testing.stream("contrastive", n=64)   # {"x": {...}, "id"} examples
  >>> cache = tfjest.cache_reference(base, train_ds, os.path.join(tempfile.mkdtemp(), "c"))
  >>> clusters = tfjest.cluster_reference(cache, os.path.join(tempfile.mkdtemp(), "k"),
  ...                                     num_clusters=2)
  >>> batches = train_ds.apply(tfjest.by_cluster(clusters, group_size=8)).batch(8)
  >>> for batch in batches.take(3):   # one cluster per batch
  ...   print(np.unique(clusters.cluster_of(batch).numpy()).size)
  1
  1
  1

  Composed with `select`, JEST picks 4 of every 8 same-cluster candidates:

  >>> model = testing.dual_encoder(seed=0)
  >>> grouping = tfjest.by_cluster(clusters, group_size=8)
  >>> selector = tfjest.select(learner=model, reference_cache=cache, id_key="id",
  ...                          batch_size=4, super_batch_size=8, num_chunks=2)
  >>> history = model.fit(train_ds.apply(grouping).apply(selector), epochs=1, verbose=0)
  >>> s = grouping.stats.result()   # after a full pass, every example emitted or counted
  >>> s["read"] == s["emitted"] + s["left_over"] == 64
  True

  Args:
    clusters: the `Clusters` (from `tfjest.cluster_reference`).
    group_size: `N`, examples per group: the `super_batch_size` of a `select` applied after
      (or the batch size of cluster-conditioned batches).
    id_key: the example-id feature (in the element, its `x` or its `y`; "/" for nested paths).
    clusters_per_group: `m`, distinct clusters per group (per replica slice with
      `negatives="per_replica"`), between 1 and the number of clusters; must divide the group
      (or the slice).
    num_replicas: `R`, replicas the groups are split over (used by "per_replica").
    negatives: "global" (the mix holds for each group of `N`) or "per_replica" (for each
      replica's contiguous `N / R` of it).
    join_batch_size: examples joined to their cluster ids per lookup.

  Returns:
    A `ClusterGrouping`: a `Dataset` transformation function, which can be passed to
    `tf.data.Dataset.apply`. Its `stats` attribute counts what was read, emitted and left over.

  Raises:
    ValueError: if an argument is outside its domain (naming it and the value received); when
      applied, if the elements are batches or do not fit the clusters' structure or id dtype.
      A missing id or changed inputs raise `tf.errors.InvalidArgumentError` when the pipeline
      reaches them.
    TypeError: if `clusters` is not a `Clusters`.
  """
  if not isinstance(clusters, clusters_lib.Clusters):
    raise TypeError(f"clusters must be a tfjest.Clusters (from tfjest.cluster_reference). "
                    f"Received: clusters of type {type(clusters).__name__}")
  for name, value in (("group_size", group_size), ("clusters_per_group", clusters_per_group),
                      ("num_replicas", num_replicas), ("join_batch_size", join_batch_size)):
    if not checks.is_int(value) or value < 1:
      raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
  if not isinstance(id_key, str) or not id_key:
    raise ValueError(f"id_key must be a non-empty string. Received: id_key={id_key!r}")
  if negatives not in NEGATIVES:
    raise ValueError(f"Expected negatives in {NEGATIVES}. Received: negatives={negatives!r}")
  if clusters_per_group > clusters.num_clusters:
    raise ValueError(f"clusters_per_group must be at most the number of clusters "
                     f"({clusters.num_clusters}). Received: clusters_per_group="
                     f"{clusters_per_group}")
  unit = group_size
  if negatives == "per_replica":
    if group_size % num_replicas:
      raise ValueError(f"With negatives='per_replica', num_replicas={num_replicas} must divide "
                       f"group_size. Received: group_size={group_size}")
    unit = group_size // num_replicas
  if unit % clusters_per_group:
    raise ValueError(f"clusters_per_group must divide the examples that hold the mix ({unit}"
                     f"{' per replica' if negatives == 'per_replica' else ''}). Received: "
                     f"clusters_per_group={clusters_per_group}")
  return ClusterGrouping(clusters, group_size=group_size, id_key=id_key,
                         clusters_per_group=clusters_per_group, num_replicas=num_replicas,
                         negatives=negatives, join_batch_size=join_batch_size)
