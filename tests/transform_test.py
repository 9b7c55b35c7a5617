"""`tfjest.select` as a tf.data transformation: structure, order, live weights, fit, errors."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

N, B = 40, 8  # super-batch and batch: filter_ratio 0.8


def _pairs(n=200, corrupt=0.5, seed=0):
  return testing.make_pairs(n, corrupt, seed)


def _dual_encoder(name, seed=0):
  """A compiled `PairDualEncoder` whose weights and optimizer variables exist.

  Built now rather than by the first train step of `fit`: Keras traces a train step that
  creates the optimizer's variables twice.
  """
  keras.utils.set_random_seed(seed)
  model = testing.PairDualEncoder(name=name)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  model({"image": np.zeros((1, 16, 16, 3), np.float32), "text": np.ones((1, 3), np.int32)})
  model.optimizer.build(model.trainable_variables)
  return model


def _dict_stream(data):
  """Nested dict elements with image, tokens, a string and ints riding along."""
  captions = np.array([f"caption {i}" for i in data["id"]])
  return tf.data.Dataset.from_tensor_slices({
      "image": data["image"], "text": data["text"],
      "meta": {"caption": captions, "id": data["id"]}})


def _ids(batch):
  return batch["meta"]["id"].numpy()


class StructureTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.learner = _dual_encoder("learner", 0)
    cls.reference = _dual_encoder("reference", 1)

  _selections = {}  # (method, seed) -> (selector, selected dataset, its batches)

  def _selection(self, method, seed):
    """A selector of the class's models over `_dict_stream(_pairs())`, its output and batches.

    Made once per (method, seed) and read by several tests below (none trains the models, so
    the batches stay what a fresh selector gives): each new selector traces its selection.
    """
    if (method, seed) not in self._selections:
      selector = tfjest.select(learner=self.learner, reference=self.reference, batch_size=B,
                               filter_ratio=0.8, method=method, num_chunks=4, seed=seed)
      out = _dict_stream(_pairs()).apply(selector)
      self._selections[method, seed] = (selector, out, list(out))
    return self._selections[method, seed]

  @parameterized.parameters("jest", "independent", "uniform")
  def test_dict_elements_keep_structure_dtypes_and_order(self, method):
    data = _pairs()
    stream = _dict_stream(data)
    _, out, batches = self._selection(method, seed=1)
    self.assertEqual(tf.nest.map_structure(lambda s: s.dtype, out.element_spec),
                     tf.nest.map_structure(lambda s: s.dtype, stream.element_spec))
    self.assertEqual(out.element_spec["image"].shape, [B, 16, 16, 3])
    self.assertEqual(int(out.cardinality()), 200 // N)
    self.assertLen(batches, 200 // N)
    for step, batch in enumerate(batches):
      ids = _ids(batch)
      self.assertLen(set(ids), B)
      self.assertAllEqual(ids, np.sort(ids))  # stream order inside the batch
      self.assertTrue(np.all((ids >= step * N) & (ids < (step + 1) * N)))
      # Every feature of a row belongs to the same example.
      self.assertAllEqual(batch["meta"]["caption"].numpy(),
                          [f"caption {i}".encode() for i in ids])
      self.assertAllEqual(batch["text"], data["text"][ids])
      self.assertAllClose(batch["image"], data["image"][ids])

  def test_tuple_elements(self):
    data = _pairs()
    stream = tf.data.Dataset.from_tensor_slices(
        ({"image": data["image"], "text": data["text"]}, data["label"], data["id"]))
    out = stream.apply(tfjest.select(learner=self.learner, reference=self.reference,
                                     batch_size=B, filter_ratio=0.8, num_chunks=4))
    x, label, ids = next(iter(out))
    self.assertIsInstance(next(iter(out)), tuple)
    self.assertAllEqual(label, data["label"][ids.numpy()])
    self.assertAllEqual(x["text"], data["text"][ids.numpy()])

  def test_eager_and_pipeline_agree(self):
    stream = _dict_stream(_pairs())
    selector, _, batches = self._selection("jest", seed=3)
    piped = batches[:2]
    super_batches = list(stream.batch(N).take(2))
    for step in range(2):
      eager = selector.select_batch(super_batches[step], step=step)
      self.assertAllEqual(_ids(eager), _ids(piped[step]))

  def test_same_seed_same_ids_other_seed_differs(self):
    # Two selectors with seed 3 (one of them shared with test_eager_and_pipeline_agree, made
    # by whichever runs first) and one with seed 1 (shared with the structure test).
    sel = tfjest.select(learner=self.learner, reference=self.reference, batch_size=B,
                        filter_ratio=0.8, num_chunks=4, seed=3)
    fresh = np.concatenate([_ids(b) for b in _dict_stream(_pairs()).apply(sel)])

    def ids(seed):
      return np.concatenate([_ids(b) for b in self._selection("jest", seed)[2]])

    self.assertAllEqual(fresh, ids(3))
    self.assertNotAllEqual(fresh, ids(1))

  def test_already_batched_input(self):
    data = _pairs()
    batched = _dict_stream(data).batch(10)
    out = batched.apply(tfjest.select(learner=self.learner, reference=self.reference,
                                      batch_size=B, filter_ratio=0.8, num_chunks=4,
                                      input_batched=True))
    self.assertLen(list(out), 5)
    with self.assertRaisesRegex(ValueError, "input_batched=True"):
      batched.apply(tfjest.select(learner=self.learner, reference=self.reference,
                                  batch_size=B, filter_ratio=0.8, num_chunks=4))


class AccountingTest(tf.test.TestCase):

  def test_non_finite_scores_are_counted_and_never_chosen(self):
    # A classifier whose loss is NaN for examples with a negative first feature.
    class Fragile(keras.Model):

      def call(self, x, training=False):
        return tf.stack([x[:, 0], -x[:, 0]], axis=1)

    x = np.random.default_rng(0).normal(size=(80, 2)).astype(np.float32)
    y = np.zeros(80, np.int32)
    model = Fragile()

    def loss(y_true, pred):
      del y_true
      return tf.where(pred[:, 0] < 0, np.nan, pred[:, 0])

    stream = tf.data.Dataset.from_tensor_slices((x, y, np.arange(80)))
    selector = tfjest.select(learner=model, batch_size=8, score="hard_learner",
                             method="independent", loss_fn=loss)
    chosen = np.concatenate([ids.numpy() for _, _, ids in stream.apply(selector)])
    self.assertTrue(np.all(x[chosen, 0] >= 0))
    stats = selector.stats.result()
    self.assertEqual(stats["non_finite"], int(np.sum(x[:, 0] < 0)))
    self.assertTrue(np.isfinite(stats["learner_loss_selected"]))
    self.assertTrue(np.isfinite(stats["batch_score"]))

  def test_wholly_non_finite_super_batches_fall_back_to_uniform(self):

    class Diverged(keras.Model):

      def call(self, x, training=False):
        return x * np.nan

    x = np.ones((400, 2), np.float32)
    stream = tf.data.Dataset.from_tensor_slices((x, np.zeros(400, np.int32), np.arange(400)))
    selector = tfjest.select(learner=Diverged(), batch_size=8, score="hard_learner",
                             method="independent",
                             loss_fn=lambda y, p: tf.reduce_sum(p, axis=1))
    chosen = np.concatenate([ids.numpy() % N for _, _, ids in stream.apply(selector)])
    self.assertEqual(selector.stats.result()["non_finite"], 400)
    # 80 positions drawn from 40: a uniform fallback spreads them (top-k on ties would not).
    self.assertGreater(len(set(chosen.tolist())), 25)

  def test_drop_counts_the_tail(self):
    stream = _dict_stream(_pairs(n=130))
    selector = tfjest.select(batch_size=B, filter_ratio=0.8, method="uniform")
    batches = list(stream.apply(selector))
    self.assertLen(batches, 3)
    stats = selector.stats.result()
    self.assertEqual(stats["read"], 130)
    self.assertEqual(stats["selected"], 3 * B)
    self.assertEqual(stats["filtered"], 3 * (N - B))
    self.assertEqual(stats["left_over"], 10)
    self.assertEqual(stats["read"],
                     stats["selected"] + stats["filtered"] + stats["left_over"])

  def test_keep_selects_from_the_tail_at_the_same_ratio(self):
    stream = _dict_stream(_pairs(n=130))
    selector = tfjest.select(batch_size=B, filter_ratio=0.8, method="uniform",
                             remainder="keep")
    batches = list(stream.apply(selector))
    self.assertEqual([len(_ids(b)) for b in batches], [B, B, B, 2])  # round(10 * 8 / 40)
    self.assertTrue(np.all(_ids(batches[-1]) >= 120))
    stats = selector.stats.result()
    self.assertEqual((stats["read"], stats["selected"], stats["left_over"]), (130, 26, 0))
    self.assertEqual(stats["filtered"], 104)

  def test_dataset_shorter_than_a_super_batch(self):
    with self.assertRaisesRegex(ValueError, "fewer examples than one super-batch.*30 examples"):
      _dict_stream(_pairs(n=30)).apply(tfjest.select(batch_size=B, method="uniform"))


class LiveWeightsTest(tf.test.TestCase):

  def test_scores_follow_the_learners_current_weights(self):
    learner, reference = _dual_encoder("learner", 0), _dual_encoder("reference", 1)
    stream = _dict_stream(_pairs(n=N))
    selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                             filter_ratio=0.8, num_chunks=4, seed=0)
    selected = stream.apply(selector)
    list(selected)
    before = selector.stats.snapshot()
    list(selected)
    same = selector.stats.snapshot()
    # Same weights, same data, same step: the same learner losses.
    self.assertAllClose(same["learner_loss_selected"] - before["learner_loss_selected"],
                        before["learner_loss_selected"])
    kernel = learner.image_tower.layers[-1].kernel
    # (A rescaled kernel would be undone by the L2 normalisation: perturb it instead.)
    kernel.assign(kernel + tf.random.stateless_normal(kernel.shape, seed=[1, 2]))
    list(selected)
    after = selector.stats.snapshot()
    self.assertNotAllClose(after["learner_loss_selected"] - same["learner_loss_selected"],
                           before["learner_loss_selected"])
    # The frozen reference's total loss over the super-batch did not move, however the new
    # learner split it between selected and rejected examples.
    def total(now, then):
      return (B * (now["reference_loss_selected"] - then["reference_loss_selected"]) +
              (N - B) * (now["reference_loss_rejected"] - then["reference_loss_rejected"]))

    self.assertAllClose(total(after, same), total(before, {k: 0.0 for k in before}), rtol=1e-4)


class FitTest(tf.test.TestCase):

  def test_fit_dual_encoder_on_selected_stream(self):
    learner, reference = _dual_encoder("learner", 0), _dual_encoder("reference", 1)
    data = _pairs(n=400)
    stream = tf.data.Dataset.from_tensor_slices({"image": data["image"], "text": data["text"]})
    selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                             filter_ratio=0.8, num_chunks=4)
    before = [w.numpy().copy() for w in learner.trainable_weights]
    history = learner.fit(stream.apply(selector), epochs=2, verbose=0,
                          callbacks=[tfjest.SelectionStatsCallback(selector)])
    self.assertLen(history.history["loss"], 2)
    self.assertTrue(np.all(np.isfinite(history.history["loss"])))
    self.assertEqual(history.history["selection_selected"], [10 * B, 20 * B])
    self.assertIn("selection_batch_score", history.history)
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, learner.trainable_weights)]
    self.assertTrue(all(changed))

  def test_fit_classifier_compiled_the_ordinary_way(self):
    data = _pairs(n=400, corrupt=0.0)
    keras.utils.set_random_seed(0)
    learner, reference = testing.pair_classifier(), testing.pair_classifier()
    stream = tf.data.Dataset.from_tensor_slices((data["image"], data["label"]))
    selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                             filter_ratio=0.8, method="independent")
    history = learner.fit(stream.apply(selector), epochs=1, verbose=0)
    self.assertTrue(np.isfinite(history.history["loss"][0]))
    self.assertEqual(selector.task, "classification")
    stats = selector.stats.result()
    # The reference is untrained, the learner barely: chosen examples have higher learner
    # than reference loss on average under learnability.
    self.assertGreater(stats["learner_loss_selected"] - stats["reference_loss_selected"],
                       stats["learner_loss_rejected"] - stats["reference_loss_rejected"])

  def test_unbuilt_model_is_built_before_the_pipeline(self):
    learner = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(3)])
    learner.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    self.assertFalse(learner.built)
    data = _pairs(n=80)
    stream = tf.data.Dataset.from_tensor_slices((data["image"], data["label"] % 3))
    out = stream.apply(tfjest.select(learner=learner, batch_size=B, score="hard_learner",
                                     method="independent"))
    self.assertTrue(learner.built)
    self.assertLen(list(out), 2)


class BadInputTest(tf.test.TestCase, parameterized.TestCase):
  """Every argument error names the argument and the value received."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = _dual_encoder("m")
    cls.reference = _dual_encoder("r", 1)
    for model in (cls.model, cls.reference):
      model({"image": np.zeros((1, 16, 16, 3), np.float32), "text": np.ones((1, 3), np.int32)})

  @parameterized.named_parameters(
      ("batch_size_zero", dict(batch_size=0), "Received: batch_size=0"),
      ("batch_size_float", dict(batch_size=8.0), "Received: batch_size=8.0"),
      ("filter_ratio_one", dict(filter_ratio=1.0), "Received: filter_ratio=1.0"),
      ("filter_ratio_negative", dict(filter_ratio=-0.1), "Received: filter_ratio=-0.1"),
      ("filter_ratio_not_whole", dict(filter_ratio=0.7), "filter_ratio=0.7"),
      ("both_sizes", dict(filter_ratio=0.5, super_batch_size=16), "super_batch_size=16"),
      ("super_batch_too_small", dict(super_batch_size=4), "Received: super_batch_size=4"),
      ("method", dict(method="best"), "Received: method='best'"),
      ("score", dict(score="hardest"), "Received: score='hardest'"),
      ("chunks_do_not_divide", dict(num_chunks=3), "Received: num_chunks=3"),
      ("chunks_zero", dict(num_chunks=0), "Received: num_chunks=0"),
      ("temperature_zero", dict(temperature=0.0), "Received: temperature=0.0"),
      ("temperature_nan", dict(temperature=float("nan")), "Received: temperature=nan"),
      ("seed_negative", dict(seed=-1), "Received: seed=-1"),
      ("first_chunk", dict(first_chunk="top"), "Received: first_chunk='top'"),
      ("normalization", dict(normalization="l2"), "Received: normalization='l2'"),
      ("greedy", dict(greedy="yes"), "Received: greedy='yes'"),
      ("task", dict(task="regression"), "Received: task='regression'"),
      ("embedding_keys", dict(embedding_keys="image"), "Received: embedding_keys='image'"),
      ("loss_fn", dict(loss_fn="no_such_loss"), "Received: loss_fn='no_such_loss'"),
      ("remainder", dict(remainder="pad"), "Received: remainder='pad'"),
      ("input_batched", dict(input_batched=1), "Received: input_batched=1"),
  )
  def test_argument_errors(self, kwargs, message):
    args = dict(learner=self.model, reference=self.reference, batch_size=8, num_chunks=4)
    args.update(kwargs)
    with self.assertRaisesRegex(ValueError, message):
      tfjest.select(**args)

  def test_learnability_without_reference(self):
    with self.assertRaisesRegex(ValueError, "Received: reference=None"):
      tfjest.select(learner=self.model, batch_size=8)

  def test_easy_reference_without_reference(self):
    with self.assertRaisesRegex(ValueError, "Received: reference=None"):
      tfjest.select(learner=self.model, batch_size=8, score="easy_reference")

  def test_learner_missing(self):
    with self.assertRaisesRegex(ValueError, "Received: learner=None"):
      tfjest.select(reference=self.model, batch_size=8)

  def test_learner_not_a_model(self):
    with self.assertRaisesRegex(TypeError, "Received: learner of type function"):
      tfjest.select(learner=lambda x: x, reference=self.model, batch_size=8)

  def test_not_a_dataset(self):
    selector = tfjest.select(batch_size=8, method="uniform")
    with self.assertRaisesRegex(TypeError, "Received: dataset of type list"):
      selector([1, 2, 3])

  def test_empty_dataset(self):
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 3), np.float32))
    with self.assertRaisesRegex(ValueError, "empty dataset"):
      empty.apply(tfjest.select(batch_size=8, method="uniform"))

  def test_features_that_cannot_be_stacked(self):
    ragged = tf.data.Dataset.from_generator(
        lambda: iter([np.zeros(3), np.zeros(4)]),
        output_signature=tf.TensorSpec([None], tf.float64))
    with self.assertRaisesRegex(ValueError, "feature .* has shape \\(None,\\)"):
      ragged.apply(tfjest.select(batch_size=8, method="uniform"))

  def test_missing_embedding_keys(self):
    data = _pairs(n=80)
    stream = tf.data.Dataset.from_tensor_slices({"image": data["image"], "text": data["text"]})
    selector = tfjest.select(learner=self.model, reference=self.reference, batch_size=8,
                             num_chunks=4, task="contrastive", embedding_keys=("img", "txt"))
    with self.assertRaisesRegex(ValueError, "without the embedding keys.*Received: learner "
                                "outputs with keys"):
      stream.apply(selector)

  def test_elements_missing_features_the_model_needs(self):
    data = _pairs(n=80)
    stream = tf.data.Dataset.from_tensor_slices({"image": data["image"]})
    with self.assertRaisesRegex(ValueError, "could not call the learner.*Received: learner='m'"):
      stream.apply(tfjest.select(learner=self.model, reference=self.reference, batch_size=8,
                                 num_chunks=4))

  def test_embeddings_of_different_widths(self):

    class Uneven(keras.Model):
      logit_scale, logit_bias = 10.0, -10.0

      def call(self, x, training=False):
        return {"image_embeddings": tf.ones([tf.shape(x)[0], 4]),
                "text_embeddings": tf.ones([tf.shape(x)[0], 5])}

    stream = tf.data.Dataset.from_tensor_slices(np.zeros((80, 2), np.float32))
    with self.assertRaisesRegex(ValueError, "same width. Received: image width 4, text width 5"):
      list(stream.apply(tfjest.select(learner=Uneven(), reference=Uneven(), batch_size=8,
                                      num_chunks=4)))

  def test_dual_encoder_without_logit_scale(self):

    class NoScale(keras.Model):

      def call(self, x, training=False):
        return {"image_embeddings": x, "text_embeddings": x}

    stream = tf.data.Dataset.from_tensor_slices(np.zeros((80, 2), np.float32))
    with self.assertRaisesRegex(ValueError, "must expose `logit_scale`"):
      list(stream.apply(tfjest.select(learner=NoScale(), reference=NoScale(), batch_size=8,
                                      num_chunks=4)))

  def test_learner_and_reference_of_different_kinds(self):
    classifier = testing.pair_classifier()
    data = _pairs(n=80)
    stream = tf.data.Dataset.from_tensor_slices(({"image": data["image"],
                                                  "text": data["text"]}, data["label"]))
    wrapped = keras.Sequential([keras.layers.Lambda(lambda x: x["image"]), classifier])
    wrapped.compile(loss="sparse_categorical_crossentropy")
    with self.assertRaisesRegex(ValueError, "same kind.*Received: learner task 'contrastive'"):
      stream.apply(tfjest.select(learner=self.model, reference=wrapped, batch_size=8,
                                 num_chunks=4))

  def test_classifier_without_labels(self):
    classifier = testing.pair_classifier()
    stream = tf.data.Dataset.from_tensor_slices(_pairs(n=80)["image"])
    with self.assertRaisesRegex(ValueError, "needs labels"):
      stream.apply(tfjest.select(learner=classifier, score="hard_learner", batch_size=8,
                                 num_chunks=4))

  def test_classifier_not_compiled_and_no_loss_fn(self):
    plain = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    stream = tf.data.Dataset.from_tensor_slices((_pairs(n=80)["image"], np.zeros(80, int)))
    with self.assertRaisesRegex(ValueError, "compile the learner with a loss or pass `loss_fn="):
      stream.apply(tfjest.select(learner=plain, batch_size=8, score="hard_learner",
                                 num_chunks=4))

  def test_reference_that_changes_the_batch_axis(self):

    class HalfBatch(keras.Model):
      logit_scale, logit_bias = 10.0, -10.0

      def call(self, x, training=False):
        e = tf.math.l2_normalize(x[::2], -1)
        return {"image_embeddings": e, "text_embeddings": e}

    class Full(keras.Model):
      logit_scale, logit_bias = 10.0, -10.0

      def call(self, x, training=False):
        e = tf.math.l2_normalize(x, -1)
        return {"image_embeddings": e, "text_embeddings": e}

    stream = tf.data.Dataset.from_tensor_slices(np.ones((80, 2), np.float32))
    with self.assertRaisesRegex(ValueError, "one output per element of the super-batch.* "
                                r"Received: reference outputs of shape \(20, 2\) for 40"):
      list(stream.apply(tfjest.select(learner=Full(), reference=HalfBatch(), batch_size=8,
                                      num_chunks=4)))

  def test_dual_encoder_returning_three_outputs(self):

    class Three(keras.Model):
      logit_scale, logit_bias = 10.0, -10.0

      def call(self, x, training=False):
        return x, x, x

    stream = tf.data.Dataset.from_tensor_slices(np.ones((80, 2), np.float32))
    with self.assertRaisesRegex(ValueError, "or a 2-tuple.*Received: learner output a tuple "
                                "of 3"):
      list(stream.apply(tfjest.select(learner=Three(), reference=Three(), batch_size=8,
                                      num_chunks=4, task="contrastive")))

  def test_callback_needs_a_selector(self):
    with self.assertRaisesRegex(TypeError, "Received: selector of type str"):
      tfjest.SelectionStatsCallback("selector")


class NumPyArgumentsTest(tf.test.TestCase, parameterized.TestCase):
  """NumPy scalars are arguments like Python numbers: same picks, and `fit` runs."""

  @parameterized.named_parameters(
      ("super_batch_size", dict(batch_size=np.int64(8), super_batch_size=np.int64(32),
                                num_chunks=np.int64(2), seed=np.int64(3),
                                temperature=np.float64(0.5))),
      ("filter_ratio", dict(batch_size=np.int32(8), filter_ratio=np.float32(0.75),
                            num_chunks=np.int32(2), seed=np.uint8(3),
                            temperature=np.float32(0.5))))
  def test_same_picks_as_python_numbers(self, numpy_kwargs):
    def picks(kwargs):
      learner, setup = testing.selection_setup("contrastive")
      for key in ("batch_size", "super_batch_size", "num_chunks", "seed"):
        setup.pop(key)
      selector = tfjest.select(**setup, **kwargs)
      selected = testing.stream("contrastive", n=64).apply(selector)
      return learner, selected, [testing.ids(b).tolist() for b in selected]

    python_kwargs = {k: v.item() for k, v in numpy_kwargs.items()}
    self.assertTrue(all(type(v).__module__ == "builtins" for v in python_kwargs.values()))
    _, _, expected = picks(python_kwargs)
    learner, selected, got = picks(numpy_kwargs)
    self.assertEqual(got, expected)
    self.assertLen(got, 2)
    history = learner.fit(selected, epochs=1, verbose=0)
    self.assertLen(history.history["loss"], 1)
    self.assertEqual(int(learner.optimizer.iterations), 2)


class LossFnTest(tf.test.TestCase, parameterized.TestCase):
  """`loss_fn` takes what `compile(loss=...)` takes, applied as `fit` applies it."""

  @parameterized.named_parameters(
      ("name", "mae"), ("instance", keras.losses.MeanAbsoluteError()),
      ("class", keras.losses.MeanAbsoluteError), ("function", keras.losses.mean_absolute_error),
      ("other_name", "mse"))
  def test_picks_the_largest_losses_as_fit_computes_them(self, loss_fn):
    keras.utils.set_random_seed(0)
    learner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    learner.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = rng.normal(size=16).astype(np.float32)  # [N] labels against [N, 1] outputs
    oracle_model = keras.models.clone_model(learner)
    oracle_model.set_weights(learner.get_weights())
    oracle_model.compile(loss=loss_fn)
    y_pred = learner(x)
    oracle = np.array([float(oracle_model.compute_loss(x=None, y=y[i:i + 1],
                                                       y_pred=y_pred[i:i + 1]))
                       for i in range(16)])
    selector = tfjest.select(learner=learner, loss_fn=loss_fn, score="hard_learner",
                             method="independent", batch_size=4, super_batch_size=16,
                             temperature=1e-6)
    _, y_selected = next(iter(tf.data.Dataset.from_tensor_slices((x, y)).apply(selector)))
    self.assertAllClose(np.sort(y_selected.numpy()), np.sort(y[np.argsort(-oracle)[:4]]))

  def test_unknown_name_and_non_loss_are_refused_at_select(self):
    learner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with self.assertRaisesRegex(ValueError, "Unknown loss name.*Received: loss_fn='maae'"):
      tfjest.select(learner=learner, loss_fn="maae", score="hard_learner",
                    method="independent", batch_size=4, super_batch_size=16)
    with self.assertRaisesRegex(TypeError, "Expected a loss.*Received: loss_fn=3"):
      tfjest.select(learner=learner, loss_fn=3, score="hard_learner",
                    method="independent", batch_size=4, super_batch_size=16)


if __name__ == "__main__":
  tf.test.main()
