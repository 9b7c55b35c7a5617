"""Runs the Divide and Contrast programs as a user would, with tiny flags.

`python -m examples.dnc` (the recipe: base, k-means, experts, distillation) and
`python -m benchmarks.dnc --smoke` (its rows against uniform and JEST), from the repository
root, on a small captions config built in a temporary TFDS directory. The figures are in
BENCHMARKS.md; this keeps the programs from rotting and checks what they write.
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from tests.programs import launch


def _run(module, *flags):
  return launch.run(module, *flags, timeout=800)


class DnCProgramsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()  # both programs build the small config here once

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.data_dir, ignore_errors=True)
    super().tearDownClass()

  def test_example_runs_the_recipe(self):
    out = os.path.join(self.get_temp_dir(), "dnc")
    result = _run("examples.dnc", f"--data_dir={self.data_dir}", f"--output_dir={out}",
                  "--sizes=2000,400,200", "--reference_epochs=1", "--num_clusters=2",
                  "--expert_steps=3", "--steps=4", "--eval_every=2", "--batch_size=16")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertRegex(result.stdout, r"clusters: computed \(no clusters at this path\), k=2, "
                     r"sizes \[\d+, \d+\]")
    self.assertRegex(result.stdout, r"expert 1 \(\d+ examples\): 3 steps, accuracy 0\.\d+")
    self.assertRegex(result.stdout, r"distilled student: accuracy 0\.\d+ after 4 steps")
    self.assertTrue(os.path.exists(os.path.join(out, "clusters", "metadata.json")))

  def test_benchmark_smoke_writes_every_row(self):
    output = os.path.join(self.get_temp_dir(), "bench", "results.json")
    result = _run("benchmarks.dnc", "--smoke", f"--data_dir={self.data_dir}",
                  f"--output={output}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(output) as f:
      results = json.load(f)
    runs = results["runs"]
    self.assertCountEqual(runs, [f"{row}|seed=0" for row in
                                 ("uniform", "clusters", "jest", "clusters+jest", "dnc",
                                  "distil_base")])
    for key, run in runs.items():
      self.assertEqual(run["steps"], [0, 5, 10], key)
      self.assertLen(run["accuracy"], 3)
    for row in ("clusters", "clusters+jest"):
      stats = runs[f"{row}|seed=0"]["cluster_stats"]
      self.assertGreaterEqual(stats["emitted"], 10 * 80)  # 10 super-batches of N = 16 / 0.2
      self.assertLessEqual(stats["emitted"] + stats["left_over"], stats["read"])
    dnc = runs["dnc|seed=0"]
    self.assertGreater(dnc["dnc_flops"]["once"], 0)
    self.assertEqual(dnc["flops"][0], dnc["dnc_flops"]["once"])  # the experts are paid first
    self.assertEqual(runs["distil_base|seed=0"]["flops"][0], 0.0)  # no expert to pay for
    self.assertEqual([r["row"] for r in results["summary"]],
                     ["uniform", "clusters", "jest", "clusters+jest", "dnc", "distil_base"])
    self.assertIn("| clusters+jest | 1 |", result.stdout)

  def test_rows_flag_refuses_unknown_rows(self):
    result = _run("benchmarks.dnc", "--rows=dnc,experts", f"--data_dir={self.data_dir}",
                  f"--output={os.path.join(self.get_temp_dir(), 'rows', 'results.json')}")
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("--rows names unknown rows ['experts']", result.stderr)

  def test_table_marks_rows_shorter_than_uniform(self):
    # In a child process (forked from launch's fork server, TensorFlow already imported):
    # benchmarks.dnc defines absl flags that other benchmark modules imported by the test
    # suite's process (benchmarks.plateau_table) define too.
    script = """if True:
      import json
      from benchmarks import dnc

      def run(accuracy):
        steps = [10 * i for i in range(len(accuracy))]
        return {"steps": steps, "flops": steps, "accuracy": accuracy}

      results = {"uniform_from": {"runs": [run([0.0, 0.2, 0.4, 0.5])]}, "runs": {
          "clusters|seed=0": run([0.0, 0.1, 0.2]), "dnc|seed=0": run([0.0, 0.5, 0.5])}}
      summary = dnc._summaries({}, results)
      print(json.dumps([(r["row"], r["ran"], r["budget"]) for r in summary]))
      print(dnc._table(summary))
    """
    result = launch.run_code(script, timeout=300)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    lines = result.stdout.splitlines()
    self.assertEqual(json.loads(lines[0]), [["uniform", 30, 30], ["clusters", 20, 30],
                                            ["dnc", 20, 30]])  # uniform read, 30 steps
    table = "\n".join(lines[1:])
    self.assertIn("| uniform | 1 | 1.00x |", table)
    self.assertIn("| clusters (ran 20 steps) | 1 | - (not reached within 20 steps) |", table)
    self.assertIn("| dnc (ran 20 steps) | 1 | 3.00x |", table)

if __name__ == "__main__":
  tf.test.main()
