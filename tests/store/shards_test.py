"""The value shards' records: the build's batches grouped into records of `RECORD_SIZE`.

A store whose records are larger than the build's batch (and do not divide it) joins exactly
as one whose records are the batches (as stores were written before records were grouped),
single examples and batches alike, names the same positions, and records the record size.
"""

import os
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing
from tfjest.store import shards as shards_lib

N = 64


def _records(store):
  name = os.path.join(store.path, store.metadata["shards"][0]["file"])
  return [len(r) for r in tf.data.TFRecordDataset(name).as_numpy_iterator()]


class RecordsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.reference = testing.dual_encoder(1, "reference")
    cls.stream = testing.stream("contrastive", n=N)
    cls.stores = {}
    for size in (8, 40):  # 8: the build's batches (as before); 40: 5 batches, then the rest
      with mock.patch.object(shards_lib, "RECORD_SIZE", size):
        cls.stores[size] = tfjest.cache_reference(
            cls.reference, cls.stream, os.path.join(cls.dir, str(size)), batch_size=8)

  def test_records_of_the_record_size_whatever_the_batch(self):
    small, large = self.stores[8], self.stores[40]
    self.assertEqual(small.metadata["shards"][0]["chunk_size"], 8)
    self.assertEqual(large.metadata["shards"][0]["chunk_size"], 40)
    self.assertEqual(len(_records(small)), 8)
    sizes = _records(large)
    self.assertLen(sizes, 2)
    self.assertEqual(sum(_records(small)) - sum(sizes), 0)  # the same bytes, fewer records
    disk = lambda s: os.path.getsize(os.path.join(s.path, s.metadata["shards"][0]["file"]))
    self.assertEqual(disk(small) - disk(large), 16 * (8 - 2))  # TFRecord framing per record
    self.assertEqual(large.metadata["shards"][0]["ids_fingerprint"],
                     small.metadata["shards"][0]["ids_fingerprint"])
    self.assertAllEqual(large.ids, np.arange(N))
    self.assertAllClose(large.array("text_embeddings"), small.array("text_embeddings"))

  def test_larger_records_join_identically_single_and_batched(self):
    small, large = self.stores[8], self.stores[40]
    want = list(self.stream.apply(small.join(id_key="id")))
    single = list(self.stream.apply(large.join(id_key="id")))
    batches = list(self.stream.batch(5).apply(large.join(id_key="id")))
    self.assertEqual([len(b["id"]) for b in batches], [40, 24])  # regrouped: the records
    for key in ("id", "reference_image_embeddings", "reference_text_embeddings"):
      expected = np.stack([e[key] for e in want])
      self.assertAllEqual(np.stack([e[key] for e in single]), expected)
      self.assertAllEqual(np.concatenate([b[key] for b in batches]), expected)
    model = self.reference({"image": single[50]["image"][None],
                            "text": single[50]["text"][None]})
    self.assertAllClose(single[50]["reference_image_embeddings"],
                        model["image_embeddings"][0], atol=1e-6)

  def test_positions_in_the_second_record_are_named(self):
    missing = self.stream.take(45).concatenate(self.stream.skip(46))
    message = (r"example id 46 met the value stored for id 45 \(position 45 of shard \W*"
               r"values-00000-of-00001")
    for stream in (missing, missing.batch(5)):
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
        list(stream.apply(self.stores[40].join(id_key="id")))
    stale = self.stream.map(lambda e: dict(e, image=e["image"] + tf.cast(
        tf.equal(e["id"], 60), tf.float32)))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"the inputs of example id 60 differ.*\(position 60 of shard"):
      list(stale.batch(7).apply(self.stores[40].join(id_key="id")))

  def test_string_ids_regrouped_across_batches(self):
    stream = self.stream.map(lambda e: dict(e, name=tf.strings.join(["ex-", tf.strings.as_string(
        e["id"])])))
    with mock.patch.object(shards_lib, "RECORD_SIZE", 24):
      store = tfjest.cache_reference(self.reference, stream, os.path.join(self.dir, "names"),
                                     id_key="name", batch_size=16)
    self.assertEqual(store.metadata["shards"][0]["chunk_size"], 24)
    joined = list(stream.apply(store.join(id_key="name")))
    self.assertAllEqual([e["name"] for e in joined], [f"ex-{i}".encode() for i in range(N)])
    self.assertAllClose(np.stack([e["reference_text_embeddings"] for e in joined]),
                        self.stores[8].array("text_embeddings"), atol=1e-6)

  def test_the_values_are_traced_once_for_all_input_shards(self):
    # A store of a web dataset has thousands of input shards: `compute` (the reference's
    # forward) is traced at the first and reused, not traced per shard.
    traces = []

    def compute(batch):
      traces.append(batch["id"].shape)
      return {"id": batch["id"], "input_fingerprint": batch["id"] * 2,
              "double": tf.cast(batch["id"], tf.float32) * 2.0}

    shards = [tf.data.Dataset.range(s * 10, s * 10 + 7).map(lambda i: {"id": i})
              for s in range(3)]
    chunks = [list(c) for c in shards_lib.compute_chunks(shards, compute, batch_size=4)]
    self.assertLen(traces, 1)
    self.assertEqual([[len(c["id"]) for c in shard] for shard in chunks], [[4, 3]] * 3)
    self.assertAllEqual(chunks[2][1]["double"], [48.0, 50.0, 52.0])

  def test_record_size_must_be_a_positive_int(self):
    for bad in (0, 2.5, True):
      with self.assertRaisesRegex(ValueError, rf"record_size must be a positive int. "
                                  rf"Received: record_size={bad!r}"):
        shards_lib.write(os.path.join(self.dir, "bad"), {}, [], num_shards=0,
                         empty_message="empty", record_size=bad)


if __name__ == "__main__":
  tf.test.main()
