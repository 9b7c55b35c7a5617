"""adapters.resolve_task: which contract a model follows, or an error naming the option to set."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from tfjest import adapters

KEYS = ("image_embeddings", "text_embeddings")


def _tensor(*shape):
  return tf.zeros((1,) + shape)


class _Model(keras.Model):
  """A model that is only looked at: its attributes and its compiled loss."""

  def __init__(self, logit_parameters=False, loss=None, **kwargs):
    super().__init__(**kwargs)
    if logit_parameters:
      self.logit_scale, self.logit_bias = 10.0, -10.0
    if loss is not None:
      self.compile(loss=loss)

  def call(self, x):
    return x


DUAL = dict(logit_parameters=True)
COMPILED = dict(loss="mse")
PLAIN = {}
NO_MODEL = None


def _resolve(outputs, model=NO_MODEL, task="auto", loss_fn=None, has_labels=True):
  return adapters.resolve_task(outputs, task=task, embedding_keys=KEYS, loss_fn=loss_fn,
                               has_labels=has_labels, role="learner",
                               model=None if model is None else _Model(**model))


def _loss(y, p):
  return tf.reduce_mean(tf.square(p[0] - y) + tf.square(p[1] - y), axis=-1)


class ResolveTaskTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("mapping_with_the_keys", {KEYS[0]: _tensor(8), KEYS[1]: _tensor(8)}, DUAL, "auto",
       None, False, "contrastive"),
      ("mapping_with_the_keys_no_model", {KEYS[0]: _tensor(8), KEYS[1]: _tensor(8), "x": 1.0},
       NO_MODEL, "auto", None, True, "contrastive"),
      ("tuple_with_logit_parameters", (_tensor(8), _tensor(8)), DUAL, "auto", None, False,
       "contrastive"),
      ("list_with_logit_parameters", [_tensor(8), _tensor(8)], DUAL, "auto", None, True,
       "contrastive"),
      ("tuple_no_model", (_tensor(8), _tensor(8)), NO_MODEL, "auto", None, False,
       "contrastive"),
      ("tuple_told", (_tensor(8), _tensor(8)), DUAL, "contrastive", None, False, "contrastive"),
      ("classifier", _tensor(10), COMPILED, "auto", None, True, "classification"),
      ("classifier_no_model", _tensor(10), NO_MODEL, "auto", None, True, "classification"),
      ("classifier_of_a_sequence", _tensor(5, 10), COMPILED, "auto", None, True,
       "classification"),
      ("one_output_mapping", {"logits": _tensor(10)}, COMPILED, "auto", None, True,
       "classification"),
      ("two_outputs_told_with_loss_fn", (_tensor(8), _tensor(8)), COMPILED, "classification",
       _loss, True, "classification"),
      ("two_outputs_told_no_model", (_tensor(8), _tensor(8)), NO_MODEL, "classification",
       _loss, True, "classification"),
      # Without logit_scale/logit_bias the pair cannot be a dual encoder: only one reading fits.
      ("two_outputs_with_loss_fn", (_tensor(8), _tensor(8)), PLAIN, "auto", _loss, True,
       "classification"),
      ("two_outputs_of_different_widths", (_tensor(10), _tensor(1)), COMPILED, "auto", _loss,
       True, "classification"),
      ("mapping_of_other_outputs", {"logits": _tensor(10), "aux": _tensor(3)}, COMPILED,
       "auto", _loss, True, "classification"),
  )
  def test_resolves(self, outputs, model, task, loss_fn, has_labels, expected):
    self.assertEqual(_resolve(outputs, model, task, loss_fn, has_labels), expected)

  @parameterized.named_parameters(
      # A dual encoder under other keys: which one is the image cannot be guessed.
      ("mapping_of_embeddings_under_other_keys", {"img": _tensor(8), "txt": _tensor(8)}, DUAL,
       "auto", None, False,
       r"embedding keys \('image_embeddings', 'text_embeddings'\).*"
       r"`embedding_keys=\('img', 'txt'\)` \(image first\).*task=\"classification\".*"
       r"Received: learner output a mapping with keys \['img', 'txt'\]"),
      ("mapping_of_embeddings_among_others", {"a": _tensor(3), "img": _tensor(8), "n": 1.0,
                                              "txt": _tensor(8)}, NO_MODEL, "auto", None, True,
       r"`embedding_keys=\('img', 'txt'\)`.*task=\"classification\""),
      ("mapping_told_contrastive", {"img": _tensor(8), "txt": _tensor(8)}, DUAL, "contrastive",
       None, False, r"without the embedding keys.*Pass `embedding_keys=\('img', 'txt'\)`.*"
       r"Received: learner outputs with keys"),
      ("mapping_without_labels", {"img": _tensor(8), "txt": _tensor(4)}, DUAL, "auto", None,
       False, r"no labels.*`embedding_keys=\(image_key, text_key\)`.*`task=\"classification\"`"
       r".*elements without labels"),
      ("pair_with_loss_fn_no_model", (_tensor(8), _tensor(8)), NO_MODEL, "auto", _loss, True,
       r"`loss_fn=` is given.*`task=\"contrastive\"`.*`task=\"classification\"`.*"
       r"Received: learner output a tuple of 2 of shapes \(\(1, 8\), \(1, 8\)\), loss_fn="),
      ("pair_with_loss_fn_and_logit_parameters", [_tensor(8), _tensor(8)], DUAL, "auto", _loss,
       True, r"looks like a dual encoder.*`task=\"contrastive\"`.*`task=\"classification\"`"),
      ("pair_compiled_without_logit_parameters", (_tensor(8), _tensor(8)), COMPILED, "auto",
       None, True, r"compiled with a loss: a classifier of two outputs, or a dual encoder "
       r"without `logit_scale`.*`task=\"classification\"`.*Received: .*loss='mse'"),
      ("pair_without_logit_parameters", (_tensor(8), _tensor(8)), PLAIN, "auto", None, False,
       r"must expose `logit_scale` and `logit_bias`.*`task=\"classification\"`"),
      ("pair_with_loss_fn_without_labels", (_tensor(8), _tensor(8)), PLAIN, "auto", _loss,
       False, r"no labels.*`task=\"contrastive\"`"),
      ("classifier_without_labels", _tensor(10), COMPILED, "auto", None, False,
       r"needs labels.*neither the embedding mapping nor a pair.*`task=\"contrastive\"`.*"
       r"Received: learner output of type EagerTensor and shape \(1, 10\), elements without"),
      ("told_classification_without_labels", _tensor(10), COMPILED, "classification", None,
       False, r"needs labels.*`task=\"classification\"` is given"),
      ("told_classification_of_two_outputs", (_tensor(8), _tensor(8)), COMPILED,
       "classification", None, True, r"several outputs.*Pass `loss_fn=`.*Received: learner "
       r"output a tuple of 2"),
      ("three_outputs", (_tensor(8), _tensor(8), _tensor(8)), COMPILED, "auto", None, True,
       r"several outputs.*Pass `loss_fn=`.*or `task=`"),
      ("mapping_of_other_outputs", {"logits": _tensor(10), "aux": _tensor(3)}, COMPILED,
       "auto", None, True, r"several outputs.*Pass `loss_fn=`"),
      ("told_contrastive_one_tensor", _tensor(8), DUAL, "contrastive", None, False,
       r"or a 2-tuple.*Received: learner output of type"),
      ("told_contrastive_uneven", (_tensor(8), _tensor(4)), DUAL, "contrastive", None, False,
       r"same width. Received: image width 8, text width 4"),
      ("told_contrastive_without_logit_parameters", (_tensor(8), _tensor(8)), PLAIN,
       "contrastive", None, False, r"must expose `logit_scale`"),
      ("unknown_task", _tensor(8), NO_MODEL, "dual", None, False,
       r"Expected task in.*Received: task='dual'"),
  )
  def test_names_the_fix(self, outputs, model, task, loss_fn, has_labels, message):
    with self.assertRaisesRegex(ValueError, message):
      _resolve(outputs, model, task, loss_fn, has_labels)

  def test_a_two_output_classifier_with_loss_fn_is_scored(self):
    model = _Model(loss="mse")
    outputs = (_tensor(8), _tensor(8))
    self.assertEqual(_resolve(outputs, PLAIN, loss_fn=_loss), "classification")
    loss_fn = adapters.resolve_loss_fn(model, _loss, "learner")
    x = (np.ones((3, 8), np.float32), np.zeros((3, 8), np.float32))
    self.assertAllClose(adapters.classification_losses(model, x, np.ones((3, 1), np.float32),
                                                       loss_fn, "learner"), [1.0, 1.0, 1.0])


if __name__ == "__main__":
  tf.test.main()
