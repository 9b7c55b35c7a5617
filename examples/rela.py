r"""Trains a learner with ReLA: a frozen prior's targets early, then its own SigLIP loss.

Makes a prior (`examples.lib.rela`: the reference trained on the clean split, another
architecture, or a random initialisation), computes its ReLA targets of the training split once
(`tfjest.prior_targets`, reused from `--targets_dir` when still valid), and trains a learner
through `tfjest.ReLAAid` on uniform or JEST-selected batches with the targets joined by id.

    python -m examples.rela --prior=reference --method=uniform --steps=500 --switch=0.1

    # With JEST selecting the batches (the reference's embeddings cached), a tiny world:
    python -m examples.rela --method=jest --sizes=2000,400,200 --steps=40 --eval_every=20 \
        --reference_epochs=2

The last line reads `rela: switched to the model's own loss at step <s>; accuracy <a>`.
"""

import os
import tempfile

from absl import app
from absl import flags

from examples.lib import data
from examples.lib import harness
from examples.lib import rela as rela_lib
from examples.lib import reference as reference_lib
from examples.lib import tasks

_PRIOR = flags.DEFINE_enum("prior", "reference", rela_lib.KINDS,
                           "The prior (examples.lib.rela.KINDS).")
_METHOD = flags.DEFINE_enum("method", "uniform", ["uniform", "jest"], "Batch selection.")
_SWITCH = flags.DEFINE_string("switch", "0.1", "A fraction of --steps, a step, or 'adaptive'.")
_STEPS = flags.DEFINE_integer("steps", 500, "Training steps.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 100, "Steps between evaluations.")
_NOISE = flags.DEFINE_float("noise", 0.5, "Web noise level.")
_SIZES = flags.DEFINE_list("sizes", [], "web,curated,test sizes of a custom (small) world.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS' own, ~/tensorflow_datasets).")
_EPOCHS = flags.DEFINE_integer("reference_epochs", reference_lib.EPOCHS,
                               "Epochs of reference (and trained prior) training.")
_TARGETS_DIR = flags.DEFINE_string("targets_dir", "", "Where the targets (and the reference "
                                   "cache) are kept; a temporary directory when empty.")


def main(argv):
  del argv
  switch = _SWITCH.value
  if switch != "adaptive":
    switch = float(switch) if 0 < float(switch) < 1 else int(float(switch))
  task = tasks.CaptionsTask(data.config_for(_NOISE.value, sizes=_SIZES.value or None),
                            _DATA_DIR.value)
  directory = _TARGETS_DIR.value or tempfile.mkdtemp()
  log = lambda line: print(line, flush=True)  # pylint: disable=unnecessary-lambda-assignment
  log(task.describe())
  prior = rela_lib.make(_PRIOR.value, task, epochs=_EPOCHS.value, log=log)
  targets = rela_lib.targets(prior, task, os.path.join(directory, f"targets_{_PRIOR.value}"),
                           width=harness.WIDTH, log=log)
  reference = cache = None
  if _METHOD.value == "jest":
    reference = (prior if _PRIOR.value == "reference"
                 else reference_lib.train(task, epochs=_EPOCHS.value, log=log))
    cache = reference_lib.cached(reference, task, os.path.join(directory, "reference_cache"),
                                 log=log)
  result = harness.run(
      harness.RunConfig(method=_METHOD.value, steps=_STEPS.value, eval_every=_EVAL_EVERY.value,
                        rela_switch=switch),
      task, reference=reference, reference_cache=cache, prior_targets=targets, log=log)
  print(f"rela: switched to the model's own loss at step {result['rela']['switch_step']}; "
        f"accuracy {result['accuracy'][-1]:.3f}")


if __name__ == "__main__":
  app.run(main)
