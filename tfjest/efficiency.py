"""Data efficiency as docs/SPEC.md §9 defines it: steps, FLOPs and examples to a target.

Every measure reads evaluation curves, one dict per run (one run per seed):

- `"steps"`: the evaluated training steps, increasing; the first entry is the evaluation before
  training (step 0), which no measure counts as reaching anything.
- `"flops"`: cumulative training FLOPs at each evaluated step (docs/SPEC.md §7, e.g.
  `step * selector.step_cost().total`).
- `"accuracy"`: the evaluation accuracy at each evaluated step.
- optional `"recall_at_1"` and `"corrupted_share"` (share of corrupted examples among those
  selected so far; entries may be None, as at step 0): their final values are reported.
- optional `"flops_per_step": {"total": ...}`: FLOPs of one training step.
- optional `"super_batch_size"` (int): examples a step reads, `N = b / (1 - f)` for a selecting
  method and `b` for uniform; and `"dataset_size"` (int): examples in the (finite) split read.

The per-step lists of a run have one entry per evaluation. The runs of one method must share
their `"steps"`; a method's steps need not equal uniform's.

Definitions (what `summarize` reports):

- target: the best mean-over-seeds accuracy that uniform reaches in the budget (after step 0).
- steps to target: the first evaluated step whose accuracy is at least the target (rounded up
  to the next evaluation).
- step speedup: uniform's steps to target (on its mean curve) / the method's. The headline
  figure uses the method's mean-over-seeds curve; the per-seed figures (mean and standard
  deviation) are over the seeds whose own curve reaches the target.
- compute speedup: the same with cumulative FLOPs instead of steps.
- examples read: steps * `super_batch_size`; reads per example: examples read / `dataset_size`.

A method that never reaches the target within the budget has no speedup (None): all that is
known is that it is below `uniform steps / budget`. Whether a budget is long enough for the
speedups to mean anything is `plateau`'s question.

>>> import tfjest
>>> uniform = [{"steps": [0, 10, 20, 30], "flops": [0, 10, 20, 30],
...             "accuracy": [0.0, 0.2, 0.4, 0.4]}]
>>> jest = [{"steps": [0, 10, 20, 30], "flops": [0, 40, 80, 120],
...          "accuracy": [0.0, 0.4, 0.5, 0.5], "super_batch_size": 40}]
>>> tfjest.efficiency.plateau(uniform[0]["steps"], uniform[0]["accuracy"]).plateaued
True
>>> summary = tfjest.efficiency.summarize(jest, uniform)
>>> summary["step_speedup"], summary["compute_speedup"], summary["examples_read_to_target"]
(2.0, 0.5, 400)
"""

import numbers
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from tfjest import checks

# Accuracies within this of the target count as reaching it (float round-off in means).
_REACH_TOLERANCE = 1e-12


def _check_xs_values(xs, values, xs_name: str, values_name: str):
  if len(xs) != len(values):
    raise ValueError(f"{xs_name} and {values_name} must have one entry per evaluation. "
                     f"Received: {len(xs)} {xs_name} and {len(values)} {values_name}")


def first_reach(xs: Sequence[float], values: Sequence[float], target: float
                ) -> Optional[float]:
  """The first `x` (after the first entry, step 0) whose value is at least `target`.

  Args:
    xs: evaluated steps or cumulative FLOPs, one per evaluation.
    values: the accuracy at each of `xs`.
    target: the accuracy to reach.

  Returns:
    The entry of `xs`, or None when no entry after the first reaches `target`.

  Raises:
    ValueError: if `xs` and `values` differ in length.
  """
  _check_xs_values(xs, values, "xs", "values")
  for x, value in list(zip(xs, values))[1:]:
    if value >= target - _REACH_TOLERANCE:
      return x
  return None


def _check_runs(runs: Sequence[Dict], name: str, keys=("accuracy",)):
  """Raises ValueError unless `runs` is a non-empty list of curves with `keys` per evaluation."""
  if isinstance(runs, dict) or not len(runs):  # pylint: disable=g-explicit-length-test
    raise ValueError(f"Expected {name} to be a non-empty list of curves (one dict per run). "
                     f"Received: {name}={runs!r}")
  for i, run in enumerate(runs):
    for key in ("steps",) + tuple(keys):
      if not isinstance(run, dict) or key not in run:
        keys_received = sorted(run) if isinstance(run, dict) else run
        raise ValueError(f"Expected every curve in {name} to have {key!r} (see "
                         f"tfjest.efficiency). Received: {name}[{i}] with keys {keys_received}")
    if not len(run["steps"]):  # pylint: disable=g-explicit-length-test
      raise ValueError(f"Expected curves with at least one evaluation. Received: {name}[{i}] "
                       "with steps=[]")
    _check_increasing(run["steps"], f"{name}[{i}]['steps']")
    for key in keys:
      _check_xs_values(run["steps"], run[key], "steps", key)


def _check_increasing(steps, where: str):
  """Raises ValueError at the first evaluated step that is not after the one before it."""
  for position in range(1, len(steps)):
    if not steps[position] > steps[position - 1]:
      raise ValueError(
          f"steps must increase (one entry per evaluation, in training order), but "
          f"steps[{position}]={steps[position]!r} is not after steps[{position - 1}]="
          f"{steps[position - 1]!r}. Received: {where}={list(steps)}")


def mean_curve(runs: Sequence[Dict], key: str = "accuracy") -> np.ndarray:
  """The mean over runs (seeds) of a curve; the runs must share their evaluation steps.

  Args:
    runs: curves, one dict per run (see the module docstring).
    key: the curve to average.

  Returns:
    `[E]` float64, the mean at each of the `E` evaluations.

  Raises:
    ValueError: if `runs` is empty, a run lacks `key` or has not one entry per step, its steps
      do not increase, or the runs' steps differ.
  """
  _check_runs(runs, "runs", (key,))
  steps = list(runs[0]["steps"])
  for run in runs[1:]:
    if list(run["steps"]) != steps:
      raise ValueError("Runs to average must share their evaluation steps. Received: steps "
                       f"{steps[:3]}... and {list(run['steps'])[:3]}...")
  return np.mean([run[key] for run in runs], axis=0)


def target(uniform_runs: Sequence[Dict]) -> float:
  """The best mean-over-seeds accuracy uniform reaches after step 0.

  Args:
    uniform_runs: uniform's curves, one per seed.

  Raises:
    ValueError: as `mean_curve`, or if the curves hold no evaluation after step 0.
  """
  mean = mean_curve(uniform_runs)
  if len(mean) < 2:
    raise ValueError("The target is uniform's best accuracy after step 0, so its curves need "
                     f"an evaluation after step 0. Received: steps="
                     f"{list(uniform_runs[0]['steps'])}")
  return float(np.max(mean[1:]))


def examples_read(steps: Union[int, Sequence[int]], super_batch_size: int
                  ) -> Union[int, np.ndarray]:
  """Examples a run reads in `steps` training steps: `steps * super_batch_size`.

  A selecting method reads a super-batch of `N = b / (1 - f)` examples per step and trains on
  `b`; uniform reads `b` (pass `super_batch_size=b`). At equal steps JEST reads `1 / (1 - f)`
  times more data than uniform.

  Args:
    steps: a step count >= 0, or a sequence of them (e.g. a curve's `"steps"`).
    super_batch_size: `N`, examples read per step (> 0).

  Returns:
    An int, or an int64 array with the shape of `steps`.

  Raises:
    ValueError: if `super_batch_size` is not a positive integer or a step count is negative or
      not an integer.
  """
  checks.positive_int(super_batch_size, "super_batch_size")
  if checks.is_int(steps):
    if steps < 0:
      raise ValueError(f"Expected a step count >= 0. Received: steps={steps!r}")
    return int(steps) * super_batch_size
  array = np.asarray(steps)
  if array.dtype.kind not in "iu" or (array < 0).any():
    raise ValueError(f"Expected integer step counts >= 0. Received: steps={steps!r}")
  return array.astype(np.int64) * super_batch_size


class Plateau(NamedTuple):
  """What `plateau` found.

  Attributes:
    plateaued: whether the curve gained less than `tolerance` over the last window.
    best_step: the first evaluated step (after step 0) with the best accuracy.
    best: the best accuracy after step 0 (on uniform's mean curve: the target).
    gain_last_window: the best accuracy within the last window minus the best before it
      (negative when the curve fell).
    window_start: the step where the last window starts (evaluations after it are in it).
  """

  plateaued: bool
  best_step: float
  best: float
  gain_last_window: float
  window_start: float


def plateau(steps: Sequence[float], accuracy: Sequence[float], *, window: float = 0.25,
            tolerance: float = 0.01) -> Plateau:
  """Whether a curve has plateaued: the budget is long enough (docs/SPEC.md §9).

  The rule: the best accuracy improves by less than `tolerance` over the last `window` of the
  budget. With `window_start = steps[0] + (1 - window) * (steps[-1] - steps[0])`, the gain is
  the best accuracy of the evaluations after `window_start` minus the best of those at or
  before it; step 0 (the first entry) counts in neither, as in `target`. Comparing bests, not
  the window's first and last values, keeps a noisy flat curve plateaued (its noise moves the
  best by less than the noise), while a curve still climbing gains its climb. Apply it to
  uniform's mean over seeds (`mean_curve`), whose best is then the target.

  Args:
    steps: the evaluated steps, increasing (the first is the evaluation before training).
    accuracy: the accuracy at each step.
    window: the share of the budget at its end, in (0, 1); the spec's rule is the last quarter.
    tolerance: the largest gain (exclusive) that still counts as flat, > 0.

  Returns:
    A `Plateau`.

  Raises:
    ValueError: if `steps` and `accuracy` differ in length, the steps do not increase,
      `window` is not in (0, 1) or `tolerance` not > 0, or no evaluation after step 0 falls
      before the window or none within it (evaluate more often).
  """
  _check_xs_values(steps, accuracy, "steps", "accuracy")
  if not isinstance(window, numbers.Real) or not 0 < window < 1:
    raise ValueError(f"window is a share of the budget, in (0, 1). "
                     f"Received: window={window!r}")
  if not isinstance(tolerance, numbers.Real) or not tolerance > 0:
    raise ValueError(f"tolerance must be a number > 0. Received: tolerance={tolerance!r}")
  xs = np.asarray(steps, np.float64)
  values = np.asarray(accuracy, np.float64)
  _check_increasing(steps, "steps")
  start = xs[0] + (1 - window) * (xs[-1] - xs[0]) if len(xs) else 0.0
  inside = np.arange(len(xs)) > 0
  before, within = inside & (xs <= start), inside & (xs > start)
  if not before.any() or not within.any():
    raise ValueError(f"plateau needs evaluations after step 0 both before the last window "
                     f"(steps <= {start:g}) and within it. Evaluate more often. "
                     f"Received: steps={list(steps)}")
  best_index = 1 + int(np.argmax(values[1:]))
  gain = float(values[within].max() - values[before].max())
  return Plateau(plateaued=gain < tolerance, best_step=steps[best_index],
                 best=float(values[best_index]), gain_last_window=gain,
                 window_start=float(start))


def _stats(values: List[float]) -> Dict[str, Optional[float]]:
  if not values:
    return {"mean": None, "std": None}
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _ratio(numerator, denominator):
  if numerator is None or denominator is None or denominator <= 0:
    return None
  return float(numerator) / float(denominator)


def _final(runs: Sequence[Dict], key: str) -> List[float]:
  """The last entry of `key` of every run that has one that is not None."""
  return [run[key][-1] for run in runs
          if run.get(key) is not None and len(run[key]) and run[key][-1] is not None]


def _shared(runs: Sequence[Dict], key: str) -> Optional[int]:
  """`key` of the runs (all equal, a positive int), or None when they do not carry it."""
  values = [run.get(key) for run in runs]
  if all(v is None for v in values):
    return None
  if any(v != values[0] for v in values):
    raise ValueError(f"The runs of one method must share {key}. Received: {key} {values}")
  checks.positive_int(values[0], key)
  return values[0]


def summarize(runs: Sequence[Dict], uniform_runs: Sequence[Dict]) -> Dict:
  """Speedups and final figures of one method's runs (one per seed) against uniform's.

  Args:
    runs: curves of one configuration, one per seed (see the module docstring).
    uniform_runs: uniform's curves on the same data and budget, one per seed.

  Returns:
    A dict: `target`, `uniform_steps` and `uniform_flops` to target, `steps` and `flops` to
    target on the method's mean curve, `step_speedup` and `compute_speedup` (mean curves, None
    when not reached), `step_speedup_seeds` and `compute_speedup_seeds` (`{"mean", "std"}` over
    the seeds that reach the target), `seeds_reaching`, `seeds`, `final_accuracy`,
    `final_recall_at_1`, `corrupted_share` (`{"mean", "std"}` over seeds; None values when the
    runs do not record them) and `flops_per_step_ratio` (this method's step cost / uniform's;
    None without `flops_per_step`). When the runs carry `super_batch_size`:
    `examples_read` (in the whole budget, its last evaluated step) and
    `examples_read_to_target` (steps to target on the mean curve, times `super_batch_size`),
    and with `dataset_size` also `reads_per_example` and `reads_per_example_to_target`
    (examples read / `dataset_size`); each None when not given (or not reached).

  Raises:
    ValueError: if either list is empty, a curve lacks `steps`, `flops` or `accuracy` or has
      not one entry per evaluation, its `steps` do not increase (the message names the first
      offending position), one method's runs differ in steps, `super_batch_size` or
      `dataset_size`, or uniform's curves hold no evaluation after step 0.
  """
  _check_runs(runs, "runs", ("flops", "accuracy"))
  _check_runs(uniform_runs, "uniform_runs", ("flops", "accuracy"))
  goal = target(uniform_runs)
  uniform_mean = mean_curve(uniform_runs)
  uniform_steps = first_reach(uniform_runs[0]["steps"], uniform_mean, goal)
  uniform_flops = first_reach(uniform_runs[0]["flops"], uniform_mean, goal)
  mean = mean_curve(runs)
  method_steps = first_reach(runs[0]["steps"], mean, goal)
  method_flops = first_reach(runs[0]["flops"], mean, goal)
  per_seed_steps, per_seed_compute = [], []
  for run in runs:
    reached = first_reach(run["steps"], run["accuracy"], goal)
    reached_flops = first_reach(run["flops"], run["accuracy"], goal)
    if reached is not None:
      per_seed_steps.append(_ratio(uniform_steps, reached))
      per_seed_compute.append(_ratio(uniform_flops, reached_flops))
  cost = runs[0].get("flops_per_step", {}).get("total")
  uniform_cost = uniform_runs[0].get("flops_per_step", {}).get("total")
  super_batch_size = _shared(runs, "super_batch_size")
  dataset_size = _shared(runs, "dataset_size")
  read = read_to_target = None
  if super_batch_size is not None:
    read = examples_read(runs[0]["steps"][-1], super_batch_size)
    if method_steps is not None:
      read_to_target = examples_read(method_steps, super_batch_size)
  return {
      "target": goal,
      "uniform_steps": uniform_steps,
      "uniform_flops": uniform_flops,
      "steps": method_steps,
      "flops": method_flops,
      "step_speedup": _ratio(uniform_steps, method_steps),
      "compute_speedup": _ratio(uniform_flops, method_flops),
      "step_speedup_seeds": _stats(per_seed_steps),
      "compute_speedup_seeds": _stats(per_seed_compute),
      "seeds_reaching": len(per_seed_steps),
      "seeds": len(runs),
      "final_accuracy": _stats(_final(runs, "accuracy")),
      "final_recall_at_1": _stats(_final(runs, "recall_at_1")),
      "corrupted_share": _stats(_final(runs, "corrupted_share")),
      "flops_per_step_ratio": _ratio(cost, uniform_cost),
      "examples_read": read,
      "examples_read_to_target": read_to_target,
      "reads_per_example": _ratio(read, dataset_size),
      "reads_per_example_to_target": _ratio(read_to_target, dataset_size),
  }
