"""Scoring and selection in the replicated train step, on 2 logical CPU devices.

MirroredStrategy over `/cpu:0` and `/cpu:1`: the devices are configured when this module is
imported (pytest's conftest.py does it earlier, before any test module runs an op). Covers the
global all-gathered gains against a one-device oracle, each replica selecting from its own shard
with its own noise and the step's weights, global vs per-replica `s(B)`, `fit` through
`tfjest.attach` for both model contracts, the frozen replicated reference, XLA, and the errors.
"""

from tfjest import testing

testing.configure_cpu_devices(2)  # before any op; a no-op if conftest.py did it

# pylint: disable=g-import-not-at-top,wrong-import-position
import contextlib

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest

N, B, K = 32, 8, 2  # super-batch, batch, chunks: each replica selects 4 of 16 in chunks of 2


def setUpModule():
  testing.require_cpu_devices(2)


def _strategy():
  # The process's one strategy: collective ops of separately created MirroredStrategy objects
  # in one process can share instance keys and then fail ("Shape mismatch in the collective").
  return testing.cpu_mirrored_strategy(2)


def _pairs(n=N, corrupt=0.5, seed=0):
  data = testing.make_pairs(n, corrupt, seed)
  return {"image": data["image"], "text": data["text"], "id": data["id"]}


def _stream(n=10 * N, seed=0):
  return tf.data.Dataset.from_tensor_slices(_pairs(n, seed=seed))


def _dual_encoders(strategy, seed=0):
  with strategy.scope():
    keras.utils.set_random_seed(seed)
    learner = testing.PairDualEncoder(name="learner")
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    reference = testing.PairDualEncoder(name="reference")
    reference.trainable = False
    for model in (learner, reference):
      model({"image": tf.zeros([1, 16, 16, 3]), "text": tf.zeros([1, 3], tf.int32)})
  return learner, reference


def _tiny_dual_encoders(strategy=None, seed=0):
  """Linear `testing.TinyDualEncoder`s over `testing.D` features (for `_tiny_stream`): for the
  tests whose claims hold for any dual encoder, at a fraction of the CNN's tracing and XLA time."""
  with strategy.scope() if strategy else contextlib.nullcontext():
    keras.utils.set_random_seed(seed)
    learner = testing.TinyDualEncoder(seed=seed, name="learner")
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    reference = testing.TinyDualEncoder(seed=seed + 1, name="reference")
    reference.trainable = False
    zeros = tf.zeros([1, testing.D])
    for model in (learner, reference):
      model({"image": zeros, "text": zeros})
  return learner, reference


def _tiny_stream(n=10 * N):
  return testing.stream("contrastive", n=n)


def _local(strategy, value):
  return [v.numpy() for v in strategy.experimental_local_results(value)]


def _distribute(strategy, batch):
  """Splits one global batch into per-replica shards, as fit does."""
  data = tf.data.Dataset.from_tensors(batch)
  return next(iter(strategy.experimental_distribute_dataset(data)))


class GlobalGainsOnReplicasTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("learnability", "hard_learner", "easy_reference")
  def test_all_gathered_gains_equal_one_device_gains(self, score):
    strategy = _strategy()
    n, d = 8, 6
    rng = np.random.default_rng(0)

    def unit(x):
      return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def embeddings(scale, bias):
      image = unit(rng.normal(size=(2 * n, d)))
      return tfjest.Embeddings(tf.constant(image),
                               tf.constant(unit(image + 0.8 * rng.normal(size=(2 * n, d)))),
                               tf.constant(scale), tf.constant(bias))

    learner, reference = embeddings(10.0, -10.0), embeddings(12.0, -8.0)
    chunks = tf.constant([[1, 6], [0, 3]])  # each replica's local chunk

    def shard(emb, r):
      rows = r * n + tf.range(n)
      return tfjest.Embeddings(tf.gather(emb.image, rows), tf.gather(emb.text, rows),
                               emb.logit_scale, emb.logit_bias)

    def gains():
      ctx = tf.distribute.get_replica_context()
      r = ctx.replica_id_in_sync_group
      local = tfjest.PairwiseScores(score, shard(learner, r), shard(reference, r))
      wrapped = tfjest.GlobalScores(local, lambda t: ctx.all_gather(t, axis=0), r)
      return local.diagonal() + wrapped.chunk_gain(chunks[r])

    got = np.concatenate(_local(strategy, tf.function(lambda: strategy.run(gains))()))
    full = tfjest.PairwiseScores(score, learner, reference)
    chosen = np.array([1, 6, n + 0, n + 3])
    self.assertAllClose(got, tfjest.conditional_gains(full, chosen), rtol=1e-5, atol=1e-4)


class ReplicaLossTest(tf.test.TestCase):

  def test_siglip_replica_loss_is_the_batch_loss_over_the_replicas(self):
    strategy = _strategy()
    rng = np.random.default_rng(0)
    image, text = (keras.ops.normalize(rng.normal(size=(6, 4)).astype(np.float32), axis=-1)
                   for _ in range(2))
    emb = tfjest.Embeddings(image, text, 10.0, -10.0)
    per_replica = strategy.run(tf.function(lambda: tfjest.siglip_replica_loss(emb)))
    for value in strategy.experimental_local_results(per_replica):
      self.assertAllClose(value, tfjest.siglip_loss(emb) / 2, rtol=1e-6)


class ReplicaSelectionTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.strategy = _strategy()
    cls.learner, cls.reference = _dual_encoders(cls.strategy)
    cls.spec = _stream().element_spec

  def setUp(self):
    super().setUp()
    self._functions = {}  # `_run`'s traced steps, by selection

  def _run(self, selection, batch, step, jit=False, fresh=False):
    """Runs `selection` in a replicated step on `batch` at `step`.

    The replicated function of a selection is traced once and kept (the step is a tensor, the
    weights are read when it runs), unless `fresh`: each trace costs seconds.
    """
    shards = _distribute(self.strategy, batch)
    key = (id(selection), jit)
    if fresh or key not in self._functions:
      replica_fn = selection
      if jit:
        # XLA inside each replica (the whole strategy.run under XLA is keras-team/keras#19005).
        # The step is copied onto the replica's device first: XLA places the compiled call
        # where its inputs are, and it must run where the replica's variables are.
        compiled = tf.function(selection, jit_compile=True)

        def replica_fn(s, t, compiled=compiled):
          return compiled(s, tf.identity(t))
      fn = tf.function(lambda s, t: self.strategy.run(replica_fn, args=(s, t)))
      if fresh:
        return fn(shards, tf.constant(step, tf.int64))
      self._functions[key] = (selection, fn)  # the selection kept alive: its id stays its own
    return self._functions[key][1](shards, tf.constant(step, tf.int64))

  def _selection(self, replica_selection="local", jit_compile=False, **kwargs):
    options = dict(learner=self.learner, reference=self.reference, batch_size=B,
                   super_batch_size=N, num_chunks=K, seed=3)
    options.update(kwargs)
    selection = tfjest.ReplicaSelection(tfjest.select(**options),
                                        replica_selection=replica_selection,
                                        jit_compile=jit_compile)
    with self.strategy.scope():
      selection.prepare(self.spec)
    return selection

  @parameterized.product(replica_selection=["local", "global"],
                         method=["jest", "independent", "uniform"])
  def test_each_replica_selects_its_share_from_its_own_shard(self, replica_selection, method):
    selection = self._selection(replica_selection, method=method)
    out = self._run(selection, _pairs(), 0)
    for replica, ids in enumerate(_local(self.strategy, out["id"])):
      self.assertLen(set(ids), B // 2)
      self.assertAllEqual(ids, np.sort(ids))
      self.assertTrue(np.all((ids >= replica * N // 2) & (ids < (replica + 1) * N // 2)), ids)
    stats = selection.selector.stats.result()
    self.assertEqual((stats["read"], stats["selected"], stats["batches"]), (N, B, 1))

  def test_noise_differs_per_replica_and_step_and_is_reproducible(self):
    selection = self._selection(method="uniform")
    batch = _pairs()

    def positions(step, fresh=False):
      ids = _local(self.strategy, self._run(selection, batch, step, fresh=fresh)["id"])
      return [tuple(ids[r] - r * N // 2) for r in range(2)]

    draws = [positions(step) for step in range(4)]  # one traced step, run at 4 steps
    self.assertEqual(draws[0], positions(0, fresh=True))  # reproducible, traced anew too
    self.assertTrue(all(d[0] != d[1] for d in draws))  # replicas draw differently
    self.assertLen(set(d[0] for d in draws), 4)  # and differently at every step

  def test_each_replica_scores_its_shard_with_the_current_weights(self):
    # Greedy joint selection is deterministic, so every replica's choice must equal a
    # one-device selection on its shard with the weights the model has when the step runs.
    selection = self._selection(greedy=True, first_chunk="scores")
    batch = _pairs(seed=4)
    original = self.learner.get_weights()
    try:
      for trial in range(2):
        if trial:
          rng = np.random.default_rng(trial)
          self.learner.set_weights([w + 0.3 * rng.normal(size=w.shape).astype(w.dtype)
                                    for w in original])
        got = _local(self.strategy, self._run(selection, batch, 0)["id"])
        for replica in range(2):
          rows = slice(replica * N // 2, (replica + 1) * N // 2)
          shard = {k: v[rows] for k, v in batch.items()}
          scored = selection.selector.scorer(shard)
          picks = selection.selector.rule.choose(scored.scores, B // 2, step=0 * 2 + replica,
                                                 num_candidates=N // 2)
          self.assertAllEqual(got[replica], np.sort(shard["id"][picks.numpy()]))
        if trial == 0:
          before = got
      self.assertNotAllEqual(np.concatenate(before), np.concatenate(got))
    finally:
      self.learner.set_weights(original)

  def test_selection_compiles_with_xla_inside_the_replica(self):
    # The replicated scoring-and-selection step as one XLA program per replica: static shapes.
    selection = self._selection(jit_compile=True)
    selection.record_stats = False  # a merge_call: not inside a nested function
    out = self._run(selection, _pairs(), 1, jit=True)
    for replica, ids in enumerate(_local(self.strategy, out["id"])):
      self.assertLen(set(ids), B // 2)
      self.assertTrue(np.all((ids >= replica * N // 2) & (ids < (replica + 1) * N // 2)))

  def test_wrong_shard_size_is_named(self):
    selection = self._selection()
    shards = _distribute(self.strategy, _pairs(n=20))
    with self.assertRaisesRegex(ValueError, r"N / R = 16 .* Received: a shard of 10 examples"):
      tf.function(lambda s: self.strategy.run(selection, args=(s, 0)))(shards)


class GlobalVersusLocalTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("greedy", True, 1.0), ("sampled", False, 0.3))
  def test_global_selection_reaches_a_higher_batch_score(self, greedy, temperature):
    # Paired comparison over 40 steps: both modes draw with the same keys, so the first
    # (uniform) chunk is the same and only the conditioning differs. s(B) is the global
    # batch's, cross-replica pairs included, which only global selection sees while choosing.
    strategy = _strategy()
    n, d, b, k, steps = 32, 8, 16, 4, 40
    rng = np.random.default_rng(7)

    def unit(x):
      return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    # Two clusters of images spread over both shards: within a cluster, the learner's noisy
    # captions make hard negatives that the reference's cleaner captions do not, so pairs
    # across replicas carry learnability.
    centres = rng.normal(size=(2, d))
    image = unit(centres[rng.integers(0, 2, 2 * n)] + 0.5 * rng.normal(size=(2 * n, d)))
    learner = tfjest.Embeddings(tf.constant(image),
                                tf.constant(unit(image + 1.0 * rng.normal(size=(2 * n, d)))),
                                tf.constant(10.0), tf.constant(-10.0))
    reference = tfjest.Embeddings(tf.constant(image),
                                  tf.constant(unit(image + 0.2 * rng.normal(size=(2 * n, d)))),
                                  tf.constant(10.0), tf.constant(-10.0))

    def shard(emb, r):
      rows = r * n + tf.range(n)
      return tfjest.Embeddings(tf.gather(emb.image, rows), tf.gather(emb.text, rows),
                               emb.logit_scale, emb.logit_bias)

    def select(step, use_global):
      ctx = tf.distribute.get_replica_context()
      r = ctx.replica_id_in_sync_group
      scores = tfjest.PairwiseScores("learnability", shard(learner, r), shard(reference, r))
      if use_global:
        scores = tfjest.GlobalScores(scores, lambda t: ctx.all_gather(t, axis=0), r)
      picks = tfjest.joint_selection(scores, b // 2, num_chunks=k, seed=0,
                                     step=step * 2 + tf.cast(r, tf.int64), greedy=greedy,
                                     temperature=temperature)
      return picks + r * n

    runs = {g: tf.function(lambda s, g=g: strategy.run(select, args=(s, g)))
            for g in (False, True)}
    full = tfjest.PairwiseScores("learnability", learner, reference)
    diffs = []
    for step in range(steps):
      s = {}
      for g, fn in runs.items():
        chosen = np.concatenate(_local(strategy, fn(tf.constant(step, tf.int64))))
        self.assertLen(set(chosen), b)
        s[g] = float(tfjest.batch_score(full, chosen))
      diffs.append(s[True] - s[False])
    diffs = np.array(diffs)
    mean, stderr = diffs.mean(), diffs.std(ddof=1) / np.sqrt(steps)
    # "At least as high": the mean paired difference must exceed 2 standard errors above 0.
    # (Measured: greedy +0.67 +- 0.09, sampled at tau = 0.3 +0.93 +- 0.15, on s(B) ~ 130.)
    self.assertGreater(mean, 2 * stderr, (mean, stderr))


class FitTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("local", "global")
  def test_dual_encoder_fit_keeps_replicas_identical_and_reference_frozen(self,
                                                                         replica_selection):
    strategy = _strategy()
    learner, reference = _tiny_dual_encoders(strategy)
    reference_before = [w.copy() for w in reference.get_weights()]
    learner_before = [w.copy() for w in learner.get_weights()]
    with strategy.scope():
      selector = tfjest.attach(
          learner, tfjest.select(learner=learner, reference=reference, batch_size=B,
                                 super_batch_size=N, num_chunks=K),
          replica_selection=replica_selection)
    self.assertEqual(selector.placement, "train_step")
    self.assertIsInstance(selector, tfjest.TrainStepSelection)
    history = learner.fit(_tiny_stream().apply(selector), epochs=1, steps_per_epoch=4,
                          verbose=0)
    self.assertTrue(np.isfinite(history.history["loss"][-1]))
    # Per-replica selection ran in the inner XLA function, traced once per replica.
    inner = learner.train_step._tfjest_selection.step._choose_jit
    self.assertEqual(inner.experimental_get_tracing_count(),
                     2 if replica_selection == "local" else 0)
    self.assertTrue(testing.replicas_identical(learner, strategy))
    self.assertTrue(any(not np.array_equal(a, b)
                        for a, b in zip(learner_before, learner.get_weights())))
    stats = selector.stats.result()
    self.assertEqual((stats["read"], stats["selected"], stats["filtered"]), (4 * N, 4 * B,
                                                                            4 * (N - B)))
    self.assertTrue(np.isfinite(stats["batch_score"]))
    # The reference: replicated, identical on both replicas, never trained, never updated.
    trainable = {id(v.value) for v in learner.trainable_variables}
    for before, w in zip(reference_before, reference.weights):
      self.assertTrue(strategy.extended.variable_created_in_scope(w.value))
      self.assertNotIn(id(w.value), trainable)
      for value in testing.replica_values(w, strategy):
        self.assertAllEqual(value, before)
    self.assertEmpty(reference.trainable_weights)

  def test_classifier_fit(self):
    strategy = _strategy()
    data = testing.make_pairs(6 * N + 5, 0.0, 1)  # a tail of 5 that fills no super-batch
    stream = tf.data.Dataset.from_tensor_slices((data["image"], data["label"]))
    with strategy.scope():
      keras.utils.set_random_seed(1)
      learner = testing.pair_classifier()
      reference = testing.pair_classifier()
      reference.trainable = False
      selector = tfjest.attach(learner, tfjest.select(
          learner=learner, reference=reference, batch_size=B, super_batch_size=N,
          method="independent"))
    learner.fit(stream.apply(selector), epochs=1, verbose=0)
    self.assertTrue(testing.replicas_identical(learner, strategy))
    stats = selector.stats.result()
    self.assertEqual(stats["selected"], 6 * B)
    self.assertEqual(stats["left_over"], 5)
    self.assertEqual(stats["read"], stats["selected"] + stats["filtered"] + stats["left_over"])


class WithoutStrategyTest(tf.test.TestCase):

  def _models(self, seed=0):
    keras.utils.set_random_seed(seed)
    learner = testing.PairDualEncoder(name="learner")
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    reference = testing.PairDualEncoder(name="reference")
    reference.trainable = False
    return learner, reference

  def _select(self, learner, reference):
    return tfjest.select(learner=learner, reference=reference, batch_size=B,
                         super_batch_size=N, num_chunks=K, seed=2)

  def test_attach_leaves_model_and_pipeline_unchanged(self):
    learner, reference = self._models()
    own_step = learner.train_step
    attached = tfjest.attach(learner, self._select(learner, reference))
    self.assertEqual(attached.placement, "pipeline")
    self.assertEqual(learner.train_step, own_step)
    plain = self._select(learner, reference)
    got = [b["id"].numpy() for b in _stream().apply(attached)]
    want = [b["id"].numpy() for b in _stream().apply(plain)]
    self.assertAllEqual(got, want)

  def test_train_step_placement_compiles_with_xla(self):
    # One accelerator, no strategy: the whole Keras step (models, scores, selection) as XLA.
    # Linear models (built by `_tiny_dual_encoders`): what compiles is the model's step with
    # tfjest's scoring and selection in it, which does not depend on the towers.
    learner, reference = _tiny_dual_encoders()
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    # The optimizer built before fit, so that Keras traces the (XLA) train step once, not
    # twice: without a strategy it builds the optimizer while tracing, and a function creating
    # variables is traced again (under a strategy Keras builds them first itself).
    learner.optimizer.build(learner.trainable_variables)
    selector = tfjest.attach(learner, self._select(learner, reference), placement="train_step",
                             replica_selection="global")
    history = learner.fit(_tiny_stream().apply(selector), epochs=1, steps_per_epoch=2,
                          verbose=0)
    self.assertTrue(np.isfinite(history.history["loss"][-1]))


class AttachErrorsTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.strategy = _strategy()
    cls.learner, cls.reference = _dual_encoders(cls.strategy)

  def _selector(self, **kwargs):
    options = dict(learner=self.learner, reference=self.reference, batch_size=B,
                   super_batch_size=N, num_chunks=K)
    options.update(kwargs)
    return tfjest.select(**options)

  @parameterized.named_parameters(
      ("replica_selection", dict(replica_selection="everywhere"), ValueError,
       r"Received: replica_selection='everywhere'"),
      ("placement", dict(placement="host"), ValueError, r"Received: placement='host'"),
      ("jit_compile", dict(jit_compile="yes"), ValueError, r"Received: jit_compile='yes'"),
  )
  def test_bad_options(self, kwargs, error, message):
    with self.assertRaisesRegex(error, message):
      tfjest.attach(self.learner, self._selector(), **kwargs)

  def test_bad_types(self):
    with self.assertRaisesRegex(TypeError, r"Received: model of type str"):
      tfjest.attach("model", self._selector())
    with self.assertRaisesRegex(TypeError, r"Received: selector of type list"):
      tfjest.attach(self.learner, [3])
    with self.assertRaisesRegex(TypeError, r"Received: selector of type int"):
      tfjest.ReplicaSelection(3)

  def test_uneven_split_over_replicas(self):
    with self.assertRaisesRegex(ValueError, r"divisible by the number of replicas. Received: "
                                r"super_batch_size=40, batch_size=8, num_chunks=8, replicas=2"):
      tfjest.attach(self.learner, self._selector(super_batch_size=40, num_chunks=8))

  def test_attached_twice(self):
    learner, reference = _dual_encoders(self.strategy, seed=5)
    selector = tfjest.attach(learner, self._selector(learner=learner, reference=reference))
    with self.assertRaisesRegex(ValueError, r"already selects .* Received: model='learner"):
      tfjest.attach(learner, self._selector(learner=learner, reference=reference))
    with self.assertRaisesRegex(ValueError, r"already attached .* Received: selector returned "
                                r"by tfjest.attach"):
      tfjest.attach(self.learner, selector)
    with self.assertRaisesRegex(ValueError, r"already attached .* Received: selector attached "
                                r"to 'learner"):
      tfjest.attach(self.learner, selector.selector)

  def test_applied_under_a_strategy_without_attach(self):
    with self.assertRaisesRegex(ValueError, r"tfjest.attach\(model, selector\).* Received: "
                                r"strategy=MirroredStrategy"):
      _stream().apply(self._selector())

  def test_keep_remainder_in_the_train_step(self):
    learner, reference = _dual_encoders(self.strategy, seed=6)
    selector = tfjest.attach(learner, self._selector(learner=learner, reference=reference,
                                                     remainder="keep"))
    with self.assertRaisesRegex(ValueError, r"Received: remainder='keep'"):
      _stream().apply(selector)

  def test_reference_created_outside_the_scope(self):
    outside = testing.PairDualEncoder(name="outside")
    outside.trainable = False
    outside({"image": tf.zeros([1, 16, 16, 3]), "text": tf.zeros([1, 3], tf.int32)})
    with self.assertRaisesRegex(ValueError, r"under `strategy.scope\(\)`.* Received: "
                                r"reference='outside' with weights created outside "
                                r"MirroredStrategy.scope\(\)"):
      tfjest.attach(self.learner, self._selector(reference=outside))

  def test_reference_inside_the_trained_model(self):

    class WithReference(testing.PairDualEncoder):

      def __init__(self, reference, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference

    with self.strategy.scope():
      reference = testing.PairDualEncoder(name="inner_reference")
      learner = WithReference(reference, name="with_reference")
      learner.compile(optimizer="adam")
      for model in (learner, reference):
        model({"image": tf.zeros([1, 16, 16, 3]), "text": tf.zeros([1, 3], tf.int32)})
    with self.assertRaisesRegex(ValueError, r"reference.trainable = False.* Received: "
                                r"reference='inner_reference'"):
      tfjest.attach(learner, self._selector(learner=learner, reference=reference))


if __name__ == "__main__":
  tf.test.main()
