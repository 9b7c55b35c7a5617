"""examples.lib.data, examples.lib.models and examples.lib.evaluation: TFDS to model inputs,
the models' contracts, and the evaluation's definitions (checked with oracle and constant
embeddings), on a tiny config."""

import os
import shutil
import tempfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

import tfjest
from examples.lib import data
from examples.lib import evaluation
from examples.lib import models
from tfjest import datasets

_CONFIG = datasets.make_config(noise=0.5, web_size=600, curated_size=120, test_size=80)
B, F = 8, 0.75  # N = 32


class CaptionsWorldTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()
    cls.tokenizer = data.tokenizer_for(_CONFIG, cls.data_dir)
    cls.web = data.load_split("web", tokenizer=cls.tokenizer, config=_CONFIG,
                            data_dir=cls.data_dir)
    cls.test = data.load_split("test", tokenizer=cls.tokenizer, config=_CONFIG,
                             data_dir=cls.data_dir)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.data_dir, ignore_errors=True)
    super().tearDownClass()

  def _model(self, seed=0, name=None):
    keras.utils.set_random_seed(seed)
    return models.DualEncoder(self.tokenizer.vocab_size, width=16, name=name)

  # Data.

  def test_vocabulary_is_cached_next_to_the_data_and_reused(self):
    path = data.vocab_path(_CONFIG, self.data_dir)
    self.assertTrue(os.path.exists(path))
    self.assertStartsWith(os.path.dirname(path), self.data_dir)
    with mock.patch.object(datasets, "build_vocab", side_effect=AssertionError("rebuilt")):
      again = data.tokenizer_for(_CONFIG, self.data_dir)
    self.assertEqual(again.vocab, self.tokenizer.vocab)
    self.assertContainsSubset(["red", "circle", "small", "left"], self.tokenizer.vocab)

  def test_pipeline_tokenizes_inside_tf_data(self):
    ds = data.pipeline("web", tokenizer=self.tokenizer, config=_CONFIG, data_dir=self.data_dir)
    inputs_spec, meta_spec = ds.element_spec
    self.assertEqual(inputs_spec["image"], tf.TensorSpec([32, 32, 3], tf.float32))
    self.assertEqual(inputs_spec["tokens"], tf.TensorSpec([data.MAX_LENGTH], tf.int32))
    self.assertEqual(set(meta_spec), {"id", "corruption"})
    raw = datasets.load("web", config=_CONFIG, data_dir=self.data_dir)
    for (inputs, meta), example in zip(ds.take(5), raw.take(5)):
      self.assertAllEqual(inputs["tokens"], self.tokenizer(example["caption"]))  # eager
      self.assertAllClose(inputs["image"], example["image"].numpy() / 255.0)
      self.assertBetween(float(tf.reduce_min(inputs["image"])), 0.0, 1.0)
      self.assertBetween(float(tf.reduce_max(inputs["image"])), 0.0, 1.0)
      self.assertEqual(int(meta["id"]), int(example["id"]))

  def test_in_memory_stream_matches_the_pipeline(self):
    self.assertAllEqual(self.web.id, np.arange(len(self.web)))  # rows are ids
    ds = data.pipeline("web", tokenizer=self.tokenizer, config=_CONFIG, data_dir=self.data_dir)
    by_id = {int(m["id"]): x for x, m in ds}
    streamed = list(data.stream(self.web, seed=3, repeat=False))
    self.assertLen(streamed, len(self.web))
    self.assertCountEqual([int(m["id"]) for _, m in streamed], range(len(self.web)))
    for inputs, meta in streamed[:20]:
      expected = by_id[int(meta["id"])]
      self.assertAllEqual(inputs["tokens"], expected["tokens"])
      self.assertAllClose(inputs["image"], expected["image"])
      self.assertEqual(int(meta["corruption"]), self.web.corruption[int(meta["id"])])
    # Seeded: the same order again.
    again = [int(m["id"]) for _, m in data.stream(self.web, seed=3, repeat=False)]
    self.assertEqual(again, [int(m["id"]) for _, m in streamed])

  # Models.

  def test_dual_encoder_contract(self):
    model = self._model()
    out = model({"image": tf.constant(self.test.image[:3] / 255.0, tf.float32),
                 "tokens": tf.constant(self.test.tokens[:3])})
    self.assertEqual(set(out), {"image_embeddings", "text_embeddings"})
    for key in out:
      self.assertEqual(out[key].shape, (3, 16))
      self.assertAllClose(tf.norm(out[key], axis=-1), tf.ones([3]), atol=1e-5)
    self.assertAllClose(model.logit_scale, 10.0)
    self.assertAllClose(model.logit_bias, -10.0)

  def test_smaller_filters_make_a_smaller_model_that_saves_and_loads(self):
    small = models.DualEncoder(self.tokenizer.vocab_size, width=8, filters=(4, 8, 16))
    small(data.example_inputs(1))
    full = self._model()
    full(data.example_inputs(1))
    self.assertLess(small.count_params(), 0.5 * full.count_params())
    path = os.path.join(self.get_temp_dir(), "small.keras")
    small.save(path)
    loaded = keras.saving.load_model(path)
    self.assertEqual(loaded.filters, (4, 8, 16))
    self.assertEqual(loaded.count_params(), small.count_params())
    with self.assertRaisesRegex(ValueError, r"Received: filters=\(4, 8\)"):
      models.DualEncoder(10, filters=(4, 8))

  def test_select_runs_on_the_pipeline_and_fit_trains(self):
    learner, reference = self._model(0, "learner"), self._model(1, "reference")
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    for method in ("jest", "uniform"):
      selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                               filter_ratio=F, method=method, num_chunks=4, seed=0)
      ds = data.pipeline("web", tokenizer=self.tokenizer, config=_CONFIG,
                       data_dir=self.data_dir)
      counter = data.CorruptionCounter()
      selected = ds.apply(selector).map(data.strip_meta(counter))
      self.assertEqual(selected.element_spec["tokens"], tf.TensorSpec([B, 32], tf.int32))
      self.assertNotIn("corruption", selected.element_spec)
      before = [w.numpy().copy() for w in learner.trainable_weights]
      history = learner.fit(selected.take(3), verbose=0)
      self.assertTrue(np.isfinite(history.history["loss"][-1]))
      self.assertTrue(any(np.any(a != w.numpy()) for a, w in zip(before,
                                                                   learner.trainable_weights)))
      stats = selector.stats.result()
      self.assertEqual(stats["selected"], 3 * B)
      result = counter.result()
      self.assertEqual(result["selected"], 3 * B)
      self.assertBetween(result["corrupted_share"], 0.0, 1.0)
      if method == "jest":
        self.assertEqual(selector.task, "contrastive")

  def test_corruption_counter_counts_what_passed_through(self):
    counter = data.CorruptionCounter()
    self.assertTrue(np.isnan(counter.result()["corrupted_share"]))
    fn = data.strip_meta(counter)
    fn({"image": tf.zeros([4, 1])}, {"id": tf.range(4), "corruption": tf.constant([0, 1, 1, 5])})
    result = counter.result()
    self.assertEqual(result["selected"], 4)
    self.assertAllClose(result["corrupted_share"], 0.75)
    self.assertAllClose(result["swapped"], 0.5)
    self.assertAllClose(result["near_duplicate"], 0.25)

  def test_saved_models_load_back(self):
    model = self._model()
    model(data.example_inputs(1))
    model.log_scale.assign(1.5)
    path = os.path.join(self.get_temp_dir(), "dual.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    self.assertIsInstance(loaded, models.DualEncoder)
    inputs = {"image": tf.constant(self.test.image[:4] / 255.0, tf.float32),
              "tokens": tf.constant(self.test.tokens[:4])}
    for key, value in model(inputs).items():
      self.assertAllClose(loaded(inputs)[key], value)
    self.assertAllClose(loaded.logit_scale, np.exp(1.5))

    classifier = models.make_classifier()
    classifier(inputs["image"])
    path = os.path.join(self.get_temp_dir(), "classifier.keras")
    classifier.save(path)
    self.assertAllClose(keras.saving.load_model(path)(inputs["image"]),
                        classifier(inputs["image"]))

  def test_classifier_with_per_example_selection(self):
    keras.utils.set_random_seed(0)
    learner, reference = models.make_classifier(), models.make_classifier()
    selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                             filter_ratio=F, method="independent")
    selected = data.classification_stream(self.web, seed=0).apply(selector)
    learner.fit(selected, steps_per_epoch=2, verbose=0)
    self.assertEqual(selector.task, "classification")
    self.assertBetween(evaluation.classification_accuracy(learner, self.test), 0.0, 1.0)

  # Evaluation.

  def test_zero_shot_predictions_of_oracle_and_constant_embeddings(self):
    labels = np.array([3, 0, 39, 7, 7])
    concepts = np.eye(40)
    oracle = np.eye(40)[labels] + 0.01  # points at its concept
    self.assertAllEqual(evaluation.zero_shot_predictions(oracle, concepts), labels)
    constant = np.ones((5, 40))
    self.assertAllEqual(evaluation.zero_shot_predictions(constant, concepts), [0] * 5)  # ties: lowest

  def test_zero_shot_accuracy_is_defined_on_concept_captions(self):
    captions = evaluation.concept_captions()
    self.assertLen(captions, datasets.NUM_CLASSES)
    self.assertEqual(captions[0], f"a {datasets.COLOURS[0]} {datasets.SHAPES[0]}")
    self.assertEqual([c[2:] for c in captions], datasets.class_names())
    # A model whose image tower says the same for every image picks one concept for all: its
    # accuracy is the share of that concept in the test split.
    model = self._model()
    model(data.example_inputs(1))
    last = model.image_tower.layers[-1]
    last.kernel.assign(tf.zeros_like(last.kernel))
    image_embeddings, _ = evaluation.embed(model, self.test)
    self.assertAllClose(image_embeddings, np.zeros_like(image_embeddings))
    metrics = evaluation.evaluate(model, self.test, self.tokenizer)
    self.assertAllClose(metrics["accuracy"], np.mean(self.test.label == 0))
    # And the model's logit scale and bias do not change it (arg-max of t <x, y> + beta).
    model = self._model(seed=4)
    first = evaluation.evaluate(model, self.test, self.tokenizer)
    model.log_scale.assign(3.0)
    model.bias.assign(5.0)
    self.assertEqual(evaluation.evaluate(model, self.test, self.tokenizer), first)
    self.assertBetween(first["accuracy"], 0.0, 1.0)

  def test_recall_at_1_definition(self):
    captions = np.array([b"a", b"b", b"c", b"a"], dtype=object)
    identity = np.eye(4)
    self.assertEqual(evaluation.recall_at_1_from_embeddings(identity, identity, captions), 1.0)
    # Image 3 retrieves caption 0, which says the same: a hit.
    texts = identity.copy()
    texts[3] = identity[0] * 0.5
    self.assertEqual(evaluation.recall_at_1_from_embeddings(identity, texts, captions), 1.0)
    # Constant text embeddings: every image gets caption 0 (ties: lowest index).
    self.assertEqual(evaluation.recall_at_1_from_embeddings(identity, np.ones((4, 4)), captions), 0.5)


if __name__ == "__main__":
  tf.test.main()
