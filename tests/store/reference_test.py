"""Cached reference outputs: same selections as the live reference, staleness, arguments.

Built on tf.data service workers: tests/store/service_test.py.
"""

import json
import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest.store import fingerprints
from tfjest import testing

N, B = 40, 8


def _dual_encoder(name, seed):
  keras.utils.set_random_seed(seed)
  model = testing.PairDualEncoder(name=name)
  model({"image": np.zeros((1, 16, 16, 3), np.float32), "text": np.ones((1, 3), np.int32)})
  return model


def _fresh_dir(test):
  return tempfile.mkdtemp(dir=test.get_temp_dir())


def _stream(data):
  return tf.data.Dataset.from_tensor_slices(
      {"image": data["image"], "text": data["text"], "id": data["id"]})


def _ids(dataset):
  return np.concatenate([batch["id"].numpy() for batch in dataset])


class CacheTestCase(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.learner = _dual_encoder("learner", 0)
    cls.reference = _dual_encoder("reference", 1)
    cls.data = testing.make_pairs(200, 0.5, seed=0)
    cls.stream = _stream(cls.data)

  def _cache(self, **kwargs):
    path = os.path.join(_fresh_dir(self), "cache")
    return tfjest.cache_reference(self.reference, self.stream, path, id_key="id",
                                  batch_size=64, **kwargs)


class ContrastiveCacheTest(CacheTestCase):

  def test_cached_and_live_reference_select_the_same(self):
    cache = self._cache()
    kwargs = dict(learner=self.learner, batch_size=B, filter_ratio=0.8, num_chunks=4, seed=2)
    live = tfjest.select(reference=self.reference, **kwargs)
    cached = tfjest.select(reference_cache=cache, id_key="id", **kwargs)
    shuffled = self.stream.shuffle(200, seed=1, reshuffle_each_iteration=False)  # join by id
    self.assertAllEqual(_ids(shuffled.apply(cached)), _ids(shuffled.apply(live)))
    live_stats, cached_stats = live.stats.result(), cached.stats.result()
    for key in ("reference_loss_selected", "reference_loss_rejected", "batch_score"):
      self.assertAllClose(cached_stats[key], live_stats[key], rtol=1e-5)
    # The cached reference costs nothing per step.
    self.assertEqual(cached.step_cost().reference_scoring, 0.0)
    self.assertGreater(live.step_cost().reference_scoring, 0.0)

  def test_eager_select_batch_and_checking_the_reference_too(self):
    cache = self._cache()
    selector = tfjest.select(learner=self.learner, reference=self.reference,
                             reference_cache=cache, id_key="id", batch_size=B,
                             filter_ratio=0.8, num_chunks=4)
    super_batch = next(iter(self.stream.batch(N)))
    piped = next(iter(self.stream.apply(selector)))
    self.assertAllEqual(selector.select_batch(super_batch, step=0)["id"], piped["id"])

  def test_contents_metadata_and_load(self):
    cache = self._cache()
    self.assertEqual(cache.task, "contrastive")
    self.assertEqual(cache.num_examples, 200)
    with open(os.path.join(cache.path, "metadata.json")) as f:
      metadata = json.load(f)
    self.assertEqual(metadata["source"]["fingerprint"],
                     fingerprints.model_fingerprint(self.reference, "contrastive"))
    self.assertEqual(metadata["kind"], "reference_cache")
    self.assertLen(metadata["ids"]["fingerprint"], 64)
    self.assertLen(metadata["shards"], 1)
    self.assertLen(metadata["shards"][0]["content_fingerprint"], 64)
    self.assertAllClose(metadata["logit_scale"], 10.0, rtol=1e-6)
    self.assertEqual(metadata["values"], {"image_embeddings": {"shape": [32], "dtype": "float32"},
                                          "text_embeddings": {"shape": [32], "dtype": "float32"}})
    loaded = tfjest.ReferenceCache.load(cache.path)
    ids = tf.constant([5, 0, 199], tf.int64)
    batch = {"image": self.data["image"][[5, 0, 199]], "text": self.data["text"][[5, 0, 199]],
             "id": ids}
    emb = loaded.outputs_for(batch, "id")
    want = self.reference({"image": batch["image"], "text": batch["text"]})
    self.assertAllClose(emb.image, want["image_embeddings"], atol=1e-6)
    self.assertAllClose(emb.text, want["text_embeddings"], atol=1e-6)
    self.assertAllClose(emb.logit_bias, -10.0)

  def test_string_ids_and_nested_id_key(self):
    data = self.data
    names = np.array([f"ex-{i}" for i in data["id"]])
    stream = tf.data.Dataset.from_tensor_slices(
        {"image": data["image"], "text": data["text"], "meta": {"name": names}})
    path = os.path.join(_fresh_dir(self), "cache")
    cache = tfjest.cache_reference(self.reference, stream, path, id_key="meta/name")
    selector = tfjest.select(learner=self.learner, reference_cache=cache, id_key="meta/name",
                             batch_size=B, filter_ratio=0.8, num_chunks=4)
    live = tfjest.select(learner=self.learner, reference=self.reference, batch_size=B,
                         filter_ratio=0.8, num_chunks=4)
    names_of = lambda ds: np.concatenate([b["meta"]["name"].numpy() for b in ds])
    self.assertAllEqual(names_of(stream.apply(selector)), names_of(stream.apply(live)))

  def test_id_beside_the_labels(self):
    # (inputs, meta) elements: the id travels in y, which a dual encoder does not read.
    data = self.data
    stream = tf.data.Dataset.from_tensor_slices(
        ({"image": data["image"], "text": data["text"]}, {"id": data["id"]}))
    path = os.path.join(_fresh_dir(self), "cache")
    cache = tfjest.cache_reference(self.reference, stream, path, id_key="id")
    selector = tfjest.select(learner=self.learner, reference_cache=cache, id_key="id",
                             batch_size=B, filter_ratio=0.8, num_chunks=4)
    live = tfjest.select(learner=self.learner, reference=self.reference, batch_size=B,
                         filter_ratio=0.8, num_chunks=4)
    ids_of = lambda ds: np.concatenate([meta["id"].numpy() for _, meta in ds])
    self.assertAllEqual(ids_of(stream.apply(selector)), ids_of(stream.apply(live)))
    with self.assertRaisesRegex(ValueError, r"looked in the element, in its x and in its y.*"
                                            r"Received: id_key='name'"):
      tfjest.cache_reference(self.reference, stream, path + "2", id_key="name")

  def test_missing_id_stops_the_pipeline_naming_it(self):
    cache = self._cache()
    extra = testing.make_pairs(N, 0.0, seed=5)
    extra["id"] = extra["id"] + 1000
    selector = tfjest.select(learner=self.learner, reference_cache=cache, id_key="id",
                             batch_size=B, filter_ratio=0.8, num_chunks=4)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"no entry for example id 1000 \(40 ids.*Received: id=1000"):
      list(_stream(extra).apply(selector))

  def test_cache_of_another_dataset_with_the_same_ids_is_stale(self):
    cache = self._cache()
    other = testing.make_pairs(200, 0.5, seed=9)  # ids 0..199 again, other examples
    selector = tfjest.select(learner=self.learner, reference_cache=cache, id_key="id",
                             batch_size=B, filter_ratio=0.8, num_chunks=4)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "computed from other inputs.*stale.*Received: id=0"):
      list(_stream(other).apply(selector))
    # Opting out of the check is explicit.
    unchecked = tfjest.ReferenceCache.load(cache.path, verify_inputs=False)
    selector = tfjest.select(learner=self.learner, reference_cache=unchecked, id_key="id",
                             batch_size=B, filter_ratio=0.8, num_chunks=4)
    self.assertLen(list(_stream(other).apply(selector)), 5)

  def test_cache_of_another_reference_is_stale(self):
    cache = self._cache()
    other = _dual_encoder("other_reference", 7)
    with self.assertRaisesRegex(ValueError, "other reference weights.*stale.*"
                                "Received: reference='other_reference' with fingerprint"):
      tfjest.select(learner=self.learner, reference=other, reference_cache=cache, id_key="id",
                    batch_size=B, num_chunks=4)
    # Training the reference after caching makes the cache stale too.
    moved = _dual_encoder("moved", 1)
    moved.bias.assign(-9.0)
    with self.assertRaisesRegex(ValueError, "stale.*Received: reference='moved'"):
      tfjest.select(learner=self.learner, reference=moved, reference_cache=cache, id_key="id",
                    batch_size=B, num_chunks=4)

  def test_elements_of_another_structure(self):
    cache = self._cache()
    stream = self.stream.map(lambda e: {**e, "image": e["image"][:8, :8]})
    learner = testing.PairDualEncoder(name="small_images")
    selector = tfjest.select(learner=learner, reference_cache=cache, id_key="id",
                             batch_size=B, num_chunks=4)
    with self.assertRaisesRegex(ValueError, "another structure.*stale.*Received: inputs"):
      stream.apply(selector)
    as_float = self.stream.map(lambda e: {**e, "id": tf.cast(e["id"], tf.float32)})
    with self.assertRaisesRegex(ValueError, "scalar int64 ids. Received: id feature 'id' of "
                                "dtype float32"):
      as_float.apply(tfjest.select(learner=self.learner, reference_cache=cache, id_key="id",
                                   batch_size=B, num_chunks=4))

  def test_no_id_feature(self):
    cache = self._cache()
    with self.assertRaisesRegex(ValueError, "no feature 'uid'.*Received: id_key='uid'"):
      self.stream.apply(tfjest.select(learner=self.learner, reference_cache=cache,
                                      id_key="uid", batch_size=B, num_chunks=4))


class ClassifierCacheTest(tf.test.TestCase):

  def test_cached_losses_select_the_same(self):
    keras.utils.set_random_seed(0)
    learner, reference = testing.pair_classifier(), testing.pair_classifier()
    data = testing.make_pairs(200, 0.0, seed=3)
    stream = tf.data.Dataset.from_tensor_slices(
        ({"image": data["image"], "id": data["id"]}, data["label"]))
    wrap = lambda m: keras.Sequential([keras.layers.Lambda(lambda x: x["image"]), m])
    learner, reference = wrap(learner), wrap(reference)
    for m in (learner, reference):
      m.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = os.path.join(_fresh_dir(self), "cache")
    cache = tfjest.cache_reference(reference, stream, path, id_key="id")
    self.assertEqual(cache.task, "classification")
    kwargs = dict(learner=learner, batch_size=B, filter_ratio=0.8, method="independent")
    live = _ids_of(stream.apply(tfjest.select(reference=reference, **kwargs)))
    cached = _ids_of(stream.apply(tfjest.select(reference_cache=cache, id_key="id", **kwargs)))
    self.assertAllEqual(cached, live)
    # A relabelled dataset is another dataset: its cached losses are stale.
    relabelled = tf.data.Dataset.from_tensor_slices(
        ({"image": data["image"], "id": data["id"]}, (data["label"] + 1) % 48))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "stale"):
      list(relabelled.apply(tfjest.select(reference_cache=cache, id_key="id", **kwargs)))

  def test_contrastive_learner_with_a_classifier_cache(self):
    keras.utils.set_random_seed(0)
    data = testing.make_pairs(80, 0.0, seed=3)
    stream = tf.data.Dataset.from_tensor_slices(
        ({"image": data["image"], "text": data["text"], "id": data["id"]}, data["label"]))
    classifier = keras.Sequential([keras.layers.Lambda(lambda x: x["image"]),
                                   testing.pair_classifier()])
    classifier.compile(loss="sparse_categorical_crossentropy")
    path = os.path.join(_fresh_dir(self), "cache")
    cache = tfjest.cache_reference(classifier, stream, path, id_key="id")
    with self.assertRaisesRegex(ValueError, "same kind.*Received: learner task 'contrastive', "
                                "reference cache task 'classification'"):
      stream.apply(tfjest.select(learner=testing.PairDualEncoder(), reference_cache=cache,
                                 id_key="id", batch_size=B, num_chunks=4))


def _ids_of(dataset):
  return np.concatenate([x["id"].numpy() for x, _ in dataset])


class CacheArgumentsTest(CacheTestCase):

  @parameterized.named_parameters(
      ("id_key", dict(id_key=""), ValueError, "Received: id_key=''"),
      ("batch_size", dict(batch_size=0), ValueError, "Received: batch_size=0"),
      ("task", dict(task="regression"), ValueError, "Received: task='regression'"),
      ("service", dict(service=5050), ValueError, "Received: service=5050"),
      ("mode", dict(processing_mode="all"), ValueError, "Received: processing_mode='all'"),
  )
  def test_argument_errors(self, kwargs, error, message):
    path = os.path.join(_fresh_dir(self), "cache")
    with self.assertRaisesRegex(error, message):
      tfjest.cache_reference(self.reference, self.stream, path, **kwargs)

  def test_type_errors(self):
    with self.assertRaisesRegex(TypeError, "Received: reference of type str"):
      tfjest.cache_reference("model", self.stream, "/tmp/x")
    with self.assertRaisesRegex(TypeError, "Received: dataset of type list"):
      tfjest.cache_reference(self.reference, [1], "/tmp/x")

  def test_existing_cache_needs_overwrite(self):
    cache = self._cache()
    with self.assertRaisesRegex(ValueError, "already exists.*overwrite=True.*Received: path="):
      tfjest.cache_reference(self.reference, self.stream, cache.path)
    again = tfjest.cache_reference(self.reference, self.stream, cache.path, overwrite=True)
    self.assertEqual(again.num_examples, 200)

  def test_duplicate_ids_with_other_inputs(self):
    data = dict(self.data)
    data["id"] = data["id"] % 150
    path = os.path.join(_fresh_dir(self), "cache")
    with self.assertRaisesRegex(ValueError, "must be unique.*Received: id=0"):
      tfjest.cache_reference(self.reference, _stream(data), path)

  def test_bad_id_dtype_and_unreadable_directory(self):
    stream = self.stream.map(lambda e: {**e, "id": tf.cast(e["id"], tf.float32)})
    with self.assertRaisesRegex(ValueError, "integer or string scalars. Received: id feature "
                                "'id' of dtype float32"):
      tfjest.cache_reference(self.reference, stream, _fresh_dir(self))
    with self.assertRaisesRegex(ValueError, "No readable tfjest reference cache.*Received: path="):
      tfjest.ReferenceCache.load(_fresh_dir(self))

  def test_unbuilt_reference_cannot_be_checked(self):
    cache = self._cache()
    with self.assertRaisesRegex(ValueError, "no weights yet.*Received: reference='unbuilt' "
                                r"\(not built\)"):
      tfjest.select(learner=self.learner, reference=testing.PairDualEncoder(name="unbuilt"),
                    reference_cache=cache, id_key="id", batch_size=B, num_chunks=4)

  def test_not_a_cache_of_this_format(self):
    path = _fresh_dir(self)
    with open(os.path.join(path, "metadata.json"), "w") as f:
      json.dump({"format": "something.else", "version": 1}, f)
    with self.assertRaisesRegex(ValueError,
                                "Received: format='something.else', version=1, kind=None"):
      tfjest.ReferenceCache.load(path)

  def test_classifier_cache_needs_labels_and_data(self):
    classifier = keras.Sequential([keras.layers.Lambda(lambda x: x["image"]),
                                   testing.pair_classifier()])
    classifier.compile(loss="sparse_categorical_crossentropy")
    with self.assertRaisesRegex(ValueError, "needs labels.*elements without labels"):
      tfjest.cache_reference(classifier, self.stream, _fresh_dir(self), task="classification")
    empty = self.stream.take(0)
    with self.assertRaisesRegex(ValueError, "empty dataset. Received: dataset with no"):
      tfjest.cache_reference(self.reference, empty, _fresh_dir(self))

  def test_explicit_task_against_the_cache(self):
    cache = self._cache()
    with self.assertRaisesRegex(ValueError, "holds 'contrastive' outputs. "
                                "Received: task='classification'"):
      self.stream.apply(tfjest.select(reference_cache=cache, id_key="id", batch_size=B,
                                      score="easy_reference", method="independent",
                                      task="classification"))
    # The cache alone (easy_reference) is enough to select.
    selector = tfjest.select(reference_cache=cache, id_key="id", batch_size=B, num_chunks=4,
                             score="easy_reference")
    self.assertLen(list(self.stream.apply(selector)), 5)

  def test_select_argument_errors(self):
    cache = self._cache()
    with self.assertRaisesRegex(TypeError, "Received: reference_cache of type str"):
      tfjest.select(learner=self.learner, reference_cache="cache", id_key="id", batch_size=B,
                    num_chunks=4)
    with self.assertRaisesRegex(ValueError, "pass id_key=.*Received: id_key=None"):
      tfjest.select(learner=self.learner, reference_cache=cache, batch_size=B, num_chunks=4)
    with self.assertRaisesRegex(ValueError, "only serves reference_cache.*Received: id_key='id'"):
      tfjest.select(learner=self.learner, reference=self.reference, id_key="id", batch_size=B,
                    num_chunks=4)
    with self.assertRaisesRegex(ValueError, "would be unused. Received: reference_cache="):
      tfjest.select(learner=self.learner, reference_cache=cache, id_key="id", batch_size=B,
                    num_chunks=4, score="hard_learner")


if __name__ == "__main__":
  tf.test.main()
