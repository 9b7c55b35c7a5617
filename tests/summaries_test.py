"""Pictures of selection in TensorBoard: read back from the event files of a short `fit`.

The stream has known corruption (`testing.make_pairs`: 30% of the captions swapped) and the
reference was trained on clean pairs, so learnability rejects corrupted pairs: the lowest-scoring
candidates shown are mostly corrupted, and the corrupted pairs' selection rate (per-group, keyed
by the `corrupted` feature) is below the clean pairs'.
"""

import contextlib
import glob
import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import tfjest
from tfjest import summaries
from tfjest import tensorboard as tfjest_tensorboard
from tfjest import testing

testing.configure_cpu_devices(2)  # before any op, as under Bazel (no conftest there)

N, B = 64, 16
_REFERENCE = {}


def _built(model):
  """`model` with its weights and its optimizer's variables created before `fit`.

  `fit` would create them on its first step, the same weights (built in the same order from the
  same seed), but a train function that creates variables is traced twice: built first, once.
  """
  model(testing.make_pairs(1))
  model.optimizer.build(model.trainable_variables)
  return model


def _reference():
  """A reference dual encoder trained on clean pairs (once per process)."""
  if "model" not in _REFERENCE:
    keras.utils.set_random_seed(1)
    model = testing.PairDualEncoder(name="reference")
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    _built(model)
    clean = testing.make_pairs(512, 0.0, seed=1)
    model.fit(tf.data.Dataset.from_tensor_slices(clean).batch(32), epochs=3, verbose=0)
    model.trainable = False
    _REFERENCE["model"] = model
  return _REFERENCE["model"]


def _read(log_dir):
  """`{tag: [(step, value)]}` of every tensor summary (TF2 writes all kinds as tensors)."""
  out = {}
  for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
    acc = event_accumulator.EventAccumulator(
        path, size_guidance={k: 0 for k in event_accumulator.DEFAULT_SIZE_GUIDANCE})
    acc.Reload()
    for tag in acc.Tags()["tensors"]:
      out.setdefault(tag, []).extend(
          (e.step, tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag))
  return out


def _table_rows(text):
  """`[(rank, selected, id)]` of a candidates table."""
  rows = []
  for line in text.splitlines()[2:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    rows.append((cells[0], cells[2] == "**selected**", int(cells[3])))
  return rows


class SummariesTest(tf.test.TestCase, parameterized.TestCase):

  def _fit(self, placement="pipeline", proxy=False, epochs=2):
    keras.utils.set_random_seed(0)
    pairs = testing.make_pairs(256, 0.3, seed=0)
    strategy = testing.cpu_mirrored_strategy(2) if placement == "mirrored" else None
    with strategy.scope() if strategy else contextlib.nullcontext():
      learner = testing.PairDualEncoder(name="learner")
      learner.compile(optimizer=keras.optimizers.Adam(1e-3))
      reference = _reference()
      if strategy:  # the reference must be created under the scope: copy the trained one
        reference = testing.PairDualEncoder(name="reference_copy")
        reference(testing.make_pairs(1))
        reference.set_weights(_reference().get_weights())
        reference.trainable = False
      _built(learner)  # after the reference, whose weights draw from the same seed stream
      kwargs = {}
      if proxy:
        small = testing.PairDualEncoder(width=8, name="proxy")
        kwargs["proxy"] = tfjest.OnlineProxy(small, optimizer=keras.optimizers.Adam(1e-3))
      selector = tfjest.select(learner=learner, reference=reference, batch_size=B,
                               super_batch_size=N, num_chunks=2, group_key="corrupted",
                               **kwargs)
      applied = selector
      if placement != "pipeline":
        applied = tfjest.attach(learner, selector, placement="train_step")
    log_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
    words = ["", "red", "green", "blue", "yellow", "square", "disc", "bar", "top left",
             "top right", "bottom left", "bottom right"]
    callbacks = [keras.callbacks.TensorBoard(log_dir),
                 tfjest.SelectionStatsCallback(applied, every_n_steps=1, vocabulary=words)]
    history = learner.fit(tf.data.Dataset.from_tensor_slices(pairs).apply(applied),
                          epochs=epochs, verbose=0, callbacks=callbacks).history
    if placement != "pipeline":
      tfjest.detach(learner)
    return selector, pairs, history, _read(os.path.join(log_dir, "selection"))

  @parameterized.parameters("pipeline", "train_step", "mirrored")
  def test_event_files_hold_pictures_histograms_and_group_rates(self, placement):
    if placement == "mirrored" and len(tf.config.list_logical_devices("CPU")) < 2:
      self.skipTest("needs two logical CPUs, configured before any op (tests/conftest.py)")
    selector, pairs, history, events = self._fit(placement)
    for tag in ("selection_highest", "selection_lowest", "selection_candidates",
                "selection_learnability/selected", "selection_learnability/rejected",
                "selection_learner_loss/selected", "selection_reference_loss/rejected",
                "selection_group_rate/0", "selection_group_rate/1"):
      self.assertIn(tag, events)
    images = events["selection_highest"][-1][1]  # [width, height, encoded PNG...]
    self.assertLen(images, 2 + summaries.NUM_SHOWN)
    histogram = events["selection_learnability/rejected"][-1][1]
    self.assertEqual(histogram.shape[1], 3)  # (left, right, count) buckets
    # The lowest-scoring candidates shown, over every sample, are mostly corrupted and rejected.
    corrupted = pairs["corrupted"]
    shown = [(rank, picked, corrupted[i]) for _, text in events["selection_candidates"]
             for rank, picked, i in _table_rows(text.item().decode())]
    lowest = [(picked, c) for rank, picked, c in shown if rank.startswith("lowest")]
    # 8 steps sampled; the pipeline runs up to 2 super-batches ahead of training, so at K = 1
    # a sample can be replaced before the callback writes it.
    self.assertGreaterEqual(len(lowest), 4 * summaries.NUM_SHOWN)
    self.assertGreater(np.mean([c for _, c in lowest]), 0.8)  # 30% of the stream
    # The rejected examples shown are mostly the corrupted ones, the highest mostly clean.
    self.assertGreater(np.mean([c for _, picked, c in shown if not picked]), 0.6)
    # Which super-batches are written depends on how far the pipeline has run ahead (above), so
    # the share varies between runs: 0.0 to 0.1 measured, against the stream's 0.3.
    self.assertLess(np.mean([c for rank, _, c in shown if rank.startswith("highest")]), 0.2)
    # Per-group rates: corrupted pairs are selected less often than clean pairs.
    clean_rate = float(events["selection_group_rate/0"][-1][1])
    corrupt_rate = float(events["selection_group_rate/1"][-1][1])
    # Uniform selection would give both groups the same rate (b / N). Measured with seed 0:
    # corrupted / clean about 0.6 on one device; each of 2 replicas selects from its own half
    # of a super-batch, a weaker filter. The tolerance leaves room for the noise stream.
    self.assertLess(corrupt_rate, 0.8 * clean_rate)
    steps = [step for step, _ in events["selection_group_rate/0"]]
    self.assertEqual(steps, sorted(steps))  # one step axis: the optimizer's iterations
    result = selector.stats.result()
    self.assertAllClose([result["group_rate/0"], result["group_rate/1"]],
                        [clean_rate, corrupt_rate])
    self.assertAllClose(history["selection_group_rate/1"][-1], corrupt_rate)
    # The rates count every example read: selected / read over the groups is b / N.
    rates = selector.summaries.group_rates()
    self.assertEqual(sum(r for r, _ in rates.values()), result["read"])
    self.assertEqual(sum(s for _, s in rates.values()), result["selected"])

  @parameterized.parameters("pipeline", "train_step")
  def test_proxy_fidelity_is_logged_and_costed(self, placement):
    selector, _, history, events = self._fit(placement, proxy=True)
    for tag in ("selection_fidelity_overlap", "selection_fidelity_rank_correlation",
                "selection_proxy_loss/selected", "selection_learner_loss_full_resolution/selected"):
      self.assertIn(tag, events)
    overlap = float(events["selection_fidelity_overlap"][-1][1])
    correlation = float(events["selection_fidelity_rank_correlation"][-1][1])
    self.assertBetween(overlap, 0.0, 1.0)
    self.assertBetween(correlation, -1.0, 1.0)
    result = selector.stats.result()
    self.assertEqual(int(selector.summaries.fidelity_checks.numpy()), 8)  # K = 1, 8 steps
    self.assertGreater(result["flops_fidelity"], 0)
    # One full-resolution learner pass over N per check, counted as learner scoring.
    per_check = result["flops_fidelity"] / 8
    self.assertAllClose(per_check, tfjest.forward_flops(
        selector.learner, {k: tf.TensorSpec(v.shape[1:], v.dtype) for k, v in
                           testing.make_pairs(1).items()}) * N)
    self.assertIn("selection_flops_fidelity", history)

  def test_no_writer_no_sampling(self):
    keras.utils.set_random_seed(0)
    learner = testing.PairDualEncoder(name="learner")
    learner.compile(optimizer="adam")
    _built(learner)
    selector = tfjest.select(learner=learner, reference=_reference(), batch_size=B,
                             super_batch_size=N, num_chunks=2)
    pairs = tf.data.Dataset.from_tensor_slices(testing.make_pairs(128, 0.3))
    learner.fit(pairs.apply(selector), verbose=0,
                callbacks=[tfjest.SelectionStatsCallback(selector, every_n_steps=1)])
    self.assertEqual(int(selector.summaries.samples.numpy()), 0)
    self.assertIsNone(selector.summaries.sample())


class FidelityTest(tf.test.TestCase):

  def test_matches_numpy(self):
    rng = np.random.default_rng(0)
    proxy, learner = rng.normal(size=20), rng.normal(size=20)
    chosen = np.zeros(20, bool)
    chosen[np.argsort(-proxy)[:5]] = True
    usable = np.ones(20, bool)
    overlap, corr = summaries.fidelity(tf.constant(proxy, tf.float32),
                                       tf.constant(learner, tf.float32), chosen, usable)
    top = set(np.argsort(-learner)[:5])
    self.assertAllClose(overlap, len(top & set(np.flatnonzero(chosen))) / 5)
    ranks = lambda v: np.argsort(np.argsort(v)).astype(float)
    self.assertAllClose(corr, np.corrcoef(ranks(proxy), ranks(learner))[0, 1], atol=1e-5)
    overlap, corr = summaries.fidelity(tf.constant(proxy, tf.float32),
                                       tf.constant(proxy, tf.float32), chosen, usable)
    self.assertAllClose([overlap, corr], [1.0, 1.0])


class _Recorded:
  """What a `SelectionSummaries` reports, fixed (for the writer alone)."""

  def __init__(self, result):
    self._result = result

  def result(self, unit_costs=None):
    del unit_costs
    return dict(self._result)


class WriterTest(tf.test.TestCase):

  def test_one_warning_when_fidelity_is_low(self):
    writer = tfjest_tensorboard.SummaryWriter(_Recorded(
        {"fidelity_overlap": 0.2, "fidelity_rank_correlation": 0.1}))
    with tf.summary.create_file_writer(self.get_temp_dir()).as_default(step=0):
      with self.assertLogs(level="WARNING") as logs:
        writer.write_scalars()
        writer.write_scalars()
    self.assertLen(logs.output, 1)
    self.assertRegex(logs.output[0], r"rank correlation 0\.10 .*0\.20 of its picks.*larger "
                     r"proxy.*learner")

  def test_no_warning_when_fidelity_is_high(self):
    # A JEST proxy's overlap stays low even when it ranks like the learner: no warning.
    writer = tfjest_tensorboard.SummaryWriter(_Recorded(
        {"fidelity_overlap": 0.3, "fidelity_rank_correlation": 0.8}))
    with tf.summary.create_file_writer(self.get_temp_dir()).as_default(step=0):
      writer.write_scalars()
    self.assertFalse(writer.warned)

  def test_captions_decoded_or_shown_as_ids(self):
    sample = {"shown": {"score": np.arange(8, dtype=np.float32)[::-1],
                        "chosen": np.arange(8) < 2, "usable": np.ones(8, bool)},
              "elements": [("id", np.arange(8)), ("text", np.tile([[1, 5, 0]], (8, 1))),
                           ("title", np.array([b"a cat"] * 8))]}
    words = ["", "red", "green", "blue", "yellow", "square"]
    by_words = tfjest_tensorboard.SummaryWriter(None, vocabulary=words, captions="text")
    self.assertEqual(by_words.candidates(sample)[0]["caption"], "red square")
    as_ids = tfjest_tensorboard.SummaryWriter(None, captions="text")
    self.assertEqual(as_ids.candidates(sample)[0]["caption"], "1 5 0")
    by_fn = tfjest_tensorboard.SummaryWriter(None, decode_fn=lambda ids: f"n={ids.size}",
                                             captions="text")
    self.assertEqual(by_fn.candidates(sample)[0]["caption"], "n=3")
    strings = tfjest_tensorboard.SummaryWriter(None)  # a string feature is found first
    candidates = strings.candidates(sample)
    self.assertEqual(candidates[0]["caption"], "a cat")
    self.assertEqual([c["rank"] for c in candidates[:5]],
                     ["highest 1", "highest 2", "highest 3", "highest 4", "lowest 1"])
    self.assertEqual([c["selected"] for c in candidates[:3]], [True, True, False])


class ArgumentsTest(tf.test.TestCase):

  def test_errors(self):
    learner = testing.classifier()
    with self.assertRaisesRegex(ValueError, "group_key must be a feature name"):
      tfjest.select(learner=learner, batch_size=8, method="uniform", group_key="")
    with self.assertRaisesRegex(ValueError, "max_groups must be an integer"):
      tfjest.select(learner=learner, batch_size=8, method="uniform", max_groups=0)
    selector = tfjest.select(learner=learner, batch_size=8, method="uniform", group_key="nope")
    with self.assertRaisesRegex(ValueError, "group_key must name a scalar"):
      testing.stream("classification", n=80).apply(selector)
    with self.assertRaisesRegex(ValueError, "every_n_steps must be an integer"):
      tfjest.SelectionStatsCallback(selector, every_n_steps=-1)
    with self.assertRaisesRegex(ValueError, "not both"):
      tfjest.SelectionStatsCallback(selector, vocabulary=["a"], decode_fn=str)
    with self.assertRaisesRegex(ValueError, "decode_fn must be callable"):
      tfjest.SelectionStatsCallback(selector, decode_fn=3)


if __name__ == "__main__":
  tf.test.main()
