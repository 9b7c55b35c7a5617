"""Measurements the benchmark programs share (their flags stay in the programs).

Selection at scale (`measure_selection`: time, host memory, FLOPs of streaming JEST) for
`selection_scale` and `accelerator_check`; the step-overhead pieces for `step_overhead` and
`accelerator_check`: a stream of image-text pairs and conv dual encoders, (a) the same work by
hand, (b) timed `fit` steps, and their comparison in alternating rounds. `define_selection_flags`
defines the (b, f, K) flags of `step_overhead` and `scoring_view`.
"""

import resource
import statistics
from typing import List, NamedTuple

from absl import flags
import keras
import tensorflow as tf

import tfjest
from benchmarks import models
from benchmarks import timing
from tfjest import testing


def define_selection_flags(batch_size: int, batch_help: str):
  """Defines `--batch_size` (b), `--filter_ratio` (f) and `--num_chunks` (K); returns them."""
  return (flags.DEFINE_integer("batch_size", batch_size, batch_help),
          flags.DEFINE_float("filter_ratio", 0.8, "f; N = b / (1 - f), a whole number "
                             "(tfjest.super_batch_size_for)."),
          flags.DEFINE_integer("num_chunks", 16, "K, JEST chunks."))


def define_round_flags(steps: int, warmup: int, rounds: int):
  """Defines `--steps`, `--warmup` and `--rounds` of an A/B timing in alternating rounds."""
  return (flags.DEFINE_integer("steps", steps, "Timed steps per round and side."),
          flags.DEFINE_integer("warmup", warmup, "Untimed steps before each timed round."),
          flags.DEFINE_integer("rounds", rounds, "Alternating rounds of (a) and (b)."))


def peak_rss_bytes() -> int:
  """This process's peak resident set size (VmHWM; getrusage where /proc is missing)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  return 0


def embeddings(n: int, d: int, seed: int) -> tfjest.Embeddings:
  """Random L2-normalised image and text embeddings `[n, d]` of one dual encoder."""
  def unit(stream):
    return tf.math.l2_normalize(tf.random.stateless_normal([n, d], [seed, stream]), axis=-1)

  return tfjest.Embeddings(unit(0), unit(1), tf.constant(10.0), tf.constant(-10.0))


def measure_selection(n: int, b: int, *, width: int, num_chunks: int, repeats: int,
                      jit_compile: bool) -> dict:
  """Times streaming joint selection of `b` from `N = n` (first call and median of `repeats`).

  Also returns this process's resident memory before selecting and its peak, and the
  selection's FLOPs. `benchmarks.accelerator_check` calls it at the paper's scale.
  """
  d, k = width, num_chunks
  learner = embeddings(n, d, 1)
  reference = embeddings(n, d, 2)
  rss_before = current_rss_bytes()

  # The embeddings are arguments, not captured constants, as in a pipeline.
  @tf.function(jit_compile=jit_compile)
  def select(learner, reference, step):
    scores = tfjest.PairwiseScores("learnability", learner, reference)
    return tfjest.joint_selection(scores, b, num_chunks=k, seed=0, step=step)

  def step(i):
    return learner, reference, tf.constant(i, tf.int64)

  with timing.stopwatch() as first:  # tracing included
    picks = select(*step(0)).numpy()
  if len(set(picks.tolist())) != b:
    raise RuntimeError(f"Selection picked an example twice. Received: {b} picks, "
                       f"{len(set(picks.tolist()))} distinct")
  runs = timing.time_calls(select, [step(i) for i in range(1, 1 + repeats)])
  return {"n": n, "b": b, "d": d, "k": k, "first_s": first.wall, "first_cpu_s": first.cpu,
          "median_s": runs.wall, "min_s": min(runs.walls), "max_s": max(runs.walls),
          "median_cpu_s": runs.cpu, "rss_before_bytes": rss_before,
          "peak_rss_bytes": peak_rss_bytes(),
          "selection_flops": tfjest.selection_flops(
              n, b, width=d, num_chunks=k, num_models=2, task="contrastive")}


def conv_stream(examples: int, image_size: int, seed: int) -> tf.data.Dataset:
  """`{"image", "text", "id"}` single examples: pairs of which half are corrupted."""
  data = testing.make_pairs(examples, 0.5, seed=seed)
  return tf.data.Dataset.from_tensor_slices(
      {"image": models.images_at(data["image"], image_size), "text": data["text"],
       "id": data["id"]})


def conv_models(image_size: int, *, jit_compile="auto"):
  """A compiled learner and a frozen reference (`ConvDualEncoder`s), built on the images."""
  learner = models.built(models.ConvDualEncoder(name="learner"), image_size)
  learner.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
  reference = models.built(models.ConvDualEncoder(name="reference"), image_size)
  reference.trainable = False
  return learner, reference


def pair_inputs(super_batch):
  """The model inputs of a `conv_stream` super-batch (its ids left out)."""
  return {"image": super_batch["image"], "text": super_batch["text"]}


def by_hand_step(learner, reference, b: int, *, live: bool, jit_compile: bool = False):
  """(a): scoring forward passes on a super-batch and a Keras training step on `b` of it.

  Uses the model's own train step as it is now: call it before `tfjest.attach` replaces it.
  """
  train_step = learner.train_step

  @tf.function(jit_compile=jit_compile)
  def by_hand(super_batch):
    # The scoring forward passes on N (their outputs feed nothing: only their cost counts).
    scored = learner(pair_inputs(super_batch), training=False)
    sink = tf.reduce_sum(scored["image_embeddings"])
    if live:
      outputs = reference(pair_inputs(super_batch), training=False)
      sink += tf.reduce_sum(outputs["image_embeddings"])
    batch = tf.nest.map_structure(lambda t: t[:b], pair_inputs(super_batch))
    logs = train_step((batch,))
    return logs["loss"], sink

  return by_hand


def fit_step_timings(model, dataset, *, warmup: int, steps: int) -> timing.Timings:
  """Wall and CPU time of `fit`'s steps on `dataset` after `warmup` untimed ones."""
  timer = timing.StepTimer(warmup=warmup)
  model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
  return timer.timings


class Comparison(NamedTuple):
  """Median wall seconds per step of (a) and (b) per round; CPU seconds; median ratios."""
  hand_rounds: List[float]
  tfjest_rounds: List[float]
  hand_cpu: List[float]
  tfjest_cpu: List[float]
  ratio: float
  cpu_ratio: float


def compare(by_hand, learner, selected: tf.data.Dataset, stream: tf.data.Dataset, n: int, *,
            rounds: int, warmup: int, steps: int) -> Comparison:
  """Alternates (a) `by_hand` on super-batches of `stream` and (b) `fit` on `selected`."""
  hand_rounds, tfjest_rounds, hand_cpu, tfjest_cpu = [], [], [], []
  for _ in range(rounds):
    # The same stream, read the usual way; each round starts a fresh iterator, as fit does.
    reads = ((sb,) for sb in stream.repeat().batch(n).prefetch(1).take(warmup + steps))
    hand_timings = timing.time_calls(by_hand, reads, warmup=warmup)
    hand_rounds.append(hand_timings.wall)
    hand_cpu.append(hand_timings.cpu)
    fit_timings = fit_step_timings(learner, selected, warmup=warmup, steps=steps)
    tfjest_rounds.append(fit_timings.wall)
    tfjest_cpu.append(fit_timings.cpu)
  return Comparison(hand_rounds, tfjest_rounds, hand_cpu, tfjest_cpu,
                    statistics.median(t / h for t, h in zip(tfjest_rounds, hand_rounds)),
                    statistics.median(t / h for t, h in zip(tfjest_cpu, hand_cpu)))


def print_comparison(c: Comparison):
  """The (a), (b), ratio and CPU lines of a `Comparison`."""
  hand, with_tfjest = statistics.median(c.hand_rounds), statistics.median(c.tfjest_rounds)
  print(f"  (a) by hand, no tfjest: {hand * 1e3:8.1f} ms/step  (rounds: "
        + ", ".join(f"{t * 1e3:.1f}" for t in c.hand_rounds) + ")")
  print(f"  (b) select + fit:       {with_tfjest * 1e3:8.1f} ms/step  (rounds: "
        + ", ".join(f"{t * 1e3:.1f}" for t in c.tfjest_rounds) + ")")
  print(f"  ratio (b)/(a) = {c.ratio:.3f}, median of the rounds' ratios (target <= 1.10: "
        f"{'met' if c.ratio <= 1.10 else 'MISSED'}; rounds: "
        + ", ".join(f"{t / h:.2f}" for t, h in zip(c.tfjest_rounds, c.hand_rounds)) + ")")
  print(f"  CPU time per step: (a) {statistics.median(c.hand_cpu) * 1e3:.1f} ms, (b) "
        f"{statistics.median(c.tfjest_cpu) * 1e3:.1f} ms, ratio {c.cpu_ratio:.3f}")
