"""A store built on tf.data service workers, each writing its own value shards (service.py).

An in-process dispatcher and two workers: the shard files are byte for byte a local build's
and the metadata equal, for both processing modes and string ids; the picks through
`select(reference_cache=...)` are the same; a shard the service returns twice or not whole is
an error that leaves no store; and the building process receives ids and input fingerprints
only, never the values.
"""

import filecmp
import os
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing
from tfjest.store import inputs as inputs_lib
from tfjest.store import service as service_lib
from tfjest.store import shards as shards_lib

N = 64


def _shards(stream):
  # Three input shards of uneven sizes (not multiples of the chunk size); `take`/`skip` are
  # fine: each worker reads the input shards it receives whole.
  return [stream.take(20), stream.skip(20).take(30), stream.skip(50)]


def _string_ids(stream):
  return stream.map(lambda x, y: (dict(x, id=tf.strings.join(["ex-", tf.strings.as_string(
      x["id"])])), y))


class ServiceWriteTest(testing.ServiceTestCase, parameterized.TestCase):
  NUM_EXAMPLES = N

  def _build(self, name, reference=None, shards=None, **kwargs):
    return tfjest.cache_reference(reference or self.reference, shards or _shards(self.stream),
                                  os.path.join(self.get_temp_dir(), name), batch_size=8,
                                  overwrite=True, **kwargs)

  def assertSameStore(self, remote, local):  # pylint: disable=invalid-name
    self.assertEqual(remote.metadata, local.metadata)
    self.assertEqual(sorted(os.listdir(remote.path)), sorted(os.listdir(local.path)))
    for shard in local.metadata["shards"]:
      self.assertTrue(filecmp.cmp(os.path.join(local.path, shard["file"]),
                                  os.path.join(remote.path, shard["file"]), shallow=False),
                      shard["file"])

  @parameterized.parameters("distributed_epoch", "parallel_epochs")
  def test_shards_are_a_local_builds_byte_for_byte(self, mode):
    # Records of 12 examples from batches of 8: both writers group the batches the same way.
    with mock.patch.object(shards_lib, "RECORD_SIZE", 12):
      local = self._build("local")
      remote = self._build(f"remote_{mode}", service=self.dispatcher.target,
                           processing_mode=mode)
    self.assertSameStore(remote, local)
    self.assertEqual([s["chunk_size"] for s in remote.metadata["shards"]], [12, 12, 12])
    self.assertEqual([s["num_examples"] for s in remote.metadata["shards"]], [20, 30, 14])

  def test_string_ids_and_a_classifier(self):
    reference = testing.classifier(1, "reference")
    shards = [_string_ids(s) for s in _shards(testing.stream("classification", n=N))]
    local = self._build("local_strings", reference, shards)
    remote = self._build("remote_strings", reference, shards, service=self.dispatcher.target)
    self.assertEqual(remote.metadata["ids"]["dtype"], "string")
    self.assertSameStore(remote, local)

  def test_same_picks(self):
    local = self._build("local_picks")
    remote = self._build("remote_picks", service=self.dispatcher.target)

    def picks(cache):
      selector = tfjest.select(learner=testing.dual_encoder(0, "learner"),
                               reference_cache=cache, id_key="id", batch_size=8,
                               super_batch_size=16, num_chunks=2, seed=3)
      return np.concatenate([testing.ids(b) for b in self.stream.apply(selector)])

    self.assertAllEqual(picks(remote), picks(local))
    joined = self.stream.apply(remote.join(id_key="id"))
    self.assertAllEqual([int(e["id"]) for e in joined], np.arange(N))

  def test_the_client_receives_no_values(self):
    specs = []
    distribute = tf.data.experimental.service.distribute

    def spy(**kwargs):
      apply = distribute(**kwargs)
      return lambda dataset: specs.append(dataset.element_spec) or apply(dataset)

    with mock.patch.object(tf.data.experimental.service, "distribute", spy):
      remote = self._build("remote_spy", service=self.dispatcher.target)
    self.assertLen(specs, 1)
    self.assertEqual(sorted(specs[0]), ["chunk", "file", "id", "input_fingerprint", "shard"])
    self.assertEqual(specs[0]["id"].shape.as_list(), [None])  # a chunk's ids, not its values
    self.assertEqual(remote.num_examples, N)

  def test_a_shard_returned_twice_is_an_error_that_leaves_no_store(self):
    received = service_lib.received
    twice = lambda job: iter((lambda e: e + [x for x in e if x["shard"] == 1])(
        list(received(job))))
    path = os.path.join(self.get_temp_dir(), "tampered")
    with mock.patch.object(service_lib, "received", twice):
      with self.assertRaisesRegex(ValueError, r"returned input shard 1 more than once.*"
                                  r"Received: shard index 1 of 3 shards"):
        self._build("tampered", service=self.dispatcher.target)
    self.assertFalse(os.path.exists(os.path.join(path, "metadata.json")))
    self.assertEqual([n for n in os.listdir(path) if n.startswith("values-")], [])

  @parameterized.named_parameters(
      ("missing_end", lambda e: [x for x in e if not (x["shard"] == 2 and x["chunk"] < 0)],
       r"did not return every input shard whole.*Received: missing shard indices \[2\]"),
      ("missing_shard", lambda e: [x for x in e if x["shard"] != 0],
       r"Received: missing shard indices \[0\]"),
      ("missing_chunk", lambda e: [x for x in e if not (x["shard"] == 1 and x["chunk"] == 1)],
       r"returned input shard 1 with chunks missing \(chunks \[0, 2, 3\]\)"),
      ("repeated_chunk", lambda e: e[:3] + e[2:], r"returned input shard 0 more than once"),
      ("unknown_shard", lambda e: [dict(x, shard=7) for x in e],
       r"Received: shard index 7 of 3 shards"))
  def test_a_shard_not_returned_once_and_whole_is_an_error(self, tamper, message):
    self.assertLen(service_lib._collect(self._elements(), 3), 3)  # pylint: disable=protected-access
    with self.assertRaisesRegex(ValueError, message):
      service_lib._collect(tamper(self._elements()), 3)  # pylint: disable=protected-access

  def _elements(self):
    """What the client received in one build, shard after shard (recorded once)."""
    if not hasattr(ServiceWriteTest, "elements"):
      received, recorded = service_lib.received, []
      record = lambda job: (recorded.append(e) or e for e in received(job))
      # records of 8 examples (the batches), so that a shard has several
      with mock.patch.object(service_lib, "received", record), mock.patch.object(
          shards_lib, "RECORD_SIZE", 8):
        self._build("recorded", service=self.dispatcher.target)
      ServiceWriteTest.elements = sorted(recorded, key=lambda e: (
          int(e["shard"]), int(e["chunk"]) < 0, int(e["chunk"])))
    return list(ServiceWriteTest.elements)

  def test_repeated_ids_are_an_error(self):
    shards = [self.stream.take(10).concatenate(self.stream.take(1))]
    with self.assertRaisesRegex(ValueError, r"two examples of input shard 0 share an id.*"
                                r"Received: id=0"):
      self._build("repeated", shards=shards, service=self.dispatcher.target)


class PickTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(1, 2, 13)
  def test_each_index_picks_its_shard(self, count):
    shards = [tf.data.Dataset.range(10 * k, 10 * k + k + 1) for k in range(count)]
    listed = inputs_lib.input_shards(shards)  # as the service job picks a list's shards
    picked = tf.data.Dataset.range(count).flat_map(listed.pick)
    self.assertAllEqual(list(picked.as_numpy_iterator()),
                        [v for d in shards for v in d.as_numpy_iterator()])


class RawBytesTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(np.float32, np.float16, np.int64, np.int32, np.uint8, np.int8,
                            np.bool_)
  def test_raw_bytes_are_numpy_bytes(self, dtype):
    for shape in ([0], [1], [3, 5], [300, 7]):
      value = (np.arange(np.prod(shape)).reshape(shape) % 7 - 3).astype(dtype)
      self.assertEqual(service_lib.raw_bytes(tf.constant(value)).numpy(),
                       value.astype(value.dtype.newbyteorder("<")).tobytes())


if __name__ == "__main__":
  tf.test.main()
