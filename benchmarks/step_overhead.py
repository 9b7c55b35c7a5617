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
warm-up. The ratio (b)/(a) is the median over rounds of each round's ratio (a round's (a) and
(b) run back to back, so they see the same load from other jobs; target <= 1.10). Process CPU
time per step (all threads, the input pipeline's included) is reported too: on a machine
shared with other jobs it is the steadier measure of the work each side does. The
breakdown times each part of (b) alone, per step, in `tf.function`s: the learner's scoring
forward pass, the cache join (hash lookup, fingerprint check, gathers), the selection maths
(`joint_selection` on the scores), gathering the chosen b, and the training step; "pipeline"
is what remains of (b). Parts run concurrently in (b) (prefetching overlaps the next selection
with the current training step), so the parts can add up to more than (b).

    python benchmarks/step_overhead.py

Flags: `--batch_size=128 --filter_ratio=0.8 --num_chunks=16 --steps=10 --warmup=3 --rounds=5`;
`--live_reference` adds a configuration where the reference runs in both (a) and (b).
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import keras
import numpy as np
import tensorflow as tf

import tfjest
from benchmarks import models
from examples import toy_world

_BATCH = flags.DEFINE_integer("batch_size", 128, "b, examples per training step.")
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "f; N = b / (1 - f).")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "K, JEST chunks.")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Image side in pixels.")
_EXAMPLES = flags.DEFINE_integer("examples", 3200, "Distinct examples in the (repeated) stream.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per round and side.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps before each timed round.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds of (a) and (b).")
_LIVE = flags.DEFINE_bool("live_reference", False, "Also measure with a live reference.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for data and models.")


class StepTimer(keras.callbacks.Callback):
  """Wall and process CPU time of each `fit` step, from batch end to batch end."""

  def __init__(self):
    super().__init__()
    self.times, self.cpu_times = [], []
    self._last = None

  def on_train_batch_begin(self, batch, logs=None):
    if self._last is None:
      self._last = (time.perf_counter(), time.process_time())

  def on_train_batch_end(self, batch, logs=None):
    now = (time.perf_counter(), time.process_time())
    self.times.append(now[0] - self._last[0])
    self.cpu_times.append(now[1] - self._last[1])
    self._last = now


def timed_calls(fn, args_list, warmup, with_cpu=False):
  """Median seconds of `fn(*args)` over `args_list` after `warmup` untimed calls."""
  args_list = iter(args_list)
  for _ in range(warmup):
    _block(fn(*next(args_list)))
  times, cpu_times = [], []
  for args in args_list:
    start, cpu = time.perf_counter(), time.process_time()
    _block(fn(*args))
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu)
  if with_cpu:
    return statistics.median(times), statistics.median(cpu_times)
  return statistics.median(times)


def _block(out):
  for t in tf.nest.flatten(out):
    if hasattr(t, "numpy"):
      t.numpy()


def main(argv):
  del argv
  b, k = _BATCH.value, _CHUNKS.value
  n = int(round(b / (1.0 - _RATIO.value)))
  size = _IMAGE.value
  keras.utils.set_random_seed(_SEED.value)
  data = toy_world.make_pairs(_EXAMPLES.value, 0.5, seed=_SEED.value)
  images = models.images_at(data["image"], size)
  stream = tf.data.Dataset.from_tensor_slices(
      {"image": images, "text": data["text"], "id": data["id"]})
  learner = models.built(models.ConvDualEncoder(name="learner"), size)
  learner.compile(optimizer=keras.optimizers.Adam(1e-3))
  reference = models.built(models.ConvDualEncoder(name="reference"), size)
  reference.trainable = False
  cache_dir = tempfile.mkdtemp(prefix="tfjest_step_overhead_")
  start = time.perf_counter()
  cache = tfjest.cache_reference(reference, stream, os.path.join(cache_dir, "reference"),
                                 id_key="id", batch_size=512)
  cache_seconds = time.perf_counter() - start

  steps = _WARMUP.value + _STEPS.value
  # One super-batch, as constants, for timing the parts alone.
  sb = tf.nest.map_structure(tf.constant, next(stream.batch(n).as_numpy_iterator()))
  x_of = lambda sb: {"image": sb["image"], "text": sb["text"]}

  configs = [("cached reference", dict(reference_cache=cache, id_key="id"), False)]
  if _LIVE.value:
    configs.append(("live reference", dict(reference=reference), True))

  print(f"step overhead: ConvDualEncoder on {size}x{size} images, b={b}, N={n} "
        f"(f={_RATIO.value}), K={k}, {os.cpu_count()} CPU cores; reference cache of "
        f"{cache.num_examples} examples built in {cache_seconds:.1f} s")
  for name, select_args, live in configs:
    @tf.function
    def by_hand(super_batch, live=live):
      # The scoring forward passes on N (their outputs feed nothing: only their cost counts).
      scored = learner(x_of(super_batch), training=False)
      sink = tf.reduce_sum(scored["image_embeddings"])
      if live:
        sink += tf.reduce_sum(reference(x_of(super_batch), training=False)["image_embeddings"])
      batch = tf.nest.map_structure(lambda t: t[:b], x_of(super_batch))
      logs = learner.train_step((batch,))
      return logs["loss"], sink

    selector = tfjest.select(learner=learner, batch_size=b, super_batch_size=n,
                             num_chunks=k, seed=_SEED.value, **select_args)
    selected = stream.repeat().apply(selector)

    hand_rounds, tfjest_rounds, hand_cpu, tfjest_cpu = [], [], [], []
    for _ in range(_ROUNDS.value):
      # The same stream, read the usual way; each round starts a fresh iterator, as fit does.
      reads = ((sb,) for sb in stream.repeat().batch(n).prefetch(1).take(steps))
      wall, cpu = timed_calls(by_hand, reads, _WARMUP.value, with_cpu=True)
      hand_rounds.append(wall)
      hand_cpu.append(cpu)
      timer = StepTimer()
      learner.fit(selected, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
      tfjest_rounds.append(statistics.median(timer.times[_WARMUP.value:]))
      tfjest_cpu.append(statistics.median(timer.cpu_times[_WARMUP.value:]))
    hand, with_tfjest = statistics.median(hand_rounds), statistics.median(tfjest_rounds)
    ratio = statistics.median(t / h for t, h in zip(tfjest_rounds, hand_rounds))
    cpu_ratio = statistics.median(t / h for t, h in zip(tfjest_cpu, hand_cpu))

    # The parts of (b), each alone.
    scorer = selector.scorer
    parts = {}
    parts["learner scoring forward (N)"] = timed_calls(
        tf.function(lambda sb: learner(x_of(sb), training=False)), [(sb,)] * 6, 2)
    if selector.setup.reference_cache is not None:
      parts["cache join (lookup, fingerprint check)"] = timed_calls(
          tf.function(lambda sb: cache.outputs_for(sb, "id")), [(sb,)] * 6, 2)
    else:
      parts["reference scoring forward (N)"] = timed_calls(
          tf.function(lambda sb: reference(x_of(sb), training=False)), [(sb,)] * 6, 2)
    scored = scorer(sb)
    emb = (scored.scores.learner, scored.scores.reference)

    @tf.function
    def maths(learner_emb, reference_emb, step):
      scores = tfjest.PairwiseScores("learnability", learner_emb, reference_emb)
      picks = selector.rule.choose(scores, selector.batch_size, step=step,
                                   num_candidates=selector.super_batch_size)
      return picks, tfjest.batch_score(scores, picks)

    parts["selection maths (+ s(B) for stats)"] = timed_calls(
        maths, [emb + (tf.constant(i, tf.int64),) for i in range(6)], 2)
    picks = tf.sort(maths(*emb, tf.constant(0, tf.int64))[0])
    parts["gather b of N"] = timed_calls(
        tf.function(lambda sb, p: tf.nest.map_structure(lambda t: tf.gather(t, p), sb)),
        [(sb, picks)] * 6, 2)
    batch = tf.nest.map_structure(lambda t: tf.gather(t, picks), x_of(sb))
    parts["training step (b)"] = timed_calls(
        tf.function(lambda batch: learner.train_step((batch,))["loss"]), [(batch,)] * 6, 2)

    cost = selector.step_cost()
    print(f"\n[{name}]")
    print(f"  (a) by hand, no tfjest: {hand * 1e3:8.1f} ms/step  (rounds: "
          + ", ".join(f"{t * 1e3:.1f}" for t in hand_rounds) + ")")
    print(f"  (b) select + fit:       {with_tfjest * 1e3:8.1f} ms/step  (rounds: "
          + ", ".join(f"{t * 1e3:.1f}" for t in tfjest_rounds) + ")")
    print(f"  ratio (b)/(a) = {ratio:.3f}, median of the rounds' ratios (target <= 1.10: "
          f"{'met' if ratio <= 1.10 else 'MISSED'}; rounds: "
          + ", ".join(f"{t / h:.2f}" for t, h in zip(tfjest_rounds, hand_rounds)) + ")")
    print(f"  CPU time per step: (a) {statistics.median(hand_cpu) * 1e3:.1f} ms, (b) "
          f"{statistics.median(tfjest_cpu) * 1e3:.1f} ms, ratio {cpu_ratio:.3f}")
    print("  breakdown of (b), each part alone:")
    for part, seconds in parts.items():
      print(f"    {part:<40} {seconds * 1e3:8.1f} ms")
    accounted = sum(parts.values())
    print(f"    {'pipeline and overlap: (b) - sum of parts':<40} "
          f"{(with_tfjest - accounted) * 1e3:8.1f} ms")
    print(f"  FLOPs per step: training {cost.training / 1e9:.2f} G, learner scoring "
          f"{cost.learner_scoring / 1e9:.2f} G, reference scoring "
          f"{cost.reference_scoring / 1e9:.2f} G, selection {cost.selection / 1e9:.3f} G; "
          f"total {cost.total / 1e9:.2f} G = {cost.total / cost.training:.2f} x training")


if __name__ == "__main__":
  app.run(main)
