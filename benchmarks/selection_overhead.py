r"""Per-step cost of JEST selection, without a strategy and under MirroredStrategy (2 CPUs).

Trains the toy dual encoder (`tfjest.testing.PairDualEncoder` on `tfjest.testing.make_pairs`)
with `model.fit` for `--warmup` + `--steps` steps in each configuration and reports the median
time of the timed steps:

| configuration      | strategy         | data per step                                      |
| ------------------ | ---------------- | -------------------------------------------------- |
| plain              | none             | a batch of b                                       |
| pipeline           | none             | JEST in the tf.data map (the default on CPU)       |
| train_step         | none             | JEST inside the train step (`placement="train_step"`) |
| mirrored_plain     | Mirrored, 2 CPUs | a global batch of b                                |
| mirrored_local     | Mirrored, 2 CPUs | JEST per replica in the replicated step (default)  |
| mirrored_global    | Mirrored, 2 CPUs | JEST with chunks conditioned across replicas       |

Every timed step is timed on its own (`benchmarks/timing.py`'s `StepTimer`: Keras reads the
loss before calling it, which waits for the step); each configuration runs `--repeats` times,
alternating, after one discarded run; the table gives the median step time over all its timed
steps with the quartiles (the median resists bursts of other load on a shared machine).
Selection overhead = configuration - plain of the same strategy.

    python -m benchmarks.selection_overhead --output=/tmp/overhead.json

About 2-4 minutes on 2 CPU cores with the defaults.
"""

import contextlib
import json
import os
import platform
import time

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

import tfjest
from benchmarks import timing
from tfjest import testing

_BATCH = flags.DEFINE_integer("batch_size", 256, "b, examples trained on per step (global).")
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "f: each step scores N = b / (1 - f).")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "K, JEST chunks.")
_WARMUP = flags.DEFINE_integer("warmup", 10, "Untimed steps first (tracing, compilation).")
_STEPS = flags.DEFINE_integer("steps", 40, "Timed steps per run.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per configuration.")
_CONFIGS = flags.DEFINE_list(
    "configs", "plain,pipeline,train_step,mirrored_plain,mirrored_local,mirrored_global",
    "Configurations to measure.")
_OUTPUT = flags.DEFINE_string("output", "", "Write the figures here as JSON.")


def _measure(name, strategy, seconds_per_step):
  b = _BATCH.value
  pairs = testing.make_pairs(4096, 0.5, seed=0)
  stream = tf.data.Dataset.from_tensor_slices(
      {"image": pairs["image"], "text": pairs["text"]}).repeat()
  use = strategy if name.startswith("mirrored") else None
  scope = use.scope() if use is not None else contextlib.nullcontext()
  with scope:
    keras.utils.set_random_seed(0)
    learner = testing.PairDualEncoder(name="learner")
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    reference = testing.PairDualEncoder(name="reference")
    reference.trainable = False
    size = testing.IMAGE_SIZE
    for model in (learner, reference):
      model({"image": tf.zeros([1, size, size, 3]), "text": tf.zeros([1, 3], tf.int32)})
    if name.endswith("plain"):
      data = stream.batch(b, drop_remainder=True)
    else:
      selector = tfjest.select(learner=learner, reference=reference, batch_size=b,
                               filter_ratio=_RATIO.value, num_chunks=_CHUNKS.value)
      selector = tfjest.attach(
          learner, selector, placement="train_step" if name == "train_step" else "auto",
          replica_selection="global" if name.endswith("global") else "local")
      data = stream.apply(selector)
  timer = timing.StepTimer(warmup=_WARMUP.value)
  learner.fit(data, epochs=1, steps_per_epoch=_WARMUP.value + _STEPS.value, verbose=0,
              callbacks=[timer])
  seconds_per_step.setdefault(name, []).extend(timer.timings.walls)


def _machine():
  model = ""
  try:
    with open("/proc/cpuinfo") as f:
      model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
  except OSError:
    pass
  return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
          "load_average_at_start": os.getloadavg()}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if not testing.configure_cpu_devices(2):
    raise SystemExit("MirroredStrategy needs 2 logical CPU devices, but TensorFlow had "
                     "initialised its devices before they could be configured.")
  machine = _machine()
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  seconds = {}
  _measure("plain", strategy, {})  # discarded: the process's first fit pays one-off costs
  for repeat in range(_REPEATS.value):
    for name in _CONFIGS.value:
      _measure(name, strategy, seconds)
      last = np.array(seconds[name][-_STEPS.value:])
      print(f"repeat {repeat}: {name:>16} median {1e3 * np.median(last):8.1f} ms/step",
            flush=True)
  summary = {}
  for name, values in seconds.items():
    q25, median, q75 = np.percentile(1e3 * np.array(values), [25, 50, 75])
    summary[name] = {"median_ms": median, "q25_ms": q25, "q75_ms": q75, "steps": len(values)}
  print()
  print(f"{'configuration':>16} {'median':>9} {'q25':>9} {'q75':>9}  overhead vs plain")
  for name, row in summary.items():
    plain = "mirrored_plain" if name.startswith("mirrored") else "plain"
    overhead = ""
    if plain in summary and name != plain:
      extra = row["median_ms"] - summary[plain]["median_ms"]
      overhead = f"{extra:+8.1f} ms ({row['median_ms'] / summary[plain]['median_ms']:.2f}x)"
      row["overhead_ms"] = extra
    print(f"{name:>16} {row['median_ms']:9.1f} {row['q25_ms']:9.1f} {row['q75_ms']:9.1f}  "
          f"{overhead}")
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump({"machine": machine, "date": time.strftime("%Y-%m-%d"),
                 "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
                 "flags": {f: flags.FLAGS[f].value for f in (
                     "batch_size", "filter_ratio", "num_chunks", "warmup", "steps", "repeats")},
                 "ms_per_step": summary}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
