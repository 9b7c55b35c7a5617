"""ReLAAid under MirroredStrategy on two logical CPUs: every replica switches at the same step.

The two logical CPU devices are configured when this module is imported, before any op (pytest's
conftest.py does it earlier), and the run uses the process's one `testing.cpu_mirrored_strategy`,
so its collectives cannot clash with the strategies of other test modules in a shared pytest
process. The test trains the same classifier from the same weights on the same global batches
twice: without a strategy and under MirroredStrategy (two replicas, each with half of every
batch). With the adaptive rule fed the loss averaged over replicas, both runs see the same loss
sequence, switch at the same step and end with the same weights; and the replicas' copies of the
switch state agree.
"""

from tfjest import testing

testing.configure_cpu_devices(2)  # before any op; a no-op if conftest.py did it

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import tempfile

import keras
import tensorflow as tf

import tfjest

_STEPS = 12
_THRESHOLD = 0.39   # low, so that the released averages fire within a short run


def setUpModule():
  testing.require_cpu_devices(2)


def _runs():
  """`{"single": ..., "mirrored": ...}`: what each run's aid and model end with."""
  stream = testing.stream("classification", n=64)
  targets = tfjest.prior_targets(testing.classifier(seed=9), stream,
                                 os.path.join(tempfile.mkdtemp(), "t"), width=5)
  batches = stream.repeat().apply(targets.join()).batch(16)
  out = {}
  for name, strategy in (("single", None), ("mirrored", testing.cpu_mirrored_strategy(2))):
    scope = strategy.scope() if strategy else tf.distribute.get_strategy().scope()
    keras.utils.set_random_seed(0)   # the same transport head in both runs
    with scope:
      model = testing.classifier(seed=0)
      aid = tfjest.ReLAAid(model, threshold=_THRESHOLD)
      aid.compile(optimizer=keras.optimizers.SGD(0.5))
    losses = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(float(logs["rela_loss"])))
    aid.fit(batches, steps_per_epoch=_STEPS, epochs=1, verbose=0, callbacks=[callback])
    out[name] = {
        "losses": losses,
        "switch_step": [int(v) for v in testing.replica_values(aid.switch_step, strategy)],
        "switched": [bool(v) for v in testing.replica_values(aid.switched, strategy)],
        "kernel": model.weights[0].numpy(),
        "identical": testing.replicas_identical(model, strategy),
    }
  return out


class StrategyTest(tf.test.TestCase):

  def test_replicas_switch_together_as_one_replica_would(self):
    out = _runs()
    single, mirrored = out["single"], out["mirrored"]
    switch = single["switch_step"][0]
    self.assertBetween(switch, 1, _STEPS - 1)   # it switched within the run
    self.assertLen(mirrored["switch_step"], 2)
    self.assertEqual(mirrored["switch_step"], [switch, switch])
    self.assertEqual(mirrored["switched"], [True, True])
    self.assertAllClose(mirrored["losses"], single["losses"], atol=1e-5)
    self.assertAllClose(mirrored["kernel"], single["kernel"], atol=1e-4)
    self.assertTrue(mirrored["identical"])


if __name__ == "__main__":
  tf.test.main()
