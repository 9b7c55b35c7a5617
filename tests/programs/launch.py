"""Runs a program as `python -m <module> <flags>` would, for the program tests, in a process
forked from one that has already imported TensorFlow.

Every program run by a test used to pay TensorFlow's import in a fresh interpreter (about 7 s
of CPU on the project's 2-core machine, a third of a smoke run). Here a fork server
(`multiprocessing`'s "forkserver" context) imports TensorFlow, Keras and tfjest once per test
process; each run is a child forked from it that does what `python -m` does from the repository
root (already on the test's `sys.path`, which the fork server inherits): `sys.argv` set, the
module run as `__main__` with `runpy`, its stdout and stderr captured, its exit status that
of `SystemExit` (1 and the traceback for an exception). The program's own modules (and so its
absl flags) are imported afresh in each child.

What differs from a fresh interpreter is only what those imports did before the program ran.
The demo's full run, which imports TensorFlow quietly itself and whose test checks that stderr
stays empty, runs with `fresh=True`: a real `python -m` in a new interpreter, which also keeps
one program test of the plain command (tests/programs/examples_smoke_test.py). `start` starts
a program without waiting (the multi-worker tests' worker processes). `run_code` runs
a snippet the same way (`python -c`), for a test that needs a process of its own.
"""

import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PRELOAD = ["tensorflow", "keras", "tfjest"]
_context = None


def _forkserver():
  global _context
  if _context is None:
    _context = multiprocessing.get_context("forkserver")
    _context.set_forkserver_preload(_PRELOAD)
  return _context


def _child(module, argv, out_path, err_path, unset, code=None, env=None):
  """In the forked child: `python -m module *argv` (or `python -c code`) from the repository
  root, with `env`'s variables set (e.g. TF_CONFIG) and `unset`'s removed; stderr goes to
  stdout's file when the two paths are the same."""
  os.environ.update(env or {})
  for name in unset:
    os.environ.pop(name, None)
  sys.stdout.flush()
  sys.stderr.flush()
  for fd, path in ((1, out_path), (2, err_path)):
    if fd == 2 and err_path == out_path:
      os.dup2(1, 2)  # one open file, one offset: the lines interleave as they are written
      continue
    target = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.dup2(target, fd)
    os.close(target)
  os.chdir(ROOT)  # the repository root is on sys.path already: the test imports from it
  sys.argv = [module] + list(argv)
  status = 0
  try:
    if code is None:
      runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
      exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})  # pylint: disable=exec-used
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      status = e.code or 0
    else:  # `SystemExit("message")`: Python prints the message and exits with 1
      print(e.code, file=sys.stderr)
      status = 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    status = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def run(module: str, *flags: str, timeout: float = 600, fresh: bool = False,
        unset=()) -> subprocess.CompletedProcess:
  """`python -m module *flags` from the repository root: its exit status and output.

  Args:
    module: e.g. "benchmarks.cheap_scoring".
    flags: its command-line arguments.
    timeout: seconds before the run is killed (then `returncode` is -9, as for a kill).
    fresh: run it in a new interpreter (`subprocess`), not forked from the fork server.
    unset: environment variables the program must not see (e.g. "TF_CONFIG").
  """
  command = [sys.executable, "-m", module, *flags]
  if fresh:
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)
  return _forked(command, module, flags, timeout, unset, None)


def run_code(code: str, timeout: float = 600) -> subprocess.CompletedProcess:
  """`python -c code` from the repository root, forked from the fork server as `run` does:
  its exit status and output. For a test that needs a process of its own (say, to import a
  module whose absl flags clash with those of a module the test's process imported)."""
  return _forked([sys.executable, "-c", code], "-c", (), timeout, (), code)


def _forked(command, module, flags, timeout, unset, code):
  with tempfile.TemporaryDirectory() as directory:
    out_path, err_path = (os.path.join(directory, name) for name in ("stdout", "stderr"))
    for path in (out_path, err_path):
      open(path, "w").close()
    process = _forkserver().Process(target=_child, args=(module, flags, out_path, err_path,
                                                         tuple(unset), code))
    process.start()
    process.join(timeout)
    if process.is_alive():
      process.kill()
      process.join()
    with open(out_path) as out, open(err_path) as err:
      return subprocess.CompletedProcess(command, process.exitcode, out.read(), err.read())


class Started:
  """A program started with `start`, running beside the test: the `subprocess.Popen` methods
  the multi-process tests use (`pid`, `poll`, `wait`, `kill`, `send_signal`, `returncode`)."""

  def __init__(self, process, command):
    self._process, self.args = process, command

  @property
  def pid(self) -> int:
    return self._process.pid

  @property
  def returncode(self):
    """The exit status once ended (minus the signal's number if a signal ended it), else None."""
    return self._process.exitcode

  def poll(self):
    return self._process.exitcode

  def wait(self, timeout=None):
    """Waits for the end; raises `subprocess.TimeoutExpired` after `timeout` seconds."""
    self._process.join(timeout)
    if self._process.exitcode is None:
      raise subprocess.TimeoutExpired(self.args, timeout)
    return self._process.exitcode

  def kill(self):
    self._process.kill()

  def send_signal(self, signal_number):
    os.kill(self._process.pid, signal_number)


def start(module: str, *flags: str, log_path: str, env=None, code: str = None) -> Started:
  """Starts `python -m module *flags` (or `python -c code`, flags as its `sys.argv[1:]`) forked
  from the fork server, without waiting: for tests that run several processes at once (e.g.
  MultiWorkerMirroredStrategy workers on 127.0.0.1), each saving TensorFlow's import.

  Args:
    module: e.g. "examples.train_learner" (ignored with `code`).
    flags: its command-line arguments.
    log_path: the file its stdout and stderr go to, together (truncated first).
    env: environment variables to set in the process (e.g. {"TF_CONFIG": ...}).
    code: a snippet to run instead of a module.
  """
  command = [sys.executable, *(("-c", code) if code is not None else ("-m", module)), *flags]
  open(log_path, "w").close()
  process = _forkserver().Process(target=_child, args=(
      "-c" if code is not None else module, flags, log_path, log_path, (), code, dict(env or {})))
  process.start()
  return Started(process, command)
