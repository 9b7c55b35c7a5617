"""benchmarks.plateau_table: runs cut at a budget, rows from several files, the plateau check."""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np

from benchmarks import plateau_table
from benchmarks import uniform_runs
from tests.programs import launch
from tfjest import efficiency

_SETTINGS = {"batch_size": 4, "learning_rate": 0.001, "eval_every": 100}


def _run(method, seed, accuracy, score=None, cost=1.0, **extra):
  steps = [100 * i for i in range(len(accuracy))]
  return {"method": method, "score": score, "filter_ratio": 0.8, "seed": seed,
          "oracle_clean": False, "proxy": None, "steps": steps,
          "flops": [s * cost for s in steps], "accuracy": list(accuracy),
          "corrupted_share": [None] + [0.5] * (len(steps) - 1),
          "flops_per_step": {"total": cost}, "super_batch_size": 4 if method == "uniform"
          else 20, "dataset_size": 1000, **extra}


def _uniform(seed):
  # Climbs to 0.5 by step 1000, then flat (+0.001 per evaluation) to step 2000.
  acc = [0.0] + [min(0.05 * i, 0.5) + 0.001 * max(i - 10, 0) + 0.001 * seed
                 for i in range(1, 21)]
  return _run("uniform", seed, acc)


def _jest(seed):
  acc = [0.0] + [min(0.1 * i, 0.6) for i in range(1, 11)]   # runs 1000 steps only
  return _run("jest", seed, acc, score="learnability", cost=2.0)


def _harness(run):  # the fields a data_efficiency (harness) run records about its config
  return {**run, "eval_every": 100, "batch_size": 4, "learning_rate": 0.001}


def _file(runs):
  return {"settings": dict(_SETTINGS), "runs": {
      f"noise=0.5|{r['method']}|{r['score'] or '-'}|f=-|seed={r['seed']}": r for r in runs}}


class PlateauTableTest(absltest.TestCase):

  def test_cut_keeps_the_evaluations_up_to_the_budget(self):
    run = plateau_table.cut(_uniform(0), 1000)
    self.assertEqual(run["steps"][-1], 1000)
    self.assertLen(run["accuracy"], 11)
    self.assertLen(run["corrupted_share"], 11)
    self.assertEqual(run["flops_per_step"], {"total": 1.0})   # not a curve: kept whole

  def test_rows_are_summaries_of_the_cut_runs(self):
    results = [_file([_uniform(s) for s in range(3)]), _file([_jest(s) for s in range(3)])]
    rows = plateau_table.group(results, 0.5)
    self.assertEqual(sorted(rows), ["jest learnability, f=0.8", "uniform"])
    table = plateau_table.table_rows(rows, 1500)
    expected = efficiency.summarize([plateau_table.cut(_jest(s), 1500) for s in range(3)],
                                    [plateau_table.cut(_uniform(s), 1500) for s in range(3)])
    jest = next(r for r in table if r["row"].startswith("jest"))
    self.assertEqual(jest["ran"], 1000)
    for key in ("target", "step_speedup", "compute_speedup", "examples_read_to_target"):
      self.assertEqual(jest[key], expected[key], key)
    # Uniform's best within 1,500 steps, not within its whole 2,000.
    self.assertAlmostEqual(jest["target"], 0.505 + 0.001)
    self.assertIn("(ran 1,000 steps)", plateau_table.markdown(table, 1500))

  def test_plateau_checks_at_several_budgets(self):
    uniform = [_uniform(s) for s in range(2)]
    checks = plateau_table.plateau_checks(uniform, [800, 2000])
    self.assertEqual([c["plateaued"] for c in checks], [False, True])
    mean = efficiency.mean_curve([plateau_table.cut(r, 800) for r in uniform])
    self.assertAlmostEqual(checks[0]["best"], float(np.max(mean[1:])))
    with self.assertRaisesRegex(ValueError, "before the budget 3000"):
      plateau_table.plateau_checks(uniform, [3000])

  def test_refuses_a_row_in_two_files_and_mismatched_settings(self):
    jest = _file([_jest(0)])
    with self.assertRaisesRegex(ValueError, "Two results files hold the row"):
      plateau_table.group([_file([_uniform(0)]), jest, jest], 0.5)
    with self.assertRaisesRegex(ValueError, "No uniform runs"):
      plateau_table.group([jest], 0.5)
    other = _file([_jest(0)])
    other["settings"]["batch_size"] = 8
    with self.assertRaisesRegex(ValueError, "batch_size=8"):
      plateau_table.check_settings([_file([_uniform(0)]), other])

  def test_program_prints_the_check_and_the_table(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    paths = []
    for name, runs in (("u", [_uniform(s) for s in range(2)]), ("j", [_jest(0), _jest(1)])):
      paths.append(os.path.join(directory, f"{name}.json"))
      with open(paths[-1], "w") as file:
        json.dump(_file(runs), file)
    result = launch.run("benchmarks.plateau_table", f"--results={','.join(paths)}",
                        "--budget=2000", "--candidates=800,2000", timeout=300)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn("budget    800:", result.stdout)
    self.assertIn("still climbing", result.stdout)
    self.assertRegex(result.stdout, r"\| jest learnability, f=0.8 \(ran 1,000 steps\) \| 2 \|")


class UniformRunsTest(absltest.TestCase):
  """uniform_runs.load: --uniform_from of benchmarks.rela and benchmarks.dnc."""

  def setUp(self):
    super().setUp()
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    self.path = os.path.join(directory, "results.json")
    results = _file([_harness(_uniform(s)) for s in (1, 0)] + [_harness(_jest(0))])
    results["runs"]["noise=0.0|uniform|-|f=-|seed=0"] = _harness(_uniform(5))
    with open(self.path, "w") as file:
      json.dump(results, file)
    self.config = {"noise": 0.5, "eval_every": 100, "batch_size": 4, "learning_rate": 0.001,
                   "filter_ratio": 0.8}

  def test_loads_uniform_at_the_noise_cut_at_the_budget(self):
    loaded = uniform_runs.load(self.path, budget=1500, **self.config)
    self.assertEqual(loaded["seeds"], [0, 1])
    self.assertEqual(loaded["budget"], 1500)
    self.assertEqual([r["steps"][-1] for r in loaded["runs"]], [1500, 1500])
    self.assertEqual(loaded["runs"][1], plateau_table.cut(_harness(_uniform(1)), 1500))

  def test_refuses_other_configs_and_short_runs(self):
    for change, message in [({"budget": 2100}, "ends at step 2000, before the uniform budget"),
                            ({"budget": 1550}, "not evaluated at step 1550"),
                            ({"eval_every": 50}, "eval_every=100, this program eval_every=50"),
                            ({"batch_size": 64}, "batch_size=4, this program batch_size=64"),
                            ({"filter_ratio": 0.5}, "filter_ratio"),
                            ({"noise": 0.2}, "no uniform run at noise 0.2")]:
      with self.subTest(change=change):
        with self.assertRaisesRegex(ValueError, message):
          uniform_runs.load(self.path, **{"budget": 1000, **self.config, **change})


if __name__ == "__main__":
  absltest.main()
