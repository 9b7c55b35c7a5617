"""A base class for dual encoders that follow tfjest's contract and train with the SigLIP loss.

tfjest reads a dual encoder through two things (see `adapters`): its outputs
`{"image_embeddings", "text_embeddings"}` (L2-normalised `[N, d]`) and its attributes
`logit_scale` and `logit_bias`, the `t` and `beta` of its sigmoid loss. `SigLIPDualEncoder` holds
those two parameters (a learnable `log t` and `beta`, at SigLIP's initialisation `t = 10`,
`beta = -10`) and the loss `fit` optimises (`compute_loss`), so a subclass writes only its
towers and `call`:

    class MyDualEncoder(tfjest.SigLIPDualEncoder):
      def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.image_tower = keras.layers.Dense(32)
        self.text_tower = keras.layers.Dense(32)

      def call(self, inputs, training=False):
        return self.embeddings(self.image_tower(inputs["image"]),
                               self.text_tower(inputs["text"]))

    model = MyDualEncoder()
    model.compile(optimizer="adam")   # no loss=: the SigLIP loss is the model's own
"""

import math

import keras

from tfjest import losses


class SigLIPDualEncoder(keras.Model):
  """A Keras dual encoder with SigLIP's logit parameters and loss (tfjest's contract).

  Args:
    logit_scale: the initial `t` (stored as its log, learnable).
    logit_bias: the initial `beta` (learnable).
    **kwargs: passed to `keras.Model`.

  Raises:
    ValueError: if `logit_scale` is not positive.
  """

  def __init__(self, logit_scale: float = 10.0, logit_bias: float = -10.0, **kwargs):
    super().__init__(**kwargs)
    if not logit_scale > 0:
      raise ValueError(f"Expected logit_scale > 0 (it is stored as its log). "
                       f"Received: logit_scale={logit_scale!r}")
    self.initial_logit_scale = float(logit_scale)
    self.initial_logit_bias = float(logit_bias)
    self.log_scale = self.add_weight(
        shape=(), name="log_scale",
        initializer=keras.initializers.Constant(math.log(self.initial_logit_scale)))
    self.bias = self.add_weight(shape=(), name="bias",
                                initializer=keras.initializers.Constant(self.initial_logit_bias))

  @property
  def logit_scale(self):
    """`t = exp(log t)`, the multiplier of the cosine similarity."""
    return keras.ops.exp(self.log_scale)

  @property
  def logit_bias(self):
    """`beta`, added to every logit."""
    return self.bias

  def embeddings(self, image, text):
    """`call`'s outputs from the towers' raw outputs: both L2-normalised along the last axis."""
    return {"image_embeddings": keras.ops.normalize(image, axis=-1),
            "text_embeddings": keras.ops.normalize(text, axis=-1)}

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    """The SigLIP loss of the batch: the mean over the global batch under a strategy too.

    (`losses.siglip_replica_loss`: each replica's loss over its own batch, divided by the
    replicas in sync, as Keras' compiled losses are.) `x`, `y` and `sample_weight` are unused.
    """
    del x, y, sample_weight, training
    return losses.siglip_replica_loss(losses.Embeddings(
        y_pred["image_embeddings"], y_pred["text_embeddings"], self.logit_scale,
        self.logit_bias))

  def get_config(self):
    return {**super().get_config(), "logit_scale": self.initial_logit_scale,
            "logit_bias": self.initial_logit_bias}
