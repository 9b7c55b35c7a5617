r"""Cheap learner scoring on the captions data: what each lever saves, and what it costs.

The learner of the data-efficiency benchmark (`examples.lib.models.DualEncoder`) trains with JEST
(learnability, f = 0.8, the reference cached) for `--steps` steps, once at full resolution and
once on a mix of resolutions (`--train_resolutions`, `tfjest.multi_resolution`, Flexi-JEST),
and once with an online proxy (`--proxy_filters`, `tfjest.OnlineProxy`, Bad Students) scoring
for it (either flag empty: no such learner). Then, models frozen, JEST selects from the same `--super_batches` fresh web super-batches
with the learner scoring the full 32 x 32 images and each lower `--resolutions` (a scoring view),
or the proxy scoring (its learner's own full-resolution scores are the yardstick), and uniform
selects as the baseline. For each it reports:

* cost/step: the FLOPs of a training step with that scoring, uniform's step = 1 (docs/SPEC.md
  §7; the reference is cached, so it costs 0);
* corrupted: the share of corrupted web examples among the selected ones (input rate: noise);
* s(B) full: the mean batch score of the chosen batches under the *full-resolution* learnability
  scores (what a full-resolution selection maximises; higher is better);
* overlap: the share of the chosen examples that full-resolution scoring also chooses.

    python -m benchmarks.cheap_scoring --output=out/cheap_scoring.json

About 8 minutes on 2 CPU cores at the defaults (three 2000-step learners).

With `--fidelity_every=K`, the proxy's fidelity over training instead (issue 24): for each of
`--seeds` seeds, a JEST learner trains `--steps` steps with the proxy scoring for it and another
with the learner scoring itself, both with `tfjest.SelectionStatsCallback(every_n_steps=K)`
writing TensorBoard summaries under `<output dir>/tensorboard/`. Every K steps the learner
scores the sampled super-batch at full resolution: `overlap` (the share of the step's picks that
are among the learner's own top scores) and the rank correlation of the two scores. The
learner-scoring run scores through an identity view (its scoring resolution set to the full
32), so it gets the same check: its overlap is the ceiling of the measure (joint selection is
compared through per-example scores, so even the learner's own picks are not all in its
per-example top). `--fidelity_rows` runs some of the two only (the proxy's seeds first). Each
run is written to `--output` as soon as it ends (started again with the same flags, the file
resumes); a table of the curve every `--eval_every` steps (mean ± sd over seeds, fidelity
averaged over the window's checks) and the cost per step (FLOPs, uniform's step = 1, with and
without the checks) are printed.

    python -m benchmarks.cheap_scoring --fidelity_every=100 --steps=5000 --eval_every=500 \
      --seeds=3 --output=out/proxy_fidelity/results.json
"""

import glob
import json
import os
import shutil

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import summaries as summaries_lib
from benchmarks import models as bench_models
from benchmarks import report
from benchmarks import results_file
from examples.lib import data
from examples.lib import harness
from examples.lib import reference as reference_lib
from examples.lib import tasks

_NOISE = flags.DEFINE_float("noise", 0.5, "Web noise level (a registered config).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS' own, ~/tensorflow_datasets).")
_SIZES = flags.DEFINE_list("sizes", None, "web,curated,test sizes of a small config (tests).")
_STEPS = flags.DEFINE_integer("steps", 2000, "JEST training steps of each learner.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "b.")
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "f.")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "K.")
_SUPER_BATCHES = flags.DEFINE_integer("super_batches", 20, "Super-batches selected per row.")
_RESOLUTIONS = flags.DEFINE_list("resolutions", ["16", "8"], "Lower scoring resolutions.")
_TRAIN_RESOLUTIONS = flags.DEFINE_list("train_resolutions", ["32", "16"],
                                       "The multi-resolution learner's training sides "
                                       "(empty: no multi-resolution learner).")
_PROXY = flags.DEFINE_list("proxy_filters", ["2", "4", "8"],
                          "The proxy's convolution widths (empty: no proxy learner).")
_PROXY_WIDTH = flags.DEFINE_integer("proxy_width", 16, "The proxy's embedding width.")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", reference_lib.EPOCHS,
                                   "Reference epochs on curated.")
_REFERENCE = flags.DEFINE_string("reference_path", "", "A saved reference to use instead.")
_OUTPUT = flags.DEFINE_string("output", "", "Write the rows here as JSON.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the learners, the stream and the selection.")
_FIDELITY_EVERY = flags.DEFINE_integer(
    "fidelity_every", 0, "Instead of the levers' table: the proxy's fidelity curve over "
    "training, checked every this many steps (0: off; see the docstring).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 500,
                                   "With --fidelity_every: steps between evaluations.")
_SEEDS = flags.DEFINE_integer("seeds", 3,
                              "With --fidelity_every: seeds --seed, ..., --seed + seeds - 1.")
_FIDELITY_ROWS = flags.DEFINE_list(
    "fidelity_rows", ["proxy", "learner"], "With --fidelity_every: the runs of each seed, "
    "proxy scoring and learner scoring (the proxy's seeds first).")


def _rows(learner, task, cache, super_batches, n, b, proxy=None):
  """One row per scoring of the frozen learner (or its `proxy`) over the same super-batches."""
  stream = tf.data.Dataset.from_tensor_slices(super_batches)
  batches = _as_batches(super_batches, n)
  full_scores = [tfjest.PairwiseScores(
      "learnability", bench_models.embeddings(learner, sb[0]), cache.outputs_for(sb, "id"))
                 for sb in batches]
  # Where each id sits in its super-batch (the batch score indexes positions).
  positions = [{int(i): p for p, i in enumerate(sb[1]["id"].numpy())} for sb in batches]
  uniform_cost = None
  rows, chosen_full = [], None
  if proxy is None:
    views = [("full 32", None)] + [(f"view {r}", int(r)) for r in _RESOLUTIONS.value]
  else:
    views = [("full 32", None), ("proxy", None)]
  for name, resolution in views + [("uniform", None)]:
    method = "uniform" if name == "uniform" else "jest"
    kwargs = dict(reference_cache=cache if method == "jest" else None,
                  id_key="id" if method == "jest" else None, batch_size=b, super_batch_size=n,
                  num_chunks=_CHUNKS.value, seed=_SEED.value, method=method,
                  scoring_view=data.lower_resolution(resolution) if resolution else None)
    # The proxy scores in the learner's place; the cost is that of a step with the proxy.
    selector = tfjest.select(learner=proxy if name == "proxy" else learner, **kwargs)
    picks, corrupted = [], []
    for t, batch in enumerate(stream.apply(selector)):
      corrupted.append(batch[1]["corruption"].numpy() != 0)
      picks.append([positions[t][int(i)] for i in batch[1]["id"].numpy()])
    costed = selector
    if name == "proxy":
      costed = tfjest.select(learner=learner, proxy=tfjest.OnlineProxy(
          proxy, optimizer=keras.optimizers.Adam()), **kwargs)
      stream.apply(costed)  # traced, not run: the cost needs the elements' structure
    cost = costed.step_cost()
    quality = [float(tfjest.batch_score(full_scores[t], tf.constant(p, tf.int32)))
               for t, p in enumerate(picks[:len(batches)])]
    if uniform_cost is None:
      uniform_cost = cost.training
    chosen = [set(p) for p in picks[:len(batches)]]
    if chosen_full is None:
      chosen_full = chosen
    overlap = np.mean([len(c & f) / len(c) for c, f in zip(chosen, chosen_full)])
    rows.append({"scoring": name, "cost_per_step": cost.total / uniform_cost,
                 "learner_scoring_vs_full": None, "learner_scoring_flops": cost.learner_scoring,
                 "corrupted": float(np.mean(np.concatenate(corrupted))),
                 "batch_score_full": float(np.mean(quality)), "overlap": float(overlap)})
  full_flops = rows[0]["learner_scoring_flops"]
  for row in rows:
    row["learner_scoring_vs_full"] = row["learner_scoring_flops"] / full_flops
  return rows


def _as_batches(super_batches, n):
  count = len(super_batches[1]["id"]) // n
  return [tf.nest.map_structure(lambda a, t=t: tf.constant(a[t * n:(t + 1) * n]),
                                super_batches) for t in range(count)]


def _output() -> str:
  """Where the results go (`--output`; the fidelity curve writes to a default file)."""
  default = "out/proxy_fidelity/results.json" if _FIDELITY_EVERY.value else "out/cheap_scoring.json"
  return _OUTPUT.value or default


_TAGS = {"overlap": "selection_fidelity_overlap",
         "rank_correlation": "selection_fidelity_rank_correlation"}


def _fidelity_checks(log_dir):
  """`[{"step", "overlap", "rank_correlation"}]`, one per check, from the events in `log_dir`."""
  checks = {}
  for path in sorted(glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"),
                               recursive=True)):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        for key, tag in _TAGS.items():
          if value.tag == tag:
            checks.setdefault(int(event.step), {})[key] = float(tf.make_ndarray(value.tensor))
  return [{"step": step, **values} for step, values in sorted(checks.items())]


def _fidelity_run(row, seed, task, reference, cache, log_dir):
  """One JEST learner, the proxy (`row="proxy"`) or the learner scoring, with its checks."""
  config = harness.RunConfig(
      method="jest", score="learnability", batch_size=_BATCH.value, filter_ratio=_RATIO.value,
      steps=_STEPS.value, eval_every=_EVAL_EVERY.value, seed=seed, num_chunks=_CHUNKS.value,
      proxy_filters=[int(f) for f in _PROXY.value] if row == "proxy" else None,
      proxy_width=_PROXY_WIDTH.value,
      # The identity view: the learner scores as without one, and its own picks get the check.
      scoring_resolution=None if row == "proxy" else data.IMAGE_SIZE)
  shutil.rmtree(log_dir, ignore_errors=True)  # a run stopped before its end starts again
  _, run = harness.train(config, task, reference=reference, reference_cache=cache,
                         tensorboard_dir=log_dir, summary_every=_FIDELITY_EVERY.value, log=print)
  run.pop("selection_sample", None)  # pictures, for TensorBoard
  run["fidelity"] = _fidelity_checks(log_dir)
  flops = run["flops_per_step"]
  checks = run["selection_stats"].get("flops_fidelity", 0.0) / _STEPS.value
  # Uniform's step is its training (docs/SPEC.md §7), as in the levers' table.
  run["cost_per_step"] = flops["total"] / flops["training"]
  run["cost_per_step_with_checks"] = (flops["total"] + checks) / flops["training"]
  below = [c["step"] for c in run["fidelity"] if c["overlap"] < summaries_lib.FIDELITY_THRESHOLD]
  run["first_below_threshold"] = below[0] if below else None
  run["checks_below_threshold"] = len(below)
  return run


def _windows(run):
  """Per evaluation: accuracy, the window's mean fidelity and the window's corrupted share."""
  every, steps, shares = _EVAL_EVERY.value, run["steps"], run["corrupted_share"]
  out = []
  for i in range(1, len(steps)):
    end, start = steps[i], steps[i - 1]
    checks = [c for c in run["fidelity"] if start < c["step"] <= end]
    before = shares[i - 1] * start if start else 0.0
    out.append({"step": end, "accuracy": run["accuracy"][i],
                "corrupted": (shares[i] * end - before) / every,
                **{k: float(np.mean([c[k] for c in checks])) if checks else float("nan")
                   for k in _TAGS}})
  return out


def _fidelity_summary(runs):
  """One row per evaluation step: `{row}_{figure}` as `{"mean", "std"}` over the seeds."""
  windows = {}
  for key, run in runs.items():
    windows.setdefault(key.split("|")[0], []).append(_windows(run))
  summary = []
  for i, step in enumerate(w["step"] for w in next(iter(windows.values()))[0]):
    line = {"step": step}
    for row, per_seed in windows.items():
      for figure in ("overlap", "rank_correlation", "accuracy", "corrupted"):
        values = [seed_windows[i][figure] for seed_windows in per_seed]
        line[f"{row}_{figure}"] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    summary.append(line)
  return summary


def _fidelity_curves(task, reference, cache):
  """Trains and checks the learners of each seed (see the docstring); prints the tables."""
  settings = {"noise": _NOISE.value, "sizes": _SIZES.value, "steps": _STEPS.value,
              "eval_every": _EVAL_EVERY.value, "fidelity_every": _FIDELITY_EVERY.value,
              "batch_size": _BATCH.value, "filter_ratio": _RATIO.value,
              "num_chunks": _CHUNKS.value, "proxy_filters": [int(f) for f in _PROXY.value],
              "proxy_width": _PROXY_WIDTH.value, "reference_path": _REFERENCE.value,
              "reference_epochs": _REF_EPOCHS.value, "first_seed": _SEED.value,
              "seeds": _SEEDS.value}
  path = _output()
  results = results_file.open_or_start(path, settings)
  boards = os.path.join(os.path.dirname(os.path.abspath(path)), "tensorboard")
  print(f"proxy fidelity: {task.describe()}; {_STEPS.value} steps, checked every "
        f"{_FIDELITY_EVERY.value}, evaluated every {_EVAL_EVERY.value}", flush=True)
  # The proxy's seeds first: the curve; then the learner's, the comparison and the ceiling.
  for row in _FIDELITY_ROWS.value:
    for seed in range(_SEED.value, _SEED.value + _SEEDS.value):
      key = f"{row}|seed={seed}"
      if key in results["runs"]:
        continue
      run = _fidelity_run(row, seed, task, reference, cache,
                          os.path.join(boards, f"{row}_seed{seed}"))
      results["runs"][key] = run
      results["summary"] = _fidelity_summary(results["runs"])
      results_file.write(path, results)
      print(f"{key}: accuracy {run['accuracy'][-1]:.3f}, cost/step {run['cost_per_step']:.2f} "
            f"({run['cost_per_step_with_checks']:.2f} with the checks), overlap below "
            f"{summaries_lib.FIDELITY_THRESHOLD} at {run['checks_below_threshold']} of "
            f"{len(run['fidelity'])} checks (first: step {run['first_below_threshold']}); "
            f"{run['wall_seconds']:.0f} s", flush=True)
  runs = results["runs"]
  seeds = {row: sum(k.startswith(row + "|") for k in runs) for row in ("proxy", "learner")}
  print(f"\nseeds: {seeds}; per evaluation: mean ± sd over seeds (fidelity: the mean of the "
        f"window's checks; corrupted: the share among the window's picks)")
  figure = lambda name, spec: lambda r: report.plus_minus(r[name], spec) if name in r else "-"
  print(report.table(results["summary"], [
      ("step", lambda r: str(r["step"])),
      ("proxy overlap", figure("proxy_overlap", ".2f")),
      ("proxy rank corr.", figure("proxy_rank_correlation", ".2f")),
      ("learner overlap (ceiling)", figure("learner_overlap", ".2f")),
      ("proxy accuracy", figure("proxy_accuracy", ".3f")),
      ("learner accuracy", figure("learner_accuracy", ".3f")),
      ("proxy corrupted", figure("proxy_corrupted", ".2f")),
      ("learner corrupted", figure("learner_corrupted", ".2f"))]))
  for row in ("proxy", "learner"):
    mine = [r for k, r in runs.items() if k.startswith(row + "|")]
    if not mine:
      continue
    print(f"{row}: cost/step {np.mean([r['cost_per_step'] for r in mine]):.3f}, with the checks "
          f"{np.mean([r['cost_per_step_with_checks'] for r in mine]):.3f}; first check below "
          f"{summaries_lib.FIDELITY_THRESHOLD} per seed: "
          f"{[r['first_below_threshold'] for r in mine]}")


def _setup():
  """The task, its reference (`--reference_path`, else trained and saved next to the output,
  and reused from there) and the reference's cache (next to the output)."""
  task = tasks.CaptionsTask(data.config_for(_NOISE.value, sizes=_SIZES.value), _DATA_DIR.value)
  directory = os.path.dirname(os.path.abspath(_output()))
  saved = os.path.join(directory, f"reference_{task.config_name}.keras")
  if _REFERENCE.value or os.path.exists(saved):
    reference = reference_lib.load(_REFERENCE.value or saved)
  else:
    reference = reference_lib.train(task, epochs=_REF_EPOCHS.value, log=print)
    os.makedirs(directory, exist_ok=True)
    reference_lib.save(reference, saved)
  cache = reference_lib.cached(reference, task, os.path.join(
      directory, f"reference_cache_{task.config_name}"), log=print)
  return task, reference, cache


def main(argv):
  del argv
  b = _BATCH.value
  n = tfjest.super_batch_size_for(b, _RATIO.value)
  task, reference, cache = _setup()
  if _FIDELITY_EVERY.value:
    _fidelity_curves(task, reference, cache)
    return
  # Fresh super-batches of the web stream (another shuffle than training's), in memory.
  elements = list(task.stream(seed=_SEED.value + 1000).take(_SUPER_BATCHES.value * n)
                  .batch(_SUPER_BATCHES.value * n))
  super_batches = tf.nest.map_structure(lambda t: t.numpy(), elements[0])
  print(f"cheap scoring: {task.describe()}; b={b}, N={n}, {_SUPER_BATCHES.value} super-batches "
        f"after {_STEPS.value} JEST steps")
  results = []
  proxy_filters = [int(f) for f in _PROXY.value]
  learners = [("full", None, None)]
  if _TRAIN_RESOLUTIONS.value:
    learners.append(("/".join(_TRAIN_RESOLUTIONS.value),
                     [int(s) for s in _TRAIN_RESOLUTIONS.value], None))
  if proxy_filters:
    learners.append((f"full, proxy {'/'.join(map(str, proxy_filters))}", None, proxy_filters))
  for label, trained_at, filters in learners:
    config = harness.RunConfig(method="jest", score="learnability", batch_size=b,
                               filter_ratio=_RATIO.value, steps=_STEPS.value,
                               eval_every=_STEPS.value, seed=_SEED.value,
                               num_chunks=_CHUNKS.value, train_resolutions=trained_at,
                               proxy_filters=filters, proxy_width=_PROXY_WIDTH.value)
    proxy = (task.make_model("proxy", width=_PROXY_WIDTH.value, filters=filters)
             if filters else None)
    learner, run = harness.train(config, task, reference=reference, reference_cache=cache,
                                 proxy_model=proxy)
    print(f"\nlearner trained at {label}: accuracy {run['accuracy'][-1]:.3f} after "
          f"{_STEPS.value} steps")
    print(f"{'scoring':<10} {'cost/step':>9} {'scoring vs full':>15} {'corrupted':>9} "
          f"{'s(B) full':>9} {'overlap':>7}")
    for row in _rows(learner, task, cache, super_batches, n, b, proxy=proxy):
      print(f"{row['scoring']:<10} {row['cost_per_step']:>9.2f} "
            f"{row['learner_scoring_vs_full']:>15.2f} {row['corrupted']:>9.2f} "
            f"{row['batch_score_full']:>9.1f} {row['overlap']:>7.2f}")
      results.append({"trained_at": label, "accuracy": run["accuracy"][-1], **row})
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
      json.dump({"steps": _STEPS.value, "noise": _NOISE.value, "rows": results}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
