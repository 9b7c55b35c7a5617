"""Selection in a train step that Keras compiles whole with XLA (`compile(jit_compile=True)`).

The statistics must count what they count without XLA, for both model contracts, with an online
proxy and with a cached reference (whose values the attached pipeline joins, so the compiled step
looks nothing up). Each case compiles a train step with XLA (several seconds on CPU).

On a GPU the compiled step runs on the GPU and can update only variables there, so the step's
counters are created on the model's device. No GPU here: a second logical CPU device stands in
for it (the model built and `fit` run under `tf.device("/cpu:1")`; counters left on `/cpu:0`
fail there exactly as on a GPU: "Trying to access resource ... located in device CPU:0 from
device CPU:1"). The devices are configured when this module is imported (conftest.py does it
earlier under pytest).
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
from tfjest import devices


def _fit_attached(task, variant, jit):
  """One epoch of `fit` with the selection in a train step compiled with `jit_compile=jit`."""
  learner, kwargs = testing.selection_setup(task, variant)
  learner.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit,
                  loss=None if task == "contrastive" else "sparse_categorical_crossentropy")
  selector = tfjest.attach(learner, tfjest.select(**kwargs), placement="train_step")
  history = learner.fit(testing.stream(task, nan_every=7).apply(selector), epochs=1, verbose=0)
  return selector, history, kwargs


# The cases the second test below fits on the stand-in accelerator.
_ON_SECOND_DEVICE = (("classification", "plain"), ("contrastive", "proxy"),
                     ("classification", "cache"))
_XLA_FITS = {}  # (task, variant) -> what `_fit_attached(task, variant, jit=True)` returned


def _xla_fit(task, variant):
  """`_fit_attached(task, variant, jit=True)`, made once per case and read by both tests.

  Each fit compiles a train step with XLA (the cost of this file), and both tests only read what
  a finished fit left. The cases of the device test are fitted under `tf.device("/cpu:1")` as
  that test needs; the statistics test checks the same counts on them (an XLA step on a
  device of its own), and on the other cases fitted without a device scope.
  """
  if (task, variant) not in _XLA_FITS:
    on_second = (task, variant) in _ON_SECOND_DEVICE
    with tf.device("/cpu:1") if on_second else contextlib.nullcontext():
      _XLA_FITS[task, variant] = _fit_attached(task, variant, jit=True)
  return _XLA_FITS[task, variant]


class WholeStepXlaTest(tf.test.TestCase, parameterized.TestCase):
  """Keras' `compile(jit_compile=True)`: selection in the compiled train step, still counted."""

  @parameterized.product(task=["contrastive", "classification"],
                         variant=["plain", "proxy", "cache"])
  def test_statistics_count_the_same_examples_as_without_xla(self, task, variant):
    # Without XLA the same stream counts these (step_test.ParityTest, and the plain
    # classifier below, run both ways).
    want = {"read": 160, "selected": 40, "filtered": 120, "non_finite": 23}
    for jit in ((False, True) if (task, variant) == ("classification", "plain") else (True,)):
      selector, history, kwargs = _xla_fit(task, variant) if jit else _fit_attached(
          task, variant, jit)
      self.assertTrue(np.isfinite(history.history["loss"][-1]))
      stats = selector.stats.result()
      self.assertEqual({k: stats[k] for k in want}, want, f"jit_compile={jit}")
      self.assertIn("batch_score", stats)
      if variant == "proxy":
        self.assertEqual(int(kwargs["proxy"].steps.numpy()), 5)

  @parameterized.parameters(*_ON_SECOND_DEVICE)
  def test_statistics_recorded_on_the_device_of_the_compiled_step(self, task, variant):
    want = {"read": 160, "selected": 40, "filtered": 120, "non_finite": 23}
    selector, history, kwargs = _xla_fit(task, variant)  # fitted under /cpu:1
    self.assertTrue(np.isfinite(history.history["loss"][-1]))
    self.assertTrue(devices.same_device(selector.selection.step.stats.device, "/cpu:1"))
    stats = selector.stats.result()
    self.assertEqual({k: stats[k] for k in want}, want)
    self.assertIn("batch_score", stats)
    if variant == "proxy":
      self.assertTrue(devices.same_device(kwargs["proxy"].steps.device, "/cpu:1"))
      self.assertEqual(int(kwargs["proxy"].steps.numpy()), 5)


if __name__ == "__main__":
  tf.test.main()
