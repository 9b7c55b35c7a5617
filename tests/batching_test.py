"""Tests of tfjest.batching: sizes, the checks on a stream before selection, and feature paths."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import batching
from tfjest import testing


def _spec(shape=(), dtype=tf.float32):
  return tf.TensorSpec(shape, dtype)


class PathsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("dict", {"b": _spec(), "a": {"tokens": _spec()}}, ["a/tokens", "b"]),
      ("x_y", ({"tokens": _spec(), "id": _spec()}, _spec()), ["x/id", "x/tokens", "y"]),
      ("x_y_w", (_spec(), _spec(), _spec()), ["x", "y", "sample_weight"]),
      ("nested_tuple", ({"pair": (_spec(), _spec())}, _spec()), ["x/pair/0", "x/pair/1", "y"]),
      ("list", [_spec(), _spec(), _spec(), _spec()], ["0", "1", "2", "3"]),
      ("leaf", _spec(), [""]))
  def test_paths_in_nest_order(self, spec, paths):
    got = batching.flatten_with_paths(spec)
    self.assertEqual([p for p, _ in got], paths)
    self.assertEqual([s for _, s in got], tf.nest.flatten(spec))


class CheckStackableTest(tf.test.TestCase):

  def test_variable_length_nested_feature_is_named_by_its_path(self):
    spec = {"x": {"tokens": tf.TensorSpec([None], tf.int32), "image": _spec([4])}}
    with self.assertRaisesRegex(ValueError, r"feature 'x/tokens' has shape \(None,\)"):
      batching.check_stackable(spec)

  def test_ragged_feature_is_named_by_its_path(self):
    spec = ({"tokens": tf.RaggedTensorSpec([None], tf.int32)}, _spec())
    with self.assertRaisesRegex(ValueError, r"feature 'x/tokens' is a RaggedTensorSpec"):
      batching.check_stackable(spec)

  def test_in_a_pipeline(self):
    data = tf.data.Dataset.from_generator(
        lambda: iter([({"tokens": np.arange(3)}, 1)] * 8),
        output_signature=({"tokens": tf.TensorSpec([None], tf.int64)}, _spec((), tf.int64)))
    with self.assertRaisesRegex(ValueError, r"feature 'x/tokens' has shape \(None,\)"):
      data.apply(tfjest.select(method="uniform", batch_size=2, super_batch_size=4))


class CheckBatchedTest(tf.test.TestCase):

  def test_scalar_feature_is_refused(self):
    with self.assertRaisesRegex(ValueError, r"input_batched=True unbatches.*feature 'y' is a "
                                r"scalar.*Received: input_batched=True"):
      batching.check_batched(({"x": _spec([6])}, _spec()))
    batching.check_batched(({"x": _spec([None, 6])}, _spec([None])))

  def test_select_on_unbatched_data(self):
    selector = tfjest.select(method="uniform", batch_size=2, super_batch_size=4,
                             input_batched=True)
    with self.assertRaisesRegex(ValueError, r"feature 'x/id' is a scalar.*Pass "
                                r"input_batched=False.*Received: input_batched=True"):
      testing.stream("classification", n=16).apply(selector)
    batched = testing.stream("classification", n=16).batch(4)
    self.assertLen(list(batched.apply(selector)), 4)


class CheckLabelsTest(tf.test.TestCase):

  def test_string_label_is_refused(self):
    with self.assertRaisesRegex(ValueError, r"label feature 'y/name' has dtype string.*"
                                r"Received: y/name="):
      batching.check_labels((_spec([6]), {"name": _spec((), tf.string)}))

  def test_numbers_and_skipped_ids_pass(self):
    ids = _spec((), tf.string)
    batching.check_labels((_spec([6]), {"label": _spec((), tf.int64), "id": ids}), skip=(ids,))
    batching.check_labels({"x": _spec((), tf.string)})  # no labels
    batching.check_labels((_spec((), tf.string), _spec()))  # string inputs are not labels

  def test_select_refuses_a_string_label_when_applied(self):
    learner, kwargs = testing.selection_setup("classification")
    names = tf.constant([str(i % testing.CLASSES) for i in range(64)])
    data = testing.stream("classification", n=64)
    data = tf.data.Dataset.zip((data, tf.data.Dataset.from_tensor_slices(names))).map(
        lambda element, name: (element[0], name))
    with self.assertRaisesRegex(ValueError, r"label feature 'y' has dtype string.*StringLookup"):
      data.apply(tfjest.select(**kwargs))
    del learner


if __name__ == "__main__":
  absltest.main()
