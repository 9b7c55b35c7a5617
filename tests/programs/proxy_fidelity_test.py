"""The proxy's fidelity curve (`benchmarks.cheap_scoring --fidelity_every`), with tiny flags.

As its docstring says, `python -m benchmarks.cheap_scoring --fidelity_every=K` from the
repository root, on a small captions config built in a temporary TFDS directory. The figures are
in BENCHMARKS.md; this keeps the program from rotting and checks what its file holds.
"""

import json
import os

import tensorflow as tf

from tests.programs import launch


class ProxyFidelityTest(tf.test.TestCase):

  def test_curve(self):
    output = os.path.join(self.get_temp_dir(), "out", "results.json")
    flags = ["--fidelity_every=2", "--steps=4", "--eval_every=2", "--seeds=1",
             "--sizes=400,64,32", "--batch_size=8", "--num_chunks=2", "--reference_epochs=1",
             f"--data_dir={os.path.join(self.get_temp_dir(), 'tfds')}", f"--output={output}"]
    result = launch.run("benchmarks.cheap_scoring", *flags)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(output) as f:
      results = json.load(f)
    self.assertEqual(sorted(results["runs"]), ["learner|seed=0", "proxy|seed=0"])
    proxy, learner = results["runs"]["proxy|seed=0"], results["runs"]["learner|seed=0"]
    for run in (proxy, learner):
      # A check every 2 steps (read back from the event files), each a share and a correlation.
      self.assertLen(run["fidelity"], 2)
      for check in run["fidelity"]:
        self.assertBetween(check["overlap"], 0.0, 1.0)
        self.assertBetween(check["rank_correlation"], -1.0, 1.0)
      # The checks cost a forward pass of the learner over a super-batch every 2 steps.
      self.assertGreater(run["cost_per_step_with_checks"], run["cost_per_step"])
      self.assertEqual(run["steps"], [0, 2, 4])
    # The identity view scores exactly as the learner: its two scores rank alike.
    for check in learner["fidelity"]:
      self.assertAllClose(check["rank_correlation"], 1.0, atol=1e-6)
    self.assertLess(proxy["cost_per_step"], learner["cost_per_step"])
    self.assertEqual([r["step"] for r in results["summary"]], [2, 4])
    self.assertIn("| step | proxy overlap | proxy rank corr. | learner overlap (ceiling) |",
                  result.stdout)
    self.assertRegex(result.stdout, r"proxy: cost/step 1\.\d{3}, with the checks \d\.\d{3}")


if __name__ == "__main__":
  tf.test.main()
