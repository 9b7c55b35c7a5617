"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 run examples/train_learner.py to the end.

Each worker is a process with its own TF_CONFIG (free local ports); both must finish within the
time limit (they are killed otherwise) with identical learner weights, which they can only have
if every step's gradients were all-reduced across workers. This exercises the Keras 3 fix in
tfjest/keras_compat.py: without it, fit fails under this strategy (keras-team/keras#20585).
"""

import json
import os
import socket
import subprocess
import sys
import time

import tensorflow as tf

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(_ROOT, "examples", "train_learner.py")
_TIMEOUT_S = 150
_FLAGS = ["--strategy=multi_worker", "--method=jest", "--batch_size=32", "--num_chunks=8",
          "--steps=6", "--eval_every=3", "--reference_examples=512", "--reference_epochs=1",
          "--stream_examples=1024"]


def _free_ports(count):
  sockets = []
  try:
    for _ in range(count):  # held open together, so the ports differ
      s = socket.socket()
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def run_workers(flags, directory, num_workers=2, timeout=_TIMEOUT_S):
  """Runs one train_learner process per worker; returns [(returncode, log, output json)]."""
  cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(num_workers)]}
  procs, logs = [], []
  for index in range(num_workers):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    log = open(os.path.join(directory, f"worker{index}.log"), "w+")
    logs.append(log)
    procs.append(subprocess.Popen(
        [sys.executable, _SCRIPT, *flags, f"--output={directory}/worker{index}.json"],
        env=env, stdout=log, stderr=subprocess.STDOUT))
  deadline = time.monotonic() + timeout
  try:
    for proc in procs:
      proc.wait(timeout=max(1.0, deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    pass
  finally:
    for proc in procs:  # only the processes started here
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  results = []
  for index, (proc, log) in enumerate(zip(procs, logs)):
    log.seek(0)
    text = log.read()
    log.close()
    path = os.path.join(directory, f"worker{index}.json")
    output = json.load(open(path)) if os.path.exists(path) else None
    results.append((proc.returncode, text, output))
  return results


class MultiWorkerTest(tf.test.TestCase):

  def _check(self, results):
    for index, (returncode, text, output) in enumerate(results):
      self.assertEqual(returncode, 0, f"worker {index} failed or timed out:\n{text[-4000:]}")
      self.assertIn("fit fix is active", text)
      self.assertIn("in the train_step", text)
      self.assertIn("identical replica weights: True (2 replicas", text)
      self.assertEqual(output["replicas"], 2)
      self.assertEqual(output["steps"], [0, 3, 6])
      self.assertEqual(output["selection"]["selected"], 6 * 32)
    (_, _, first), (_, _, second) = results
    self.assertEqual(first["weights_digest"], second["weights_digest"])
    self.assertEqual(first["accuracy"], second["accuracy"])

  def test_two_workers_train_on_jest_selection_to_identical_weights(self):
    self._check(run_workers(_FLAGS, self.get_temp_dir()))

  def test_global_selection_across_workers(self):
    self._check(run_workers(_FLAGS + ["--replica_selection=global"], self.get_temp_dir()))


if __name__ == "__main__":
  tf.test.main()
