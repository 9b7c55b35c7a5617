"""One selection step for both placements: parity, and no silently wrong selections.

The pipeline (`dataset.apply(tfjest.select(...))`) and the train step (`tfjest.attach(...,
placement="train_step")`) run the same `step.SelectionStep`; these tests hold them together on
streams with non-finite scores, with an online proxy and with a cached reference, for both model
contracts, and check each defect the issue "One selection step for every placement" listed.
Models are tiny and linear (no ReLU), so NaN inputs give NaN outputs in graph mode too.
"""

import contextlib
import os
import sys
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

_dual, _classifier, _stream = testing.dual_encoder, testing.classifier, testing.stream
_ids, _make, D = testing.ids, testing.selection_setup, testing.D


class ParityTest(tf.test.TestCase, parameterized.TestCase):
  """One replica: the pipeline and the train step pick the same examples, same statistics."""

  @parameterized.product(task=["contrastive", "classification"],
                         variant=["plain", "proxy", "cache"])
  def test_pipeline_and_train_step_agree(self, task, variant):
    stream = _stream(task, nan_every=7)

    learner, kwargs = _make(task, variant)
    pipeline = tfjest.select(**kwargs)
    want = [_ids(b) for b in stream.apply(pipeline)]

    # Selecting reads the learner and reference without changing them, so both placements can
    # share them (and the reference cache, made once); an online proxy trains as it selects,
    # so the train step gets its own, identical one.
    if variant == "proxy":
      learner, kwargs = _make(task, variant)
    attached = tfjest.attach(learner, tfjest.select(**kwargs), placement="train_step",
                             jit_compile=False)
    step = tf.function(attached.selection)  # what the model's train step runs, step by step
    got = [_ids(step(super_batch, tf.constant(i, tf.int64)))  # one trace
           for i, super_batch in enumerate(stream.apply(attached))]

    self.assertLen(got, 5)
    self.assertAllEqual(np.stack(got), np.stack(want))
    a, b = pipeline.stats.result(), attached.stats.result()
    self.assertEqual(sorted(a), sorted(b))
    for key in a:
      self.assertAllClose(a[key], b[key], rtol=1e-5, msg=key)
    self.assertEqual(a["non_finite"], 160 // 7 + (1 if 160 % 7 > 3 else 0))
    self.assertFalse(any(np.isin(np.concatenate(got) % 7, [3])))  # NaN never chosen
    if variant == "proxy":
      self.assertEqual(int(kwargs["proxy"].steps.numpy()), 5)


class TrainStepTest(tf.test.TestCase):
  """What `fit` does with selection in the train step."""

  def test_proxy_is_trained_under_attach(self):
    learner, kwargs = _make("contrastive", "proxy")
    proxy = kwargs["proxy"]
    before = [w.numpy().copy() for w in proxy.model.trainable_weights]
    selector = tfjest.attach(learner, tfjest.select(**kwargs), placement="train_step")
    learner.fit(_stream("contrastive").apply(selector), epochs=1, verbose=0)
    self.assertEqual(int(proxy.steps.numpy()), 5)
    self.assertFalse(any(np.allclose(a, w.numpy())
                         for a, w in zip(before, proxy.model.trainable_weights)))

  def test_non_finite_scores_are_counted_under_attach(self):
    # 200 of 640 inputs with a NaN feature.
    n = 640
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, D)).astype(np.float32)
    x[rng.permutation(n)[:200], 1] = np.nan
    y = rng.integers(0, testing.CLASSES, size=n).astype(np.int64)
    stream = tf.data.Dataset.from_tensor_slices(({"x": x, "id": np.arange(n)}, y))
    results = []
    for placement in ("pipeline", "train_step"):
      keras.utils.set_random_seed(0)
      learner, reference = _classifier(0, "learner"), _classifier(1, "reference")
      selector = tfjest.select(learner=learner, reference=reference, batch_size=16,
                               super_batch_size=64, method="independent")
      if placement == "train_step":
        selector = tfjest.attach(learner, selector, placement="train_step")
      learner.fit(stream.apply(selector), epochs=1, verbose=0)
      results.append(selector.stats.result())
    for stats in results:
      self.assertEqual(stats["non_finite"], 200)
      self.assertEqual(stats["read"], n)
      for key in ("learner_loss_selected", "learner_loss_rejected", "reference_loss_rejected",
                  "batch_score"):
        self.assertTrue(np.isfinite(stats[key]), key)


class NonFiniteWarningTest(tf.test.TestCase):

  def test_printed_once_per_selector_and_counted_every_time(self):
    # Every candidate NaN: 4 super-batches an epoch, 2 epochs, one warning.
    stream = _stream("classification", n=128, nan_every=1)
    stream = stream.map(lambda x, y: ({**x, "x": x["x"] * np.nan}, y))
    learner, kwargs = _make("classification")
    selector = tfjest.select(**kwargs)
    with _captured_stderr() as read:
      for _ in range(2):
        self.assertLen(list(stream.apply(selector)), 4)
    self.assertEqual(read().count("every candidate of a super-batch had a NaN"), 1)
    stats = selector.stats.result()
    self.assertEqual(stats["non_finite"], 256)
    self.assertEqual(stats["batches"], 8)
    self.assertTrue(np.isnan(stats["learner_loss_selected"]))
    del learner

  def test_two_selectors_warn_once_each(self):
    stream = _stream("classification", n=64).map(
        lambda x, y: ({**x, "x": x["x"] * np.nan}, y))
    with _captured_stderr() as read:
      for _ in range(2):
        _, kwargs = _make("classification")
        list(stream.apply(tfjest.select(**kwargs)))
    self.assertEqual(read().count("every candidate of a super-batch had a NaN"), 2)


@contextlib.contextmanager
def _captured_stderr():
  """Captures file descriptor 2 (`tf.print` writes there from C++, not via `sys.stderr`)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as f:
    os.dup2(f.fileno(), 2)
    text = []
    try:
      yield lambda: "".join(text)
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      f.seek(0)
      text.append(f.read().decode("utf-8", "replace"))


class NonFiniteFirstChunkTest(tf.test.TestCase):

  def test_uniform_first_chunk_draws_among_finite_candidates(self):
    # 8 NaN of every 64, b = 16, K = 4, 10 batches: no NaN example is ever selected.
    stream = _stream("contrastive", n=640, nan_every=8)
    _, kwargs = _make("contrastive", "plain")
    kwargs.update(batch_size=16, super_batch_size=64, num_chunks=4, first_chunk="uniform")
    selector = tfjest.select(**kwargs)
    ids = np.concatenate([_ids(b) for b in stream.apply(selector)])
    self.assertLen(ids, 160)
    self.assertEqual(int(np.sum(ids % 8 == 3)), 0)
    self.assertEqual(selector.stats.result()["non_finite"], 80)

  def test_oracle_nan_candidates_come_last_in_every_chunk(self):
    values = np.arange(12, dtype=np.float32)
    values[[1, 4, 9]] = np.nan
    for first_chunk in ("uniform", "scores"):
      picks = tfjest.joint_selection(tfjest.DiagonalScores(values), 9, num_chunks=3, seed=1,
                                     first_chunk=first_chunk).numpy()
      self.assertEmpty(set(picks) & {1, 4, 9}, first_chunk)
      all_picks = tfjest.joint_selection(tfjest.DiagonalScores(values), 12, num_chunks=3,
                                         seed=1, first_chunk=first_chunk).numpy()
      self.assertCountEqual(all_picks[-3:], [1, 4, 9])  # taken only when nothing else is left


class RefusalsTest(tf.test.TestCase):
  """Inputs that used to give silently wrong selections are refused, naming the fix."""

  def test_reference_that_is_the_learner(self):
    learner = _classifier(0, "learner")
    with self.assertRaisesRegex(ValueError, r"frozen.*clone_model.*Received: reference="
                                r"'learner' \(the learner\)"):
      tfjest.select(learner=learner, reference=learner, batch_size=8, method="independent")

  def test_outputs_that_cannot_be_compared(self):
    learner, reference = _classifier(0, "learner", 10), _classifier(1, "reference", 4)
    with self.assertRaisesRegex(ValueError, r"same classes.*Received: output shapes"):
      _stream("classification").apply(tfjest.select(
          learner=learner, reference=reference, batch_size=8, method="independent"))

  def test_batched_input_without_input_batched(self):
    learner, reference = _classifier(0, "learner"), _classifier(1, "reference")
    for batched in (_stream("classification").batch(4, drop_remainder=True),
                    _stream("classification").batch(4, drop_remainder=True).prefetch(2)):
      with self.assertRaisesRegex(ValueError, r"yields batches.*input_batched=True"):
        batched.apply(tfjest.select(learner=learner, reference=reference, batch_size=8,
                                    method="independent"))
    # With the flag the same stream is unbatched first and selected from.
    out = _stream("classification").batch(4, drop_remainder=True).apply(tfjest.select(
        learner=learner, reference=reference, batch_size=8, method="independent",
        input_batched=True))
    self.assertLen(list(out), 160 // 40)  # filter_ratio 0.8: N = 40

  def test_select_batch_takes_numpy_and_names_a_wrong_size(self):
    _, kwargs = _make("contrastive", "plain")
    selector = tfjest.select(**kwargs)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(32, D)).astype(np.float32),
             "text": rng.normal(size=(32, D)).astype(np.float32), "id": np.arange(32)}
    out = selector.select_batch(batch)
    self.assertLen(set(out["id"].numpy()), 8)
    with self.assertRaisesRegex(ValueError, r"super_batch_size=32.*Received: super_batch with "
                                r"20 examples"):
      selector.select_batch({k: v[:20] for k, v in batch.items()})


class SampleWeightTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("pipeline", "train_step")
  def test_weight_zero_examples_are_not_chosen_while_others_remain(self, placement):
    n = 160
    weights = np.where(np.arange(n) % 2 == 0, 0.0, 1.0).astype(np.float32)  # half weight 0
    stream = _stream("classification", n=n, weights=weights)
    learner, reference = _classifier(0, "learner"), _classifier(1, "reference")
    selector = tfjest.select(learner=learner, reference=reference, batch_size=8,
                             super_batch_size=32, method="independent", score="hard_learner",
                             greedy=True)
    if placement == "train_step":
      selector = tfjest.attach(learner, selector, placement="train_step", jit_compile=False)
      step = tf.function(selector.selection)
      batches = [step(sb, tf.constant(i, tf.int64)) for i, sb in enumerate(stream.apply(selector))]
    else:
      batches = list(stream.apply(selector))
    ids = np.concatenate([_ids(b) for b in batches])
    self.assertLen(ids, 40)
    self.assertTrue(np.all(ids % 2 == 1), ids)


class StatisticsTest(tf.test.TestCase):

  def test_losses_not_read_are_not_reported(self):
    _, kwargs = _make("classification", "plain")
    kwargs["score"] = "easy_reference"
    selector = tfjest.select(**kwargs)
    list(_stream("classification").apply(selector))
    stats = selector.stats.result()
    self.assertIn("reference_loss_selected", stats)
    for key in ("learner_loss_selected", "learner_loss_rejected", "proxy_loss_selected"):
      self.assertNotIn(key, stats)
    uniform = tfjest.select(learner=kwargs["learner"], batch_size=8, super_batch_size=32,
                            method="uniform")
    list(_stream("classification").apply(uniform))
    self.assertNotIn("batch_score", uniform.stats.result())
    self.assertNotIn("learner_loss_selected", uniform.stats.result())

  def test_left_over_warning_is_printed_once(self):
    _, kwargs = _make("classification", "plain")
    selector = tfjest.select(**kwargs)
    stream = _stream("classification", n=100)  # 3 super-batches of 32 and 4 left over
    with tempfile.TemporaryFile() as captured:
      saved = os.dup(2)
      os.dup2(captured.fileno(), 2)
      try:
        for _ in range(3):  # three epochs
          list(stream.apply(selector))
      finally:
        os.dup2(saved, 2)
        os.close(saved)
      captured.seek(0)
      text = captured.read().decode()
    self.assertEqual(text.count("dropped a final partial super-batch"), 1, text)
    self.assertEqual(selector.stats.result()["left_over"], 12)


if __name__ == "__main__":
  tf.test.main()
