"""`tfjest.attach(placement="train_step")` and `tfjest.detach` on one device, without a strategy.

After `attach` the model's train step selects, so it must refuse data that the attached
transformation did not emit (a plain `fit` used to keep selecting 8 of every 32 silently);
`detach` gives the model its own step back, and the selector can be attached again.
"""

import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

N, B = 32, 8


def _attached(seed=0):
  model = testing.classifier(seed=seed)
  selector = tfjest.select(learner=model, reference=testing.classifier(seed=1), batch_size=B,
                           super_batch_size=N, method="independent")
  return model, selector, tfjest.attach(model, selector, placement="train_step")


def _plain(n=64):
  return testing.stream("classification", n=n).batch(N)


class DetachTest(tf.test.TestCase):

  def test_plain_fit_after_attach_is_refused_naming_detach(self):
    model, _, attached = _attached()
    model.fit(testing.stream("classification", n=64).apply(attached), verbose=0)
    with self.assertRaisesRegex(ValueError, r"tfjest\.detach"):
      model.fit(_plain(), verbose=0)

  def test_plain_fit_after_detach_trains_on_every_example(self):
    model, selector, attached = _attached()
    model.fit(testing.stream("classification", n=64).apply(attached), verbose=0)
    before = attached.stats.result()
    self.assertEqual(before["selected"], 2 * B)
    self.assertIs(tfjest.detach(model), model)
    iterations = int(model.optimizer.iterations.numpy())
    history = model.fit(_plain(64), epochs=1, verbose=0)
    self.assertEqual(int(model.optimizer.iterations.numpy()), iterations + 2)
    self.assertTrue(np.isfinite(history.history["loss"][-1]))
    self.assertEqual(attached.stats.result(), before)  # no selection ran
    self.assertEqual(selector.stats.result(), before)

  def test_detach_trains_on_the_whole_batch(self):
    # The loss of a plain step is the loss over all 32 examples: the same as Keras without tfjest.
    model, _, attached = _attached()
    tfjest.detach(model)
    twin = testing.classifier(seed=0)
    x, y = next(iter(_plain()))
    self.assertAllClose(model.train_on_batch(x, y), twin.train_on_batch(x, y))
    self.assertAllClose(model.get_weights(), twin.get_weights())
    del attached

  def test_detach_of_a_model_never_attached(self):
    with self.assertRaisesRegex(ValueError, r"nothing to detach.*Received: model="):
      tfjest.detach(testing.classifier(seed=0))

  def test_detach_of_a_selector_model_left_in_the_pipeline(self):
    # placement="auto" on the host leaves the model alone: nothing to detach either.
    model = testing.classifier(seed=0)
    selector = tfjest.select(learner=model, reference=testing.classifier(seed=1), batch_size=B,
                             super_batch_size=N, method="independent")
    self.assertIs(tfjest.attach(model, selector), selector)
    with self.assertRaisesRegex(ValueError, r"nothing to detach"):
      tfjest.detach(model)

  def test_detach_of_a_non_model(self):
    with self.assertRaisesRegex(TypeError, r"Received: model of type str"):
      tfjest.detach("model")

  def test_detach_twice(self):
    model, _, _ = _attached()
    tfjest.detach(model)
    with self.assertRaisesRegex(ValueError, r"nothing to detach"):
      tfjest.detach(model)

  def test_attach_again_after_detach_selects(self):
    model, selector, attached = _attached()
    with self.assertRaisesRegex(ValueError, r"already"):
      tfjest.attach(model, selector, placement="train_step")
    tfjest.detach(model)
    again = tfjest.attach(model, selector, placement="train_step")
    self.assertEqual(again.placement, "train_step")
    model.fit(testing.stream("classification", n=64).apply(again), verbose=0)
    stats = again.stats.result()
    self.assertEqual((stats["batches"], stats["selected"]), (2, 2 * B))
    with self.assertRaisesRegex(ValueError, r"tfjest\.detach"):
      model.fit(_plain(), verbose=0)
    del attached


if __name__ == "__main__":
  tf.test.main()
