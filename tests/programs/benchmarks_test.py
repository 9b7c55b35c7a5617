"""Runs each benchmark as a user would, with tiny flags, and checks what it prints.

As their docstrings say, `python -m benchmarks.<name>` from the repository root.

The figures themselves are in BENCHMARKS.md; this only keeps the programs from rotting (and
runs the oracle check of selection_scale: dense and streaming selections must agree).
"""

import json
import os
import re

import tensorflow as tf

from benchmarks import report
from tests.programs import launch


def _run(name, *flags):
  return launch.run(f"benchmarks.{name}", *flags)


class BenchmarksTest(tf.test.TestCase):

  def test_cheap_scoring(self):
    # Without the multi-resolution learner (`--train_resolutions=`): its rows are scored as the
    # full-resolution learner's are, and its training (`tfjest.multi_resolution` in the
    # harness) is checked by tests/programs/harness_test.py
    # (test_cheaper_learner_scoring_and_multi_resolution_training).
    output = os.path.join(self.get_temp_dir(), "cheap.json")
    result = _run("cheap_scoring", "--sizes=2000,400,200", "--steps=10", "--super_batches=2",
                  "--batch_size=16", "--num_chunks=4", "--reference_epochs=1",
                  "--train_resolutions=",
                  f"--data_dir={os.path.join(self.get_temp_dir(), 'tfds')}",
                  f"--output={output}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(output) as f:
      rows = json.load(f)["rows"]
    self.assertEqual([(r["trained_at"], r["scoring"]) for r in rows],
                     [("full", s) for s in ("full 32", "view 16", "view 8", "uniform")] +
                     [("full, proxy 2/4/8", s) for s in ("full 32", "proxy", "uniform")])
    for r in rows:
      # Lower resolution scores for less; full-resolution scoring agrees with itself.
      self.assertBetween(r["corrupted"], 0.0, 1.0)
      if r["scoring"] == "full 32":
        self.assertEqual((r["overlap"], r["learner_scoring_vs_full"]), (1.0, 1.0))
      elif r["scoring"] == "uniform":
        self.assertEqual(r["learner_scoring_vs_full"], 0.0)
        self.assertAllClose(r["cost_per_step"], 1.0, atol=1e-3)  # a few ops to draw keys
      else:
        self.assertLess(r["learner_scoring_vs_full"], 0.6)
    self.assertRegex(result.stdout, r"view 8 +\d\.\d\d +0\.\d\d")

  def test_accelerator_check_smoke(self):
    # On CPU: the pipeline is accepted, attach keeps it, and the whole-step XLA program records
    # its statistics; on a GPU the same program checks the opposite placement.
    result = _run("accelerator_check", "--smoke")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertRegex(result.stdout, r"\[1\] placement rule: learner variables on \S+CPU:0 "
                     r"\(host\); attach\(placement='auto'\) chose 'pipeline'; the plain "
                     r"selector in the pipeline was accepted")
    self.assertRegex(result.stdout, r"\[2\] JEST selection of b=64 of N=256, d=16, K=4, XLA: "
                     r"first call \d+\.\d\d s, median \d+\.\d+ s")
    self.assertRegex(result.stdout, r"ratio \(b\)/\(a\) = \d+\.\d+")
    self.assertIn("statistics of the whole-step XLA program: batches=3, read=240, selected=48 "
                  "for 3 steps: recorded", result.stdout)
    self.assertRegex(result.stdout, r"\n  train step +\d+\.\d ms wall")
    self.assertRegex(result.stdout, r"\n  pipeline +\d+\.\d ms wall")
    self.assertIn("checks: all passed", result.stdout)

  def test_store_service_shards(self):
    # A build on 2 in-process tf.data service workers from 2 and 3 input shards, as a list and
    # as tfjest.InputShards: one line per count.
    for lazy in ("--nolazy", "--lazy"):
      result = _run("store_service_shards", "--shards=2,3", "--per_shard=8", "--width=4", lazy)
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      kind = "InputShards" if lazy == "--lazy" else "list"
      self.assertRegex(result.stdout, rf"S=2 \({kind}\): build \d+\.\d s .*peak RSS \d+\.\d\d GB")
      self.assertRegex(result.stdout, rf"S=3 \({kind}\): build \d+\.\d s")

  def test_store_end_to_end_smoke(self):
    # Every phase, the servers in their own processes; the two joins pick the same ids.
    work = os.path.join(self.get_temp_dir(), "store_e2e")
    result = _run("store_end_to_end", "--smoke", f"--work_dir={work}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(work, "smoke.json")) as f:
      results = json.load(f)
    phases = results["phases"]
    self.assertEqual(sorted(phases), sorted(["data", "reference", "build", "fit",
                                             "picks_streamed", "picks_in_memory"]))
    self.assertEqual(phases["data"]["examples"], 3400)
    build = phases["build"]
    self.assertEqual((build["examples"], build["input_shards"]), (3000, 2))
    self.assertGreater(build["disk_bytes_per_example"], 8 + 8 + 2 * 64 * 4)
    self.assertEqual(sorted(build["servers"]), ["dispatcher", "worker 0", "worker 1"])
    fit = phases["fit"]
    self.assertEqual((fit["steps"], fit["super_batch_size"]), (3, 80))
    self.assertGreaterEqual(fit["stats"]["batches"], 3)  # the pipeline may read ahead
    self.assertTrue(fit["read_is_n_per_batch"] and fit["selected_is_b_per_batch"])
    # 1,000 examples: 12 super-batches of 80 (40 left over), each read by both joins.
    for kind in ("streamed", "in_memory"):
      stats = phases[f"picks_{kind}"]["stats"]
      self.assertEqual((stats["batches"], stats["read"], stats["left_over"]), (12, 1000, 40))
    self.assertEqual(results["same_picks"], {
        "identical": True, "super_batches": 12, "identical_super_batches": 12,
        "examples_selected": 12 * 16, "distinct_ids": 12 * 16, "first_difference": None})
    self.assertIn("| same picks | identical | 12 of 12 super-batches identical", result.stdout)

  def test_selection_scale(self):
    result = _run("selection_scale", "--sizes=1024", "--oracle_sizes=96,160",
                  "--repeats=1", "--oracle_steps=2")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("N=1024: N (1 - f) = 102.4 is not a multiple of K=16; using b=96",
                  result.stdout)
    self.assertIn("N=  160 b=  16: 2/2 steps with identical indices", result.stdout)
    self.assertRegex(result.stdout, r"target N=1024: time met .* peak RSS met .* oracle "
                     r"identical")

  def test_step_overhead(self):
    result = _run("step_overhead", "--batch_size=16", "--num_chunks=4", "--image_size=16",
                  "--examples=400", "--steps=2", "--warmup=1", "--rounds=1")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertRegex(result.stdout, r"ratio \(b\)/\(a\) = \d+\.\d+")
    for part in ("learner scoring forward", "cache join", "selection maths", "gather b of N",
                 "training step", "pipeline"):
      self.assertIn(part, result.stdout)
    self.assertRegex(result.stdout, r"reference scoring 0\.00 G")

  def test_summaries_overhead(self):
    result = _run("summaries_overhead", "--batch_size=16", "--num_chunks=4", "--image_size=16",
                  "--every=2", "--steps=4", "--warmup=1", "--rounds=1")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertRegex(result.stdout, r"overhead \(b\)/\(a\) - 1 = [-+]\d+\.\d\d%")
    self.assertRegex(result.stdout, r"writing: [1-9]\d* writes, \d+\.\d ms each")

  def test_selection_overhead(self):
    output = os.path.join(self.get_temp_dir(), "overhead.json")
    result = _run("selection_overhead", "--batch_size=32", "--num_chunks=4", "--warmup=1",
                  "--steps=2", "--repeats=1", "--configs=plain,pipeline,mirrored_local",
                  f"--output={output}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    # The table: median, q25, q75 per configuration, then the overhead against plain.
    rows = dict(re.findall(r"^ *(\w+)(?: +\d+\.\d){3}  (.*)$", result.stdout, re.M))
    self.assertEqual(set(rows), {"plain", "pipeline", "mirrored_local"}, result.stdout)
    self.assertRegex(rows["pipeline"], r"^ *[+-]\d+\.\d ms \(\d+\.\d\dx\)$")
    with open(output) as f:
      figures = json.load(f)["ms_per_step"]
    # Every timed step of every run, the warm-up left out.
    self.assertEqual({name: row["steps"] for name, row in figures.items()},
                     {"plain": 2, "pipeline": 2, "mirrored_local": 2})

  def test_scoring_view(self):
    result = _run("scoring_view", "--batch_size=16", "--num_chunks=4",
                  "--super_batches=2", "--clean_examples=256", "--reference_epochs=1",
                  "--learner_epochs=1", "--scores=learnability", "--filters=4,8,8")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    rows = dict(re.findall(r"^(full 32x32|view 16x16|view 8x8|uniform) +[\d.]+ +([\d.]+)",
                           result.stdout, re.M))
    shares = [float(rows[k]) for k in ("full 32x32", "view 16x16", "view 8x8", "uniform")]
    self.assertEqual(shares[0], 1.0)  # scoring FLOPs relative to full resolution
    self.assertTrue(shares[0] > shares[1] > shares[2] > shares[3] == 0.0, shares)


def _curve(accuracy):
  steps = [10 * i for i in range(len(accuracy))]
  return {"steps": steps, "flops": steps, "accuracy": accuracy,
          "corrupted_share": [0.5] * len(accuracy)}


class ReportTest(tf.test.TestCase):
  """benchmarks.report, in this process: summaries and a table from a tiny results dict."""

  def test_table_from_a_tiny_results_dict(self):
    results = {"runs": {"uniform|seed=0": _curve([0.0, 0.2, 0.4]),
                        "uniform|seed=1": _curve([0.0, 0.2, 0.4]),
                        "jest|seed=0": _curve([0.0, 0.4, 0.4]),
                        "jest|seed=1": _curve([0.0, 0.2, 0.4]),
                        "short|seed=0": _curve([0.0, 0.1])}}
    summary = report.summaries(results, ["uniform", "jest", "short", "absent"],
                               extra=lambda row, runs: {"runs": len(runs)})
    self.assertEqual([(r["row"], r["runs"], r["ran"], r["budget"]) for r in summary],
                     [("uniform", 2, 20, 20), ("jest", 2, 20, 20), ("short", 1, 10, 20)])
    self.assertEqual(report.target_line(summary),
                     "target (uniform's best mean accuracy): 0.4000")
    table = report.table(summary, [
        ("row", lambda r: report.row_name(r, r["budget"])),
        ("step speedup", lambda r: report.step_speedup(r, r["ran"])),
        ("per seed (reached)", report.per_seed),
        ("final accuracy", report.final_accuracy),
        ("cost/step", report.cost)])
    self.assertEqual(table.splitlines(), [
        "| row | step speedup | per seed (reached) | final accuracy | cost/step |",
        "|---|---|---|---|---|",
        "| uniform | 1.00x | 1.00 ± 0.00 (2/2) | 0.400 ± 0.000 | - |",
        "| jest | 1.00x | 1.50 ± 0.50 (2/2) | 0.400 ± 0.000 | - |",  # of the mean curve
        "| short (ran 10 steps) | - (not reached within 10 steps) | - (0/1) "
        "| 0.100 ± 0.000 | - |"])

  def test_uniform_read_from_elsewhere_replaces_the_files_own(self):
    uniform = {"path": "u.json", "budget": 30, "runs": [_curve([0.0, 0.1, 0.2, 0.3])]}
    results = {"uniform_from": uniform, "runs": {"uniform|seed=0": _curve([0.0, 0.9]),
                                                 "jest|seed=0": _curve([0.0, 0.3])}}
    summary = report.summaries(results, ["uniform", "jest"])
    self.assertEqual([(r["row"], r["ran"], r["budget"]) for r in summary],
                     [("uniform", 30, 30), ("jest", 10, 30)])
    self.assertEqual(report.target_line(summary, uniform),
                     "target (uniform's best mean accuracy): 0.3000 (uniform: 1 seeds of "
                     "u.json, cut at 30 steps)")

  def test_no_uniform_no_rows_and_no_report(self):
    path = os.path.join(self.get_temp_dir(), "results.json")
    results = {"runs": {"jest|seed=0": _curve([0.0, 0.3])}}
    self.assertEqual(report.summaries(results, ["uniform", "jest"]), [])
    report.report(path, results, [], lambda rows: self.fail("no table without rows"))
    with open(path) as f:
      self.assertEqual(json.load(f)["summary"], [])

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "A table needs at least one column"):
      report.table([], [])
    self.assertEqual(report.plus_minus({"mean": None, "std": None}, ".2f"), "-")
    with self.assertRaises(KeyError):  # a row without the figure its column shows
      report.table([{"row": "x"}], [("cost/step", report.cost)])


if __name__ == "__main__":
  tf.test.main()
