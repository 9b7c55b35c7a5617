r"""What TensorBoard summaries of selection add to a training step (issue 24: <= 2% at K = 100).

One learner (`benchmarks/models.py`'s ConvDualEncoder on 32 x 32 images), one stream of pairs
(half corrupted), JEST with learnability against a live reference, fitted in alternating rounds:

  (a) `SelectionStatsCallback(selector)`: scalars at epoch end, no writer, so the step samples
      nothing (the recorder's per-step work is the check of a variable);
  (b) the same with `select(group_key="corrupted")` and `SelectionStatsCallback(log_dir=...,
      every_n_steps=K)`: per-group counts every step, a sampled super-batch every K steps
      (scores, the extreme candidates' elements), written as images, text, histograms and
      scalars after that batch.

Each round reports the median wall time per step of each side after warm-up (the `StepTimer`
callback); the overhead is the median over rounds of (b)/(a) - 1. The writes themselves are
timed too (the callback's `SummaryWriter.write_if_new`), as a share of the steps' time: that part
does not depend on the load from other jobs.

    python -m benchmarks.summaries_overhead

Flags: `--batch_size=32 --filter_ratio=0.8 --num_chunks=4 --every=100 --steps=200 --warmup=5
--rounds=3`.
"""

import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
import keras

import tfjest
from benchmarks import measures
from benchmarks import timing

_BATCH, _RATIO, _CHUNKS = measures.define_selection_flags(32, "b, examples per training step.")
_EVERY = flags.DEFINE_integer("every", 100, "K: steps between sampled super-batches.")
_STEPS, _WARMUP, _ROUNDS = measures.define_round_flags(steps=200, warmup=5, rounds=3)
_IMAGE = flags.DEFINE_integer("image_size", 32, "Image side in pixels.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for data and models.")


def main(argv):
  del argv
  b = _BATCH.value
  n = tfjest.super_batch_size_for(b, _RATIO.value)
  keras.utils.set_random_seed(_SEED.value)
  stream = measures.conv_stream(4 * n, _IMAGE.value, _SEED.value)
  tagged = stream.map(lambda e: dict(e, corrupted=e["id"] % 2))  # a group feature to count
  learner, reference = measures.conv_models(_IMAGE.value)
  kwargs = dict(learner=learner, reference=reference, batch_size=b, super_batch_size=n,
                num_chunks=_CHUNKS.value, seed=_SEED.value)
  plain = tfjest.select(**kwargs)
  grouped = tfjest.select(**kwargs, group_key="corrupted")
  log_dir = tempfile.mkdtemp(prefix="tfjest_summaries_overhead_")
  print(f"summaries overhead: ConvDualEncoder on {_IMAGE.value}x{_IMAGE.value} images, b={b}, "
        f"N={n}, K={_EVERY.value}, {_STEPS.value} steps per side and round, "
        f"{os.cpu_count()} CPU cores; log dir {log_dir}")
  sides = {"a": tagged.repeat().apply(plain), "b": tagged.repeat().apply(grouped)}
  ratios, walls, writes = [], {"a": [], "b": []}, []
  for r in range(_ROUNDS.value):
    for side, data in sides.items():
      if side == "a":
        stats = tfjest.SelectionStatsCallback(plain)
      else:
        stats = tfjest.SelectionStatsCallback(grouped, log_dir=log_dir,
                                              every_n_steps=_EVERY.value)
        write = stats.pictures.write_if_new
        spent = []

        def timed(*args, write=write, spent=spent):
          start = time.perf_counter()
          wrote = write(*args)
          if wrote:
            spent.append(time.perf_counter() - start)
          return wrote
        stats.pictures.write_if_new = timed
      timer = timing.StepTimer(warmup=_WARMUP.value)
      learner.fit(data, steps_per_epoch=_WARMUP.value + _STEPS.value, epochs=1, verbose=0,
                  callbacks=[stats, timer])
      walls[side].append(timer.timings.wall)
      if side == "b":
        writes.append((sum(spent), len(spent)))
    ratios.append(walls["b"][-1] / walls["a"][-1])
    print(f"  round {r + 1}: (a) {1e3 * walls['a'][-1]:.1f} ms/step, (b) "
          f"{1e3 * walls['b'][-1]:.1f} ms/step, ratio {ratios[-1]:.3f}; "
          f"{writes[-1][1]} writes took {1e3 * writes[-1][0]:.1f} ms")
  overhead = statistics.median(ratios) - 1.0
  spent, count = sum(w for w, _ in writes), sum(c for _, c in writes)
  steps = _ROUNDS.value * (_WARMUP.value + _STEPS.value)
  write_share = spent / (steps * statistics.median(walls["b"]))
  print(f"overhead (b)/(a) - 1 = {100 * overhead:+.2f}% (median of rounds; target <= 2%: "
        f"{'met' if overhead <= 0.02 else 'MISSED'})")
  print(f"writing: {count} writes, {1e3 * spent / max(count, 1):.1f} ms each, "
        f"{100 * write_share:.2f}% of the steps' time")


if __name__ == "__main__":
  app.run(main)
