"""The store's joins: streamed (in the build's order, ids checked) and in memory, one contract.

Tiny models, 64 examples in two input shards: alignment errors, the three kinds of values,
reuse and staleness per shard, values given as features, and the same picks from both joins.
The build on two tf.data service workers is tests/store/service_test.py; reading under
MultiWorkerMirroredStrategy is tests/store/multi_worker_test.py.
"""

import contextlib
import os
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing
from tfjest.store import join as join_lib
from tfjest.store import shards as shards_lib

N = 64


def _shards(dataset):
  return [dataset.take(N // 2), dataset.skip(N // 2)]


@contextlib.contextmanager
def _blocks_of(size):
  """Streams joined in blocks of `size` examples (the smallest the limit allows: records cut
  into pieces, as for large examples), or, with None, of the join's own limit."""
  if size is None:
    yield
    return
  with mock.patch.object(join_lib, "_BLOCK_BYTES", 1), \
       mock.patch.object(join_lib, "_MIN_BLOCK", size):
    yield


def _ids(dataset):
  return np.array([int(e["id"]) if isinstance(e, dict) else int(e[0]["id"]) for e in dataset])


class StreamedJoinTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.reference = testing.dual_encoder(1, "reference")
    cls.stream = testing.stream("contrastive", n=N)
    cls.cache = tfjest.cache_reference(cls.reference, _shards(cls.stream),
                                       os.path.join(cls.dir, "cache"), batch_size=16)

  def test_one_value_shard_per_input_shard_and_opening_reads_metadata_only(self):
    self.assertEqual((self.cache.num_shards, self.cache.num_examples), (2, N))
    loaded = tfjest.ReferenceCache.load(self.cache.path)
    self.assertIsNone(loaded._memory)  # pylint: disable=protected-access
    joined = list(self.stream.apply(loaded.join(id_key="id")))
    self.assertEqual(loaded.opened_shards, [0, 1])
    self.assertAllEqual(_ids(joined), np.arange(N))
    self.assertIsNone(loaded._memory)  # pylint: disable=protected-access
    want = self.reference({"image": joined[5]["image"][None], "text": joined[5]["text"][None]})
    self.assertAllClose(joined[5]["reference_image_embeddings"], want["image_embeddings"][0],
                        atol=1e-6)

  @parameterized.named_parameters(
      ("reordered_shard", lambda s: s.skip(N // 2).concatenate(s.take(N // 2)),
       r"example id 32 met the value stored for id 0 \(position 0 of shard \W*"
       r"values-00000-of-00002.tfrecord\W*\)"),
      ("missing_shard", lambda s: s.take(N // 2),
       r"the stream ended before the value of id 32 \(position 0 of shard \W*"
       r"values-00001-of-00002.tfrecord\W*\)"),
      ("missing_example", lambda s: s.take(3).concatenate(s.skip(4)),
       r"example id 4 met the value stored for id 3 \(position 3 of shard \W*values-00000"),
      ("extra_example", lambda s: s.concatenate(s.take(1).map(lambda e: dict(e, id=e["id"] + 99))),
       r"an extra example: id 99 comes after the last stored value \(of shard \W*values-00001"),
      ("other_ids", lambda s: s.map(lambda e: dict(e, id=e["id"] + 1000)),
       r"example id 1000 met the value stored for id 0.*"
       r"Received: id=1000, shard=\W*values-00000"),
      ("other_inputs", lambda s: s.map(lambda e: dict(e, image=e["image"] + 1.0)),
       r"the inputs of example id 0 differ.*stale.*Received: id=0"),
  )
  def test_misalignment_stops_the_pipeline_naming_id_and_shard(self, change, message):
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
      list(change(self.stream).apply(self.cache.join(id_key="id")))

  def test_each_input_shard_with_its_own_value_shard(self):
    store = tfjest.ReferenceCache.load(self.cache.path)
    only = store.join(id_key="id", shards=[1], inputs=[self.stream.skip(N // 2)])
    self.assertAllEqual(_ids(only), np.arange(N // 2, N))
    self.assertEqual(store.opened_shards, [1])
    both = store.join(id_key="id", inputs=_shards(self.stream))
    self.assertAllEqual(_ids(both)[:4], [0, 32, 1, 33])  # round-robin, deterministic
    with self.assertRaisesRegex(ValueError, r"shards must list value shards.*Received: "
                                r"shards=\[2\]"):
      store.join(id_key="id", shards=[2])
    with self.assertRaisesRegex(ValueError, "join before batching further"):
      self.stream.batch(4).batch(2).apply(store.join(id_key="id"))
    with self.assertRaisesRegex(ValueError, r"already have features \['reference_image"):
      self.stream.apply(store.join(id_key="id")).apply(store.join(id_key="id"))

  def test_batches_in_order_are_joined_as_batches(self):
    single = list(self.stream.apply(self.cache.join(id_key="id")))
    batches = list(self.stream.batch(5).apply(self.cache.join(id_key="id")))
    self.assertEqual([len(b["id"]) for b in batches], [32] * 2)  # regrouped: the records
    for key in ("id", "reference_text_embeddings"):
      self.assertAllEqual(np.stack([e[key] for e in single]),
                          np.concatenate([b[key] for b in batches]))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"example id 4 met the value stored for id 3 \(position 3 of "
                                r"shard \W*values-00000"):
      list(self.stream.take(3).concatenate(self.stream.skip(4)).batch(5).apply(
          self.cache.join(id_key="id")))

  @parameterized.named_parameters(("records_as_blocks", 32), ("regrouped", 20))
  def test_both_read_paths_join_the_same_values_and_name_the_shard(self, first):
    # Shards of 32 + 32 examples in records of 32: each record is a block. 20 + 44: a record
    # would span two blocks, so the records are decoded and regrouped (`rebatch`).
    shards = [self.stream.take(first), self.stream.skip(first)]
    cache = tfjest.cache_reference(self.reference, shards, os.path.join(self.dir, str(first)),
                                   batch_size=16)
    self.assertEqual([s["chunk_size"] for s in cache.metadata["shards"]], [first, N - first])
    joined = list(self.stream.apply(cache.join(id_key="id")))
    want = list(self.stream.apply(self.cache.join(id_key="id")))
    self.assertAllEqual(_ids(joined), np.arange(N))
    self.assertAllClose(np.stack([e["reference_text_embeddings"] for e in joined]),
                        np.stack([e["reference_text_embeddings"] for e in want]), atol=1e-6)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                rf"example id {first + 2} met the value stored for id "
                                rf"{first + 1} \(position 1 of shard \W*values-00001"):
      list(self.stream.take(first + 1).concatenate(self.stream.skip(first + 2)).apply(
          cache.join(id_key="id")))

  def test_large_examples_are_joined_in_smaller_blocks(self):
    # A block of 4,096 web-sized examples (12 KB each: 50 MB) is fresh memory every block:
    # large examples are joined in blocks of at most 4 MB, the values regrouped to match.
    image = lambda side: tf.TensorSpec([side, side, 3], tf.uint8)
    self.assertEqual(join_lib.block_limit({"image": image(8), "id": tf.TensorSpec([], tf.int64),
                                           "caption": tf.TensorSpec([], tf.string)}), 4096)
    self.assertEqual(join_lib.block_limit({"image": image(32)}), 1024)  # 4 MB / 3 KB = 1,365
    self.assertEqual(join_lib.block_limit({"image": image(64)}), 256)  # 4 MB / 12 KB = 341
    self.assertEqual(join_lib.block_limit({"image": image(1024)}), 256)  # at least 256
    # The same join in blocks of 8 examples (from records of 32): the same values, the same
    # errors naming the position.
    want = list(self.stream.apply(self.cache.join(id_key="id")))
    with _blocks_of(8):
      single = list(self.stream.apply(self.cache.join(id_key="id")))
      batches = list(self.stream.batch(5).apply(self.cache.join(id_key="id")))
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                  r"example id 41 met the value stored for id 40 \(position 8 "
                                  r"of shard \W*values-00001"):
        list(self.stream.take(40).concatenate(self.stream.skip(41)).apply(
            self.cache.join(id_key="id")))
    self.assertEqual([len(b["id"]) for b in batches], [8] * 8)
    for key in ("id", "reference_text_embeddings"):
      self.assertAllEqual(np.stack([e[key] for e in single]), np.stack([e[key] for e in want]))
      self.assertAllEqual(np.concatenate([b[key] for b in batches]),
                          np.stack([e[key] for e in want]))

  def test_string_ids_are_joined_streamed(self):
    stream = self.stream.map(lambda e: dict(e, name=tf.strings.join(["ex-", tf.strings.as_string(
        e["id"])])))
    cache = tfjest.cache_reference(self.reference, _shards(stream),
                                   os.path.join(self.dir, "names"), id_key="name", batch_size=16)
    joined = list(stream.batch(8).apply(cache.join(id_key="name")))
    self.assertAllEqual(np.concatenate([b["name"] for b in joined]),
                        [f"ex-{i}".encode() for i in range(N)])
    self.assertAllClose(np.concatenate([b["reference_image_embeddings"] for b in joined]),
                        np.stack([e["reference_image_embeddings"] for e in self.stream.apply(
                            self.cache.join(id_key="id"))]), atol=1e-6)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"example id \W*ex-33\W* met the value stored for id \W*ex-32"):
      list(stream.take(N // 2).concatenate(stream.skip(N // 2 + 1)).apply(
          cache.join(id_key="name")))

  @parameterized.parameters("contrastive", "classification")
  def test_streamed_and_in_memory_joins_pick_the_same(self, task):
    if task == "contrastive":
      cache, stream = self.cache, self.stream
      learner, kwargs = testing.dual_encoder(0, "learner"), {"num_chunks": 2}
    else:
      stream = testing.stream("classification", n=N)
      cache = tfjest.cache_reference(testing.classifier(1, "reference"), _shards(stream),
                                     os.path.join(self.dir, "classifier"))
      learner, kwargs = testing.classifier(0, "learner"), {"method": "independent"}

    def picks(dataset):
      selector = tfjest.select(learner=learner, reference_cache=cache, id_key="id",
                               batch_size=8, super_batch_size=16, seed=3, **kwargs)
      batches = list(dataset.apply(selector))
      x = batches[0][0] if isinstance(batches[0], tuple) else batches[0]
      self.assertFalse([k for k in x if k.startswith("reference_")])  # never reach fit
      return np.concatenate([testing.ids(b) for b in batches])

    shuffled = lambda d: d.shuffle(N, seed=5)  # shuffle after the join
    streamed = picks(shuffled(stream.apply(cache.join(id_key="id"))))
    in_memory = picks(shuffled(stream))
    self.assertAllEqual(streamed, in_memory)
    self.assertLen(streamed, N // 2)


class InputShardsTest(tf.test.TestCase, parameterized.TestCase):
  """More input shards than are read at a time (`cycle_length`): one pipeline for them all."""

  SIZES = (9, 13, 8, 11, 10, 13)  # uneven shards: slots free up at different times

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    stream = testing.stream("contrastive", n=sum(cls.SIZES))
    starts = np.cumsum((0,) + cls.SIZES)
    cls.inputs = [stream.skip(a).take(b - a) for a, b in zip(starts[:-1], starts[1:])]
    cls.cache = tfjest.cache_reference(testing.dual_encoder(1, "reference"), cls.inputs,
                                       os.path.join(tempfile.mkdtemp(), "cache"), batch_size=4)
    cls.values = {int(e["id"]): e["reference_text_embeddings"].numpy()
                  for e in stream.apply(cls.cache.join(id_key="id"))}

  def _check(self, joined, cycle_length):
    joined = list(joined)
    plain = tf.data.Dataset.range(len(self.inputs)).interleave(
        lambda i: tf.switch_case(tf.cast(i, tf.int32), [lambda d=d: d for d in self.inputs]),
        cycle_length=cycle_length)  # tf.data's own interleave of the plain shards
    self.assertAllEqual(_ids(joined), _ids(plain))
    for e in joined:
      self.assertAllEqual(e["reference_text_embeddings"], self.values[int(e["id"])])

  @parameterized.parameters((2, False), (4, False), (6, False), (2, True))
  def test_each_shard_with_its_values_in_tf_datas_interleave_order(self, cycle, small_blocks):
    # small_blocks: blocks of 2 examples, the records cut into pieces
    store = tfjest.ReferenceCache.load(self.cache.path)
    with _blocks_of(2 if small_blocks else None):
      self._check(store.join(id_key="id", inputs=self.inputs, cycle_length=cycle), cycle)
    self.assertEqual(store.opened_shards, list(range(6)))

  @parameterized.parameters(False, True)
  def test_a_missing_example_is_named_in_its_own_shard(self, small_blocks):
    inputs = list(self.inputs)
    inputs[3] = inputs[3].take(4).concatenate(inputs[3].skip(5))  # ids 30..40: drops id 34
    with _blocks_of(2 if small_blocks else None):
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                  r"example id 35 met the value stored for id 34 \(position 4 "
                                  r"of shard \W*values-00003-of-00006"):
        list(self.cache.join(id_key="id", inputs=inputs, cycle_length=2))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r"cycle_length .* positive integer.*Received: "
                                r"cycle_length=0"):
      self.cache.join(id_key="id", inputs=self.inputs, cycle_length=0)
    with self.assertRaisesRegex(ValueError, r"cycle_length applies to .*inputs.*Received: "
                                r"cycle_length=2, inputs=None"):
      self.cache.join(id_key="id", cycle_length=2)
    other = list(self.inputs)
    other[2] = other[2].map(lambda e: dict(e, extra=e["id"]))
    with self.assertRaisesRegex(ValueError, r"one element_spec.*Received: inputs\[2\]"):
      self.cache.join(id_key="id", inputs=other)


class UnevenShardsTest(tf.test.TestCase, parameterized.TestCase):
  """A stream of several shards whose sizes are not multiples of the record size, in order."""

  SIZES = (37, 21, 30)  # records of 8: each shard ends with a partial record

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.stream = testing.stream("contrastive", n=sum(cls.SIZES))
    starts = np.cumsum((0,) + cls.SIZES)
    shards = [cls.stream.skip(a).take(b - a) for a, b in zip(starts[:-1], starts[1:])]
    with mock.patch.object(shards_lib, "RECORD_SIZE", 8):
      cls.cache = tfjest.cache_reference(testing.dual_encoder(1, "reference"), shards,
                                         os.path.join(tempfile.mkdtemp(), "cache"),
                                         batch_size=4)
    cls.values = {int(e["id"]): e["reference_text_embeddings"].numpy()
                  for e in cls.stream.apply(cls.cache.join(id_key="id", in_order=False))}

  def test_block_sizes(self):
    self.assertAllEqual(join_lib.block_sizes([37, 21, 30], 8),
                        [8, 8, 8, 8, 5, 8, 8, 5, 8, 8, 8, 6])
    self.assertAllEqual(join_lib.block_sizes([37, 21, 30], 4, tf.constant(1, tf.int64)),
                        [4, 4, 4, 4, 4, 1])
    self.assertAllEqual(join_lib.block_sizes([16], 8, tf.constant(0, tf.int64)), [8, 8])

  @parameterized.product(batch=(None, 5), pieces=(False, True))
  def test_joined_in_blocks_cut_to_the_records(self, batch, pieces):
    # pieces: blocks of 4 (large examples), the records of 8 cut in two
    stream = self.stream if batch is None else self.stream.batch(batch)
    with _blocks_of(4 if pieces else None):
      joined = list(stream.apply(self.cache.join(id_key="id")))
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                  r"example id 61 met the value stored for id 60 \(position 2 "
                                  r"of shard \W*values-00002-of-00003"):
        dropped = self.stream.take(60).concatenate(self.stream.skip(61))
        list((dropped if batch is None else dropped.batch(batch)).apply(
            self.cache.join(id_key="id")))
    if batch is not None:  # blocks cut to the value records (or their pieces)
      self.assertAllEqual([len(b["id"]) for b in joined],
                          join_lib.block_sizes(self.SIZES, 4 if pieces else 8))
      joined = [{k: v[i] for k, v in b.items()} for b in joined for i in range(len(b["id"]))]
    self.assertAllEqual(_ids(joined), np.arange(sum(self.SIZES)))
    for e in joined:
      self.assertAllEqual(e["reference_text_embeddings"], self.values[int(e["id"])])


class FeaturesTest(tf.test.TestCase):
  """Reference values written by another engine, given to select as features."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.reference = testing.dual_encoder(1, "reference")
    cls.stream = testing.stream("contrastive", n=N)
    cls.cache = tfjest.cache_reference(cls.reference, cls.stream,
                                       os.path.join(tempfile.mkdtemp(), "cache"))
    rows = {int(e["id"]): e for e in cls.stream.apply(cls.cache.join(id_key="id"))}
    # As a Beam job would write them: features of each example, under the user's names.
    cls.written = cls.stream.map(lambda e: dict(e, ref_img=tf.gather(
        tf.constant(np.stack([rows[i]["reference_image_embeddings"] for i in range(N)])),
        e["id"]), ref_txt=tf.gather(tf.constant(np.stack(
            [rows[i]["reference_text_embeddings"] for i in range(N)])), e["id"])))

  def _select(self, **kwargs):
    return tfjest.select(learner=testing.dual_encoder(0, "learner"), batch_size=8,
                         super_batch_size=16, num_chunks=2, seed=1, **kwargs)

  def test_features_pick_as_the_cache_and_do_not_reach_fit(self):
    features = self._select(
        reference_features={"image_embeddings": "ref_img", "text_embeddings": "ref_txt"},
        logit_scale=self.cache.logit_scale, logit_bias=self.cache.logit_bias)
    from_features = list(self.written.apply(features))
    self.assertNotIn("ref_img", from_features[0])
    cached = list(self.stream.apply(self._select(reference_cache=self.cache, id_key="id")))
    self.assertAllEqual(np.concatenate([testing.ids(b) for b in from_features]),
                        np.concatenate([testing.ids(b) for b in cached]))

  def test_contract_errors(self):
    good = {"image_embeddings": "ref_img", "text_embeddings": "ref_txt"}
    with self.assertRaisesRegex(ValueError, r"reference_features must map.*Received: "
                                r"reference_features=\{'image_embeddings': 'ref_img'\}"):
      self._select(reference_features={"image_embeddings": "ref_img"}, logit_scale=1.0,
                   logit_bias=0.0)
    with self.assertRaisesRegex(ValueError, "pass logit_scale= as a number.*Received: "
                                "logit_scale=None"):
      self._select(reference_features=good, logit_bias=0.0)
    with self.assertRaisesRegex(ValueError, "not to stored losses. Received: logit_scale=1.0"):
      self._select(reference_features={"loss": "ref_loss"}, logit_scale=1.0)
    with self.assertRaisesRegex(ValueError, "not with them"):
      self._select(reference_features=good, logit_scale=1.0, logit_bias=0.0,
                   reference=self.reference)
    with self.assertRaisesRegex(ValueError, "only serve reference_features"):
      self._select(reference=self.reference, logit_scale=1.0)
    selector = self._select(reference_features=dict(good, text_embeddings="id"),
                            logit_scale=1.0, logit_bias=0.0)
    with self.assertRaisesRegex(ValueError, r"Expected feature 'id' to hold the reference's "
                                r"text_embeddings.*Received: 'id' with dtype int64 and "
                                r"shape \(\)"):
      self.written.apply(selector)
    selector = self._select(reference_features=dict(good, image_embeddings="nope"),
                            logit_scale=1.0, logit_bias=0.0)
    with self.assertRaisesRegex(ValueError, "Received: 'nope' with no such feature"):
      self.written.apply(selector)


class KindsAndStalenessTest(tf.test.TestCase):
  """Prior targets and clusters through the same store; reuse and staleness per shard."""

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp(dir=self.get_temp_dir())
    self.stream = testing.stream("contrastive", n=N)

  def test_prior_targets_and_clusters_are_sharded_stores(self):
    prior = testing.dual_encoder(7, "prior")
    targets = tfjest.prior_targets(prior, _shards(self.stream), os.path.join(self.dir, "t"),
                                   width=3, features="image_embeddings")
    self.assertEqual((targets.num_shards, targets.width), (2, 3))
    self.assertFalse(os.path.exists(os.path.join(targets.path, "raw_features")))
    streamed = list(self.stream.apply(targets.join(id_key="id", in_order=True)))
    by_id = list(self.stream.apply(targets.join(id_key="id")))
    self.assertAllClose(np.stack([e["rela_target"] for e in streamed]),
                        np.stack([e["rela_target"] for e in by_id]))
    self.assertAllClose(targets.array("target").std(0), np.ones(3), atol=1e-4)
    cache = tfjest.cache_reference(testing.dual_encoder(1), _shards(self.stream),
                                   os.path.join(self.dir, "c"))
    clusters = tfjest.cluster_reference(cache, os.path.join(self.dir, "k"), num_clusters=3)
    self.assertEqual(clusters.num_shards, 2)
    joined = list(self.stream.apply(clusters.join(id_key="id")))
    self.assertAllEqual([int(e["cluster"]) for e in joined], clusters.assignments)

  def test_reuse_and_staleness_per_shard(self):
    path = os.path.join(self.dir, "cache")
    reference = testing.dual_encoder(1, "reference")
    build = lambda stream, model=reference: tfjest.cache_reference(
        model, _shards(stream), path, reuse=True)
    self.assertEqual(build(self.stream).rebuild_reason, "no reference cache at this path")
    self.assertTrue(build(self.stream).reused)
    changed = self.stream.map(lambda e: dict(e, image=tf.where(
        e["id"] == 40, e["image"] + 1.0, e["image"])))
    self.assertRegex(build(changed).rebuild_reason,
                     r"inputs of some examples differ.*\(input shard 1\)")
    self.assertRegex(build(self.stream.map(lambda e: dict(e, id=e["id"] * 2))).rebuild_reason,
                     r"other example ids in input shard 0")
    self.assertRegex(build(self.stream, testing.dual_encoder(2, "other")).rebuild_reason,
                     "reference weights differ")


if __name__ == "__main__":
  tf.test.main()
