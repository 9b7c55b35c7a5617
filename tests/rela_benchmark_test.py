"""benchmarks/rela.py --smoke runs as a user would run it, writes its rows and resumes."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import tensorflow as tf

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT = 600


def _run(*flags):
  return subprocess.run([sys.executable, "-m", "benchmarks.rela", "--smoke", *flags],
                        capture_output=True, text=True, timeout=_TIMEOUT, check=False, cwd=_ROOT)


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


if __name__ == "__main__":
  tf.test.main()
