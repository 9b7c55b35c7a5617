"""Input shards given as a function of the index (`tfjest.InputShards`), made when needed.

A store built from `InputShards(fn, S)` is byte for byte the one built from the list
`[fn(i) for i in range(S)]`, locally and on tf.data service workers, and is reused (or found
stale) alike; the join of input shards and the other builders (prior targets, clusters) give
the same results. `fn` is called with a Python int for one shard at a time in this process,
and traced once with a tensor index in graphs (the service job, the join). Bad arguments and
shards of another element structure are errors naming what was received.
"""

import filecmp
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing
from tfjest.store import inputs as inputs_lib
from tfjest.store import shards as shards_lib

SIZES = (9, 13, 8, 11, 10, 13)  # uneven shards
N = sum(SIZES)


class Counted:
  """`fn(index)`: shard `index` of `stream` in `SIZES`, made from a Python int or a tensor
  index alike; `calls` records each call's index (an int, or "tensor")."""

  def __init__(self, stream, sizes=SIZES):
    self.stream, self.calls = stream, []
    self.starts = tf.constant(np.cumsum((0,) + tuple(sizes))[:-1], tf.int64)
    self.sizes = tf.constant(sizes, tf.int64)

  def __call__(self, index):
    self.calls.append(index if isinstance(index, int) else "tensor")
    return self.stream.skip(tf.gather(self.starts, index)).take(tf.gather(self.sizes, index))

  def shards(self):
    return tfjest.InputShards(self, len(SIZES))

  def datasets(self):
    return [self(i) for i in range(len(SIZES))]


def _ids(dataset):
  return [int(e["id"]) for e in dataset]


def _same_files(test, a, b):
  test.assertEqual(a.metadata, b.metadata)
  for shard in a.metadata["shards"]:
    test.assertTrue(filecmp.cmp(os.path.join(a.path, shard["file"]),
                                os.path.join(b.path, shard["file"]), shallow=False),
                    shard["file"])


class InputShardsTest(tf.test.TestCase, parameterized.TestCase):

  def test_shards_are_made_when_indexed(self):
    made = Counted(tf.data.Dataset.range(N).map(lambda i: {"id": i}))
    shards = made.shards()
    self.assertEqual((len(shards), made.calls), (6, []))
    self.assertEqual(_ids(shards[2]), list(range(22, 30)))
    self.assertEqual(made.calls, [2, 0])  # shard 2, and shard 0 for the element_spec
    self.assertEqual(_ids(shards[-1]), list(range(51, 64)))
    self.assertEqual(made.calls, [2, 0, 5])
    self.assertEqual([_ids(s) for s in shards], [_ids(d) for d in made.datasets()])
    with self.assertRaises(IndexError):
      shards[6]  # pylint: disable=pointless-statement
    with self.assertRaisesRegex(TypeError, r"indexed by an int.*Received: index=1.0"):
      shards[1.0]  # pylint: disable=pointless-statement
    self.assertIs(inputs_lib.input_shards(shards), shards)

  def test_a_local_build_makes_one_shard_at_a_time(self):
    made = Counted(tf.data.Dataset.range(N).map(lambda i: {"id": i}))
    shards = inputs_lib.input_shards(made.shards())
    made.calls.clear()
    compute = lambda batch: {"id": batch["id"], "input_fingerprint": batch["id"]}
    seen = []
    for index, chunks in enumerate(shards_lib.compute_chunks(shards, compute, batch_size=4)):
      seen.append(list(made.calls))
      self.assertEqual(np.concatenate([c["id"] for c in chunks]).tolist(), _ids(made(index)))
      made.calls.pop()
    self.assertEqual(seen, [list(range(k + 1)) for k in range(6)])

  @parameterized.parameters(1, 2, 6)
  def test_pick_traces_fn_once_with_a_tensor(self, count):
    made = Counted(tf.data.Dataset.range(N).map(lambda i: {"id": i}), SIZES[:count])
    shards = tfjest.InputShards(made, count)
    picked = tf.data.Dataset.range(count).flat_map(shards.pick)
    self.assertEqual(made.calls, [0, "tensor"])  # fn(0): the element_spec to check against
    self.assertEqual(_ids(picked), list(range(sum(SIZES[:count]))))
    # The list form's pick (a tree of tf.cond) and the function's agree.
    listed = inputs_lib.input_shards([made(i) for i in range(count)])
    for form in (listed, shards):
      self.assertEqual(_ids(tf.data.Dataset.range(count).flat_map(
          lambda i, form=form: form.pick(i))), _ids(picked))

  @parameterized.parameters(0, -1, 1.5, True, "3", None)
  def test_count_must_be_a_positive_integer(self, count):
    with self.assertRaisesRegex(ValueError, r"count must be a positive integer.*Received: "
                                r"count=" + repr(count).replace(".", r"\.")):
      tfjest.InputShards(lambda i: tf.data.Dataset.range(1), count)

  def test_fn_must_be_callable(self):
    with self.assertRaisesRegex(TypeError, r"fn must be a function.*Received: fn=\[1, 2\]"):
      tfjest.InputShards([1, 2], 2)

  def test_fn_must_return_a_dataset(self):
    shards = tfjest.InputShards(lambda i: [i], 2)
    with self.assertRaisesRegex(TypeError, r"fn must return a tf.data.Dataset \(input shard "
                                r"0\)\. Received: fn\(0\) of type list"):
      tfjest.cache_reference(testing.dual_encoder(1, "reference"), shards,
                             os.path.join(self.get_temp_dir(), "bad"))
    picky = tfjest.InputShards(
        lambda i: tf.data.Dataset.range(2) if isinstance(i, int) else i, 2)
    with self.assertRaisesRegex(TypeError, r"Received: fn\(a tensor index\) of type"):
      tf.data.Dataset.range(2).flat_map(picky.pick)

  def test_a_shard_of_another_element_spec_is_an_error(self):
    stream = testing.stream("contrastive", n=N)
    made = Counted(stream)
    other = lambda i: made(i).map(lambda e: dict(e, extra=e["id"])) if i == 3 else made(i)
    shards = tfjest.InputShards(other, 6)
    with self.assertRaisesRegex(ValueError, r"same element structure as fn\(0\).*Received: "
                                r"fn\(3\) with element_spec=.*'extra'"):
      tfjest.cache_reference(testing.dual_encoder(1, "reference"), shards,
                             os.path.join(self.get_temp_dir(), "other"), batch_size=4)
    # In a graph: the traced shard's element_spec is checked against fn(0)'s.
    traced = tfjest.InputShards(
        lambda i: made(i) if isinstance(i, int) else made(i).map(lambda e: dict(e, id=e["id"][
            None])), 6)
    with self.assertRaisesRegex(ValueError, r"Received: fn\(a tensor index\) with "
                                r"element_spec=.*'id': TensorSpec\(shape=\(1,\)"):
      tf.data.Dataset.range(6).flat_map(traced.pick)


def _prior_targets(directory):
  """`(stream, build)`: a classification stream and `build(shards, name, **kwargs)`, the
  prior targets of a small dual encoder's image embeddings under `directory/name`."""
  prior = testing.dual_encoder(seed=7, name="prior")
  features = lambda model, x, training: model({"image": x["x"], "text": x["x"]},
                                              training=training)["image_embeddings"]
  build = lambda shards, name, **kwargs: tfjest.prior_targets(
      prior, shards, os.path.join(directory, name), width=3, features=features, batch_size=8,
      **kwargs)
  return testing.stream("classification", n=N), build


class BuildTest(testing.ServiceTestCase):
  """A store from `InputShards` is the list form's, locally and on 2 service workers."""

  NUM_EXAMPLES = N

  @classmethod
  def setUpClass(cls):
    super().setUpClass()  # the service, the reference and the stream
    cls.dir = tempfile.mkdtemp()
    cls.listed = tfjest.cache_reference(cls.reference, Counted(cls.stream).datasets(),
                                        os.path.join(cls.dir, "listed"), batch_size=4)

  def _build(self, shards, name, **kwargs):
    return tfjest.cache_reference(self.reference, shards, os.path.join(self.dir, name),
                                  batch_size=4, **kwargs)

  def test_a_local_build_is_the_list_forms_and_is_reused(self):
    made = Counted(self.stream)
    lazy = self._build(made.shards(), "lazy")
    _same_files(self, lazy, self.listed)
    self.assertEqual(made.calls, [0] + list(range(6)))  # the element_spec, then each shard
    made.calls.clear()
    again = self._build(made.shards(), "lazy", reuse=True)
    self.assertTrue(again.reused)
    self.assertEqual(made.calls, [0] + list(range(6)))
    # Input shard 4's examples changed: stale, rebuilt.
    changed = lambda i: made(i).map(lambda e: dict(e, image=e["image"] + tf.cast(
        tf.equal(i, 4), tf.float32)))
    rebuilt = self._build(tfjest.InputShards(changed, 6), "lazy", reuse=True)
    self.assertFalse(rebuilt.reused)
    self.assertIn("input shard 4", rebuilt.rebuild_reason)
    # Fewer shards than the store holds: stale.
    fewer = self._build(tfjest.InputShards(made, 5), "lazy", reuse=True)
    self.assertEqual(fewer.rebuild_reason, "the dataset has 5 input shards, the reference "
                                           "cache 6")

  def test_a_service_build_is_the_list_forms_with_fn_traced_once(self):
    made = Counted(self.stream)
    remote = self._build(made.shards(), "remote", service=self.dispatcher.target)
    _same_files(self, remote, self.listed)
    self.assertEqual(made.calls, [0, "tensor"])  # the element_spec, and the job's one trace
    listed = self._build(Counted(self.stream).datasets(), "remote_listed",
                         service=self.dispatcher.target)
    _same_files(self, listed, self.listed)
    made.calls.clear()
    self.assertTrue(self._build(made.shards(), "remote", reuse=True,
                                service=self.dispatcher.target).reused)

  def test_prior_targets_on_the_service_are_the_list_forms(self):
    stream, build = _prior_targets(self.dir)
    made = Counted(stream)
    lazy = build(made.shards(), "prior_lazy", service=self.dispatcher.target)
    self.assertEqual(made.calls, [0, "tensor"])
    listed = build(Counted(stream).datasets(), "prior_listed")
    self.assertEqual(lazy.metadata, listed.metadata)
    self.assertAllClose(lazy.array("target"), listed.array("target"), atol=1e-5)


class OtherBuildersTest(tf.test.TestCase):

  def test_prior_targets_locally_are_the_list_forms(self):
    stream, build = _prior_targets(self.get_temp_dir())
    made = Counted(stream)
    lazy = build(made.shards(), "lazy")
    listed = build(made.datasets(), "listed")
    _same_files(self, lazy, listed)
    self.assertTrue(build(made.shards(), "listed", reuse=True).reused)

  def test_clusters_of_a_lazy_built_cache_are_the_list_forms(self):
    reference, stream = testing.dual_encoder(1, "reference"), testing.stream("contrastive", n=N)
    made, clusters = Counted(stream), []
    for name, shards in (("lazy", made.shards()), ("listed", made.datasets())):
      cache = tfjest.cache_reference(reference, shards,
                                     os.path.join(self.get_temp_dir(), name), batch_size=4)
      clusters.append(tfjest.cluster_reference(
          cache, os.path.join(self.get_temp_dir(), name + "_clusters"), num_clusters=3,
          seed=0))
    lazy, listed = clusters
    self.assertEqual(lazy.num_shards, 6)
    self.assertAllEqual(lazy.centroids, listed.centroids)
    self.assertAllEqual(lazy.assignments, listed.assignments)
    self.assertAllEqual(lazy.ids, listed.ids)


class JoinTest(tf.test.TestCase, parameterized.TestCase):
  """The join of input shards given lazily: the list form's order and values, `fn` traced
  once with the position."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.stream = testing.stream("contrastive", n=N)
    cls.cache = tfjest.cache_reference(testing.dual_encoder(1, "reference"),
                                       Counted(cls.stream).datasets(),
                                       os.path.join(tempfile.mkdtemp(), "cache"), batch_size=4)

  def assertJoinedAlike(self, lazy, listed):  # pylint: disable=invalid-name
    lazy, listed = list(lazy), list(listed)
    self.assertEqual(_ids(lazy), _ids(listed))
    for a, b in zip(lazy, listed):
      for key in ("reference_image_embeddings", "reference_text_embeddings", "image"):
        self.assertAllEqual(a[key], b[key])

  @parameterized.parameters(2, 4, 6)
  def test_the_join_is_the_list_forms(self, cycle_length):
    made = Counted(self.stream)
    lazy = self.cache.join(id_key="id", inputs=made.shards(), cycle_length=cycle_length)
    self.assertEqual(made.calls, [0, "tensor"])
    listed = self.cache.join(id_key="id", inputs=made.datasets(), cycle_length=cycle_length)
    joined = list(lazy)
    self.assertLen(joined, N)
    self.assertNotEqual(_ids(joined), sorted(_ids(joined)))  # interleaved, not in id order
    self.assertJoinedAlike(joined, listed)

  def test_a_subset_of_value_shards_is_joined_by_position(self):
    shards = [1, 3, 4]
    made = Counted(self.stream)
    picked = tf.constant(shards, tf.int64)
    lazy = tfjest.InputShards(lambda k: made(tf.gather(picked, k)), 3)
    self.assertJoinedAlike(
        self.cache.join(id_key="id", shards=shards, inputs=lazy, cycle_length=2),
        self.cache.join(id_key="id", shards=shards, inputs=[made(i) for i in shards],
                        cycle_length=2))

  def test_a_missing_example_is_named_in_its_own_shard(self):
    made = Counted(self.stream)
    dropped = lambda i: made(i).filter(lambda e: tf.not_equal(e["id"], 34))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"example id 35 met the value stored for id 34 \(position 4 "
                                r"of shard \W*values-00003-of-00006"):
      list(self.cache.join(id_key="id", inputs=tfjest.InputShards(dropped, 6),
                           cycle_length=2))

  def test_the_count_must_be_the_shards_joined(self):
    made = Counted(self.stream)
    with self.assertRaisesRegex(ValueError, r"inputs must be one dataset per value shard "
                                r"joined \(2: \[0, 1\]\).*Received: inputs=InputShards\("):
      self.cache.join(id_key="id", shards=[0, 1], inputs=made.shards())


if __name__ == "__main__":
  tf.test.main()
