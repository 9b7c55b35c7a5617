"""ReLA-D: prior targets (PCA and standardisation oracles, join by id, staleness, service) and
the data ratio (`epoch_subsets`). ReLAAid is tested in rela_aid_test.py."""

import os
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest.rela import pca
from tfjest.rela import targets as priors
from tfjest import testing
from tfjest.store import service as service_lib

N = 48


def _numpy_pca_standardize(features, k):
  """The oracle: eigenvectors of the covariance, projected, then z-scored."""
  x = np.asarray(features, np.float64)
  centred = x - x.mean(0)
  values, vectors = np.linalg.eigh(centred.T @ centred / len(x))
  top = vectors[:, np.argsort(values)[::-1][:k]]
  projected = centred @ top
  return (projected - projected.mean(0)) / projected.std(0)


def _aligned(a, b):
  """`b` with each column's sign flipped to agree with `a` (PCA directions are up to sign)."""
  return b * np.sign(np.sum(a * b, axis=0))


class RelaTestCase(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.stream = testing.stream("classification", n=N)
    self.prior = testing.dual_encoder(seed=7, name="prior")

  def _features(self, prior, stream):
    x, _ = next(iter(stream.batch(1000)))
    return x["id"].numpy(), prior({"image": x["x"], "text": x["x"]})["image_embeddings"].numpy()

  def _rows(self, targets):
    """`{id: target}` read through `targets_for` from the plain stream."""
    rows = {}
    for x, y in self.stream.batch(N):
      for i, t in zip(x["id"].numpy(), targets.targets_for((x, y), "id").numpy()):
        rows[i] = t
    return rows

  def _targets(self, width=3, prior=None, stream=None, name="targets", **kwargs):
    return tfjest.prior_targets(
        prior or self.prior, stream or self.stream, os.path.join(self.dir, name), width=width,
        features=lambda model, x, training: model({"image": x["x"], "text": x["x"]},
                                                  training=training)["image_embeddings"],
        **kwargs)


class TargetsTest(RelaTestCase):

  def test_pca_standardize_matches_numpy(self):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 3.0
    got = pca.pca_standardize(features, 4)
    want = _numpy_pca_standardize(features, 4)
    self.assertEqual(got.shape, (200, 4))
    self.assertAllClose(_aligned(want, got), want, atol=1e-4)
    self.assertAllClose(got.mean(0), np.zeros(4), atol=1e-5)
    self.assertAllClose(got.std(0), np.ones(4), atol=1e-4)

  def test_targets_are_the_priors_features_projected_by_id(self):
    targets = self._targets(width=3, stream=self.stream.shuffle(N, seed=3))
    ids, features = self._features(self.prior, self.stream)
    want = _numpy_pca_standardize(features[np.argsort(ids)], 3)
    self.assertEqual(targets.width, 3)  # min(student width 3, prior width 4)
    rows = self._rows(targets)
    got = np.stack([rows[i] for i in range(N)])
    self.assertAllClose(_aligned(want, got), want, atol=1e-4)

  def test_width_is_the_smaller_of_student_and_prior(self):
    self.assertEqual(self._targets(width=16).width, 4)

  def test_joined_to_the_right_ids_under_shuffling(self):
    targets = self._targets()
    rows = self._rows(targets)
    shuffled = self.stream.shuffle(N, seed=1, reshuffle_each_iteration=True).repeat(2)
    for joined in (shuffled.apply(targets.join()).batch(10),
                   shuffled.batch(10).apply(targets.join())):   # single or batched elements
      seen = 0
      for x, _ in joined:
        for i, t in zip(x["id"].numpy(), x["rela_target"].numpy()):
          self.assertAllClose(t, rows[i])
          seen += 1
      self.assertEqual(seen, 2 * N)

  def test_load_gives_the_same_targets(self):
    targets = self._targets()
    loaded = tfjest.PriorTargets.load(targets.path)
    x, y = next(iter(self.stream.batch(N)))
    self.assertAllClose(loaded.targets_for((x, y), "id"), targets.targets_for((x, y), "id"))

  def test_other_prior_is_stale(self):
    targets = self._targets()
    other = testing.dual_encoder(seed=8, name="other")
    with self.assertRaisesRegex(ValueError, "computed by another prior.*Received: prior='other'"):
      targets.check_prior(other)
    targets.check_prior(self.prior)
    rebuilt = self._targets(prior=other, reuse=True)
    self.assertFalse(rebuilt.reused)
    self.assertIn("prior's weights differ", rebuilt.rebuild_reason)
    self.assertTrue(self._targets(prior=other, reuse=True).reused)

  def test_other_data_is_stale(self):
    targets = self._targets()
    changed = self.stream.map(lambda x, y: ({**x, "x": x["x"] + 1.0}, y))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "prior targets entry for example id .* stale"):
      list(changed.apply(targets.join()))
    unknown = self.stream.map(lambda x, y: ({**x, "id": x["id"] + 1000}, y))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "prior targets at .* has no entry for example id 1000"):
      list(unknown.apply(targets.join()))
    wider = self.stream.map(lambda x, y: ({**x, "x": tf.concat([x["x"], x["x"]], 0)}, y))
    with self.assertRaisesRegex(ValueError, "another structure"):
      wider.apply(targets.join())
    self.assertIn("differ", self._targets(stream=changed, reuse=True).rebuild_reason)

  def test_existing_targets_need_overwrite(self):
    self._targets()
    with self.assertRaisesRegex(ValueError, "Received: path="):
      self._targets()

  @parameterized.named_parameters(
      ("not_a_model", dict(prior="model"), TypeError, "Received: prior of type str"),
      ("width", dict(width=0), ValueError, "Received: width=0"),
      ("width_float", dict(width=2.5), ValueError, "Received: width=2.5"),
      ("batch_size", dict(batch_size=0), ValueError, "Received: batch_size=0"),
      ("view_fn", dict(view_fn=3), ValueError, "Received: view_fn=3"),
      ("mode", dict(processing_mode="x"), ValueError, "Received: processing_mode='x'"),
      ("dataset", dict(dataset=[1]), TypeError, "Received: dataset of type list"),
  )
  def test_bad_arguments(self, kwargs, error, message):
    args = {**dict(prior=self.prior, dataset=self.stream, path=os.path.join(self.dir, "t"),
                   width=3), **kwargs}
    with self.assertRaisesRegex(error, message):
      tfjest.prior_targets(**args)

  def test_features_key_must_exist(self):
    stream = testing.stream("contrastive", n=8)
    with self.assertRaisesRegex(ValueError, "Received: features='nope'"):
      tfjest.prior_targets(self.prior, stream, os.path.join(self.dir, "k"), width=2,
                           features="nope")

  def test_join_before_select_passes_through(self):
    targets = self._targets()
    learner = testing.classifier(seed=0)
    selector = tfjest.select(learner=learner, reference=testing.classifier(seed=1),
                             batch_size=8, super_batch_size=32, method="independent")
    x, _ = next(iter(self.stream.repeat().apply(targets.join()).apply(selector)))
    self.assertEqual(x["rela_target"].shape, (8, 3))
    rows = self._rows(targets)
    self.assertAllClose(x["rela_target"], np.stack([rows[i] for i in x["id"].numpy()]))


class ServiceTest(RelaTestCase):

  def test_service_gives_the_same_targets(self):
    dispatcher, workers = testing.local_service(1)  # pylint: disable=unused-variable
    local = self._targets(name="local")
    remote = self._targets(name="remote", service=dispatcher.target)
    self.assertEqual(remote.metadata["shards"], local.metadata["shards"])
    x, y = next(iter(self.stream.batch(N)))
    self.assertAllClose(remote.targets_for((x, y), "id"), local.targets_for((x, y), "id"),
                        atol=1e-5)


class MomentsTest(tf.test.TestCase):
  """The moments combined from parts (chunks here, shards' on service workers) are exact."""

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    # a large offset: a sum of squares would lose the covariance, centred moments do not
    self.x = rng.normal(size=(301, 5)) @ rng.normal(size=(5, 5)) + 1e6
    self.parts = np.split(self.x, [1, 40, 41, 250])  # uneven, one of a single example

  def test_chunks_and_shards_combine_exactly(self):
    chunked = pca.Moments()
    for part in self.parts:
      chunked.add({"features": part})
    centred = self.x - self.x.mean(0)
    self.assertEqual(chunked.count, len(self.x))
    self.assertAllClose(chunked.mean, self.x.mean(0), rtol=1e-15, atol=0)
    self.assertAllClose(chunked.scatter, centred.T @ centred, rtol=1e-9)
    sharded = pca.Moments()
    shard_moments = pca.shard_moments
    for part in self.parts:
      shard = shard_moments(tf.data.Dataset.from_tensor_slices(
          {"features": part.astype(np.float32)}).batch(16))
      sharded.merge(shard["count"].numpy(), shard["mean"].numpy(), shard["scatter"].numpy())
    sharded.merge(0, np.zeros(5), np.zeros((5, 5)))  # an empty shard changes nothing
    x32 = self.x.astype(np.float32).astype(np.float64)  # the stored features are float32
    centred = x32 - x32.mean(0)
    self.assertEqual(sharded.count, len(self.x))
    self.assertAllClose(sharded.mean, x32.mean(0), rtol=1e-15, atol=0)
    self.assertAllClose(sharded.scatter, centred.T @ centred, rtol=1e-9)


class ServiceWorkersTest(RelaTestCase):
  """Two in-process workers: prior_targets(service=) runs all of its passes on them."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dispatcher, cls.workers = testing.local_service(2)

  def _shards(self):  # three input shards of uneven sizes
    return [self.stream.take(10), self.stream.skip(10).take(25), self.stream.skip(35)]

  def assertSameTargets(self, remote, local):  # pylint: disable=invalid-name
    # The same projection (one TF function) from moments combined in another grouping
    # (chunks here, shards there): equal up to float64 rounding, so to float32 rounding.
    self.assertEqual(remote.metadata, local.metadata)
    self.assertAllEqual(remote.ids, local.ids)
    self.assertAllClose(remote.array("target"), local.array("target"), rtol=1e-6, atol=1e-6)
    self.assertFalse(os.path.exists(os.path.join(remote.path, "raw_features")))

  @parameterized.parameters("distributed_epoch", "parallel_epochs")
  def test_two_workers_and_three_shards_give_the_local_targets(self, mode):
    local = self._targets(name=f"local_{mode}", stream=self._shards(), batch_size=8)
    remote = self._targets(name=f"remote_{mode}", stream=self._shards(), batch_size=8,
                           service=self.dispatcher.target, processing_mode=mode)
    self.assertSameTargets(remote, local)
    self.assertEqual([s["num_examples"] for s in remote.metadata["shards"]], [10, 25, 13])
    rows = self._rows(remote)
    joined = self.stream.apply(remote.join(in_order=True))  # streamed, in the build's order
    for x, _ in joined:
      self.assertAllClose(x["rela_target"], rows[int(x["id"])])
    again = self._targets(name=f"remote_{mode}", stream=self._shards(), batch_size=8,
                          service=self.dispatcher.target, reuse=True)
    self.assertTrue(again.reused)

  def test_the_client_does_not_read_the_raw_features(self):
    local = self._targets(name="local_spied", stream=self._shards(), batch_size=8)
    specs, iterated, merged = [], [], []
    distribute = tf.data.experimental.service.distribute
    iterate = tf.data.Dataset.__iter__
    merge = pca.Moments.merge

    def spy_distribute(**kwargs):
      apply = distribute(**kwargs)
      return lambda dataset: specs.append(dataset.element_spec) or apply(dataset)

    def spy_iterate(dataset):  # every dataset this process reads (the workers' are not)
      iterated.append(dataset.element_spec)
      return iterate(dataset)

    def spy_merge(moments, count, mean, scatter):
      merged.append(count)
      return merge(moments, count, mean, scatter)

    def no_add(moments, chunk):
      raise AssertionError("the client accumulated the moments of a chunk of raw features")

    with mock.patch.object(tf.data.experimental.service, "distribute", spy_distribute), \
        mock.patch.object(tf.data.Dataset, "__iter__", spy_iterate), \
        mock.patch.object(pca.Moments, "add", no_add), \
        mock.patch.object(pca.Moments, "merge", spy_merge):
      remote = self._targets(name="remote_spied", stream=self._shards(), batch_size=8,
                             service=self.dispatcher.target)
    self.assertSameTargets(remote, local)
    # Three jobs: pass 1 and pass 2 return ids and input fingerprints per chunk, the moments
    # job one (count, mean, scatter) per shard: nothing per example of width D or k.
    self.assertEqual([sorted(s) for s in specs], [
        ["chunk", "file", "id", "input_fingerprint", "shard"],
        ["count", "mean", "scatter", "shard"],
        ["chunk", "file", "id", "input_fingerprint", "shard"]])
    self.assertEqual(specs[1]["scatter"].shape.as_list(), [4, 4])
    self.assertEqual(sorted(merged), [10, 13, 25])  # one per shard, as they arrive
    self.assertEqual(iterated, specs)  # this process read the service's results only

  def test_a_shards_moments_missing_or_differing_are_errors(self):
    shards = [tf.data.Dataset.range(3), tf.data.Dataset.range(5)]
    total = lambda shard: {"sum": shard.reduce(tf.constant(0, tf.int64), lambda a, b: a + b)}
    reduce = lambda: dict(service_lib.reduce_shards(
        shards, total, service=self.dispatcher.target, processing_mode="parallel_epochs"))
    self.assertEqual({i: int(r["sum"]) for i, r in reduce().items()}, {0: 3, 1: 10})
    received = service_lib.received
    for tamper, message in (
        (lambda e: [x for x in e if x["shard"] != 1], r"Received: missing shard indices \[1\]"),
        (lambda e: e + [dict(e[0], sum=e[0]["sum"] + 1)],
         r"reduced input shard \d to different results.*Received: shard index \d")):
      with mock.patch.object(service_lib, "received",
                             lambda job, tamper=tamper: iter(tamper(list(received(job))))):
        with self.assertRaisesRegex(ValueError, message):
          reduce()


class EpochSubsetsTest(RelaTestCase):

  def _epochs(self, ratio, seed, epochs, n=20):
    values = [int(v) for v in tf.data.Dataset.range(n).apply(
        tfjest.epoch_subsets(ratio, seed=seed, epochs=epochs))]
    k = max(1, round(ratio * n))
    self.assertLen(values, k * epochs)
    return [values[i * k:(i + 1) * k] for i in range(epochs)]

  def test_each_epoch_a_fresh_subset_of_the_share(self):
    epochs = self._epochs(0.25, seed=3, epochs=4)
    for e in epochs:
      self.assertLen(set(e), 5)
    self.assertGreater(len({tuple(e) for e in epochs}), 1)
    self.assertEqual(epochs, self._epochs(0.25, seed=3, epochs=4))   # reproducible
    self.assertNotEqual(epochs, self._epochs(0.25, seed=4, epochs=4))

  def test_uniform(self):
    # 400 epochs of 5 of 20: each example's count is Binomial(400, 0.25), mean 100, sd 8.7;
    # 5 sd bounds every one of 20 counts with overwhelming probability.
    counts = np.bincount(np.concatenate(self._epochs(0.25, seed=0, epochs=400)), minlength=20)
    self.assertLess(np.abs(counts - 100).max(), 44)

  def test_whole_data(self):
    self.assertEqual([sorted(e) for e in self._epochs(1.0, seed=0, epochs=2)],
                     [list(range(20))] * 2)

  def test_tuple_elements_and_infinite(self):
    ds = self.stream.apply(tfjest.epoch_subsets(0.5, seed=0))
    ids = [int(x["id"]) for x, _ in ds.take(3 * N // 2)]
    self.assertLen(set(ids[:N // 2]), N // 2)

  @parameterized.parameters(1.5, 0, -0.2, True, "0.5")
  def test_bad_ratio(self, ratio):
    with self.assertRaisesRegex(ValueError, f"Received: data_ratio={ratio!r}"):
      tfjest.epoch_subsets(ratio)

  def test_unknown_size(self):
    with self.assertRaisesRegex(ValueError, "known, finite size"):
      tf.data.Dataset.range(4).repeat().apply(tfjest.epoch_subsets(0.5))


if __name__ == "__main__":
  tf.test.main()
