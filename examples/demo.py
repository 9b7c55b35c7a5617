r"""The demo: JEST against uniform sampling and the reference alone, at uniform's plateau.

    python -m examples.demo

On the default config (`noise_0.5`: half of the 100k web image-caption pairs corrupted), it
builds the dataset and its vocabulary if needed (into `--data_dir`, TFDS' default
`~/tensorflow_datasets`), trains a reference dual encoder on the 4k clean curated pairs, caches
its embeddings of the web split (`tfjest.cache_reference`, into `--output_dir/reference_cache`;
reused on the next run), then three learners on the web stream, all through `tfjest.select`:
uniform sampling for `--steps` steps, a budget at which uniform has plateaued (docs/SPEC.md §9: the 5-seed check is in BENCHMARKS.md; the demo prints the rule on its one seed), whose best
accuracy is the target; JEST with learnability scores (f = 0.8) where a small online proxy
(`tfjest.OnlineProxy`, `--proxy_filters`, Bad Students) scores for the learner, the cheapest
learner scoring measured (BENCHMARKS.md); and JEST with the reference's scores alone
(`easy_reference`). The two selecting learners run `--selection_steps` steps: they reach the
target long before, so their speedups are those of a run to `--steps`, and their final
accuracies are at fewer steps and less compute than uniform's (the comparison favours uniform).
It prints one line per stage and a table: steps and compute (FLOPs) to reach uniform's best
accuracy and the speedups, FLOPs per step, final accuracy, the share of corrupted examples
selected, examples read and reads per web example; and writes `--output_dir/accuracy.png`
(with a panel of one step's highest- and lowest-scoring candidates, selected or rejected) and a
TensorBoard log of each selecting run under `--output_dir/tensorboard` (it prints the
`tensorboard --logdir ...` line; see README "Selection in TensorBoard").
About 12 minutes on 2 CPU cores (`--steps=1000 --selection_steps=1000` for a quick look, below
the plateau: the speedups are then capped by the budget).
"""

import os
import sys


def _import_tensorflow_quietly():
  """Imports TensorFlow with file descriptor 2 closed to its C++ start-up lines.

  Importing TensorFlow 2.21 logs oneDNN and CUDA-probing lines from C++ before any setting
  (`TF_CPP_MIN_LOG_LEVEL` included) is read. An import error still shows: it is raised after
  stderr is restored.
  """
  sys.stderr.flush()
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  finally:
    os.dup2(saved, 2)
    os.close(null)
    os.close(saved)


# TensorFlow's C++ logs after the import honour this (set before the import reads it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import contextlib
import io
import re
import textwrap
import time
import warnings

from absl import app
from absl import flags
from absl import logging

from examples.lib import data
from examples.lib import harness
from examples.lib import plots
from examples.lib import reference as reference_lib
from examples.lib import tasks
from tfjest import efficiency

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS' own, ~/tensorflow_datasets).")
_NOISE = flags.DEFINE_float("noise", 0.5, "Share of corrupted web examples (a registered config).")
_SIZES = flags.DEFINE_list(
    "sizes", None, "web,curated,test sizes for a small config (tests); default: the full one.")
_STEPS = flags.DEFINE_integer(
    "steps", 25000, "Training steps of uniform: the budget, at uniform's plateau on the default "
    "config (BENCHMARKS.md: the rule holds at 25,000 and 30,000, not at 20,000).")
_SELECTION_STEPS = flags.DEFINE_integer(
    "selection_steps", 10000, "Training steps of the selecting learners (<= --steps): enough "
    "to reach uniform's best (they need about 3,500 and 6,000 on the default config); a "
    "selecting learner that does not reach it within them shows '-' in the table.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 500, "Steps between evaluations on test.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Examples per training step (b).")
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "JEST's filter ratio f (N = b / (1 - f)).")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "JEST's chunks per batch (must divide b).")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", reference_lib.EPOCHS,
                                   "Epochs of reference training on curated.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the learners and the selection.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/demo",
                                  "Where the plot (and the reference cache) are written.")
_SUMMARY_EVERY = flags.DEFINE_integer(
    "summary_every", 100, "Steps between the super-batches whose selected and rejected "
    "examples the TensorBoard log (--output_dir/tensorboard) and the plot show.")
_PROXY = flags.DEFINE_list(
    "proxy_filters", ["2", "4", "8"], "The convolution widths of the small online proxy that "
    "scores for the learner (tfjest.OnlineProxy; 1.18x a uniform step at f = 0.8); empty: the "
    "learner scores itself (2.7x a uniform step).")


def _fmt(value, spec):
  return "-" if value is None else format(value, spec)


def _quiet():
  """One line per stage: no absl/TFDS INFO or WARNING lines, no deprecation warnings."""
  logging.set_verbosity(logging.ERROR)
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  warnings.filterwarnings("ignore", category=UserWarning, module="keras")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()


def _table(names, runs, summaries):
  def row(label, fn):
    return [label] + [fn(name) for name in names]

  uniform = summaries["uniform"]
  rows = [
      row(f"steps to reach {uniform['target']:.3f} (uniform's best)",
          lambda n: _fmt(summaries[n]["steps"], "d")),
      row("step speedup", lambda n: _fmt(summaries[n]["step_speedup"], ".1f") + "x"),
      row("compute speedup (FLOPs)",
          lambda n: _fmt(summaries[n]["compute_speedup"], ".2f") + "x"),
      row("FLOPs per step (uniform = 1)",
          lambda n: f"{summaries[n]['flops_per_step_ratio']:.2f}"),
      row("steps run", lambda n: f"{runs[n]['steps'][-1]:,}"),
      row("final zero-shot accuracy", lambda n: f"{runs[n]['accuracy'][-1]:.3f}"),
      row("share of corrupted examples selected",
          lambda n: f"{runs[n]['corrupted_share'][-1]:.2f}"),
      row("examples read to the target",
          lambda n: _fmt(summaries[n]["examples_read_to_target"], ",d")),
      row("reads per web example, steps run",
          lambda n: _fmt(summaries[n]["reads_per_example"], ".1f")),
  ]
  width = max(len(r[0]) for r in rows)
  lines = [f"{'':<{width}}" + "".join(f"  {n:>20}" for n in names)]
  lines += [f"{r[0]:<{width}}" + "".join(f"  {c:>20}" for c in r[1:]) for r in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  if not 0 < _SELECTION_STEPS.value <= _STEPS.value:
    raise app.UsageError(f"--selection_steps must be in (0, --steps]. Received: "
                         f"--selection_steps={_SELECTION_STEPS.value}, --steps={_STEPS.value}")
  _quiet()
  start = time.time()
  built = io.StringIO()
  with contextlib.redirect_stdout(built):  # TFDS prints two lines when it builds the data
    task = tasks.CaptionsTask(data.config_for(_NOISE.value, sizes=_SIZES.value),
                              _DATA_DIR.value)
  if built.getvalue():
    print(f"data: built {task.config_name} offline (tfjest.datasets)")
  print(f"data: {task.describe()} ({time.time() - start:.0f} s)")

  reference = reference_lib.train(task, epochs=_REF_EPOCHS.value, log=print)
  metrics = task.evaluate(reference)
  print(f"reference: zero-shot accuracy {metrics['accuracy']:.3f}, "
        f"recall@1 {metrics['recall_at_1']:.3f}")
  cache = reference_lib.cached(reference, task,
                               os.path.join(_OUTPUT_DIR.value, "reference_cache"), log=print)

  proxy = [int(f) for f in _PROXY.value] or None
  jest_name = "jest (proxy)" if proxy else "jest"
  configs = {"uniform": dict(method="uniform"),
             jest_name: dict(method="jest", score="learnability", proxy_filters=proxy),
             "easy_reference": dict(method="jest", score="easy_reference")}
  runs = {}
  for name, kwargs in configs.items():
    steps = _STEPS.value if name == "uniform" else _SELECTION_STEPS.value
    config = harness.RunConfig(batch_size=_BATCH.value, steps=steps, seed=_SEED.value,
                               eval_every=_EVAL_EVERY.value, filter_ratio=_RATIO.value,
                               num_chunks=_CHUNKS.value, **kwargs)
    # The selecting runs write TensorBoard summaries of what they kept and dropped.
    board = (os.path.join(_OUTPUT_DIR.value, "tensorboard", re.sub(r"\W+", "_", name).strip("_"))
             if name != "uniform" else None)
    runs[name] = harness.run(config, task, reference=reference, reference_cache=cache,
                             tensorboard_dir=board, summary_every=_SUMMARY_EVERY.value)
    print(f"{name}: {steps} steps in {runs[name]['wall_seconds']:.0f} s, final accuracy "
          f"{runs[name]['accuracy'][-1]:.3f}")

  uniform = runs["uniform"]
  summaries = {name: efficiency.summarize([run], [uniform]) for name, run in runs.items()}
  window = len(uniform["steps"]) > 4 and efficiency.plateau(uniform["steps"], uniform["accuracy"])
  print()
  print(_table(list(runs), runs, summaries))
  if window:
    print(f"uniform {'has' if window.plateaued else 'has NOT'} plateaued: it gains "
          f"{window.gain_last_window:+.3f} over the last quarter of the budget (docs/SPEC.md "
          f"§9.1: less than 0.01)" + ("" if window.plateaued else
                                           "; the speedups are capped by the budget"))
  jest = summaries[jest_name]
  print(f"{jest_name}: step speedup {_fmt(jest['step_speedup'], '.1f')}x, compute speedup "
        f"{_fmt(jest['compute_speedup'], '.2f')}x (docs/SPEC.md §9)")

  panels = []
  for axis, label in (("steps", "training steps"), ("flops", "cumulative FLOPs")):
    panels.append({
        "title": f"zero-shot accuracy on test against {label}", "xlabel": label,
        "ylabel": "zero-shot accuracy", "hline": (jest["target"], "uniform's best"),
        "series": [{"label": name, "x": run[axis], "y": run["accuracy"]}
                   for name, run in runs.items()]})
  sample = runs[jest_name].get("selection_sample")
  if sample and sample["candidates"] and sample["candidates"][0]["image"] is not None:
    panels.append({
        "title": f"{jest_name} at step {sample['step']}: highest (top) and lowest scores\n"
                 "green: selected, red: rejected", "columns": len(sample["candidates"]) // 2,
        "tiles": [{"image": c["image"], "color": "green" if c["selected"] else "red",
                   "label": "\n".join([f"{c['score']:.1f}"] + textwrap.wrap(
                       c["caption"], 16, max_lines=4, placeholder=" ..."))}
                  for c in sample["candidates"]]})
  path = plots.save_panels(
      os.path.join(_OUTPUT_DIR.value, "accuracy.png"), panels, columns=len(panels),
      title=f"{task.config_name}: reference accuracy {metrics['accuracy']:.3f}, "
            f"b={_BATCH.value}, f={_RATIO.value}, seed {_SEED.value}")
  print(f"plot: {path}")
  print(f"tensorboard: tensorboard --logdir {os.path.join(_OUTPUT_DIR.value, 'tensorboard')}")
  print(f"total time: {time.time() - start:.0f} s")


if __name__ == "__main__":
  app.run(main)
