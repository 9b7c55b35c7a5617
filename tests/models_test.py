"""`tfjest.SigLIPDualEncoder`: its logit parameters, its loss as `fit` sees it, its config."""

import math

import keras
import numpy as np
import tensorflow as tf

import tfjest


class Towers(tfjest.SigLIPDualEncoder):

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.image = keras.layers.Dense(4)
    self.text = keras.layers.Dense(4)

  def call(self, inputs, training=False):
    return self.embeddings(self.image(inputs["image"]), self.text(inputs["text"]))


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.normal(size=(n, 3)).astype("float32"),
          "text": rng.normal(size=(n, 5)).astype("float32")}


def _siglip_by_hand(image, text, scale, bias):
  """The oracle: -sum_ij log sigmoid(z_ij (t <x_i, y_j> + b)) / n, z = +1 on the diagonal."""
  logits = scale * image @ text.T + bias
  labels = 2.0 * np.eye(len(image)) - 1.0
  return float(np.sum(np.logaddexp(0.0, -labels * logits)) / len(image))


class SigLIPDualEncoderTest(tf.test.TestCase):

  def test_logit_parameters_start_where_asked(self):
    model = Towers(logit_scale=5.0, logit_bias=-3.0)
    self.assertAllClose(float(model.logit_scale), 5.0, rtol=1e-6)
    self.assertAllClose(float(model.logit_bias), -3.0)
    self.assertAllClose(float(model.log_scale), math.log(5.0), rtol=1e-6)

  def test_embeddings_are_unit_vectors(self):
    model = Towers()
    out = model(_batch())
    for key in ("image_embeddings", "text_embeddings"):
      self.assertAllClose(np.linalg.norm(out[key], axis=-1), np.ones(6), atol=1e-5)

  def test_compute_loss_is_the_siglip_loss_of_the_batch(self):
    model = Towers(logit_scale=10.0, logit_bias=-10.0)
    out = model(_batch())
    loss = float(model.compute_loss(y_pred=out))
    expected = _siglip_by_hand(out["image_embeddings"].numpy().astype(np.float64),
                               out["text_embeddings"].numpy().astype(np.float64), 10.0, -10.0)
    self.assertAllClose(loss, expected, rtol=1e-4)

  def test_fit_trains_the_logit_parameters(self):
    model = Towers()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = (float(model.logit_scale), float(model.logit_bias))
    model.fit(tf.data.Dataset.from_tensors(_batch()), epochs=2, verbose=0)
    self.assertNotEqual(before, (float(model.logit_scale), float(model.logit_bias)))

  def test_config_keeps_the_initial_parameters(self):
    config = Towers(logit_scale=7.0, logit_bias=-2.0).get_config()
    self.assertEqual((config["logit_scale"], config["logit_bias"]), (7.0, -2.0))

  def test_non_positive_scale_is_refused(self):
    with self.assertRaisesRegex(ValueError, r"logit_scale > 0.*Received: logit_scale=0"):
      Towers(logit_scale=0)


if __name__ == "__main__":
  tf.test.main()
