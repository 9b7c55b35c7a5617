r"""Data efficiency of JEST and its ablations against uniform sampling (docs/SPEC.md §9).

    nohup python -m benchmarks.data_efficiency > out/data_efficiency/log.txt 2>&1 &

For each noise level (`--noises`), trains one reference on `curated`, then learners on `web`
for `--steps` steps with every configuration of the grid, each for `--seeds` seeds:
uniform; `jest` x `--jest_scores` x `--filter_ratios`; `independent` x `--independent_scores` x
`--filter_ratios`; and `oracle_clean` (uniform over the clean web examples only: the curve of a
perfect noise filter, an analysis baseline that reads the corruption flags). The reference's
embeddings of the web split are computed once per noise level and cached next to the results
(`--cache_reference`, the default): the scored runs read them instead of calling the
reference, so reference scoring costs 0 FLOPs per step (docs/SPEC.md §7) and the
selections are those of the live reference. `--proxy_filters=4,8,16` lets a small online proxy
(`tfjest.OnlineProxy`, Bad Students) score for the learner in the runs whose score reads it.
Each result is
written to `--output` (JSON) as soon as it exists, so an interrupted run continues where it
stopped when started again with the same flags. At the end (and after every seed) it prints
the table and writes one PNG per noise level next to the JSON.

The default grid (2 noise levels x 14 configurations x 5 seeds, 1000 steps of 64) takes about
an hour on 2 CPU cores. `--smoke` runs a tiny grid (noise 0.5: uniform, oracle_clean,
jest/learnability and independent/hard_learner at f = 0.8, one seed, 20 steps of 16) on a tiny
dataset in well under a minute (the test suite runs it).
"""

import os
import time

from absl import app
from absl import flags
import numpy as np

import tfjest
from benchmarks import report
from benchmarks import results_file
from examples.lib import data
from examples.lib import harness
from examples.lib import plots
from examples.lib import reference as reference_lib
from examples.lib import tasks
from tfjest import efficiency

_OUTPUT = flags.DEFINE_string("output", "out/data_efficiency/results.json",
                              "Results file (JSON); plots go next to it. Resumed if present.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS' own, ~/tensorflow_datasets).")
_NOISES = flags.DEFINE_list("noises", ["0.5", "0.0"], "Web noise levels (registered configs).")
_JEST_SCORES = flags.DEFINE_list("jest_scores", list(harness.SCORES), "Scores for jest.")
_INDEPENDENT_SCORES = flags.DEFINE_list("independent_scores", ["learnability"],
                                        "Scores for independent selection ('' for none).")
_RATIOS = flags.DEFINE_list("filter_ratios", ["0.5", "0.8", "0.9"], "Filter ratios f.")
_SEEDS = flags.DEFINE_integer("seeds", 5, "Seeds per configuration (0, 1, ...).")
_STEPS, _EVAL_EVERY, _BATCH, _LR = harness.define_run_flags(steps=1000, eval_every=50)
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Selection temperature tau.")
_FIRST_CHUNK = flags.DEFINE_string("first_chunk", "uniform", "JEST's first chunk rule.")
_NORMALIZATION = flags.DEFINE_string("normalization", "none", "JEST's gain normalisation.")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "JEST chunks per batch.")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", reference_lib.EPOCHS,
                                   "Epochs of reference training on curated.")
_PROXY = flags.DEFINE_list(
    "proxy_filters", [], "With three convolution widths (e.g. 4,8,16), a small online proxy "
    "(Bad Students) scores instead of the learner in the runs whose score reads the learner.")
_PROXY_WIDTH = flags.DEFINE_integer("proxy_width", 16, "The proxy's embedding width.")
_TRAIN_RESOLUTIONS = flags.DEFINE_list(
    "train_resolutions", [], "When given (e.g. 32,16), the learner trains on batches at these "
    "image sides in turn (tfjest.multi_resolution, Flexi-JEST) in the runs whose score reads "
    "it; their training FLOPs are the mean over the sides.")
_SCORING_RESOLUTION = flags.DEFINE_integer(
    "scoring_resolution", 0, "When > 0, the learner scores images average-pooled to this side "
    "(a scoring view: cheaper learner scoring) in the runs whose score reads it.")
_CACHE = flags.DEFINE_bool("cache_reference", True,
                           "Cache the reference's web embeddings once (else call it every step).")
_ORACLE = flags.DEFINE_bool("oracle", True, "Also run the oracle_clean baseline (noise > 0).")
_UNIFORM = flags.DEFINE_bool(
    "uniform", True, "Run uniform. --nouniform adds rows to a file whose uniform runs are in "
    "another (the table and plots then need uniform's runs: see benchmarks/plateau_table.py).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny dataset and grid, for tests.")

_SMOKE_SIZES = (2000, 400, 200)
# One colour per configuration in every plot, whichever configurations a plot holds.
_COLOURS = {("uniform", None): "tab:blue", ("oracle_clean", None): "tab:gray",
            ("jest", "learnability"): "tab:green", ("jest", "easy_reference"): "tab:purple",
            ("jest", "hard_learner"): "tab:red", ("independent", "learnability"): "tab:orange",
            ("independent", "easy_reference"): "tab:pink",
            ("independent", "hard_learner"): "tab:brown"}


def _settings():
  """Everything a result depends on; a resumed file must have been written with the same."""
  if _SMOKE.value:
    return {"smoke": True, "sizes": _SMOKE_SIZES, "noises": [0.5],
            "jest_scores": ["learnability"], "independent_scores": ["hard_learner"],
            "filter_ratios": [0.8], "seeds": 1, "steps": 20, "eval_every": 10,
            "batch_size": 16, "learning_rate": _LR.value, "temperature": _TEMPERATURE.value,
            "first_chunk": _FIRST_CHUNK.value, "normalization": _NORMALIZATION.value,
            "num_chunks": 4, "reference_epochs": 2, "oracle": _ORACLE.value,
            "cache_reference": _CACHE.value, **_proxy_settings()}
  return {"smoke": False, "sizes": None, "noises": [float(n) for n in _NOISES.value],
          "jest_scores": _JEST_SCORES.value,
          "independent_scores": [s for s in _INDEPENDENT_SCORES.value if s],
          "filter_ratios": [float(f) for f in _RATIOS.value], "seeds": _SEEDS.value,
          "steps": _STEPS.value, "eval_every": _EVAL_EVERY.value, "batch_size": _BATCH.value,
          "learning_rate": _LR.value, "temperature": _TEMPERATURE.value,
          "first_chunk": _FIRST_CHUNK.value, "normalization": _NORMALIZATION.value,
          "num_chunks": _CHUNKS.value, "reference_epochs": _REF_EPOCHS.value,
          "oracle": _ORACLE.value, "cache_reference": _CACHE.value, **_proxy_settings()}


def _proxy_settings():
  # Each only when set, so that results files written before it existed stay resumable.
  settings = {} if _UNIFORM.value else {"uniform": False}
  if _PROXY.value:
    settings.update(proxy_filters=[int(f) for f in _PROXY.value],
                    proxy_width=_PROXY_WIDTH.value)
  if _SCORING_RESOLUTION.value:
    settings["scoring_resolution"] = _SCORING_RESOLUTION.value
  if _TRAIN_RESOLUTIONS.value:
    settings["train_resolutions"] = [int(s) for s in _TRAIN_RESOLUTIONS.value]
  return settings


def _cheap_scoring(settings):
  """The label of the cheap learner scoring these runs use, '' for none."""
  parts = []
  if settings.get("proxy_filters"):
    parts.append("proxy")
  if settings.get("scoring_resolution"):
    parts.append(f"{settings['scoring_resolution']}px view")
  if settings.get("train_resolutions"):
    parts.append("trained at " + "/".join(str(s) for s in settings["train_resolutions"]))
  return f" ({', '.join(parts)})" if parts else ""


def _reads_learner(method, score):
  return method in ("independent", "jest") and "learner" in tfjest.models_read(method, score)


def _grid(settings, noise):
  """(method, score, filter_ratio) of every configuration at one noise level."""
  grid = [("uniform", None, None)] if settings.get("uniform", True) else []
  if settings["oracle"] and noise > 0:
    grid.append(("oracle_clean", None, None))
  for f in settings["filter_ratios"]:
    grid += [("jest", s, f) for s in settings["jest_scores"]]
    grid += [("independent", s, f) for s in settings["independent_scores"]]
  return grid


def _key(noise, method, score, f, seed):
  return f"noise={noise}|{method}|{score or '-'}|f={f or '-'}|seed={seed}"


def _reference(settings, task, results, directory):
  """The noise level's reference: trained once, saved next to the results, then reused."""
  name = task.config_name
  path = os.path.join(directory, f"reference_{name}.keras")
  if os.path.exists(path) and name in results["references"]:
    return reference_lib.load(path), name
  start = time.time()
  model = reference_lib.train(task, epochs=settings["reference_epochs"], log=print)
  reference_lib.save(model, path)
  metrics = task.evaluate(model)
  results["references"][name] = {"path": path, "seconds": time.time() - start, **metrics}
  print(f"reference for {name}: accuracy {metrics['accuracy']:.3f}, "
        f"recall@1 {metrics['recall_at_1']:.3f}", flush=True)
  return model, name


def _summaries(settings, results):
  rows = []
  for noise in settings["noises"]:
    runs = {}
    for key, run in results["runs"].items():
      if key.startswith(f"noise={noise}|"):
        runs.setdefault(key.rsplit("|seed=", 1)[0], []).append(run)
    uniform = runs.get(_key(noise, "uniform", None, None, 0).rsplit("|seed=", 1)[0])
    if not uniform:
      continue
    for method, score, f in _grid(settings, noise):
      group = runs.get(_key(noise, method, score, f, 0).rsplit("|seed=", 1)[0])
      if group:
        rows.append({"noise": noise, "method": method, "score": score, "filter_ratio": f,
                     **efficiency.summarize(group, uniform)})
  return rows


def _table(rows, settings):
  def score(r):
    name = r["score"] or "-"
    return name + (_cheap_scoring(settings) if _reads_learner(r["method"], r["score"]) else "")

  return report.table(rows, [
      ("noise", lambda r: str(r["noise"])),
      ("method", lambda r: r["method"]),
      ("score", score),
      ("f", lambda r: str(r["filter_ratio"] or "-")),
      ("step speedup", report.step_speedup),
      ("per seed (reached)", report.per_seed),
      ("compute speedup", lambda r: report.speedup(r["compute_speedup"])),
      ("final accuracy", report.final_accuracy),
      ("corrupted selected", report.corrupted),
      ("cost/step", report.cost)])


def _plots(settings, results, directory):
  paths = []
  for noise in settings["noises"]:
    def group(method, score, f, noise=noise):
      runs = [results["runs"].get(_key(noise, method, score, f, s))
              for s in range(settings["seeds"])]
      return [r for r in runs if r is not None]

    uniform = group("uniform", None, None)
    if not uniform:
      continue
    target = efficiency.target(uniform)
    panels = []
    for axis, label in (("steps", "training steps"), ("flops", "cumulative FLOPs")):
      for f in settings["filter_ratios"]:
        series = []
        for method, score, ratio in _grid(settings, noise):
          if ratio not in (None, f):
            continue
          runs = group(method, score, ratio)
          if not runs:
            continue
          name = method if score is None else f"{method}/{score}"
          if _reads_learner(method, score):
            name += _cheap_scoring(settings)
          series.append({"label": f"{name} ({len(runs)})", "x": runs[0][axis],
                         "color": _COLOURS.get((method, score)),
                         "y": efficiency.mean_curve(runs),
                         "spread": np.std([r["accuracy"] for r in runs], axis=0)})
        panels.append({"title": f"noise {noise}, f={f}: accuracy vs {label}",
                       "xlabel": label, "ylabel": "zero-shot accuracy (mean ± std)",
                       "hline": (target, "uniform's best"), "log_x": axis == "flops",
                       "series": series})
    paths.append(plots.save_panels(
        os.path.join(directory, f"noise_{noise}.png"), panels, columns=len(
            settings["filter_ratios"]),
        title=f"noise {noise}: b={settings['batch_size']}, {settings['steps']} steps, "
              f"tau={settings['temperature']}, lr={settings['learning_rate']}" + (
                  f", proxy {settings['proxy_filters']}/{settings['proxy_width']}"
                  if settings.get("proxy_filters") else "")))
  return paths


def _report(settings, results, directory):
  results["summary"] = _summaries(settings, results)
  results_file.write(_OUTPUT.value, results)
  print(_table(results["summary"], settings), flush=True)
  for path in _plots(settings, results, directory):
    print(f"plot: {path}", flush=True)


def main(argv):
  del argv
  settings = _settings()
  directory = os.path.dirname(os.path.abspath(_OUTPUT.value))
  os.makedirs(directory, exist_ok=True)
  results = results_file.open_or_start(_OUTPUT.value, settings, references={})

  todo = sum(1 for noise in settings["noises"] for _ in _grid(settings, noise)
             for _ in range(settings["seeds"]))
  done, start = len(results["runs"]), time.time()
  for noise in settings["noises"]:
    task = tasks.CaptionsTask(data.config_for(noise, sizes=settings["sizes"]),
                              _DATA_DIR.value)
    reference, name = _reference(settings, task, results, directory)
    cache = None
    if settings["cache_reference"]:
      cache = reference_lib.cached(reference, task,
                                   os.path.join(directory, f"reference_cache_{name}"),
                                   log=lambda line: print(line, flush=True))
    for seed in range(settings["seeds"]):
      ran = False
      for method, score, f in _grid(settings, noise):
        key = _key(noise, method, score, f, seed)
        if key in results["runs"]:
          continue
        ran = True
        run = harness.run(harness.RunConfig(
            method="uniform" if method == "oracle_clean" else method,
            score=score or "learnability", filter_ratio=f or 0.8,
            batch_size=settings["batch_size"], steps=settings["steps"], seed=seed,
            eval_every=settings["eval_every"], num_chunks=settings["num_chunks"],
            temperature=settings["temperature"], first_chunk=settings["first_chunk"],
            normalization=settings["normalization"],
            learning_rate=settings["learning_rate"], oracle_clean=method == "oracle_clean",
            proxy_filters=(settings.get("proxy_filters")
                           if _reads_learner(method, score) else None),
            proxy_width=settings.get("proxy_width", 16),
            scoring_resolution=(settings.get("scoring_resolution")
                                if _reads_learner(method, score) else None),
            train_resolutions=(settings.get("train_resolutions")
                               if _reads_learner(method, score) else None)),
            task, reference=reference, reference_cache=cache)
        results["runs"][key] = run
        results_file.write(_OUTPUT.value, results)
        done += 1
        print(f"[{done}/{todo}] {key}: final accuracy {run['accuracy'][-1]:.3f}, corrupted "
              f"{run['corrupted_share'][-1]:.2f}, {run['wall_seconds']:.0f} s "
              f"(elapsed {time.time() - start:.0f} s)", flush=True)
      if ran and seed < settings["seeds"] - 1:  # an interim report after every new seed
        _report(settings, results, directory)
  _report(settings, results, directory)
  print(f"results: {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
