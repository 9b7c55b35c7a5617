"""examples/train_learner.py as a user runs it (subprocesses), and its strategy errors.

Each run trains a tiny reference and a few learner steps, so the file stays well under a minute
on 2 cores. The two-worker MultiWorkerMirroredStrategy run is in multi_worker_test.py.
"""

import json
import os
import re
import socket

import tensorflow as tf

from examples.lib import harness
from examples.lib import strategies
from examples.lib import tasks
from tfjest import testing
from tests.programs import launch

# Small enough for a test: a 512-pair reference, one epoch; 8 learner steps of 32 from 160.
_SMALL = ["--dataset=toy", "--batch_size=32", "--num_chunks=8", "--steps=8", "--eval_every=4",
          "--reference_examples=512", "--reference_epochs=1", "--stream_examples=1024"]


def _run(*flags, timeout=240):
  return launch.run("examples.train_learner", *flags, timeout=timeout, unset=("TF_CONFIG",))


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]  # nothing listens once the socket is closed


class TrainLearnerTest(tf.test.TestCase):

  def _output(self, *flags):
    path = os.path.join(self.get_temp_dir(), "curve.json")
    result = _run(*flags, f"--output={path}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(path) as f:
      return result.stdout, json.load(f)

  def test_mirrored_on_two_cpus_reports_identical_replica_weights(self):
    stdout, out = self._output("--strategy=mirrored", "--num_cpu_devices=2", "--method=jest",
                               *_SMALL)
    self.assertIn("identical replica weights: True (2 replicas)", stdout)
    self.assertIn("in the train_step", stdout)
    self.assertEqual(out["replicas"], 2)
    self.assertTrue(out["identical_replica_weights"])
    self.assertEqual(out["steps"], [0, 4, 8])
    self.assertLen(out["accuracy"], 3)
    self.assertTrue(all(0.0 <= a <= 1.0 for a in out["accuracy"]))
    self.assertEqual(out["selection_stats"]["selected"], 8 * 32)
    self.assertEqual(out["selection_stats"]["read"], 8 * 160)

  def test_default_strategy_selects_in_the_pipeline_with_a_loaded_reference(self):
    path = os.path.join(self.get_temp_dir(), "reference.keras")
    reference = testing.PairDualEncoder(name="saved_reference")
    reference({"image": tf.zeros([1, 16, 16, 3]), "text": tf.zeros([1, 3], tf.int32)})
    reference.save(path)
    stdout, out = self._output(f"--reference_path={path}", "--method=independent",
                               "--replica_selection=global", *_SMALL, "--steps=8")
    self.assertIn(f"reference: loaded {path}", stdout)
    self.assertIn("in the pipeline", stdout)
    self.assertIn("identical replica weights: True (1 replicas", stdout)
    self.assertEqual(out["replicas"], 1)
    self.assertEqual(out["steps"], [0, 4, 8])
    self.assertEqual(out["method"], "independent")
    # Cumulative FLOPs grow in proportion to the steps, from 0.
    self.assertEqual(out["flops"][0], 0)
    self.assertGreater(out["flops"][1], 0)
    self.assertAllClose(out["flops"][2] / out["flops"][1], 8 / 4)

  def test_captions_dataset_trains_on_web(self):
    data_dir = os.path.join(self.get_temp_dir(), "tfds")
    stdout, out = self._output("--dataset=captions", f"--data_dir={data_dir}",
                               "--stream_examples=1024", "--reference_examples=512",
                               "--reference_epochs=1", "--batch_size=32", "--num_chunks=8",
                               "--steps=4", "--eval_every=2")
    self.assertIn("keeps 32 of 160 per step, in the pipeline", stdout)
    self.assertEqual(out["steps"], [0, 2, 4])
    self.assertIn("web1024", out["task"])
    self.assertLen(out["accuracy"], 3)
    self.assertTrue(all(0.0 <= a <= 1.0 for a in out["accuracy"]))
    self.assertGreater(out["flops"][-1], out["flops"][1])
    # The dataset was built offline in data_dir, with a web split of --stream_examples.
    self.assertTrue(any("web1024" in name for name in os.listdir(
        os.path.join(data_dir, "synthetic_captions"))))

  def test_tpu_without_a_tpu_fails_with_a_clear_message(self):
    result = _run("--strategy=tpu", "--tpu=local", timeout=120)
    self.assertEqual(result.returncode, 1)
    last = result.stderr.strip().splitlines()[-1]
    self.assertRegex(last, r"^train_learner: No TPU found at the address given\. Run on a Cloud "
                     r"TPU VM \(--tpu=local\) or pass a reachable TPU .* Received: tpu='local'")


class StrategyErrorsTest(tf.test.TestCase):
  """make_strategy's errors in-process (only those that touch no cluster state)."""

  def test_tpu_needs_an_address(self):
    with self.assertRaisesRegex(ValueError, r"--tpu=<name>.* Received: tpu=''"):
      strategies.make_strategy("tpu", tpu="")

  def test_unreachable_tpu_address(self):
    address = f"grpc://127.0.0.1:{_closed_port()}"
    with self.assertRaisesRegex(RuntimeError, rf"No TPU found .* Received: "
                                rf"tpu='{re.escape(address)}' \(ConnectionRefusedError"):
      strategies.make_strategy("tpu", tpu=address)

  def test_multi_worker_needs_tf_config(self):
    saved = os.environ.pop("TF_CONFIG", None)
    try:
      with self.assertRaisesRegex(ValueError, r"TF_CONFIG.* Received: TF_CONFIG=''"):
        strategies.make_strategy("multi_worker")
    finally:
      if saved is not None:
        os.environ["TF_CONFIG"] = saved

  def test_unknown_strategy_and_dataset(self):
    with self.assertRaisesRegex(ValueError, r"Received: strategy='gpu'"):
      strategies.make_strategy("gpu")
    with self.assertRaisesRegex(ValueError, r"Received: task='imagenet'"):
      tasks.make_task("imagenet")
    with self.assertRaisesRegex(ValueError, r"eval_every=4.* Received: steps=0"):
      harness.RunConfig(steps=0, eval_every=4)


if __name__ == "__main__":
  tf.test.main()
