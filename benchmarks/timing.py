"""The benchmarks' one timer: wall and process CPU time of calls, blocks and `fit` steps.

Every measurement takes both clocks together: wall time (`time.perf_counter`) is what a user
waits; process CPU time (`time.process_time`, all threads, the input pipeline's included) is the
work done, the steadier measure on a machine shared with other jobs. `Timings` keeps the seconds
of each timed call or step and reports their medians, which resist bursts of other load.

    with timing.stopwatch() as build:              # one block
      cache = tfjest.cache_reference(...)
    build.wall

    forward = timing.time_calls(tf.function(model), [(x,)] * 6, warmup=1)
    forward.wall, forward.cpu                      # medians of the 5 timed calls

    timer = timing.StepTimer(warmup=3)             # fit's steps
    model.fit(data, steps_per_epoch=13, callbacks=[timer])
    timer.timings.wall
"""

import contextlib
import dataclasses
import statistics
import time
from typing import Any, Callable, Iterable, List, Optional, Sequence

import keras
import tensorflow as tf


@dataclasses.dataclass
class Timings:
  """Wall and process CPU seconds of each timed call, block or step, in order.

  Attributes:
    walls: wall seconds of each.
    cpus: process CPU seconds of each.
  """

  walls: List[float] = dataclasses.field(default_factory=list)
  cpus: List[float] = dataclasses.field(default_factory=list)

  def add(self, wall: float, cpu: float) -> None:
    self.walls.append(wall)
    self.cpus.append(cpu)

  @property
  def wall(self) -> float:
    """The median wall seconds."""
    return statistics.median(self._checked(self.walls))

  @property
  def cpu(self) -> float:
    """The median process CPU seconds."""
    return statistics.median(self._checked(self.cpus))

  @staticmethod
  def _checked(values):
    if not values:
      raise ValueError("No call or step was timed (all were warm-up). Received: 0 timings")
    return values


@contextlib.contextmanager
def stopwatch(timings: Optional[Timings] = None):
  """Times the `with` block; yields the `Timings` it adds one entry to (a new one if None)."""
  timings = Timings() if timings is None else timings
  wall, cpu = time.perf_counter(), time.process_time()
  yield timings
  timings.add(time.perf_counter() - wall, time.process_time() - cpu)


def wait(outputs: Any) -> Any:
  """Reads the value of every tensor in `outputs`, so the work that produces them has finished."""
  for t in tf.nest.flatten(outputs):
    if hasattr(t, "numpy"):
      t.numpy()
  return outputs


def time_calls(fn: Callable, args_list: Iterable[Sequence], warmup: int = 0) -> Timings:
  """Times `fn(*args)` for each `args` of `args_list`, the first `warmup` calls untimed.

  Each call ends when its outputs' values are read (`wait`).

  Returns:
    The `Timings` of the calls after the warm-up.

  Raises:
    ValueError: if `args_list` holds no call beyond the warm-up.
  """
  timings, calls = Timings(), 0
  for calls, args in enumerate(args_list, 1):
    if calls <= warmup:
      wait(fn(*args))
      continue
    with stopwatch(timings):
      wait(fn(*args))
  if calls <= warmup:
    raise ValueError(f"time_calls needs more calls than the {warmup} warm-up ones. "
                     f"Received: args_list of {calls} calls")
  return timings


class StepTimer(keras.callbacks.Callback):
  """Times each training step of `fit` after the first `warmup` (of each `fit` call).

  A step's time runs from the end of the previous step (for the first step, from its start) to
  its end, so the input pipeline's hand-off between steps counts. Keras converts the step's logs
  to Python numbers before calling a callback (one not marked `async_safe`, as this one), so a
  step has finished when it is timed.

  Attributes:
    timings: the `Timings` of the timed steps, over all `fit` calls.
  """

  def __init__(self, warmup: int = 0):
    super().__init__()
    self.warmup = warmup
    self.timings = Timings()
    self._last = None
    self._step = 0

  def on_train_begin(self, logs=None):
    self._last, self._step = None, 0

  def on_train_batch_begin(self, batch, logs=None):
    if self._last is None:
      self._last = (time.perf_counter(), time.process_time())

  def on_train_batch_end(self, batch, logs=None):
    now = (time.perf_counter(), time.process_time())
    if self._step >= self.warmup:
      self.timings.add(now[0] - self._last[0], now[1] - self._last[1])
    self._last = now
    self._step += 1
