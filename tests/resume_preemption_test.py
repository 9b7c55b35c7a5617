"""A MultiWorkerMirroredStrategy worker is killed mid-run; the cluster restarts and resumes.

Two workers on 127.0.0.1 run `python -m examples.train_learner` (forked from a process that has
imported TensorFlow: `tests/programs/launch.py`) with JEST selection in the replicated step and `--backup_dir` (keras.callbacks.BackupAndRestore, written by the chief after every
evaluation interval). Once the first backup exists, worker 1 is killed (SIGKILL, as a
preemption would). As in tf.distribute's fault-tolerance model, the surviving worker cannot go on
alone (its collectives fail, or it is stopped), and the cluster is started again with the same
flags: both workers restore the backup, selection continues, and they finish with identical
weights. Every phase is bounded in time.
"""

import json
import os
import signal
import subprocess
import time

import tensorflow as tf

from tests import workers
from tests.programs import launch

_STEPS, _EVAL_EVERY, _BATCH = 24, 3, 32  # 8 backups: the kill lands mid-run
_FLAGS = ["--dataset=toy", "--strategy=multi_worker", "--method=jest", f"--batch_size={_BATCH}",
          "--num_chunks=8", f"--steps={_STEPS}", f"--eval_every={_EVAL_EVERY}",
          "--reference_examples=512", "--reference_epochs=1", "--stream_examples=1024"]
_START_TIMEOUT_S = 150  # until the first backup is written
_SURVIVOR_TIMEOUT_S = 60  # for the surviving worker to give up before it is stopped


def _start(directory, backup_dir, ports, tag):
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  return [launch.start(workers.PROGRAM, *_FLAGS, f"--backup_dir={backup_dir}",
                       f"--output={directory}/{tag}{index}.json",
                       log_path=os.path.join(directory, f"{tag}{index}.log"),
                       env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {
                           "type": "worker", "index": index}})})
          for index in range(2)]


def _stop(procs):
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


class PreemptionTest(tf.test.TestCase):

  def test_killed_worker_restarts_and_training_completes(self):
    directory = self.get_temp_dir()
    backup_dir = os.path.join(directory, "backup")
    procs = _start(directory, backup_dir, workers.free_ports(2), "first")
    try:
      metadata = os.path.join(backup_dir, "training_metadata.json")
      deadline = time.monotonic() + _START_TIMEOUT_S
      while not os.path.exists(metadata) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
          break
        time.sleep(0.2)
      self.assertTrue(os.path.exists(metadata), "no backup was written before the deadline: " +
                      open(os.path.join(directory, "first0.log")).read()[-3000:])
      self.assertIsNone(procs[1].poll(), "worker 1 ended before it could be preempted")
      procs[1].send_signal(signal.SIGKILL)
      procs[1].wait()
      try:
        procs[0].wait(timeout=_SURVIVOR_TIMEOUT_S)
      except subprocess.TimeoutExpired:
        pass
    finally:
      _stop(procs)
    self.assertFalse(os.path.exists(os.path.join(directory, "first1.json")))
    with open(metadata) as f:
      resumed_epoch = json.load(f)["epoch"]
    self.assertBetween(resumed_epoch, 1, _STEPS // _EVAL_EVERY - 1)

    procs = _start(directory, backup_dir, workers.free_ports(2), "second")
    try:
      for proc in procs:
        proc.wait(timeout=workers.TIMEOUT_S)
    except subprocess.TimeoutExpired:
      pass
    finally:
      _stop(procs)
    outputs = []
    for index, proc in enumerate(procs):
      log = open(os.path.join(directory, f"second{index}.log")).read()
      self.assertEqual(proc.returncode, 0, f"restarted worker {index}:\n{log[-4000:]}")
      with open(os.path.join(directory, f"second{index}.json")) as f:
        outputs.append(json.load(f))
    # The restarted run picked up where the backup left off: it evaluated only the later
    # steps, and selection went on for exactly the remaining steps.
    remaining = _STEPS - resumed_epoch * _EVAL_EVERY
    for output in outputs:
      self.assertEqual(output["steps"][1:],
                       list(range((resumed_epoch + 1) * _EVAL_EVERY, _STEPS + 1, _EVAL_EVERY)))
      self.assertEqual(output["selection_stats"]["selected"], remaining * _BATCH)
      self.assertTrue(output["identical_replica_weights"])
    self.assertEqual(outputs[0]["weights_digest"], outputs[1]["weights_digest"])


if __name__ == "__main__":
  tf.test.main()
