"""ReLA priors for a task: which frozen model gives the targets, and its targets, cached.

Three kinds (docs/SPEC.md §11 and issue 13's benchmark):

* "reference": the task's reference (`reference.train`: the learner's architecture trained on
  the clean `curated` split);
* "other_arch": another architecture (convolution widths `OTHER_FILTERS`, embedding width
  `OTHER_WIDTH`) trained on `curated` with the same recipe;
* "random": the learner's architecture at a random initialisation (the paper's control).

A prior reads the examples as they are (its view is the task's un-augmented inputs); its
features are its image embeddings.
"""

import time
from typing import Callable

import keras
import tensorflow as tf

import tfjest
from examples.lib import reference as reference_lib

KINDS = ("reference", "other_arch", "random")
OTHER_FILTERS = (8, 16, 32)
OTHER_WIDTH = 32
FEATURES = "image_embeddings"


def make(kind: str, task, *, epochs: int = reference_lib.EPOCHS, seed: int = 0,
         log: Callable[[str], None] = lambda s: None) -> keras.Model:
  """A frozen prior of `kind` for `task` (trained when the kind says so)."""
  if kind == "reference":
    return reference_lib.train(task, epochs=epochs, seed=seed, log=log)
  if kind == "other_arch":
    return reference_lib.train(task, epochs=epochs, seed=seed, width=OTHER_WIDTH,
                               filters=OTHER_FILTERS, name="other_arch_prior", log=log)
  if kind == "random":
    keras.utils.set_random_seed(seed + 1000)
    model = task.make_model("random_prior", width=reference_lib.WIDTH)
    model(task.example_inputs(1))
    model.trainable = False
    return model
  raise ValueError(f"Expected kind in {KINDS}. Received: kind={kind!r}")


def targets(prior: keras.Model, task, path: str, *, width: int,
            log: Callable[[str], None] = lambda s: None) -> tfjest.PriorTargets:
  """The prior's ReLA targets of the training split at `path` (reused when still valid)."""
  start = time.time()
  found = tfjest.prior_targets(prior, task.cache_stream(), path, width=width,
                               id_key=task.id_key, features=FEATURES, batch_size=1024,
                               reuse=True)
  how = "reused" if found.reused else f"computed ({found.rebuild_reason})"
  log(f"prior targets ({prior.name}): {how}, {found.num_examples} x {found.width} at {path} "
      f"({time.time() - start:.0f} s)")
  return found


def pass_flops(prior: keras.Model, task) -> float:
  """FLOPs of the prior's one-off pass over the training split (forward, once per example)."""
  spec = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape[1:], t.dtype),
                               task.example_inputs(1))
  return float(tfjest.forward_flops(prior, spec)) * task.training_examples
