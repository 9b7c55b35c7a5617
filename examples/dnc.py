r"""Divide and Contrast on the captions data: base, k-means, one expert per cluster, distillation.

    python -m examples.dnc --num_clusters=5 --expert_steps=500 --steps=3000

The base is the reference (trained on the clean curated split, `examples.lib.reference`; saved in
`--output_dir` and reused). Its image embeddings of the web split are cached and clustered by
k-means (`tfjest.cluster_reference`); one expert per cluster starts from the base and trains
with the SigLIP loss on its cluster's stream (hard negatives); a student of the learner's
architecture is then distilled from the base and the experts (a regression head per teacher,
routed by cluster id) and evaluated zero-shot through its base head. The recipe lives in
`examples.lib.dnc`. Prints the base's, each expert's and the student's zero-shot
accuracy. `--sizes=2000,400,200 --reference_epochs=1 --expert_steps=5 --steps=10
--eval_every=5` is a smoke run of about a minute (the test suite runs it).
"""

import os

from absl import app
from absl import flags

from examples.lib import data
from examples.lib import dnc
from examples.lib import harness
from examples.lib import reference as reference_lib
from examples.lib import tasks

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/dnc", "Reference, caches and clusters.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS' own, ~/tensorflow_datasets).")
_NOISE = flags.DEFINE_float("noise", 0.5, "Web noise level (a registered config).")
_SIZES = flags.DEFINE_list("sizes", None, "web,curated,test sizes of a small config (tests).")
_CLUSTERS = flags.DEFINE_integer("num_clusters", 5, "k of k-means (experts).")
_EXPERT_STEPS = flags.DEFINE_integer("expert_steps", 500, "Training steps per expert.")
_STEPS, _EVAL_EVERY, _BATCH, _LR = harness.define_run_flags(
    steps=3000, eval_every=250, steps_help="Distillation steps.",
    batch_help="Examples per step (experts and student).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the experts, the student and the streams.")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", reference_lib.EPOCHS,
                                   "Epochs of reference (base) training on curated.")


def main(argv):
  del argv
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  task = tasks.CaptionsTask(data.config_for(_NOISE.value, sizes=_SIZES.value), _DATA_DIR.value)
  print(task.describe(), flush=True)
  path = os.path.join(_OUTPUT_DIR.value, f"base_{task.config_name}.keras")
  if os.path.exists(path):
    base = reference_lib.load(path)
  else:
    base = reference_lib.train(task, epochs=_REF_EPOCHS.value, log=print)
    reference_lib.save(base, path)
  print(f"base: accuracy {task.evaluate(base)['accuracy']:.3f}", flush=True)
  base_cache = reference_lib.cached(base, task, os.path.join(_OUTPUT_DIR.value, "base_cache"),
                                    log=print)
  clusters = dnc.divide(base_cache, os.path.join(_OUTPUT_DIR.value, "clusters"),
                        num_clusters=_CLUSTERS.value, log=print)
  experts = dnc.train_experts(task, base, clusters, steps=_EXPERT_STEPS.value,
                              batch_size=_BATCH.value, learning_rate=_LR.value,
                              seed=_SEED.value, log=print)
  expert_caches = [
      reference_lib.cached(e, task, os.path.join(_OUTPUT_DIR.value, f"seed{_SEED.value}_"
                                                 f"expert_{c}_cache"), log=print)
      for c, e in enumerate(experts)]
  _, curve = dnc.distill(task, base_cache, expert_caches, clusters, steps=_STEPS.value,
                         eval_every=_EVAL_EVERY.value, batch_size=_BATCH.value,
                         learning_rate=_LR.value, seed=_SEED.value, width=harness.WIDTH,
                         expert_steps=_EXPERT_STEPS.value, log=print)
  print(f"distilled student: accuracy {curve['accuracy'][-1]:.3f} after {_STEPS.value} steps; "
        f"FLOPs: experts {curve['dnc_flops']['once']:.3g} once, "
        f"{curve['dnc_flops']['per_step']:.3g} per distillation step")


if __name__ == "__main__":
  app.run(main)
