r"""Cheap learner scoring on the captions data: what each lever saves, and what it costs.

The learner of the data-efficiency benchmark (`examples.lib.models.DualEncoder`) trains with JEST
(learnability, f = 0.8, the reference cached) for `--steps` steps, once at full resolution and
once on a mix of resolutions (`--train_resolutions`, `tfjest.multi_resolution`, Flexi-JEST),
and once with an online proxy (`--proxy_filters`, `tfjest.OnlineProxy`, Bad Students) scoring
for it. Then, models frozen, JEST selects from the same `--super_batches` fresh web super-batches
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
"""

import json
import os

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import tfjest
from benchmarks import models as bench_models
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
                                       "The multi-resolution learner's training sides.")
_PROXY = flags.DEFINE_list("proxy_filters", ["2", "4", "8"],
                          "The proxy's convolution widths (empty: no proxy learner).")
_PROXY_WIDTH = flags.DEFINE_integer("proxy_width", 16, "The proxy's embedding width.")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", reference_lib.EPOCHS,
                                   "Reference epochs on curated.")
_REFERENCE = flags.DEFINE_string("reference_path", "", "A saved reference to use instead.")
_OUTPUT = flags.DEFINE_string("output", "", "Write the rows here as JSON.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the learners, the stream and the selection.")


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


def main(argv):
  del argv
  b = _BATCH.value
  n = tfjest.super_batch_size_for(b, _RATIO.value)
  task = tasks.CaptionsTask(data.config_for(_NOISE.value, sizes=_SIZES.value), _DATA_DIR.value)
  if _REFERENCE.value:
    reference = reference_lib.load(_REFERENCE.value)
  else:
    reference = reference_lib.train(task, epochs=_REF_EPOCHS.value, log=print)
  cache = reference_lib.cached(reference, task, os.path.join(
      os.path.dirname(os.path.abspath(_OUTPUT.value or "out/cheap_scoring.json")),
      f"reference_cache_{task.config_name}"), log=print)
  # Fresh super-batches of the web stream (another shuffle than training's), in memory.
  elements = list(task.stream(seed=_SEED.value + 1000).take(_SUPER_BATCHES.value * n)
                  .batch(_SUPER_BATCHES.value * n))
  super_batches = tf.nest.map_structure(lambda t: t.numpy(), elements[0])
  print(f"cheap scoring: {task.describe()}; b={b}, N={n}, {_SUPER_BATCHES.value} super-batches "
        f"after {_STEPS.value} JEST steps")
  results = []
  proxy_filters = [int(f) for f in _PROXY.value]
  learners = [("full", None, None), ("/".join(_TRAIN_RESOLUTIONS.value),
                                     [int(s) for s in _TRAIN_RESOLUTIONS.value], None)]
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
