"""benchmarks/rela.py --smoke runs as a user would run it, writes its rows and resumes."""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from tests.programs import launch

_TIMEOUT = 600


def _run(*flags):
  return launch.run("benchmarks.rela", "--smoke", *flags, timeout=_TIMEOUT)


class RelaBenchmarkTest(tf.test.TestCase):

  def test_smoke_rows_and_resume(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    flags = (f"--data_dir={os.path.join(directory, 'tfds')}",
             f"--output={os.path.join(directory, 'out', 'results.json')}")
    result = _run(*flags)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(directory, "out", "results.json")) as f:
      results = json.load(f)
    rows = [r["row"] for r in results["summary"]]
    self.assertEqual(rows, ["uniform", "jest", "rela/random", "rela+jest/random"])
    runs = results["runs"]
    self.assertLen(runs, 4)
    rela = runs["rela/random|seed=0"]
    self.assertEqual(rela["rela"]["switch_step"], 2)   # 0.1 of 20 steps
    pass_flops = results["priors"]["random"]["pass_flops"]
    self.assertGreater(pass_flops, 0)
    # The prior's one-off pass counts from step 0; otherwise a ReLA step costs uniform's.
    self.assertAllClose(rela["flops"][0], pass_flops)
    self.assertAllClose(rela["flops"][-1] - pass_flops, runs["uniform|seed=0"]["flops"][-1])
    self.assertIn("| rela+jest/random |", result.stdout)

    # Started again on a file that holds some of the runs (jest), with --rows and
    # --uniform_from: it resumes (jest is not run again, the priors' targets are reused), runs
    # only rela/random of the rows left (not rela+jest/random) against uniform read from a
    # data_efficiency-format file (its run is the same run: the same harness config and seed),
    # and the rerun of rela/random gives the first run's curve.
    uniform_file = os.path.join(directory, "uniform.json")
    with open(uniform_file, "w") as f:
      json.dump({"settings": {}, "runs": {"noise=0.5|uniform|-|f=-|seed=0":
                                          runs["uniform|seed=0"]}}, f)
    only = os.path.join(directory, "out", "only.json")
    with open(only, "w") as f:  # the same priors (reused), the jest run only
      json.dump({**results, "runs": {"jest|seed=0": runs["jest|seed=0"]}, "summary": []}, f)
    again = _run(flags[0], f"--output={only}", "--rows=jest,rela/random",
                 f"--uniform_from={uniform_file}")
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertIn("resuming: 1 runs", again.stdout)
    self.assertIn("prior targets (random_prior): reused", again.stdout)
    run_lines = [l for l in again.stdout.splitlines() if "seed=0:" in l]
    self.assertLen(run_lines, 1, again.stdout)  # one run: rela/random
    self.assertIn("rela/random|seed=0", run_lines[0])
    with open(only) as f:
      partial = json.load(f)
    self.assertCountEqual(partial["runs"], ["jest|seed=0", "rela/random|seed=0"])
    self.assertEqual(partial["runs"]["rela/random|seed=0"]["accuracy"], rela["accuracy"])
    self.assertEqual(partial["uniform_from"]["seeds"], [0])
    self.assertEqual(partial["summary"], [r for r in results["summary"]
                                          if r["row"] in ("uniform", "jest", "rela/random")])
    self.assertIn(f"uniform: 1 seeds of {uniform_file}, cut at 20 steps", again.stdout)
    bad = _run(flags[0], f"--output={only}", "--rows=rela/other")
    self.assertNotEqual(bad.returncode, 0)
    self.assertIn("--rows names unknown rows ['rela/other']", bad.stderr)


if __name__ == "__main__":
  tf.test.main()
