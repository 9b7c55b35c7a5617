"""`tfjest.TrainStepSelection`: the marked super-batches an attached train step reads."""

import tensorflow as tf

import tfjest
from tfjest import testing
from tfjest.distribute import train_step


def _attached(remainder="drop"):
  model = testing.classifier(seed=0)
  selector = tfjest.select(learner=model, reference=testing.classifier(seed=1), batch_size=8,
                           super_batch_size=32, method="independent", remainder=remainder)
  return model, tfjest.attach(model, selector, placement="train_step")


class TrainStepSelectionTest(tf.test.TestCase):

  def test_emits_marked_super_batches_of_n(self):
    _, attached = _attached()
    self.assertIsInstance(attached, tfjest.TrainStepSelection)
    element = next(iter(testing.stream("classification", n=64).apply(attached)))
    self.assertTrue(train_step.is_marked(element))
    x, _ = element["tfjest_super_batch"]
    self.assertEqual(x["id"].shape, [32])

  def test_a_final_partial_super_batch_is_dropped_and_counted(self):
    _, attached = _attached()
    elements = list(testing.stream("classification", n=80).apply(attached))
    self.assertLen(elements, 2)
    self.assertEqual(attached.stats.result()["left_over"], 16)

  def test_plain_batches_are_not_marked(self):
    batch = next(iter(testing.stream("classification", n=32).batch(32)))
    self.assertFalse(train_step.is_marked(batch))
    self.assertFalse(train_step.is_marked({"x": batch}))

  def test_keep_remainder_is_refused(self):
    _, attached = _attached(remainder="keep")
    with self.assertRaisesRegex(ValueError, r"Use remainder='drop'. Received: remainder='keep'"):
      testing.stream("classification", n=64).apply(attached)

  def test_shares_the_selectors_statistics_and_sizes(self):
    _, attached = _attached()
    self.assertIs(attached.stats, attached.selector.stats)
    self.assertEqual((attached.batch_size, attached.super_batch_size), (8, 32))


if __name__ == "__main__":
  tf.test.main()
