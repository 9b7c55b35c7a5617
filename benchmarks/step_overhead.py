r"""What selection adds to a training step: `select` + `fit` against the same work by hand.

Side by side, in one process, with one model (`benchmarks/models.py`'s ConvDualEncoder on
32 x 32 images, forward passes dominate) and one configuration (b, N = b / (1 - f), K):

  (a) by hand, no tfjest: per step, the next super-batch of N from the stream
      (`stream.batch(N)`, prefetched), the learner's scoring forward pass on the N candidates and
      a Keras training step (`learner.train_step`) on b of them, in one `tf.function`;
  (b) tfjest: `stream.apply(tfjest.select(...))` fed to `learner.fit`, with the reference's
      outputs read from a cache (`tfjest.cache_reference`, the cheapest correct configuration,
      so neither (a) nor (b) runs the reference per step).

Rounds alternate (a), (b), (a), (b), ... and each reports the median wall time per step after
warm-up (`benchmarks/timing.py`: `time_calls` for (a), the `StepTimer` callback for (b)). The
ratio (b)/(a) is the median over rounds of each round's ratio (a round's (a) and (b) run back to
back, so they see the same load from other jobs; target <= 1.10). Process CPU time per step (all
threads, the input pipeline's included) is reported too: on a machine shared with other jobs it
is the steadier measure of the work each side does. The breakdown times each part of (b) alone,
per step, in `tf.function`s, from the public pieces the selection step is made of: the learner's
scoring forward pass, the cache join (`ReferenceCache.outputs_for`: hash lookup, fingerprint
check, gathers), the selection maths (a `tfjest.Rule` with the selector's arguments choosing on
`tfjest.PairwiseScores`, and `tfjest.batch_score` for the statistics), gathering the chosen b,
and the training step; "pipeline" is what remains of (b). Parts run concurrently in (b)
(prefetching overlaps the next selection with the current training step), so the parts can add
up to more than (b).

    python -m benchmarks.step_overhead

Flags: `--batch_size=128 --filter_ratio=0.8 --num_chunks=16 --steps=10 --warmup=3 --rounds=5`;
`--live_reference` adds a configuration where the reference runs in both (a) and (b).
"""

import os
import statistics
import tempfile

from absl import app
from absl import flags
import keras
import tensorflow as tf

import tfjest
from benchmarks import measures
from benchmarks import models
from benchmarks import timing

_BATCH, _RATIO, _CHUNKS = measures.define_selection_flags(128, "b, examples per training step.")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Image side in pixels.")
_EXAMPLES = flags.DEFINE_integer("examples", 3200, "Distinct examples in the (repeated) stream.")
_STEPS, _WARMUP, _ROUNDS = measures.define_round_flags(steps=10, warmup=3, rounds=5)
_LIVE = flags.DEFINE_bool("live_reference", False, "Also measure with a live reference.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for data and models.")


def main(argv):
  del argv
  b, k = _BATCH.value, _CHUNKS.value
  n = tfjest.super_batch_size_for(b, _RATIO.value)
  size = _IMAGE.value
  keras.utils.set_random_seed(_SEED.value)
  stream = measures.conv_stream(_EXAMPLES.value, size, _SEED.value)
  learner, reference = measures.conv_models(size)
  cache_dir = tempfile.mkdtemp(prefix="tfjest_step_overhead_")
  with timing.stopwatch() as cache_build:
    cache = tfjest.cache_reference(reference, stream, os.path.join(cache_dir, "reference"),
                                   id_key="id", batch_size=512)

  # One super-batch, as constants, for timing the parts alone.
  x_of = measures.pair_inputs
  sb = tf.nest.map_structure(tf.constant, next(stream.batch(n).as_numpy_iterator()))

  configs = [("cached reference", dict(reference_cache=cache, id_key="id"), False)]
  if _LIVE.value:
    configs.append(("live reference", dict(reference=reference), True))

  print(f"step overhead: ConvDualEncoder on {size}x{size} images, b={b}, N={n} "
        f"(f={_RATIO.value}), K={k}, {os.cpu_count()} CPU cores; reference cache of "
        f"{cache.num_examples} examples built in {cache_build.wall:.1f} s")
  for name, select_args, live in configs:
    by_hand = measures.by_hand_step(learner, reference, b, live=live)
    selector = tfjest.select(learner=learner, batch_size=b, super_batch_size=n,
                             num_chunks=k, seed=_SEED.value, **select_args)
    # The selector's rule, built from the same arguments, for timing the maths alone.
    rule = tfjest.Rule(num_chunks=k, seed=_SEED.value)
    selected = stream.repeat().apply(selector)
    comparison = measures.compare(by_hand, learner, selected, stream, n,
                                  rounds=_ROUNDS.value, warmup=_WARMUP.value,
                                  steps=_STEPS.value)
    with_tfjest = statistics.median(comparison.tfjest_rounds)

    # The parts of (b), each alone: median of 4 calls after 2 warm-up ones.
    def alone(fn, args_list):
      return timing.time_calls(fn, args_list, warmup=2).wall

    parts = {}
    parts["learner scoring forward (N)"] = alone(
        tf.function(lambda sb: learner(x_of(sb), training=False)), [(sb,)] * 6)
    if live:
      parts["reference scoring forward (N)"] = alone(
          tf.function(lambda sb: reference(x_of(sb), training=False)), [(sb,)] * 6)
      reference_emb = models.embeddings(reference, x_of(sb))
    else:
      parts["cache join (lookup, fingerprint check)"] = alone(
          tf.function(lambda sb: cache.outputs_for(sb, "id")), [(sb,)] * 6)
      reference_emb = cache.outputs_for(sb, "id")
    emb = (models.embeddings(learner, x_of(sb)), reference_emb)

    @tf.function
    def maths(learner_emb, reference_emb, step, rule=rule):
      scores = tfjest.PairwiseScores("learnability", learner_emb, reference_emb)
      picks = rule.choose(scores, b, step=step, num_candidates=n)
      return picks, tfjest.batch_score(scores, picks)

    parts["selection maths (+ s(B) for stats)"] = alone(
        maths, [emb + (tf.constant(i, tf.int64),) for i in range(6)])
    picks = tf.sort(maths(*emb, tf.constant(0, tf.int64))[0])
    parts["gather b of N"] = alone(
        tf.function(lambda sb, p: tf.nest.map_structure(lambda t: tf.gather(t, p), sb)),
        [(sb, picks)] * 6)
    batch = tf.nest.map_structure(lambda t: tf.gather(t, picks), x_of(sb))
    parts["training step (b)"] = alone(
        tf.function(lambda batch: learner.train_step((batch,))["loss"]), [(batch,)] * 6)

    cost = selector.step_cost()
    print(f"\n[{name}]")
    measures.print_comparison(comparison)
    print("  breakdown of (b), each part alone:")
    for label, seconds in parts.items():
      print(f"    {label:<40} {seconds * 1e3:8.1f} ms")
    accounted = sum(parts.values())
    print(f"    {'pipeline and overlap: (b) - sum of parts':<40} "
          f"{(with_tfjest - accounted) * 1e3:8.1f} ms")
    print(f"  FLOPs per step: training {cost.training / 1e9:.2f} G, learner scoring "
          f"{cost.learner_scoring / 1e9:.2f} G, reference scoring "
          f"{cost.reference_scoring / 1e9:.2f} G, selection {cost.selection / 1e9:.3f} G; "
          f"total {cost.total / 1e9:.2f} G = {cost.total / cost.training:.2f} x training")


if __name__ == "__main__":
  app.run(main)
