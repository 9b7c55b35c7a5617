r"""Quickstart: JEST avoids swapped captions that uniform sampling trains on.

Generates a small image–caption stream in which half of the pairs have their caption swapped
with another example's, trains a small reference dual encoder on clean pairs and caches its
embeddings for the stream once (`tfjest.cache_reference`: the frozen reference then costs
nothing per step), then reports the share of corrupted pairs among the examples chosen by
`uniform`, `independent` and `jest` selection, and trains a learner with `model.fit` on the JEST
stream for a few steps, reporting the FLOPs of a step.

The tour's models are tiny and live on the host CPU (`tf.device("/cpu:0")`) on any machine, so
selection belongs in the tf.data pipeline, where the tour reads the chosen ids; with a model on
a GPU or TPU, wrap the selector with `tfjest.attach(model, selector)` instead (README, "On a
GPU or TPU").

Runs in about a minute on 2 CPU cores. The last line reads
`corrupted share selected: uniform=<x.xx> independent=<x.xx> jest=<x.xx>`.

    python -m examples.quickstart
"""

import os
import tempfile

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import tfjest
from examples.lib import reference as reference_lib
from examples.lib import tasks
from tfjest import testing

_CLEAN = flags.DEFINE_integer("clean_examples", 6000, "Clean pairs the reference trains on.")
_STREAM = flags.DEFINE_integer("stream_examples", 4800, "Examples in the noisy stream.")
_CORRUPT = flags.DEFINE_float("corrupt_share", 0.5, "Share of stream pairs with a swapped caption.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Examples per selected batch (b).")
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "Share of each super-batch filtered out.")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "JEST chunks per batch.")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", 6, "Epochs of reference training.")
_FIT_STEPS = flags.DEFINE_integer("fit_steps", 20, "Learner steps of model.fit on the JEST stream.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for data, models and selection.")


def main(argv):
  del argv
  with tf.device("/cpu:0"):
    _tour()


def _tour():
  seed = _SEED.value
  task = tasks.ToyTask(_CORRUPT.value, seed, training_examples=_STREAM.value,
                       reference_examples=_CLEAN.value)
  reference = reference_lib.train(task, epochs=_REF_EPOCHS.value, batch_size=128, seed=seed,
                                  width=32)
  accuracy = testing.pair_accuracy(reference)
  print(f"reference: ranks the true caption above a swapped one for {accuracy:.1%} of images")

  noisy = task.pairs
  corrupted = noisy["corrupted"]
  # The stream carries ids; the corruption flags stay outside it, for analysis only.
  stream = tf.data.Dataset.from_tensor_slices(
      {"image": noisy["image"], "text": noisy["text"], "id": noisy["id"]})
  print(f"stream: {len(corrupted)} pairs, {corrupted.mean():.2f} of them corrupted")
  # The reference is frozen: embed the stream once, join by id at selection time.
  cache = tfjest.cache_reference(reference, stream, os.path.join(tempfile.mkdtemp(), "ref"),
                                 id_key="id")

  keras.utils.set_random_seed(seed + 3)
  learner = testing.PairDualEncoder(name="learner")
  learner.compile(optimizer=keras.optimizers.Adam(1e-3))

  shares = {}
  for method in ("uniform", "independent", "jest"):
    selector = tfjest.select(learner=learner, reference_cache=cache, id_key="id",
                             batch_size=_BATCH.value, filter_ratio=_RATIO.value, method=method,
                             num_chunks=_CHUNKS.value, seed=seed)
    ids = np.concatenate([batch["id"].numpy() for batch in stream.apply(selector)])
    shares[method] = corrupted[ids].mean()
    print(f"{method:>11}: selected {len(ids)} of {selector.stats.result()['read']}, "
          f"corrupted share {shares[method]:.2f}")

  selector = tfjest.select(learner=learner, reference=reference, reference_cache=cache,
                           id_key="id", batch_size=_BATCH.value, filter_ratio=_RATIO.value,
                           method="jest", num_chunks=_CHUNKS.value, seed=seed)
  history = learner.fit(stream.repeat().apply(selector), steps_per_epoch=_FIT_STEPS.value,
                        epochs=1, verbose=0,
                        callbacks=[tfjest.SelectionStatsCallback(selector)])
  logs = {k: v[-1] for k, v in history.history.items()}
  print(f"learner: {_FIT_STEPS.value} fit steps on the JEST stream, loss {logs['loss']:.3f}, "
        f"selected-minus-rejected reference loss "
        f"{logs['selection_reference_loss_selected'] - logs['selection_reference_loss_rejected']:.2f}")
  cost = selector.step_cost()
  print(f"FLOPs per step: {cost.total / 1e6:.0f} M = {cost.total / cost.training:.2f} x the "
        f"training step (learner scoring {cost.learner_scoring / 1e6:.0f} M, reference 0 "
        f"(cached), selection {cost.selection / 1e6:.1f} M)")
  print("corrupted share selected: " +
        " ".join(f"{m}={shares[m]:.2f}" for m in ("uniform", "independent", "jest")))


if __name__ == "__main__":
  app.run(main)
