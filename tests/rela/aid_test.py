"""ReLA-Aid: the switch rule against a NumPy oracle, `fit` through `tfjest.ReLAAid` (classifier,
dual encoder, selected batches), the switch state across a resume, bad inputs."""

import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest.rela import aid as aid_lib
from tfjest import testing

N = 48


def _numpy_switch(losses, fast=1.0, slow=2.0, threshold=0.995):
  """The released rule replayed: the 0-based step after which it switches, else None."""
  for step, loss in enumerate(losses):
    fast = 0.999 * fast + 0.001 * loss
    slow = 0.99 * slow + 0.01 * fast
    if np.exp(-max(slow - fast, 0.0)) >= threshold:
      return step
  return None


class RelaTestCase(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.stream = testing.stream("classification", n=N)

  def _targets(self, classes=testing.CLASSES):
    """A classifier prior's targets (its logits: `classes` wide)."""
    return tfjest.prior_targets(testing.classifier(seed=9, classes=classes), self.stream,
                                os.path.join(self.dir, "c"), width=5)


class SwitchRuleTest(RelaTestCase):

  def test_update_matches_numpy(self):
    losses = np.linspace(1.0, 0.2, 50)
    fast, slow = 1.0, 2.0
    tf_fast, tf_slow = tf.constant(1.0), tf.constant(2.0)
    for loss in losses:
      fast = 0.999 * fast + 0.001 * loss
      slow = 0.99 * slow + 0.01 * fast
      tf_fast, tf_slow, rho = tfjest.rela_switch_update(tf_fast, tf_slow, loss)
    self.assertAllClose([tf_fast, tf_slow, rho], [fast, slow, np.exp(-max(slow - fast, 0))],
                        atol=1e-5)

  def test_constant_loss_switches_when_numpy_says(self):
    # fast stays near 1.0 with a loss of 1.0, so slow (from 2.0) decays onto it.
    step = _numpy_switch(np.ones(2000))
    self.assertBetween(step, 500, 550)   # slow - fast = 0.99^t roughly; -log(0.995) = 0.005
    fast, slow = tf.constant(1.0), tf.constant(2.0)
    for t in range(step + 1):
      fast, slow, rho = tfjest.rela_switch_update(fast, slow, 1.0)
      self.assertEqual(bool(rho >= 0.995), t == step, msg=f"step {t}")


class _Logs(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.logs = []

  def on_train_batch_end(self, batch, logs=None):
    self.logs.append({k: float(v) for k, v in logs.items()})


class AidTest(RelaTestCase):

  def _classifier_stream(self, targets, batch=16):
    return self.stream.repeat().apply(targets.join()).batch(batch)

  def test_classifier_constant_switch(self):
    targets = self._targets()
    model = testing.classifier(seed=0)
    aid = tfjest.ReLAAid(model, switch=5)
    aid.compile(optimizer=keras.optimizers.SGD(0.5))
    logs = _Logs()
    aid.fit(self._classifier_stream(targets), steps_per_epoch=5, epochs=1, verbose=0,
            callbacks=[logs])
    head = [w.numpy().copy() for w in aid.head.weights]
    self.assertTrue(bool(aid.switched.numpy()))   # steps 0-4 on ReLA; step 5 on its own loss
    self.assertLess(logs.logs[-1]["rela_loss"], logs.logs[0]["rela_loss"])
    self.assertEqual(int(aid.step.numpy()), 5)
    self.assertEqual([l["switched"] for l in logs.logs], [0, 0, 0, 0, 1])
    before = model.get_weights()
    aid.fit(self._classifier_stream(targets), steps_per_epoch=3, epochs=1, verbose=0)
    self.assertEqual(int(aid.switch_step.numpy()), 5)
    for w, h in zip(aid.head.weights, head):   # SGD: no gradient reaches the head any more
      self.assertAllClose(w, h)
    self.assertNotAllClose(model.get_weights()[0], before[0])
    # The user's model is unchanged as a model: called, evaluated, saved as before.
    x, y = next(iter(self.stream.batch(8)))
    self.assertAllClose(aid(x), model(x))
    self.assertLen(model.evaluate(self.stream.batch(8), verbose=0, return_dict=True), 1)
    model.save_weights(os.path.join(self.dir, "m.weights.h5"))

  def test_dual_encoder_adaptive_switch_follows_the_rule(self):
    stream = testing.stream("contrastive", n=N)
    targets = tfjest.prior_targets(testing.dual_encoder(seed=7, name="prior"), stream, os.path.join(self.dir, "d"), width=4,
                                   features="image_embeddings")
    model = testing.dual_encoder(seed=0)
    scale = float(model.log_scale.numpy())
    # A low threshold so that the rule fires within a short test; the averages as released.
    aid = tfjest.ReLAAid(model, features="image_embeddings", threshold=0.39)
    aid.compile(optimizer=keras.optimizers.SGD(0.5))
    logs = _Logs()
    aid.fit(stream.repeat().apply(targets.join()).batch(16), steps_per_epoch=12, epochs=1,
            verbose=0, callbacks=[logs])
    want = _numpy_switch([l["rela_loss"] for l in logs.logs], threshold=0.39)
    self.assertIsNotNone(want)
    self.assertEqual(int(aid.switch_step.numpy()), want + 1)
    self.assertAllClose(float(aid.rho.numpy()),
                        [l["rho"] for l in logs.logs][want], atol=1e-6)
    switched = [l["switched"] for l in logs.logs]
    self.assertEqual(switched, [0.0] * want + [1.0] * (12 - want))
    if want + 1 < 12:  # the SigLIP loss trains the logit scale only after the switch
      self.assertNotAllClose(float(model.log_scale.numpy()), scale)

  def test_switch_state_survives_a_checkpoint(self):
    targets = self._targets()
    aid = tfjest.ReLAAid(testing.classifier(seed=0), switch=3)
    aid.compile(optimizer=keras.optimizers.SGD(0.1))
    aid.fit(self._classifier_stream(targets), steps_per_epoch=4, epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=aid).save(os.path.join(self.dir, "ckpt", "c"))
    resumed = tfjest.ReLAAid(testing.classifier(seed=0), switch=3)
    resumed.build_head(self._classifier_stream(targets).element_spec[0])
    tf.train.Checkpoint(model=resumed).restore(path).assert_existing_objects_matched()
    self.assertTrue(bool(resumed.switched.numpy()))
    self.assertEqual(int(resumed.switch_step.numpy()), 3)
    self.assertEqual(int(resumed.step.numpy()), 4)

  def test_backup_and_restore_resumes_switched(self):
    targets = self._targets()
    backup = os.path.join(self.dir, "backup")

    def run(epochs):
      aid = tfjest.ReLAAid(testing.classifier(seed=0), switch="adaptive", threshold=0.36)
      aid.compile(optimizer=keras.optimizers.SGD(0.1))
      aid.fit(self._classifier_stream(targets), steps_per_epoch=3, epochs=epochs, verbose=0,
              callbacks=[tfjest.backup_and_restore(backup, delete_checkpoint=False)])
      return aid

    first = run(2)
    self.assertTrue(bool(first.switched.numpy()))
    resumed = run(3)   # restored after epoch 2: switched, and stays so (rho is not recomputed)
    self.assertTrue(bool(resumed.switched.numpy()))
    self.assertEqual(int(resumed.switch_step.numpy()), int(first.switch_step.numpy()))
    self.assertEqual(int(resumed.step.numpy()), 9)

  def test_aid_on_selected_batches(self):
    targets = self._targets()
    learner = testing.classifier(seed=0)
    selector = tfjest.select(learner=learner, reference=testing.classifier(seed=1),
                             batch_size=8, super_batch_size=32, method="independent")
    stream = self.stream.repeat().apply(selector).apply(targets.join())
    aid = tfjest.ReLAAid(learner, switch=2)
    aid.compile(optimizer=keras.optimizers.SGD(0.1))
    aid.fit(stream, steps_per_epoch=3, epochs=1, verbose=0)
    self.assertEqual(int(aid.switch_step.numpy()), 2)

  def test_targets_wider_than_features(self):
    targets = self._targets()   # 5 wide
    aid = tfjest.ReLAAid(testing.classifier(seed=0, classes=2))
    aid.compile(optimizer=keras.optimizers.SGD(0.1))
    with self.assertRaisesRegex(ValueError, "Received: target width=5, feature width=2"):
      aid.fit(self._classifier_stream(targets), steps_per_epoch=1, epochs=1, verbose=0)

  def test_stream_without_targets(self):
    aid = tfjest.ReLAAid(testing.classifier(seed=0))
    aid.compile(optimizer=keras.optimizers.SGD(0.1))
    with self.assertRaisesRegex(ValueError, r"x\['rela_target'\].*Received: inputs \['id', 'x'\]"):
      aid.fit(self.stream.batch(8), steps_per_epoch=1, epochs=1, verbose=0)

  @parameterized.named_parameters(
      ("not_a_model", dict(model="m"), TypeError, "Received: model of type str"),
      ("switch_name", dict(switch="smooth"), ValueError, "Received: switch='smooth'"),
      ("switch_fraction", dict(switch=1.5), ValueError, "Received: switch=1.5"),
      ("switch_negative", dict(switch=-1), ValueError, "Received: switch=-1"),
      ("no_total", dict(switch=0.5), ValueError, "Received: switch=0.5, total_steps=None"),
      ("total", dict(switch=0.5, total_steps=0), ValueError, "Received: total_steps=0"),
      ("threshold", dict(threshold=1.0), ValueError, "Received: threshold=1.0"),
      ("target_key", dict(target_key=""), ValueError, "Received: target_key=''"),
  )
  def test_bad_arguments(self, kwargs, error, message):
    args = {"model": testing.classifier(seed=0), **kwargs}
    with self.assertRaisesRegex(error, message):
      tfjest.ReLAAid(**args)

  def test_model_without_a_loss(self):
    model = testing.TinyClassifier(0)
    model({"x": np.zeros((1, testing.D), np.float32)})
    with self.assertRaisesRegex(ValueError, "compiled without a loss"):
      tfjest.ReLAAid(model)

  def test_fraction_of_total_steps(self):
    self.assertEqual(aid_lib._switch_step(0.1, 3000), 300)  # pylint: disable=protected-access
    self.assertIsNone(aid_lib._switch_step("adaptive", None))  # pylint: disable=protected-access


if __name__ == "__main__":
  tf.test.main()
