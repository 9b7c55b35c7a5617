"""Uniform's runs of a `benchmarks.data_efficiency` results file, cut at a budget.

`benchmarks.plateau_table` builds its table from them; `benchmarks.rela` and `benchmarks.dnc`
measure their rows against them (`--uniform_from`) instead of running uniform again: a uniform
run of their harness config is the same run as `data_efficiency`'s (same seed, same curve), so
one long set of uniform runs serves every program at the plateau budget.
"""

import json
from typing import Dict, NamedTuple, Optional

from absl import flags


class UniformFrom(NamedTuple):
  """The `--uniform_from` and `--uniform_steps` flags of a program (`define_flags`)."""
  path: flags.FlagHolder
  steps: flags.FlagHolder

  def load(self, settings: Dict) -> Optional[Dict]:
    """Uniform's runs read from `--uniform_from` (`load`), matched to `settings`; else None.

    `settings` are the program's (`noise`, `steps`, `eval_every`, `batch_size`,
    `learning_rate`, `filter_ratio`); the budget is `--uniform_steps`, default `steps`.
    """
    if not self.path.value:
      return None
    return load(self.path.value, budget=self.steps.value or settings["steps"],
                noise=settings["noise"], eval_every=settings["eval_every"],
                batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
                filter_ratio=settings["filter_ratio"])


def define_flags() -> UniformFrom:
  """Defines `--uniform_from` and `--uniform_steps` (call once, at a program's import)."""
  return UniformFrom(
      flags.DEFINE_string(
          "uniform_from", None, "A benchmarks.data_efficiency results file: uniform is not "
          "run, its runs at --noise are read from there, cut at --uniform_steps (same "
          "eval_every, batch size, learning rate and filter ratio, checked)."),
      flags.DEFINE_integer(
          "uniform_steps", None, "Uniform's budget with --uniform_from (default --steps); rows "
          "that ran fewer steps are marked in the table, and a row that does not reach the "
          "target is 'not reached within' its steps."))


def cut(run: Dict, budget: int) -> Dict:
  """`run` with its curves cut at `budget` steps (the evaluations at steps <= budget)."""
  keep = sum(1 for step in run["steps"] if step <= budget)
  return {key: (value[:keep] if isinstance(value, list) and len(value) == len(run["steps"])
                else value)
          for key, value in run.items()}


def load(path: str, *, budget: int, noise: float, eval_every: int, batch_size: int,
         learning_rate: float, filter_ratio: float) -> Dict:
  """Uniform's runs at `noise` from a `data_efficiency` results file, each cut at `budget`.

  For programs (`benchmarks.rela`, `benchmarks.dnc`) whose rows are measured against uniform
  runs made elsewhere (`--uniform_from`): a uniform run of their harness config is the same
  run as `data_efficiency`'s, so one long set of uniform runs serves every program.

  Returns:
    `{"path", "budget", "seeds", "runs"}`, `runs` one cut run per seed (sorted by seed).

  Raises:
    ValueError: if the file holds no uniform run at `noise`, or its runs end before `budget`,
      do not evaluate at `budget`, or differ in evaluation interval, batch size, learning rate
      or filter ratio (uniform draws b of every N = b / (1 - f)).
  """
  with open(path) as file:
    results = json.load(file)
  runs = [run for key, run in sorted(results["runs"].items())
          if key.startswith(f"noise={noise}|") and label(run) == "uniform"]
  if not runs:
    raise ValueError(f"--uniform_from={path} holds no uniform run at noise {noise} (keys "
                     f"{sorted(results['runs'])[:4]}...).")
  expected = {"eval_every": eval_every, "batch_size": batch_size,
              "learning_rate": learning_rate, "filter_ratio": filter_ratio}
  for run in runs:
    for key, value in expected.items():
      if run[key] != value:
        raise ValueError(f"--uniform_from={path}: its uniform run of seed {run['seed']} has "
                         f"{key}={run[key]!r}, this program {key}={value!r}; uniform must "
                         f"come from the same harness config.")
    if run["steps"][-1] < budget:
      raise ValueError(f"--uniform_from={path}: its uniform run of seed {run['seed']} ends at "
                       f"step {run['steps'][-1]}, before the uniform budget {budget}.")
    if budget not in run["steps"]:
      raise ValueError(f"--uniform_from={path}: its uniform runs are not evaluated at step "
                       f"{budget} (every {run['eval_every']} steps).")
  runs = sorted((cut(run, budget) for run in runs), key=lambda run: run["seed"])
  return {"path": path, "budget": budget, "seeds": [run["seed"] for run in runs], "runs": runs}


def label(run: Dict) -> str:
  """A row's name: method, score, f and the cheap learner scoring its runs used."""
  if run.get("oracle_clean"):
    return "oracle_clean"
  if run["method"] == "uniform":
    return "uniform"
  name = f"{run['method']} {run['score']}, f={run['filter_ratio']}"
  proxy = run.get("proxy")
  if proxy:
    name += f" (proxy {'/'.join(str(f) for f in proxy['filters'])}, width {proxy['width']})"
  if run.get("scoring_resolution"):
    name += f" ({run['scoring_resolution']}px view)"
  if run.get("train_resolutions"):
    name += f" (trained at {'/'.join(str(s) for s in run['train_resolutions'])})"
  return name
