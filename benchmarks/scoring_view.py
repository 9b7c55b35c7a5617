r"""Cheap scoring views: what scoring the learner at lower resolution saves, and what it costs.

A reference dual encoder (`benchmarks/models.py`'s ConvDualEncoder, global average pooling, so
it takes any image size) is trained on clean 32 x 32 image-caption pairs (`examples.lib.reference`'s
recipe on an `examples.lib.tasks.ToyTask`); a learner of the same
kind is trained briefly on the noisy stream (half of the captions swapped). Then JEST selects
from a fresh noisy stream, with the reference outputs cached, with the learner scoring

  - the full images (no view), or
  - a `scoring_view` that average-pools the images by 2 (16 x 16) or 4 (8 x 8),

and, as the baseline, uniform selection. For each it reports the learner-scoring FLOPs per step
(`Selector.step_cost()`), the measured time of the learner's scoring forward pass on N (median
of 5 calls after one warm-up, `benchmarks/timing.py`), the share of corrupted pairs among the
selected examples, and the mean batch score s(B) of the selected batches under the
full-resolution scores (`tfjest.batch_score` on `tfjest.PairwiseScores` of the learner's
full-resolution embeddings and the cached reference's: how good the chosen batches are by the
scores a full-resolution selection maximises; higher is better). It does so for two score
variants: "learnability" (the default; the cached reference carries much of the signal) and
"hard_learner" (the learner's view alone decides, so the view's fidelity shows directly).

    python -m benchmarks.scoring_view

Flags: `--batch_size=64 --filter_ratio=0.8 --super_batches=10 --scores=learnability,hard_learner`.
"""

import os
import statistics
import tempfile

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import tfjest
from benchmarks import measures
from benchmarks import models
from benchmarks import timing
from examples.lib import reference as reference_lib
from examples.lib import tasks
from tfjest import testing

_BATCH, _RATIO, _CHUNKS = measures.define_selection_flags(64, "b, examples per selected batch.")
_SUPER_BATCHES = flags.DEFINE_integer("super_batches", 10, "Super-batches selected per method.")
_CLEAN = flags.DEFINE_integer("clean_examples", 6000, "Clean pairs the reference trains on.")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", 5, "Reference training epochs.")
_LEARNER_EPOCHS = flags.DEFINE_integer("learner_epochs", 2,
                                       "Learner epochs on noisy pairs (as many as clean ones).")
_FILTERS = flags.DEFINE_list("filters", ["16", "32", "64"], "Image tower filters.")
_SCORES = flags.DEFINE_list("scores", ["learnability", "hard_learner"], "Score variants.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for data, models and selection.")

SIZE = 32


def _conv_dual_encoder(name, width=64):
  return models.ConvDualEncoder(width=width, filters=[int(f) for f in _FILTERS.value], name=name)


def _model(name):
  model = _conv_dual_encoder(name)
  model.compile(optimizer=keras.optimizers.Adam(3e-3))
  return models.built(model, SIZE)


def _pairs(n, corrupt, seed):
  data = testing.make_pairs(n, corrupt, seed=seed)
  data["image"] = models.images_at(data["image"], SIZE)
  return data


def _dataset(data):
  return tf.data.Dataset.from_tensor_slices(
      {"image": data["image"], "text": data["text"], "id": data["id"]})


def main(argv):
  del argv
  seed, b = _SEED.value, _BATCH.value
  n = tfjest.super_batch_size_for(b, _RATIO.value)
  with timing.stopwatch() as setup:
    # Clean pairs (seed + 1) for the reference, noisy ones (seed + 2) to warm the learner up.
    task = tasks.ToyTask(0.5, seed, training_examples=_CLEAN.value,
                         reference_examples=_CLEAN.value, image_size=SIZE,
                         model_fn=_conv_dual_encoder)
    reference = reference_lib.train(task, epochs=_REF_EPOCHS.value, batch_size=128, seed=seed)
    learner = _model("learner")
    noisy = task.pairs
    learner.fit(_dataset(noisy).shuffle(4096, seed=seed).batch(128, drop_remainder=True),
                epochs=_LEARNER_EPOCHS.value, verbose=0)
    accuracy = {model.name: testing.pair_accuracy(_ranker(model))
                for model in (reference, learner)}
  print(f"scoring views: ConvDualEncoder (filters {_FILTERS.value}) on {SIZE}x{SIZE} images, "
        f"b={b}, N={n}, K={_CHUNKS.value}, {os.cpu_count()} CPU cores; reference "
        f"{accuracy['reference']:.1%} pair accuracy, learner "
        f"{accuracy['learner']:.1%} after {_LEARNER_EPOCHS.value} epochs "
        f"on noisy pairs; setup {setup.wall:.0f} s")

  stream_data = _pairs(_SUPER_BATCHES.value * n, 0.5, seed + 3)
  stream = _dataset(stream_data)
  cache = tfjest.cache_reference(reference, stream,
                                 os.path.join(tempfile.mkdtemp(), "reference"), id_key="id")
  super_batches = list(stream.batch(n))
  forward_ms = {}
  for name, view in (("full 32x32", None), ("view 16x16", models.downscale(2)),
                     ("view 8x8", models.downscale(4))):
    x = {"image": super_batches[0]["image"], "text": super_batches[0]["text"]}
    x = view(x) if view is not None else x
    forward = tf.function(lambda x: learner(x, training=False))
    forward_ms[name] = timing.time_calls(forward, [(x,)] * 6, warmup=1).wall * 1e3

  for score in _SCORES.value:
    cached = {"reference_cache": cache, "id_key": "id"} if score == "learnability" else {}
    # The scores a full-resolution selection reads: the learner on full images and, for
    # learnability, the cached reference ("hard_learner" reads the learner alone).
    full_scores = [tfjest.PairwiseScores(
        score, models.embeddings(learner, {"image": sb["image"], "text": sb["text"]}),
        cache.outputs_for(sb, "id") if cached else None) for sb in super_batches]
    rows = []
    for name, view, method in (("full 32x32", None, "jest"),
                               ("view 16x16", models.downscale(2), "jest"),
                               ("view 8x8", models.downscale(4), "jest"),
                               ("uniform", None, "uniform")):
      selector = tfjest.select(learner=learner, batch_size=b, super_batch_size=n,
                               num_chunks=_CHUNKS.value, seed=seed, method=method, score=score,
                               scoring_view=view if method != "uniform" else None, **cached)
      batches = list(stream.apply(selector))
      ids = np.concatenate([batch["id"].numpy() for batch in batches])
      quality = [float(tfjest.batch_score(
          full_scores[t], tf.constant(batch["id"].numpy() - t * n, tf.int32)))
                 for t, batch in enumerate(batches)]
      rows.append((name, selector.step_cost().learner_scoring, forward_ms.get(name, 0.0),
                   stream_data["corrupted"][ids].mean(), statistics.mean(quality)))

    full_flops = rows[0][1]
    print(f"\nscore={score}" + (" (reference cached)" if cached else ""))
    print(f"{'scoring':<12} {'scoring GFLOP/step':>18} {'vs full':>8} {'forward N ms':>12} "
          f"{'corrupted share':>15} {'mean s(B) at full res':>21}")
    for name, flops, ms, corrupted, quality in rows:
      print(f"{name:<12} {flops / 1e9:>18.3f} {flops / full_flops:>8.2f} {ms:>12.1f} "
            f"{corrupted:>15.2f} {quality:>21.1f}")


def _ranker(model):
  """`pair_accuracy` feeds 16 x 16 images; this model reads 32 x 32."""
  class Upsampled:
    logit_scale, logit_bias = model.logit_scale, model.logit_bias

    def __call__(self, x, training=False):
      return model({**x, "image": tf.image.resize(x["image"], (SIZE, SIZE))}, training=training)

  return Upsampled()


if __name__ == "__main__":
  app.run(main)
