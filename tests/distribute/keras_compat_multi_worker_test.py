"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 run `python -m examples.train_learner` to the end.

Each worker is a process with its own TF_CONFIG (free local ports); both must finish within the
time limit (they are killed otherwise) with identical learner weights, which they can only have
if every step's gradients were all-reduced across workers. This exercises the Keras 3 fix in
tfjest/distribute/keras_compat.py: without it, fit fails under this strategy (keras-team/keras#20585).
"""

import tensorflow as tf

from tests import workers

# The toy world is generated in memory by each worker (no shared dataset directory to build).
_FLAGS = ["--dataset=toy", "--strategy=multi_worker", "--method=jest", "--batch_size=32",
          "--num_chunks=8", "--steps=6", "--eval_every=3", "--reference_examples=512",
          "--reference_epochs=1", "--stream_examples=1024"]


class MultiWorkerTest(tf.test.TestCase):

  def _check(self, results):
    for index, (returncode, text, output) in enumerate(results):
      self.assertEqual(returncode, 0, f"worker {index} failed or timed out:\n{text[-4000:]}")
      self.assertIn("fit fix is active", text)
      self.assertIn("in the train_step", text)
      self.assertIn("identical replica weights: True (2 replicas", text)
      self.assertEqual(output["replicas"], 2)
      self.assertEqual(output["steps"], [0, 3, 6])
      self.assertEqual(output["selection_stats"]["selected"], 6 * 32)
    (_, _, first), (_, _, second) = results
    self.assertEqual(first["weights_digest"], second["weights_digest"])
    self.assertEqual(first["accuracy"], second["accuracy"])

  def test_two_workers_train_on_jest_selection_to_identical_weights(self):
    self._check(workers.run_workers(_FLAGS, self.get_temp_dir()))

  def test_global_selection_across_workers(self):
    self._check(workers.run_workers(_FLAGS + ["--replica_selection=global"], self.get_temp_dir()))


if __name__ == "__main__":
  tf.test.main()
