r"""Divide and Contrast against uniform and JEST on the offline captions benchmark (issue 14).

    nohup nice -n 10 python -m benchmarks.dnc --data_dir=/work/tfds --work_dir=out/dnc \
        --output=benchmarks/results/dnc/results.json > out/dnc.log 2>&1 &

Rows, each for `--seeds` seeds, all `--steps` steps of `--batch_size` at noise `--noise`:
- `uniform`: `tfjest.select(method="uniform")`, b of every N = b / (1 - f) (the harness's
  baseline);
- `clusters`: the same uniform draw from cluster-conditioned super-batches
  (`tfjest.by_cluster(clusters, group_size=N)` before `select`): every batch from one cluster;
- `jest`: JEST learnability with the cached reference;
- `clusters+jest`: JEST learnability over cluster-conditioned super-batches (hard candidates);
- `distil_base` (an ablation): the same student distilled from the reference alone;
- `dnc`: the distilled DnC student (`examples.lib.dnc`): k-means on the
  reference's cached image embeddings, one expert per cluster (from the reference, trained on
  its cluster for `--expert_steps`), then `--steps` distillation steps. Its `steps` count
  distillation steps only; its FLOPs start at the experts' one-off cost (training and caching
  their embeddings). The clusters and the experts are computed once (seed 0) and shared by
  the seeds, whose student initialisations and streams differ.

`--rows` runs some of the rows only; with `--uniform_from` (a `benchmarks.data_efficiency`
results file) uniform is not run: its runs at the same noise, cut at `--uniform_steps` (default
`--steps`), are the uniform group of the table (the same harness config, checked, gives the same
runs); rows that ran fewer steps than uniform are marked, and a row that does not reach the
target is "not reached within" its steps.

The reference (base), its cache, the clusters and the experts' caches live next to the
results and are reused. Each run is written to `--output` (JSON) as soon as it ends, so a
stopped run continues where it stopped when started again with the same flags; the table
(`tfjest.efficiency.summarize`: target = uniform's best mean accuracy) is printed after every
seed. `--smoke` runs everything on a tiny dataset for a few steps (the test suite runs it).
"""

import json
import os
import time

from absl import app
from absl import flags

import tfjest
from benchmarks import report
from benchmarks import results_file
from benchmarks import uniform_runs
from examples.lib import data
from examples.lib import dnc
from examples.lib import harness
from examples.lib import reference as reference_lib
from examples.lib import tasks

_OUTPUT = flags.DEFINE_string("output", "out/dnc/results.json", "Results file (JSON); resumed.")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None, "Where the reference, its cache, the clusters and the experts' caches are "
    "kept (tens of MB per cache; default: next to --output).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS' own, ~/tensorflow_datasets).")
_NOISE = flags.DEFINE_float("noise", 0.5, "Web noise level (a registered config).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per row (0, 1, ...).")
_FIRST_SEED = flags.DEFINE_integer(
    "first_seed", 0, "Run seeds first_seed .. first_seed + seeds - 1 (several processes can "
    "share --work_dir, each with its own --output; --merge joins their files).")
_MERGE = flags.DEFINE_list(
    "merge", [], "Results files of the same settings whose runs are added to --output before "
    "the table is printed (nothing is trained when every run is there).")
_STEPS, _EVAL_EVERY, _BATCH, _LR = harness.define_run_flags(steps=3000, eval_every=250)
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "f: each step reads N = b / (1 - f).")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "JEST chunks per batch.")
_CLUSTERS = flags.DEFINE_integer("num_clusters", 5, "k of k-means.")
_EXPERT_STEPS = flags.DEFINE_integer("expert_steps", 500, "Training steps per expert.")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", reference_lib.EPOCHS,
                                   "Epochs of reference (base) training on curated.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny dataset and budget, for tests.")

ROWS = ("uniform", "clusters", "jest", "clusters+jest", "dnc", "distil_base")

_ROWS = flags.DEFINE_list("rows", None, f"Rows to run, of {', '.join(ROWS)} (default: all).")
_UNIFORM = uniform_runs.define_flags()


def _rows():
  """The rows this invocation runs (--rows, less uniform when it is read from a file)."""
  rows = ROWS
  if _ROWS.value is not None:
    unknown = [row for row in _ROWS.value if row not in ROWS]
    if unknown:
      raise app.UsageError(f"--rows names unknown rows {unknown}; the rows are {list(ROWS)}. "
                           f"Received: --rows={','.join(_ROWS.value)}")
    rows = tuple(row for row in ROWS if row in _ROWS.value)
  if _UNIFORM.path.value:
    rows = tuple(row for row in rows if row != "uniform")
  return rows


def _settings():
  """Everything a result depends on; a resumed file must have been written with the same."""
  if _SMOKE.value:
    return {"smoke": True, "sizes": [2000, 400, 200], "noise": 0.5, "seeds": 1, "steps": 10,
            "eval_every": 5, "batch_size": 16, "filter_ratio": 0.8, "num_chunks": 4,
            "learning_rate": _LR.value, "num_clusters": 2, "expert_steps": 3,
            "reference_epochs": 1}
  return {"smoke": False, "sizes": None, "noise": _NOISE.value, "seeds": _SEEDS.value,
          "steps": _STEPS.value, "eval_every": _EVAL_EVERY.value, "batch_size": _BATCH.value,
          "filter_ratio": _RATIO.value, "num_chunks": _CHUNKS.value, "learning_rate": _LR.value,
          "num_clusters": _CLUSTERS.value, "expert_steps": _EXPERT_STEPS.value,
          "reference_epochs": _REF_EPOCHS.value}


def _base(settings, task, results, directory):
  """The reference (base), trained once and saved in the work directory, then reused."""
  path = os.path.join(directory, f"reference_{task.config_name}"
                      f"_epochs{settings['reference_epochs']}.keras")
  if os.path.exists(path):
    model = reference_lib.load(path)
  else:
    start = time.time()
    model = reference_lib.train(task, epochs=settings["reference_epochs"], log=print)
    reference_lib.save(model, path)
    results["reference_seconds"] = time.time() - start
  results["reference"] = {"path": os.path.basename(path), **task.evaluate(model)}
  print(f"reference: accuracy {results['reference']['accuracy']:.3f}", flush=True)
  return model


def _experts(settings, task, base, clusters, results, directory):
  """The experts' embedding caches: trained and cached once per work directory, then reused.

  Several processes may share the directory: the first to need the experts trains them (an
  exclusive lock file), the others wait for `experts.json`.
  """
  paths = [os.path.join(directory, f"expert_{c}_cache") for c in range(clusters.num_clusters)]
  done = os.path.join(directory, "experts.json")
  try:
    os.close(os.open(os.path.join(directory, "experts.lock"), os.O_CREAT | os.O_EXCL))
  except FileExistsError:
    while not os.path.exists(done):
      time.sleep(10)
  if os.path.exists(done):
    with open(done) as file:
      results["experts"] = json.load(file)
    return [tfjest.ReferenceCache.load(p) for p in paths]
  start = time.time()
  experts = dnc.train_experts(task, base, clusters, steps=settings["expert_steps"],
                              batch_size=settings["batch_size"],
                              learning_rate=settings["learning_rate"], seed=0, log=print)
  caches = [tfjest.cache_reference(e, task.cache_stream(), p, id_key=task.id_key,
                                   batch_size=1024, overwrite=True)
            for e, p in zip(experts, paths)]
  results["experts"] = {"seconds": time.time() - start,
                        "accuracy": [task.evaluate(e)["accuracy"] for e in experts]}
  results_file.write(done, results["experts"])
  return caches


def _run(row, seed, settings, task, reference, cache, clusters, expert_caches):
  if row in ("dnc", "distil_base"):
    # distil_base: the same student distilled from the base alone (the experts' term weighs
    # 0 and is not paid for), to tell what the experts add to distilling the reference.
    _, run = dnc.distill(task, cache, expert_caches, clusters, steps=settings["steps"],
                         eval_every=settings["eval_every"], batch_size=settings["batch_size"],
                         learning_rate=settings["learning_rate"], seed=seed,
                         width=harness.WIDTH, expert_steps=settings["expert_steps"],
                         expert_weight=1.0 if row == "dnc" else 0.0, log=print)
    return {"method": row, "seed": seed, **run}
  config = harness.RunConfig(
      method="jest" if "jest" in row else "uniform", filter_ratio=settings["filter_ratio"],
      batch_size=settings["batch_size"], steps=settings["steps"], seed=seed,
      eval_every=settings["eval_every"], num_chunks=settings["num_chunks"],
      learning_rate=settings["learning_rate"])
  grouping = None
  if row.startswith("clusters"):
    n = tfjest.super_batch_size_for(settings["batch_size"], settings["filter_ratio"])
    grouping = tfjest.by_cluster(clusters, group_size=n, id_key=task.id_key)
  run = harness.run(config, task, reference=reference, reference_cache=cache,
                    before_selection=grouping)
  if grouping is not None:
    run["cluster_stats"] = grouping.stats.result()
  return {**run, "row": row}


def _summaries(settings, results):
  del settings  # the rows are ROWS whatever the settings
  return report.summaries(results, ROWS)


def _table(rows):
  return report.table(rows, [
      ("row", lambda r: report.row_name(r, r["budget"])),
      ("seeds", lambda r: str(r["seeds"])),
      ("step speedup", lambda r: report.step_speedup(r, r.get("ran", r.get("budget")))),
      ("per seed (reached)", report.per_seed),
      ("compute speedup", lambda r: report.speedup(r["compute_speedup"])),
      ("final accuracy", report.final_accuracy),
      ("corrupted selected", report.corrupted),
      ("cost/step", report.cost)])


def _report(settings, results):
  report.report(_OUTPUT.value, results, _summaries(settings, results), _table)


def main(argv):
  del argv
  settings = _settings()
  rows, uniform = _rows(), _UNIFORM.load(settings)  # checked before any training
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  directory = _WORK_DIR.value or os.path.dirname(os.path.abspath(_OUTPUT.value))
  os.makedirs(directory, exist_ok=True)
  results = results_file.open_or_start(_OUTPUT.value, settings)
  results.pop("uniform_from", None)
  if uniform is not None:
    results["uniform_from"] = uniform  # where uniform's runs (the group of the table) come from
  task = tasks.CaptionsTask(data.config_for(settings["noise"], sizes=settings["sizes"]),
                            _DATA_DIR.value)
  reference = _base(settings, task, results, directory)
  cache = reference_lib.cached(reference, task, os.path.join(directory, "reference_cache"),
                               log=print)
  clusters = dnc.divide(cache, os.path.join(directory, "clusters"),
                        num_clusters=settings["num_clusters"], log=print)
  results["clusters"] = {"num_clusters": clusters.num_clusters,
                         "sizes": clusters.sizes.tolist(),
                         "inertia": clusters.metadata["kmeans"]["inertia"]}
  results_file.write(_OUTPUT.value, results)
  expert_caches = None
  for other in _MERGE.value:
    with open(other) as file:
      theirs = json.load(file)
    if ({k: v for k, v in theirs["settings"].items() if k != "seeds"} !=
        {k: v for k, v in results["settings"].items() if k != "seeds"}):
      raise ValueError(f"Only results of the same settings can be merged. Received: {other} "
                       f"with settings={theirs['settings']}")
    results["runs"].update(theirs["runs"])
    results.setdefault("experts", theirs.get("experts"))
  start = time.time()
  for seed in range(_FIRST_SEED.value, _FIRST_SEED.value + settings["seeds"]):
    for row in rows:
      key = f"{row}|seed={seed}"
      if key in results["runs"]:
        continue
      if row in ("dnc", "distil_base") and expert_caches is None:
        expert_caches = _experts(settings, task, reference, clusters, results, directory)
      run = _run(row, seed, settings, task, reference, cache, clusters, expert_caches)
      results["runs"][key] = run
      results_file.write(_OUTPUT.value, results)
      print(f"{key}: final accuracy {run['accuracy'][-1]:.3f} (elapsed "
            f"{time.time() - start:.0f} s)", flush=True)
    _report(settings, results)
  print(f"results: {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
