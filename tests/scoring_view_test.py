"""scoring_view: the learner scores a cheaper view of the super-batch; batches stay whole."""

import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

N, B = 40, 8


def half_resolution(x):
  """The learner sees 8 x 8 images: a quarter of the pixels."""
  return {**x, "image": tf.nn.avg_pool2d(x["image"], 2, 2, "VALID")}


class AnyResolutionDualEncoder(testing.PairDualEncoder):
  """The toy dual encoder with global average pooling: it takes images of any size."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.image_tower = keras.Sequential([
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(self.width),
    ])


def _built(model, size):
  model({"image": np.zeros((1, size, size, 3), np.float32), "text": np.ones((1, 3), np.int32)})
  return model


class ScoringViewTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    keras.utils.set_random_seed(0)
    cls.learner = _built(AnyResolutionDualEncoder(name="learner"), 16)
    cls.reference = _built(testing.PairDualEncoder(name="reference"), 16)
    cls.data = testing.make_pairs(200, 0.5, seed=0)
    cls.stream = tf.data.Dataset.from_tensor_slices(
        {"image": cls.data["image"], "text": cls.data["text"], "id": cls.data["id"]})

  def _select(self, **kwargs):
    args = dict(learner=self.learner, reference=self.reference, batch_size=B,
                filter_ratio=0.8, num_chunks=4, seed=1, scoring_view=half_resolution)
    args.update(kwargs)
    return tfjest.select(**args)

  def _losses(self, x):
    out = self.learner(x)
    return tfjest.sigmoid_pair_loss_diagonal(tfjest.Embeddings(
        out["image_embeddings"], out["text_embeddings"], self.learner.logit_scale,
        self.learner.logit_bias)).numpy()

  def test_the_learner_scores_the_view_and_batches_stay_whole(self):
    super_batch = next(iter(self.stream.batch(N)))
    piped = next(iter(self.stream.apply(self._select())))
    selector = self._select()
    batch = selector.select_batch(super_batch, step=0)
    self.assertAllEqual(batch["id"], piped["id"])  # eager and pipeline agree
    self.assertEqual(piped["image"].shape, [B, 16, 16, 3])  # emitted at full resolution
    ids = piped["id"].numpy()
    self.assertAllClose(piped["image"], self.data["image"][ids])
    # The learner losses in the statistics are those of the view, not of the full images.
    view_losses = self._losses(half_resolution(super_batch))
    full_losses = self._losses(super_batch)
    chosen = np.isin(super_batch["id"].numpy(), ids)
    stats = selector.stats.result()
    self.assertAllClose(stats["learner_loss_selected"], view_losses[chosen].mean(), rtol=1e-5)
    self.assertAllClose(stats["learner_loss_rejected"], view_losses[~chosen].mean(), rtol=1e-5)
    self.assertNotAllClose(view_losses, full_losses)
    # Without the view, another selection from the same scores' seed.
    full = self._select(scoring_view=None).select_batch(super_batch, step=0)
    self.assertNotAllEqual(full["id"], ids)

  def test_selection_still_follows_the_scores(self):
    selector = self._select(score="hard_learner", method="independent", reference=None)
    batches = list(self.stream.apply(selector))
    self.assertLen(batches, 5)
    stats = selector.stats.result()
    self.assertGreater(stats["learner_loss_selected"], stats["learner_loss_rejected"])

  def test_scoring_flops_are_those_of_the_view(self):
    selector = self._select()
    self.stream.apply(selector)
    view = {"image": tf.TensorSpec([8, 8, 3]), "text": tf.TensorSpec([3], tf.int32),
            "id": tf.TensorSpec([], tf.int64)}
    full = {**view, "image": tf.TensorSpec([16, 16, 3])}
    cost = selector.step_cost()
    self.assertEqual(cost.learner_scoring, tfjest.forward_flops(self.learner, view) * N)
    # Training is at full resolution; the view has a quarter of the pixels.
    self.assertEqual(cost.training, 3 * tfjest.forward_flops(self.learner, full) * B)
    self.assertLess(cost.learner_scoring, tfjest.forward_flops(self.learner, full) * N / 3)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "Received: scoring_view=3"):
      self._select(scoring_view=3)
    with self.assertRaisesRegex(ValueError, "score='easy_reference' does not do. "
                                "Received: scoring_view="):
      self._select(score="easy_reference")
    broken = lambda x: x["pixels"]
    with self.assertRaisesRegex(ValueError, "scoring_view could not be applied.*"
                                "Received: scoring_view="):
      self.stream.apply(self._select(scoring_view=broken))


if __name__ == "__main__":
  tf.test.main()
