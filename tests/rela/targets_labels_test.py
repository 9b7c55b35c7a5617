"""Prior targets depend on the inputs only: data with other labels joins them.

(`tfjest.prior_targets`, `tfjest/rela/targets.py`.)
"""

import os
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing

N = 32


def _features(model, x, training):
  return model({"image": x["x"], "text": x["x"]}, training=training)["image_embeddings"]


class LabelsAreNotInputsTest(tf.test.TestCase):
  """The targets depend on the inputs `x` only: other labels are the same examples."""

  def setUp(self):
    super().setUp()
    self.path = os.path.join(tempfile.mkdtemp(), "targets")
    self.stream = testing.stream("classification", n=N)
    self.prior = testing.dual_encoder(seed=7, name="prior")
    self.targets = tfjest.prior_targets(self.prior, self.stream, self.path, width=3,
                                        features=_features)

  def _joined(self, stream):
    rows = {int(x["id"]): x["rela_target"].numpy()
            for x, _ in stream.apply(self.targets.join())}
    return np.stack([rows[i] for i in sorted(rows)])

  def test_other_labels_join_the_same_targets(self):
    relabelled = self.stream.map(lambda x, y: (x, (y + 1) % testing.CLASSES))
    self.assertAllEqual(self._joined(relabelled), self._joined(self.stream))

  def test_labels_of_another_dtype_join(self):
    relabelled = self.stream.map(lambda x, y: (x, tf.cast(y, tf.float32) * 0.5))
    self.assertLen(self._joined(relabelled), N)

  def test_other_inputs_are_still_refused(self):
    changed = self.stream.map(lambda x, y: ({**x, "x": x["x"] * 2.0}, y))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "prior targets entry for example id .* other inputs"):
      list(changed.apply(self.targets.join()))

  def test_reuse_with_other_labels(self):
    relabelled = self.stream.map(lambda x, y: (x, (y + 2) % testing.CLASSES))
    again = tfjest.prior_targets(self.prior, relabelled, self.path, width=3, features=_features,
                                 reuse=True)
    self.assertTrue(again.reused, again.rebuild_reason)
    self.assertAllEqual(again.array("target"), self.targets.array("target"))


if __name__ == "__main__":
  absltest.main()
