"""ReLAAid under MirroredStrategy on two logical CPUs: every replica switches at the same step.

The run happens in a fresh Python process (this file run as a script with `--child`), which
configures its two logical CPU devices before any op (`tfjest.testing.configure_cpu_devices`)
and runs collectives of its own, so it cannot clash with the strategies of other test modules
in a shared pytest process. The child trains the same classifier from the same weights on the
same global batches twice: without a strategy and under MirroredStrategy (two replicas, each
with half of every batch). With the adaptive rule fed the loss averaged over replicas, both runs
see the same loss sequence, switch at the same step and end with the same weights; and the
replicas' copies of the switch state agree.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

_STEPS = 12
_THRESHOLD = 0.39   # low, so that the released averages fire within a short run


def _child():
  from tfjest import testing  # pylint: disable=g-import-not-at-top
  if not testing.configure_cpu_devices(2):
    raise RuntimeError("could not configure 2 logical CPUs")
  import keras  # pylint: disable=g-import-not-at-top
  import tfjest  # pylint: disable=g-import-not-at-top

  stream = testing.stream("classification", n=64)
  targets = tfjest.prior_targets(testing.classifier(seed=9), stream,
                                 os.path.join(tempfile.mkdtemp(), "t"), width=5)
  batches = stream.repeat().apply(targets.join()).batch(16)
  out = {}
  for name, strategy in (("single", None), ("mirrored", tf.distribute.MirroredStrategy(
      ["/cpu:0", "/cpu:1"]))):
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
        "kernel": model.weights[0].numpy().tolist(),
        "identical": testing.replicas_identical(model, strategy),
    }
  print("RESULT " + json.dumps(out))


class StrategyTest(tf.test.TestCase):

  def test_replicas_switch_together_as_one_replica_would(self):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    self.assertTrue(lines, f"the child failed:\n{done.stderr[-4000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    single, mirrored = out["single"], out["mirrored"]
    switch = single["switch_step"][0]
    self.assertBetween(switch, 1, _STEPS - 1)   # it switched within the run
    self.assertLen(mirrored["switch_step"], 2)
    self.assertEqual(mirrored["switch_step"], [switch, switch])
    self.assertEqual(mirrored["switched"], [True, True])
    self.assertAllClose(mirrored["losses"], single["losses"], atol=1e-5)
    self.assertAllClose(np.array(mirrored["kernel"]), np.array(single["kernel"]), atol=1e-4)
    self.assertTrue(mirrored["identical"])


if __name__ == "__main__":
  if "--child" in sys.argv:
    _child()
  else:
    tf.test.main()
