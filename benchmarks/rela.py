r"""ReLA (a frozen prior's targets early in training) alone and with JEST, against uniform.

    nohup nice -n 10 python -m benchmarks.rela \
      --output=benchmarks/results/rela/results.json > benchmarks/results/rela/log.txt 2>&1 &

On the offline captions benchmark (`--noise`, web split), trains one reference on `curated` and
the priors of `--priors` (`examples.lib.rela`: "reference" is that same reference, "other_arch"
another architecture trained on `curated`, "random" a random initialisation), computes each
prior's ReLA targets of the web split once (`tfjest.prior_targets`, cached next to the results),
then learners for `--steps` steps, `--seeds` seeds each:

* uniform;
* jest: learnability, `--filter_ratio`, the reference's embeddings cached;
* rela/<prior>: uniform data, `tfjest.ReLAAid` regressing the learner's image embeddings onto
  the prior's targets until the switch (`--switch`: a fraction of the budget, a step, or
  "adaptive", the released rule), then the SigLIP loss;
* rela+jest/<prior>: both, the targets joined to JEST's selected batches by id (the priors of
  `--rela_jest_priors`, default `--priors`);
* with `--adaptive_row`, rela/reference with the released switch rule as well.

`--rows` runs some of the rows only; with `--uniform_from` (a `benchmarks.data_efficiency`
results file) uniform is not run: its runs at the same noise, cut at `--uniform_steps` (default
`--steps`), are the uniform group of the table (the same harness config, checked, gives the same
runs); rows that ran fewer steps than uniform are marked, and a row that does not reach the
target is "not reached within" its steps.

Each result is written to `--output` as soon as it exists (resumable with the same flags). The
FLOPs of a ReLA run count the prior's one-off pass over the web split (forward FLOPs x examples)
from step 0; the head's FLOPs are negligible and not counted. The table gives steps and compute
to uniform's best mean accuracy (`tfjest.efficiency`). `--smoke` runs a tiny grid in about a
minute (tests/programs/rela_benchmark_test.py).
"""

import os
import time

from absl import app
from absl import flags

from benchmarks import report
from benchmarks import results_file
from benchmarks import uniform_runs
from examples.lib import data
from examples.lib import harness
from examples.lib import rela as rela_lib
from examples.lib import reference as reference_lib
from examples.lib import tasks

_OUTPUT = flags.DEFINE_string("output", "out/rela/results.json",
                              "Results file (JSON). Resumed if present.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS' own, ~/tensorflow_datasets).")
_NOISE = flags.DEFINE_float("noise", 0.5, "Web noise level (a registered config).")
_PRIORS = flags.DEFINE_list("priors", list(rela_lib.KINDS), "Priors (examples.lib.rela.KINDS).")
_SWITCH = flags.DEFINE_string("switch", "0.1", "ReLA switch: a fraction of the budget (0.1), "
                              "a step (300) or 'adaptive' (the released rule).")
_RELA_JEST = flags.DEFINE_list("rela_jest_priors", None, "Priors of the rela+jest rows "
                                "(default: --priors).")
_ADAPTIVE = flags.DEFINE_bool("adaptive_row", True, "Also rela/reference with switch=adaptive.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per configuration (0, 1, ...).")
_STEPS, _EVAL_EVERY, _BATCH, _LR = harness.define_run_flags(steps=3000, eval_every=250)
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "JEST's filter ratio f.")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", reference_lib.EPOCHS,
                                   "Epochs of reference (and trained prior) training.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny dataset and grid, for tests.")
_ROWS = flags.DEFINE_list("rows", None, "Rows to run (names as in the table, e.g. "
                          "rela/reference; default: every row of the grid).")
_UNIFORM = uniform_runs.define_flags()

_SMOKE_SIZES = (2000, 400, 200)


def _switch(text):
  if text == "adaptive":
    return text
  value = float(text)
  return value if 0 < value < 1 else int(value)


def _settings():
  common = {"noise": _NOISE.value, "switch": _switch(_SWITCH.value),
            "filter_ratio": _RATIO.value, "learning_rate": _LR.value}
  if _SMOKE.value:
    return {**common, "smoke": True, "sizes": _SMOKE_SIZES, "priors": ["random"],
            "adaptive_row": False, "seeds": 1, "steps": 20, "eval_every": 10,
            "batch_size": 16, "reference_epochs": 2}
  rela_jest = {} if _RELA_JEST.value is None else {"rela_jest_priors": _RELA_JEST.value}
  return {**common, **rela_jest, "smoke": False, "sizes": None, "priors": _PRIORS.value,
          "adaptive_row": _ADAPTIVE.value, "seeds": _SEEDS.value, "steps": _STEPS.value,
          "eval_every": _EVAL_EVERY.value, "batch_size": _BATCH.value,
          "reference_epochs": _REF_EPOCHS.value}


def _grid(settings):
  """(row name, method, prior, switch) of every configuration."""
  grid = [("uniform", "uniform", None, None), ("jest", "jest", None, None)]
  for prior in settings["priors"]:
    grid.append((f"rela/{prior}", "uniform", prior, settings["switch"]))
  if settings["adaptive_row"] and "reference" in settings["priors"]:
    grid.append(("rela/reference (adaptive switch)", "uniform", "reference", "adaptive"))
  for prior in settings.get("rela_jest_priors", settings["priors"]):
    grid.append((f"rela+jest/{prior}", "jest", prior, settings["switch"]))
  return grid


def _rows(settings):
  """The grid's configurations that this invocation runs (--rows, less uniform if read)."""
  grid = _grid(settings)
  names = [row for row, *_ in grid]
  if _ROWS.value is not None:
    unknown = [row for row in _ROWS.value if row not in names]
    if unknown:
      raise app.UsageError(f"--rows names unknown rows {unknown}; the rows of these settings "
                           f"are {names}. Received: --rows={','.join(_ROWS.value)}")
    grid = [config for config in grid if config[0] in _ROWS.value]
  if _UNIFORM.path.value:
    grid = [config for config in grid if config[0] != "uniform"]
  return grid


def _key(row, seed):
  return f"{row}|seed={seed}"


def _prior(kind, settings, task, results, directory):
  """A prior: trained (or made) once, saved next to the results, reused when resuming."""
  path = os.path.join(directory, f"prior_{kind}.keras")
  if os.path.exists(path) and kind in results["priors"]:
    return reference_lib.load(path)
  start = time.time()
  model = rela_lib.make(kind, task, epochs=settings["reference_epochs"],
                          log=lambda line: print(line, flush=True))
  reference_lib.save(model, path)
  metrics = task.evaluate(model)
  results["priors"][kind] = {"path": path, "seconds": time.time() - start,
                             "pass_flops": rela_lib.pass_flops(model, task), **metrics}
  print(f"prior {kind}: accuracy {metrics['accuracy']:.3f}", flush=True)
  return model


def _summaries(settings, results):
  grid = {row: (prior, switch) for row, _, prior, switch in _grid(settings)}

  def extra(row, runs):
    prior, switch = grid[row]
    return {"prior": prior, "switch": switch,
            "switch_steps": [r["rela"]["switch_step"] for r in runs if "rela" in r]}

  return report.summaries(results, list(grid), extra)


def _table(rows):
  return report.table(rows, [
      ("row", lambda r: report.row_name(r, r["budget"])),
      ("switch", lambda r: "-" if r["switch"] is None else str(r["switch"])),
      ("step speedup", lambda r: report.step_speedup(r, r.get("ran", r.get("budget")))),
      ("per seed (reached)", report.per_seed),
      ("compute speedup", lambda r: report.speedup(r["compute_speedup"])),
      ("steps to target", lambda r: "-" if r["steps"] is None else str(r["steps"])),
      ("final accuracy", report.final_accuracy),
      ("cost/step", report.cost),
      ("switched at (per seed)", lambda r: ", ".join(str(s) for s in r["switch_steps"]) or "-")])


def _report(settings, results):
  report.report(_OUTPUT.value, results, _summaries(settings, results), _table)


def main(argv):
  del argv
  settings = _settings()
  grid, uniform = _rows(settings), _UNIFORM.load(settings)  # checked before any training
  directory = os.path.dirname(os.path.abspath(_OUTPUT.value))
  os.makedirs(directory, exist_ok=True)
  results = results_file.open_or_start(_OUTPUT.value, settings, priors={})
  results.pop("uniform_from", None)
  if uniform is not None:
    results["uniform_from"] = uniform  # where uniform's runs (the group of the table) come from

  log = lambda line: print(line, flush=True)  # pylint: disable=unnecessary-lambda-assignment
  task = tasks.CaptionsTask(data.config_for(settings["noise"], sizes=settings["sizes"]),
                            _DATA_DIR.value)
  models = {kind: _prior(kind, settings, task, results, directory)
            for kind in sorted(set(settings["priors"]) | {"reference"})}
  results_file.write(_OUTPUT.value, results)
  cache = reference_lib.cached(models["reference"], task,
                               os.path.join(directory, "reference_cache"), log=log)
  targets = {kind: rela_lib.targets(models[kind], task,
                                      os.path.join(directory, f"targets_{kind}"),
                                      width=harness.WIDTH, log=log)
             for kind in settings["priors"]}

  todo = len(grid) * settings["seeds"]
  done = sum(_key(row, seed) in results["runs"] for row, *_ in grid
             for seed in range(settings["seeds"]))
  start = time.time()
  for seed in range(settings["seeds"]):
    for row, method, prior, switch in grid:
      key = _key(row, seed)
      if key in results["runs"]:
        continue
      config = harness.RunConfig(
          method=method, filter_ratio=settings["filter_ratio"],
          batch_size=settings["batch_size"], steps=settings["steps"], seed=seed,
          eval_every=settings["eval_every"], learning_rate=settings["learning_rate"],
          num_chunks=4 if settings["smoke"] else 16, rela_switch=switch or "adaptive")
      run = harness.run(config, task, reference=models["reference"], reference_cache=cache,
                        prior_targets=targets[prior] if prior else None)
      if prior:
        pass_flops = results["priors"][prior]["pass_flops"]
        run["prior_pass_flops"] = pass_flops
        run["flops"] = [f + pass_flops for f in run["flops"]]
      results["runs"][key] = run
      results_file.write(_OUTPUT.value, results)
      done += 1
      print(f"[{done}/{todo}] {key}: final accuracy {run['accuracy'][-1]:.3f}"
            + (f", switched at {run['rela']['switch_step']}" if prior else "")
            + f", {run['wall_seconds']:.0f} s (elapsed {time.time() - start:.0f} s)",
            flush=True)
    _report(settings, results)
  _report(settings, results)
  print(f"results: {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
