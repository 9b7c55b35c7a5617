"""`tfjest.distribute.guards`: the checks `attach` runs, called directly."""

from tfjest import testing

testing.configure_cpu_devices(2)  # before any op; a no-op if conftest.py did it

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest.distribute import guards


def _selector(batch_size=8, super_batch_size=32, method="jest", num_chunks=2):
  return tfjest.select(learner=testing.dual_encoder(seed=0),
                       reference=testing.dual_encoder(seed=1), batch_size=batch_size,
                       super_batch_size=super_batch_size, method=method, num_chunks=num_chunks)


class GuardsTest(tf.test.TestCase, parameterized.TestCase):

  def test_divisible_sizes_pass(self):
    guards.check_divisible(_selector(), 2)
    guards.check_divisible(_selector(), 4)

  @parameterized.parameters(
      (dict(), 3),  # N = 32, b = 8 do not split over 3
      (dict(batch_size=8, num_chunks=4), 4),  # b / R = 2 picks in chunks of 4
  )
  def test_uneven_sizes_are_named(self, kwargs, replicas):
    with self.assertRaisesRegex(
        ValueError, rf"divisible by the number of replicas. Received: super_batch_size=32, "
        rf"batch_size=8, num_chunks=\d, replicas={replicas}"):
      guards.check_divisible(_selector(**kwargs), replicas)

  def test_replica_difference_treats_nan_like_numpy_equality(self):
    a = np.array([1.0, np.nan, 3.0])
    self.assertEqual(guards._replica_difference(a, a.copy()), 0.0)  # pylint: disable=protected-access
    self.assertEqual(guards._replica_difference(a, np.array([1.0, 2.0, 3.0])), np.inf)  # pylint: disable=protected-access
    self.assertAllClose(guards._replica_difference(a, np.array([1.5, np.nan, 3.0])), 0.5)  # pylint: disable=protected-access

  def test_is_tpu_only_for_tpu_strategies(self):
    self.assertFalse(guards.is_tpu(tf.distribute.get_strategy()))
    self.assertFalse(guards.is_tpu(testing.cpu_mirrored_strategy(2)))

  def test_reference_among_the_trained_weights_is_refused(self):
    learner = testing.classifier(seed=0)
    selector = tfjest.select(learner=learner, reference=testing.classifier(seed=1),
                             batch_size=8, super_batch_size=32, method="independent")
    selector.prepare(testing.stream("classification", n=32).element_spec)
    # A model whose trainable weights include the reference's.
    holder = tf.keras.Sequential([selector.reference])
    with self.assertRaisesRegex(ValueError, r"reference's weights are among the trainable"):
      guards.check_models(selector, holder, None)

  def test_can_record_without_xla(self):
    model = testing.classifier(seed=0)
    model.compile(optimizer="sgd", loss="mse", jit_compile=False)
    self.assertTrue(guards.can_record(model, "/job:localhost/replica:0/task:0/device:CPU:0"))


if __name__ == "__main__":
  tf.test.main()
