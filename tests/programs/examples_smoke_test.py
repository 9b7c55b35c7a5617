"""Runs examples.train_reference, examples.demo and the data-efficiency benchmark's smoke configuration as
a user would (subprocesses, tiny dataset in a temporary directory) and checks what they write."""

import json
import glob
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from examples.lib import data
from examples.lib import models  # registers the models for load_model
from tfjest import datasets
from tests.programs import launch

_SIZES = "2000,400,200"  # web, curated, test: the benchmark's --smoke sizes
_TIMEOUT = 240


def _run(module, *flags, fresh=False):
  return launch.run(module, *flags, timeout=_TIMEOUT, fresh=fresh)


class ExamplesSmokeTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.data_dir, ignore_errors=True)
    super().tearDownClass()

  def test_train_reference_saves_a_loadable_model(self):
    path = os.path.join(self.get_temp_dir(), "ref", "reference.keras")
    result = _run("examples.train_reference", f"--data_dir={self.data_dir}",
                  f"--sizes={_SIZES}", "--epochs=1", "--batch_size=16", f"--output={path}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    match = re.search(r"reference zero-shot accuracy: (\d\.\d{3}) recall@1: (\d\.\d{3})",
                      result.stdout)
    self.assertIsNotNone(match, result.stdout)
    self.assertBetween(float(match.group(1)), 0.0, 1.0)
    model = keras.saving.load_model(path)
    self.assertIsInstance(model, models.DualEncoder)
    vocab = datasets.load_vocab(data.vocab_path(
        datasets.make_config(noise=0.5, web_size=2000, curated_size=400, test_size=200),
        self.data_dir))
    self.assertEqual(model.vocab_size, len(vocab))

  def test_demo_prints_the_table_and_writes_the_plot(self):
    out = os.path.join(self.get_temp_dir(), "demo")
    # In a fresh interpreter: the demo imports TensorFlow quietly itself, and this checks that
    # nothing reaches stderr.
    result = _run("examples.demo", f"--data_dir={self.data_dir}", f"--sizes={_SIZES}",
                  "--steps=20", "--selection_steps=10", "--eval_every=5", "--batch_size=8",
                  "--num_chunks=4", "--reference_epochs=1", f"--output_dir={out}", fresh=True)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    columns = r" +uniform +jest \(proxy\) +easy_reference"
    for pattern in (columns,
                    r"steps to reach \d\.\d{3} \(uniform's best\) +\S+ +\S+ +\S+",
                    r"compute speedup \(FLOPs\) +1\.00x +\S+x +\S+x",
                    r"final zero-shot accuracy +\d\.\d{3} +\d\.\d{3} +\d\.\d{3}",
                    r"share of corrupted examples selected +\d\.\d\d +\d\.\d\d +\d\.\d\d",
                    r"steps run +20 +10 +10",
                    # uniform reads 20 x 8 of 2000, the selecting runs 10 x 40
                    r"reads per web example, steps run +0\.1 +0\.2 +0\.2",
                    r"reference cache: computed \(no reference cache at this path\), 2000 examples",
                    r"uniform has (NOT )?plateaued: it gains [-+]\d\.\d{3} over the last quarter",
                    r"jest \(proxy\): step speedup \S+x, compute speedup \S+x"):
      self.assertRegex(result.stdout, pattern)
    # The proxy's scoring and training cost less than the learner's scoring of N = 40 (5x b):
    # without it a step costs (3b + N) / 3b = 2.67x uniform's; the reference alone, cached,
    # costs about uniform's.
    ratio = re.search(r"FLOPs per step \(uniform = 1\) +1\.00 +(\d+\.\d\d) +(\d+\.\d\d)",
                      result.stdout)
    self.assertIsNotNone(ratio, result.stdout)
    self.assertBetween(float(ratio.group(1)), 1.0, 2.0)
    self.assertBetween(float(ratio.group(2)), 1.0, 1.1)
    path = os.path.join(out, "accuracy.png")
    self.assertIn(f"plot: {path}", result.stdout)
    with open(path, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    board = os.path.join(out, "tensorboard")
    self.assertIn(f"tensorboard: tensorboard --logdir {board}", result.stdout)
    self.assertEqual(sorted(os.listdir(board)), ["easy_reference", "jest_proxy"])
    self.assertNotEmpty(glob.glob(os.path.join(board, "jest_proxy", "events.out.tfevents.*")))
    # Quiet: one line per stage; no log lines of TensorFlow, absl or TFDS, no warnings.
    self.assertEqual(result.stderr, "")
    for line in result.stdout.splitlines():
      self.assertNotRegex(line, r"^[IWEF]\d{4} |INFO|WARNING|Warning|[Dd]eprecat|Downloading",
                          line)

  def test_demo_refuses_selection_steps_beyond_the_budget(self):
    result = _run("examples.demo", "--steps=10", "--selection_steps=20")
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("--selection_steps=20, --steps=10", result.stderr)

  def test_benchmark_smoke_writes_json_and_plots_and_resumes(self):
    output = os.path.join(self.get_temp_dir(), "bench", "results.json")
    flags = ["--smoke", f"--data_dir={self.data_dir}", f"--output={output}"]
    result = _run("benchmarks.data_efficiency", *flags)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(output) as f:
      results = json.load(f)
    # 4 configurations x 1 seed. The summaries over several seeds (mean, spread, seeds that
    # reach the target) are checked in-process: tests/efficiency_test.py and
    # tests/programs/benchmarks_test.py (ReportTest, `report.per_seed`).
    self.assertLen(results["runs"], 4)
    methods = {(row["method"], row["score"]) for row in results["summary"]}
    self.assertEqual(methods, {("uniform", None), ("oracle_clean", None),
                               ("jest", "learnability"), ("independent", "hard_learner")})
    self.assertIn("reference cache: computed (no reference cache at this path), 2000 examples",
                  result.stdout)
    for key, run in results["runs"].items():
      # The scored runs read the cached reference embeddings: no reference FLOPs per step.
      self.assertEqual(run["reference_cached"], "|jest|" in key, key)
      self.assertEqual(run["flops_per_step"]["reference_scoring"], 0, key)
    for row in results["summary"]:
      self.assertEqual(row["seeds"], 1)
      self.assertIn("step_speedup", row)
      self.assertIn("compute_speedup", row)
    # Without a proxy the learner scores N = 5b itself: (3b + N) / 3b = 2.67x a uniform step
    # (the demo's `--proxy_filters=`), the last column of its row.
    self.assertRegex(result.stdout, r"\| 0\.5 \| jest \| learnability \| 0\.8 \|.* \| 2\.67 \|\n")
    with open(os.path.join(os.path.dirname(output), "noise_0.5.png"), "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    # Started again, it finds every run done and only reports.
    again = _run("benchmarks.data_efficiency", *flags)
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertIn("resuming: 4 runs already in", again.stdout)
    self.assertIn("reference cache: reused, 2000 examples", again.stdout)
    self.assertNotRegex(again.stdout, r"\[\d+/\d+\]")
    # Other settings never mix with these results.
    other = _run("benchmarks.data_efficiency", *flags, "--temperature=0.5")
    self.assertNotEqual(other.returncode, 0)
    self.assertIn("holds results of other settings", other.stderr)


if __name__ == "__main__":
  tf.test.main()
