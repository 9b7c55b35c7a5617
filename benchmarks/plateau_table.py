r"""The data-efficiency table at a plateau budget, from `benchmarks.data_efficiency` results.

    python -m benchmarks.plateau_table --budget=20000 \
        --results=out/uniform/results.json,out/proxy/results.json,out/rows/results.json

docs/SPEC.md §9 asks for a budget at which uniform has plateaued: its mean accuracy gains
less than 0.01 over the last quarter (`tfjest.efficiency.plateau`). Uniform's runs can be longer
than the budget (one 30,000-step run holds its 20,000- and 25,000-step curves, the learning
rate being constant), so that the rule can be checked at several budgets from one set of runs:
this program prints the check at `--candidates`, then the table at `--budget`, every run cut at
it. The other rows may come from other files (`data_efficiency --nouniform`, one per cheap
scoring); a row whose runs end before the budget is marked with the steps it ran (its speedups
still hold when it reaches the target within them; its final accuracy is at its last step).

Uniform's runs are those of the first file that holds them; all files must share the noise
level, batch size, learning rate and evaluation interval (checked).
"""

import json
from typing import Dict, List, Sequence

from absl import app
from absl import flags

from benchmarks import report
from benchmarks import uniform_runs
from tfjest import efficiency

_RESULTS = flags.DEFINE_list("results", None, "data_efficiency results files (JSON).")
_BUDGET = flags.DEFINE_integer("budget", None, "The budget in steps; every run is cut at it.")
_CANDIDATES = flags.DEFINE_list("candidates", [], "Budgets (steps) at which to print the "
                                "plateau check of uniform's mean curve (default: --budget).")
_NOISE = flags.DEFINE_float("noise", 0.5, "The noise level of the rows.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the rows as JSON (optional).")

_SHARED_SETTINGS = ("batch_size", "learning_rate", "eval_every")

cut = uniform_runs.cut
label = uniform_runs.label


def group(results: Sequence[Dict], noise: float) -> Dict[str, List[Dict]]:
  """The runs of every file at `noise`, by row label; uniform's from the first file with any."""
  rows: Dict[str, List[Dict]] = {}
  owner: Dict[str, int] = {}
  for index, result in enumerate(results):
    for key, run in result["runs"].items():
      if not key.startswith(f"noise={noise}|"):
        continue
      name = label(run)
      if owner.setdefault(name, index) != index:
        if name == "uniform":
          continue  # uniform's runs are the first file's
        raise ValueError(f"Two results files hold the row {name!r}: files {owner[name]} and "
                         f"{index} of --results (pass each row once).")
      rows.setdefault(name, []).append(run)
  if "uniform" not in rows:
    raise ValueError(f"No uniform runs at noise {noise} in any of the --results files.")
  return rows


def check_settings(results: Sequence[Dict]):
  first = results[0]["settings"]
  for index, result in enumerate(results[1:], 1):
    for key in _SHARED_SETTINGS:
      if result["settings"][key] != first[key]:
        raise ValueError(f"File {index} of --results has {key}={result['settings'][key]!r}, "
                         f"the first {key}={first[key]!r}; rows must share it.")


def plateau_checks(uniform_runs: Sequence[Dict], budgets: Sequence[int]) -> List[Dict]:
  """The plateau rule on uniform's mean curve cut at each budget."""
  checks = []
  for budget in budgets:
    runs = [cut(run, budget) for run in uniform_runs]
    if runs[0]["steps"][-1] < budget:
      raise ValueError(f"Uniform's runs end at step {runs[0]['steps'][-1]}, before the "
                       f"budget {budget}.")
    result = efficiency.plateau(runs[0]["steps"], efficiency.mean_curve(runs))
    checks.append({"budget": budget, **result._asdict()})
  return checks


def table_rows(rows: Dict[str, List[Dict]], budget: int) -> List[Dict]:
  """One summary per row (`efficiency.summarize`), every run cut at `budget`."""
  uniform = [cut(run, budget) for run in rows["uniform"]]
  out = []
  for name, runs in rows.items():
    runs = [cut(run, budget) for run in runs]
    out.append({"row": name, "ran": runs[0]["steps"][-1], "seeds_list": sorted(
        run["seed"] for run in runs), **efficiency.summarize(runs, uniform)})
  return out


def markdown(rows: Sequence[Dict], budget: int) -> str:
  return report.table(rows, [
      ("method", lambda r: report.row_name(r, budget)),
      ("seeds", lambda r: str(r["seeds"])),
      ("step speedup", report.step_speedup),
      ("per seed (reached)", report.per_seed),
      ("compute speedup", lambda r: report.speedup(r["compute_speedup"])),
      ("cost/step", report.cost),
      ("final accuracy", report.final_accuracy),
      ("corrupted selected", report.corrupted),
      ("examples read to target", lambda r: "-" if r["examples_read_to_target"] is None
       else f"{r['examples_read_to_target'] / 1e6:.2f} M"),
      ("reads per example (budget)", lambda r: "-" if r["reads_per_example"] is None
       else f"{r['reads_per_example']:.1f}")])


def main(argv):
  del argv
  if not _RESULTS.value or not _BUDGET.value or _BUDGET.value <= 0:
    raise app.UsageError(f"--results and a positive --budget are required. Received: "
                         f"--results={_RESULTS.value}, --budget={_BUDGET.value}")
  results = []
  for path in _RESULTS.value:
    with open(path) as file:
      results.append(json.load(file))
  check_settings(results)
  rows = group(results, _NOISE.value)
  candidates = [int(c) for c in _CANDIDATES.value] or [_BUDGET.value]
  print(f"Uniform's mean curve over {len(rows['uniform'])} seeds: the plateau rule (gain of "
        f"the best accuracy over the last quarter < 0.01)")
  checks = plateau_checks(rows["uniform"], candidates)
  for check in checks:
    print(f"  budget {check['budget']:>6,}: best {check['best']:.4f} at step "
          f"{check['best_step']:,}, gain over the last quarter {check['gain_last_window']:+.4f}"
          f" -> {'plateaued' if check['plateaued'] else 'still climbing'}")
  summary = table_rows(rows, _BUDGET.value)
  print(f"\nAt a budget of {_BUDGET.value:,} steps (target: uniform's best mean accuracy, "
        f"{summary[0]['target']:.4f}):")
  print(markdown(summary, _BUDGET.value))
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as file:
      json.dump({"plateau": checks, "budget": _BUDGET.value, "rows": summary}, file, indent=1)


if __name__ == "__main__":
  app.run(main)
