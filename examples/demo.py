r"""The demo: JEST against uniform sampling on the offline benchmark's noisy web split.

    python -m examples.demo

On the default config (`noise_0.5`: half of the 100k web image-caption pairs corrupted), it
builds the dataset and its vocabulary if needed (into `--data_dir`, TFDS' default
`~/tensorflow_datasets`), trains a reference dual encoder on the 4k clean curated pairs, caches
its embeddings of the web split (`tfjest.cache_reference`, into `--output_dir/reference_cache`;
`--nocache_reference` calls the reference every step instead, with the same selections), then
two learners on the web stream for the same number of steps: one with uniform sampling and one
with JEST (learnability, `--filter_ratio` 0.8), both through `tfjest.select`. It prints a table
(the steps uniform needs to reach its best zero-shot accuracy and the steps JEST needs to reach
the same accuracy, final accuracies, the share of corrupted examples each selected) and writes
`--output_dir/accuracy.png`. About 2 minutes on 2 CPU cores (10 at most). With
`--proxy_filters=4,8,16` a small online proxy scores for the learner (Bad Students): the same
steps for about half the FLOPs per step at f = 0.8 (1.36x a uniform step instead of 2.70x).
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
import time
import warnings

from absl import app
from absl import flags
from absl import logging

from examples import data
from examples import harness
from examples import plots
from examples import reference as reference_lib
from examples import tasks
from tfjest import efficiency

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS').")
_NOISE = flags.DEFINE_float("noise", 0.5, "Share of corrupted web examples (a registered config).")
_SIZES = flags.DEFINE_list(
    "sizes", None, "web,curated,test sizes for a small config (tests); default: the full one.")
_STEPS = flags.DEFINE_integer("steps", 1000, "Training steps of each learner.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 50, "Steps between evaluations on test.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Examples per training step (b).")
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "JEST's filter ratio f (N = b / (1 - f)).")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "JEST's chunks per batch (must divide b).")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", reference_lib.EPOCHS,
                                   "Epochs of reference training on curated.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the learners and the selection.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/demo",
                                  "Where the plot (and the reference cache) are written.")
_PROXY = flags.DEFINE_list(
    "proxy_filters", [], "With three convolution widths (e.g. 4,8,16), a small online proxy "
    "(tfjest.OnlineProxy, Bad Students) scores for the learner: less compute per step.")
_CACHE = flags.DEFINE_bool("cache_reference", True,
                           "Cache the reference's web embeddings once (else call it every step).")


def _fmt(value, spec):
  return "-" if value is None else format(value, spec)


def _quiet():
  """One line per stage: no absl/TFDS INFO or WARNING lines, no deprecation warnings."""
  logging.set_verbosity(logging.ERROR)
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  warnings.filterwarnings("ignore", category=UserWarning, module="keras")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()


def main(argv):
  del argv
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
  cache = None
  if _CACHE.value:
    cache = reference_lib.cached(reference, task,
                                 os.path.join(_OUTPUT_DIR.value, "reference_cache"), log=print)

  runs = {}
  for name, method in (("uniform", "uniform"), ("jest", "jest")):
    proxy = [int(f) for f in _PROXY.value] if method == "jest" and _PROXY.value else None
    config = harness.RunConfig(
        method=method, score="learnability", batch_size=_BATCH.value, steps=_STEPS.value,
        seed=_SEED.value, eval_every=_EVAL_EVERY.value, filter_ratio=_RATIO.value,
        num_chunks=_CHUNKS.value, proxy_filters=proxy)
    runs[name] = harness.run(config, task, reference=reference, reference_cache=cache)
    print(f"{name}: {_STEPS.value} steps in {runs[name]['wall_seconds']:.0f} s")

  jest = efficiency.summarize([runs["jest"]], [runs["uniform"]])
  uniform = efficiency.summarize([runs["uniform"]], [runs["uniform"]])
  jest_name = (f"jest (learnability, f={_RATIO.value}"
               f"{', proxy' if _PROXY.value else ''})")
  uniform_cost = runs["uniform"]["flops_per_step"]["total"]
  rows = [
      (f"steps to reach {jest['target']:.3f} (uniform's best)",
       _fmt(uniform["steps"], "d"), _fmt(jest["steps"], "d")),
      ("final zero-shot accuracy", f"{runs['uniform']['accuracy'][-1]:.3f}",
       f"{runs['jest']['accuracy'][-1]:.3f}"),
      ("final recall@1", f"{runs['uniform']['recall_at_1'][-1]:.3f}",
       f"{runs['jest']['recall_at_1'][-1]:.3f}"),
      ("share of corrupted examples selected", f"{runs['uniform']['corrupted_share'][-1]:.2f}",
       f"{runs['jest']['corrupted_share'][-1]:.2f}"),
      ("FLOPs per step (uniform = 1)", "1.00", f"{jest['flops_per_step_ratio']:.2f}"),
      ("  of which reference scoring", "0.00",
       f"{runs['jest']['flops_per_step']['reference_scoring'] / uniform_cost:.2f}"),
  ]
  width = max(len(r[0]) for r in rows)
  print()
  print(f"{'':<{width}}  {'uniform':>10}  {jest_name:>28}")
  for label, a, b in rows:
    print(f"{label:<{width}}  {a:>10}  {b:>28}")
  print(f"step speedup: {_fmt(jest['step_speedup'], '.1f')}x, compute speedup: "
        f"{_fmt(jest['compute_speedup'], '.2f')}x (JEST_SPEC section 9)")

  panels = []
  for axis, label in (("steps", "training steps"), ("flops", "cumulative FLOPs")):
    panels.append({
        "title": f"zero-shot accuracy on test against {label}", "xlabel": label,
        "ylabel": "zero-shot accuracy", "hline": (jest["target"], "uniform's best"),
        "series": [{"label": "uniform", "x": runs["uniform"][axis],
                    "y": runs["uniform"]["accuracy"]},
                   {"label": jest_name, "x": runs["jest"][axis],
                    "y": runs["jest"]["accuracy"]}]})
  name = task.config_name
  path = plots.save_panels(
      os.path.join(_OUTPUT_DIR.value, "accuracy.png"), panels, columns=2,
      title=f"{name}: reference accuracy {metrics['accuracy']:.3f}, b={_BATCH.value}, "
            f"seed {_SEED.value}")
  print(f"plot: {path}")
  print(f"total time: {time.time() - start:.0f} s")


if __name__ == "__main__":
  app.run(main)
