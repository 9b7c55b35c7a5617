"""Tests of tfjest.testing: the fixtures follow the contracts they stand for."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing


def _numpy_crossentropy(logits, labels):
  logits = logits.astype(np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return -log_probs[np.arange(len(labels)), labels]


class ClassifierTest(tf.test.TestCase, parameterized.TestCase):

  def _batch(self, n=6):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, testing.D)).astype(np.float32) * 3.0
    y = rng.integers(0, testing.CLASSES, size=n).astype(np.int64)
    return x, y

  def test_per_example_loss_is_crossentropy_of_logits(self):
    model = testing.classifier(seed=0)
    x, y = self._batch()
    logits = model({"x": x}).numpy()
    got = tfjest.per_example_loss(model.loss, y, logits).numpy()
    self.assertAllClose(got, _numpy_crossentropy(logits, y), rtol=1e-5, atol=1e-5)

  def test_per_example_loss_matches_keras_compute_loss(self):
    model = testing.classifier(seed=0)
    x, y = self._batch()
    logits = model({"x": x})
    got = tfjest.per_example_loss(model.loss, y, logits).numpy()
    oracle = [float(model.compute_loss(x=None, y=y[i:i + 1], y_pred=logits[i:i + 1]))
              for i in range(len(y))]
    self.assertAllClose(got, oracle, rtol=1e-5, atol=1e-5)

  @parameterized.named_parameters(("inf", np.inf), ("minus_inf", -np.inf), ("nan", np.nan))
  def test_bad_input_is_not_selected(self, bad):
    learner, kwargs = testing.selection_setup("classification")
    x, y = self._batch(32)
    x[5, 0] = bad
    ids = np.arange(32, dtype=np.int64)
    data = tf.data.Dataset.from_tensor_slices(({"x": x, "id": ids}, y))
    selector = tfjest.select(**kwargs)
    batch = next(iter(data.apply(selector)))
    self.assertNotIn(5, testing.ids(batch))
    self.assertEqual(selector.stats.result()["non_finite"], 1)


if __name__ == "__main__":
  absltest.main()
