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

    again = _run(*flags)
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertIn("resuming: 4 runs", again.stdout)
    self.assertIn("prior targets (random_prior): reused", again.stdout)
    self.assertNotIn("[", "".join(l for l in again.stdout.splitlines() if "seed=0:" in l))

    # --rows and --uniform_from: only rela/random runs, against uniform read from a
    # data_efficiency-format file (its run is the same run: the same harness config and seed).
    uniform_file = os.path.join(directory, "uniform.json")
    with open(uniform_file, "w") as f:
      json.dump({"settings": {}, "runs": {"noise=0.5|uniform|-|f=-|seed=0":
                                          runs["uniform|seed=0"]}}, f)
    only = os.path.join(directory, "out", "only.json")
    with open(only, "w") as f:  # the same priors (reused), no runs yet
      json.dump({**results, "runs": {}, "summary": []}, f)
    third = _run(flags[0], f"--output={only}", "--rows=rela/random",
                 f"--uniform_from={uniform_file}")
    self.assertEqual(third.returncode, 0, third.stderr[-3000:])
    with open(only) as f:
      partial = json.load(f)
    self.assertEqual(list(partial["runs"]), ["rela/random|seed=0"])
    self.assertEqual(partial["runs"]["rela/random|seed=0"]["accuracy"], rela["accuracy"])
    self.assertEqual(partial["uniform_from"]["seeds"], [0])
    self.assertEqual(partial["summary"], [r for r in results["summary"]
                                          if r["row"] in ("uniform", "rela/random")])
    self.assertIn(f"uniform: 1 seeds of {uniform_file}, cut at 20 steps", third.stdout)
    bad = _run(flags[0], f"--output={only}", "--rows=rela/other")
    self.assertNotEqual(bad.returncode, 0)
    self.assertIn("--rows names unknown rows ['rela/other']", bad.stderr)


if __name__ == "__main__":
  tf.test.main()
