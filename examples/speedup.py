"""Data efficiency as JEST_SPEC section 9 defines it, from `experiment.run` curves.

* target: the best mean-over-seeds accuracy that uniform reaches in the step budget (the
  evaluation at step 0, before any training, does not count).
* steps to target: the first evaluated step at which a curve's accuracy is at least the target
  (evaluations are `eval_every` apart, so this is rounded up to the next evaluation).
* step speedup: uniform's steps to target (on its mean curve) / the method's steps to target.
  The headline figure uses the method's mean-over-seeds curve; the spread is the standard
  deviation of the per-seed speedups over the seeds whose own curve reaches the target.
* compute speedup: the same with cumulative FLOPs (JEST_SPEC section 7) instead of steps.

A method that never reaches the target within the budget has no speedup (None): all that is
known is that it is below `uniform steps / budget`.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np


def first_reach(xs: Sequence[float], values: Sequence[float], target: float
                ) -> Optional[float]:
  """The first `x` (after the first entry, step 0) whose value is at least `target`."""
  for x, value in list(zip(xs, values))[1:]:
    if value >= target - 1e-12:
      return x
  return None


def mean_curve(runs: Sequence[Dict], key: str = "accuracy") -> np.ndarray:
  """The mean over runs (seeds) of a curve; the runs must share their evaluation steps."""
  steps = runs[0]["steps"]
  for run in runs[1:]:
    if run["steps"] != steps:
      raise ValueError("Runs to average must share their evaluation steps. Received: steps "
                       f"{steps[:3]}... and {run['steps'][:3]}...")
  return np.mean([run[key] for run in runs], axis=0)


def target(uniform_runs: Sequence[Dict]) -> float:
  """The best mean-over-seeds accuracy uniform reaches after step 0."""
  return float(np.max(mean_curve(uniform_runs)[1:]))


def _stats(values: List[float]) -> Dict[str, Optional[float]]:
  if not values:
    return {"mean": None, "std": None}
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _ratio(numerator, denominator):
  if numerator is None or denominator is None or denominator <= 0:
    return None
  return float(numerator) / float(denominator)


def summarize(runs: Sequence[Dict], uniform_runs: Sequence[Dict]) -> Dict:
  """Speedups and final figures of one method's runs (one per seed) against uniform's.

  Args:
    runs: `experiment.run` results of one configuration, one per seed.
    uniform_runs: uniform's results on the same data and budget, one per seed.

  Returns:
    A dict: `target`, `uniform_steps` and `uniform_flops` to target, `steps` and `flops` to
    target on the method's mean curve, `step_speedup` and `compute_speedup` (mean curves, None
    when not reached), `step_speedup_seeds` and `compute_speedup_seeds` (`{"mean", "std"}` over
    the seeds that reach the target), `seeds_reaching`, `seeds`, `final_accuracy`,
    `final_recall_at_1`, `corrupted_share` (`{"mean", "std"}` over seeds) and
    `flops_per_step_ratio` (this method's step cost / uniform's).
  """
  goal = target(uniform_runs)
  steps = uniform_runs[0]["steps"]
  uniform_steps = first_reach(steps, mean_curve(uniform_runs), goal)
  uniform_flops = first_reach(uniform_runs[0]["flops"], mean_curve(uniform_runs), goal)
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
  uniform_cost = uniform_runs[0]["flops_per_step"]["total"]
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
      "final_accuracy": _stats([run["accuracy"][-1] for run in runs]),
      "final_recall_at_1": _stats([run["recall_at_1"][-1] for run in runs]),
      "corrupted_share": _stats([run["corrupted_share"][-1] for run in runs
                                 if run["corrupted_share"][-1] is not None]),
      "flops_per_step_ratio": _ratio(runs[0]["flops_per_step"]["total"], uniform_cost),
  }
