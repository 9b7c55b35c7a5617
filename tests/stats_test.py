"""Tests of tfjest.stats: one batch's statistics, running totals, and per-window means."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tfjest import stats as stats_lib


def _batch(losses, chosen, finite):
  finite = tf.constant(finite)
  real = tf.ones_like(finite)
  return stats_lib.batch_statistics(
      read=len(losses), selected=int(np.sum(chosen)), chosen=tf.constant(chosen),
      usable=finite, finite=finite, real=real,
      losses={"learner": tf.constant(losses, tf.float32)})


class BatchStatisticsTest(tf.test.TestCase):

  def test_sums_counts_and_non_finite(self):
    got = _batch([1.0, 2.0, np.nan, 4.0], [True, False, True, False],
                 [True, True, False, True])
    self.assertEqual(int(got["read"]), 4)
    self.assertEqual(int(got["selected"]), 2)
    self.assertEqual(int(got["non_finite"]), 1)
    self.assertAllClose(got["learner_loss_selected_sum"], 1.0)
    self.assertAllClose(got["learner_loss_selected_count"], 1.0)
    self.assertAllClose(got["learner_loss_rejected_sum"], 6.0)
    self.assertAllClose(got["learner_loss_rejected_count"], 2.0)


class WindowMeansTest(tf.test.TestCase):

  def _record(self, stats, finite):
    n = 4
    losses = [1.0, 3.0, 5.0, 7.0] if finite else [np.nan] * n
    stats.record_batch(_batch(losses, [True, True, False, False], [finite] * n))

  def test_a_window_of_non_finite_batches_reports_nan(self):
    stats = stats_lib.SelectionStats()
    self._record(stats, True)
    self._record(stats, True)
    first = stats.snapshot()
    self._record(stats, False)
    self._record(stats, False)
    epoch_1 = stats_lib.summarize(first, None, recorded=stats.recorded())
    epoch_2 = stats_lib.summarize(stats.snapshot(), first, recorded=stats.recorded())
    self.assertAllClose(epoch_1["learner_loss_selected"], 2.0)
    self.assertAllClose(epoch_1["learner_loss_rejected"], 6.0)
    self.assertTrue(np.isnan(epoch_2["learner_loss_selected"]))
    self.assertTrue(np.isnan(epoch_2["learner_loss_rejected"]))
    self.assertEqual(epoch_2["non_finite"], 8)
    self.assertEqual(epoch_2["batches"], 4)
    # Over both windows the mean is over the two batches that had a value.
    self.assertAllClose(stats.result()["learner_loss_selected"], 2.0)

  def test_recorded_lists_what_the_step_records(self):
    stats = stats_lib.SelectionStats()
    self.assertEqual(stats.recorded(), frozenset())
    self._record(stats, False)
    self.assertEqual(stats.recorded(),
                     {"learner_loss_selected", "learner_loss_rejected"})
    result = stats.result()
    self.assertTrue(np.isnan(result["learner_loss_selected"]))
    self.assertNotIn("reference_loss_selected", result)  # no reference was read
    self.assertNotIn("batch_score", result)

  def test_without_recorded_a_window_without_values_leaves_the_key_out(self):
    stats = stats_lib.SelectionStats()
    self._record(stats, False)
    self.assertNotIn("learner_loss_selected", stats_lib.summarize(stats.snapshot(), None))

  def test_recorded_inside_a_function(self):
    stats = stats_lib.SelectionStats()
    values = _batch([np.nan] * 4, [True, True, False, False], [False] * 4)

    @tf.function
    def record():
      stats.record_batch(values)

    record()
    self.assertIn("learner_loss_selected", stats.recorded())
    self.assertEqual(stats.result()["non_finite"], 4)

  def test_warned_flag_is_one_per_name(self):
    stats = stats_lib.SelectionStats()
    flag = stats.warned("non_finite")
    self.assertIs(stats.warned("non_finite"), flag)
    self.assertFalse(bool(flag.numpy()))
    # Not part of a checkpoint of the totals.
    self.assertFalse(any(v is flag for v in stats.variables))


if __name__ == "__main__":
  absltest.main()
