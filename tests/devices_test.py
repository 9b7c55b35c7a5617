"""The placement rule on one device: selection goes where the scoring models' variables live.

There is no GPU or TPU here: the rule is tested by giving it accelerator device strings (objects
whose `.device` says GPU or TPU, or a patched `devices.variable_devices`, the one function that
reads devices). The statistics' counters for a compiled step are tested on a second logical CPU
device (tests/step_xla_test.py fits there).
"""

from tfjest import testing

testing.configure_cpu_devices(2)  # before any op; a no-op if conftest.py did it

# pylint: disable=g-import-not-at-top,wrong-import-position
from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

import tfjest
from tfjest import devices
from tfjest.distribute import guards

GPU = "/job:localhost/replica:0/task:0/device:GPU:0"
TPU = "/job:worker/replica:0/task:0/device:TPU:1"
CPU = "/job:localhost/replica:0/task:0/device:CPU:0"


class _Weight:

  def __init__(self, device):
    self.device = device


class _Model:
  """Stands in for a model: only its weights' devices are read."""

  def __init__(self, *device_strings):
    self.weights = [_Weight(d) for d in device_strings]


def _on(placed):
  """A `variable_devices` that puts the models named in `placed` on a GPU, the rest on CPU."""
  return lambda model: (GPU,) if model.name in placed else (CPU,)


class RuleTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((GPU, "accelerator"), (TPU, "accelerator"), ("/gpu:1", "accelerator"),
                            ("/device:TPU:0", "accelerator"), (CPU, "host"), ("/cpu:1", "host"),
                            ("", "host"))
  def test_kind_of_a_device_string(self, device, kind):
    self.assertEqual(devices.kind(device), kind)

  def test_any_variable_on_an_accelerator_makes_the_models_accelerator(self):
    self.assertEqual(devices.location([]), "host")
    self.assertEqual(devices.location([_Model(CPU, CPU), _Model("")]), "host")
    self.assertEqual(devices.location([_Model(CPU), _Model(CPU, GPU)]), "accelerator")
    self.assertEqual(devices.location([_Model(TPU)]), "accelerator")
    self.assertEqual(devices.variable_devices(_Model(CPU, GPU, CPU)), (CPU, GPU))
    self.assertEqual(devices.model_device(_Model(CPU, GPU)), GPU)
    self.assertEqual(devices.model_device(_Model(CPU)), CPU)

  def test_real_models_on_the_host(self):
    with tf.device("/cpu:1"):
      model = testing.classifier(seed=0)
    self.assertEqual(devices.location([model]), "host")
    self.assertTrue(devices.same_device(devices.model_device(model), "/cpu:1"))
    self.assertFalse(devices.same_device(devices.model_device(model), "/cpu:0"))
    # Not built yet: where its variables will be created.
    unbuilt = testing.PairDualEncoder(name="unbuilt")
    self.assertEqual(devices.location([unbuilt]), "host")


class PlacementTest(tf.test.TestCase, parameterized.TestCase):

  def _setup(self, variant="plain", task="classification"):
    learner, kwargs = testing.selection_setup(task, variant)
    return learner, kwargs

  @parameterized.parameters("plain", "proxy", "cache")
  def test_attach_auto_selects_in_the_train_step_on_an_accelerator(self, variant):
    learner, kwargs = self._setup(variant)
    with mock.patch.object(devices, "variable_devices", _on({"learner", "proxy", "reference"})):
      attached = tfjest.attach(learner, tfjest.select(**kwargs))
    self.assertEqual(attached.placement, "train_step")
    self.assertIsNone(attached.strategy)
    # The step records into counters created for the model's device (here soft-placed on the
    # CPU, as no GPU exists), read together with the host's.
    self.assertIs(attached.selection.step.stats, attached.stats.on_device(GPU))
    self.assertIsNot(attached.selection.step.stats, attached.stats)

  def test_attach_auto_stays_in_the_pipeline_on_the_host(self):
    learner, kwargs = self._setup()
    selector = tfjest.select(**kwargs)
    self.assertIs(tfjest.attach(learner, selector), selector)

  @parameterized.parameters(
      # (variant, models on the GPU, the role named)
      ("plain", {"learner", "reference"}, "learner"),
      ("plain", {"reference"}, "reference"),
      ("proxy", {"proxy"}, "proxy"),
      ("cache", {"learner"}, "learner"),
  )
  def test_the_pipeline_refuses_a_scoring_model_on_an_accelerator(self, variant, placed, role):
    _, kwargs = self._setup(variant)
    selector = tfjest.select(**kwargs)
    with mock.patch.object(devices, "variable_devices", _on(placed)):
      with self.assertRaisesRegex(
          ValueError, r"On a GPU or TPU .* Call `tfjest.attach\(model, selector\)`.* Received: "
          rf"{role}='{role}' with variables on {GPU}"):
        testing.stream("classification").apply(selector)

  @parameterized.parameters(
      dict(method="uniform"),  # reads no model
      dict(score="easy_reference"),  # reads only the reference, from its cache
  )
  def test_the_pipeline_runs_when_no_model_is_read(self, **select_args):
    _, kwargs = self._setup("cache" if "score" in select_args else "plain")
    if "score" in select_args:
      kwargs.pop("learner")
    kwargs.update(select_args)
    selector = tfjest.select(**kwargs)
    with mock.patch.object(devices, "variable_devices", _on({"learner", "reference"})):
      # The cache was built over this stream.
      batch = next(iter(testing.stream("classification", nan_every=7).apply(selector)))
      self.assertEqual(tfjest.attach(testing.classifier(seed=4, name="learner"), selector)
                       .placement, "pipeline")
    self.assertEqual(batch[1].shape, [8])

  def test_the_learner_alone_on_an_accelerator_with_a_proxy_on_the_host(self):
    # The proxy scores; the learner is not read, so the pipeline may select on the host.
    _, kwargs = self._setup("proxy")
    selector = tfjest.select(**kwargs)
    with mock.patch.object(devices, "variable_devices", _on({"learner"})):
      batch = next(iter(testing.stream("classification").apply(selector)))
    self.assertEqual(batch[1].shape, [8])


class TpuTest(tf.test.TestCase):

  def test_statistics_are_not_recorded_under_tpu_strategy(self):
    # What CPU can show: `attach` recognises TPUStrategy (and its subclasses) by class and
    # records no statistics there; whether replicated counters would work is not known.
    tpu = type("TPUStrategyV2", (type("TPUStrategy", (), {}),), {})()
    # pylint: disable=protected-access
    self.assertTrue(guards.is_tpu(tpu))
    self.assertFalse(guards.is_tpu(tf.distribute.get_strategy()))


class StatsOnDeviceTest(tf.test.TestCase):

  def test_counters_on_the_step_device_add_to_the_host_ones(self):
    stats = tfjest.SelectionStats()
    step = stats.on_device("/cpu:1")
    self.assertIs(stats.on_device("/cpu:1"), step)
    self.assertTrue(devices.same_device(step.device, "/cpu:1"))
    self.assertTrue(devices.same_device(stats.device, "/cpu:0"))
    values = {"read": tf.constant(32, tf.int64), "selected": tf.constant(8, tf.int64),
              "non_finite": tf.constant(1, tf.int64), "batch_score": tf.constant(2.0)}
    step.record_batch(values)
    stats.record_left_over(5)
    got = stats.result()
    self.assertEqual({k: got[k] for k in ("read", "selected", "filtered", "left_over",
                                          "batches", "non_finite")},
                     {"read": 37, "selected": 8, "filtered": 24, "left_over": 5, "batches": 1,
                      "non_finite": 1})
    self.assertEqual(got["batch_score"], 2.0)
    stats.reset()
    self.assertEqual(stats.result()["read"], 0)
    self.assertEqual(step.result()["read"], 0)


if __name__ == "__main__":
  tf.test.main()
