"""`tfjest.attach` gives every replica of the frozen reference the first replica's values.

MirroredStrategy over `/cpu:0` and `/cpu:1`. The two logical CPU devices are configured when this
module is imported, before any op (pytest's conftest.py does it earlier, for the whole session;
under Bazel this file is its own process). No test here runs a collective, so this module's
strategy cannot clash with the one of replica_step_test.py in a shared pytest process.
"""

from tfjest import testing

testing.configure_cpu_devices(2)  # before any op; a no-op if conftest.py did it

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf

import numpy as np

import tfjest


def setUpModule():
  testing.require_cpu_devices(2)


def _strategy():
  return testing.cpu_mirrored_strategy(2)


def _models(strategy, reference_seed=1):
  with strategy.scope():
    learner = testing.classifier(seed=0, name="learner")
    reference = testing.classifier(seed=reference_seed, name="reference")
    reference.trainable = False
  return learner, reference


def _selector(learner, reference):
  return tfjest.select(learner=learner, reference=reference, batch_size=8, super_batch_size=32,
                       method="independent")


def _replicas(strategy, weight):
  return [v.numpy() for v in strategy.experimental_local_results(weight.value)]


def _shift_second_replica(strategy, weight, index, delta):
  """Adds `delta` at flat `index` of `weight` on the second replica only."""
  second = strategy.experimental_local_results(weight.value)[1]
  value = second.numpy()
  value.reshape(-1)[index] += delta
  second.assign(value)


class AlignReferenceReplicasTest(tf.test.TestCase):

  def test_differing_replicas_take_the_first_replicas_values(self):
    strategy = _strategy()
    learner, reference = _models(strategy)
    kernel, bias = reference.dense.kernel, reference.dense.bias
    first_kernel = _replicas(strategy, kernel)[0].copy()
    _shift_second_replica(strategy, kernel, 3, 0.25)
    _shift_second_replica(strategy, bias, 0, -1e-5)
    self.assertFalse(np.array_equal(*_replicas(strategy, kernel)))

    with self.assertLogs("absl", level="WARNING") as logs:
      tfjest.attach(learner, _selector(learner, reference))

    for weight in reference.weights:
      first, second = _replicas(strategy, weight)
      np.testing.assert_array_equal(first, second, err_msg=weight.path)
    np.testing.assert_array_equal(_replicas(strategy, kernel)[0], first_kernel)
    messages = [r.getMessage() for r in logs.records if "frozen reference" in r.getMessage()]
    self.assertLen(messages, 1)  # one warning for the whole reference
    self.assertRegex(messages[0], r"'reference'.*largest absolute difference 0\.25, in 2 of "
                     r"its 2 weights")

  def test_identical_replicas_are_left_alone_without_a_warning(self):
    strategy = _strategy()
    learner, reference = _models(strategy, reference_seed=2)
    before = [_replicas(strategy, w) for w in reference.weights]
    with self.assertNoLogs("absl", level="WARNING"):
      tfjest.attach(learner, _selector(learner, reference))
    for weight, values in zip(reference.weights, before):
      for now, was in zip(_replicas(strategy, weight), values):
        np.testing.assert_array_equal(now, was)

  def test_the_learner_is_not_touched(self):
    # The learner trains: its replicas are the strategy's business, not the frozen reference's.
    strategy = _strategy()
    learner, reference = _models(strategy, reference_seed=3)
    _shift_second_replica(strategy, learner.dense.kernel, 0, 0.5)
    tfjest.attach(learner, _selector(learner, reference))
    first, second = _replicas(strategy, learner.dense.kernel)
    self.assertAllClose(second.reshape(-1)[0] - first.reshape(-1)[0], 0.5)


if __name__ == "__main__":
  tf.test.main()
