"""Worker processes of `python -m examples.train_learner` on 127.0.0.1, for multi-worker tests.

Each worker is forked from a process that has imported TensorFlow once (`tests/programs/launch`:
about 7 s of CPU saved per worker), with its own TF_CONFIG.
"""

import json
import os
import socket
import subprocess
import time

from tests.programs import launch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The program, run from the repository root as its docstring says.
ROOT = _ROOT
PROGRAM = "examples.train_learner"
TIMEOUT_S = 150


def free_ports(count):
  """`count` distinct free TCP ports on 127.0.0.1."""
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


def run_workers(flags, directory, num_workers=2, timeout=TIMEOUT_S):
  """Runs one train_learner process per worker; returns [(returncode, log, output json)]."""
  cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(num_workers)]}
  procs = []
  for index in range(num_workers):
    env = {"TF_CONFIG": json.dumps({"cluster": cluster,
                                    "task": {"type": "worker", "index": index}})}
    procs.append(launch.start(PROGRAM, *flags, f"--output={directory}/worker{index}.json",
                              log_path=os.path.join(directory, f"worker{index}.log"), env=env))
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
  for index, proc in enumerate(procs):
    with open(os.path.join(directory, f"worker{index}.log")) as log:
      text = log.read()
    path = os.path.join(directory, f"worker{index}.json")
    output = json.load(open(path)) if os.path.exists(path) else None
    results.append((proc.returncode, text, output))
  return results
