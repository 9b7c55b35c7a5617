r"""The prepared check for one GPU: what cannot be tested on this project's CPU machines.

Run it on a machine with one GPU (no strategy, Keras' defaults); it takes at most about five
minutes there. It prints, each part on the device TensorFlow places work on by default:

  1. the placement rule (`tfjest.devices`): where the learner's variables are, what
     `tfjest.attach(..., placement="auto")` chooses ("train_step" on a GPU, "pipeline" on the
     CPU) and whether applying the plain selector to a dataset is refused (on a GPU it must be);
  2. selection at the paper's scale: streaming JEST selection of b = 32,768 of N = 163,840 with
     d = 128 embeddings, compiled with XLA (`benchmarks.measures.measure_selection`): the
     first call, the median, peak host memory and peak accelerator memory;
  3. the step overhead with XLA on: (a) scoring N and a training step on b by hand, in one
     `tf.function(jit_compile=True)`, against (b) `select` + `fit` with the learner compiled
     `jit_compile=True` and selection attached in the train step, the reference from a cache
     (`step_overhead`'s pieces, from
     `benchmarks.measures`); and the statistics that whole-step XLA program
     recorded, against the steps it ran (`read = steps * N`, `selected = steps * b`);
  4. the pipeline placement against the train-step placement, per step, with a live reference
     and Keras' default `jit_compile`. On a GPU the pipeline placement is refused by the rule;
     its figure is then measured with the learner and reference built on the host CPU (what
     selecting on the host costs when everything lives there), and labelled so.

It exits with status 1 when a check fails (a placement other than expected, or statistics
that do not count the steps run). `--smoke` runs tiny sizes: seconds on a CPU
(tests/programs/benchmarks_test.py runs it).

    python -m benchmarks.accelerator_check
    python -m benchmarks.accelerator_check --smoke
"""

import os
import tempfile

from absl import app
from absl import flags
import keras
import tensorflow as tf

import tfjest
from benchmarks import measures
from tfjest import devices

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes (seconds on a CPU), for the test suite.")
_N = flags.DEFINE_integer("super_batch_size", 163840, "N of the paper-scale selection.")
_B = flags.DEFINE_integer("batch_size", 32768, "b of the paper-scale selection.")
_WIDTH = flags.DEFINE_integer("width", 128, "Embedding width d of the paper-scale selection.")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "K, JEST chunks (every part).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed paper-scale selections after the first.")
_STEP_B = flags.DEFINE_integer("step_batch_size", 128, "b of the training-step parts.")
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "f of the training-step parts.")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Image side of the training-step parts.")
_EXAMPLES = flags.DEFINE_integer("examples", 3200, "Distinct examples in the (repeated) stream.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per round.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps before each timed round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds of (a) and (b) in part 3.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for data and models.")

_SMOKE_SIZES = dict(super_batch_size=256, batch_size=64, width=16, num_chunks=4, repeats=1,
                    step_batch_size=16, image_size=16, examples=320, steps=2, warmup=1, rounds=1)


def _sizes():
  names = ("super_batch_size", "batch_size", "width", "num_chunks", "repeats", "step_batch_size",
           "image_size", "examples", "steps", "warmup", "rounds")
  sizes = {name: flags.FLAGS[name].value for name in names}
  if _SMOKE.value:
    sizes.update(_SMOKE_SIZES)
  return sizes


def _accelerator():
  """The first logical GPU (or TPU) device's name, or None on a CPU machine."""
  for kind in devices.ACCELERATOR_TYPES:
    found = tf.config.list_logical_devices(kind)
    if found:
      return found[0].name
  return None


def _peak_accelerator_bytes(accelerator):
  try:
    return tf.config.experimental.get_memory_info(accelerator)["peak"]
  except (ValueError, tf.errors.OpError):
    return None


def _select(learner, s, **kwargs):
  n = tfjest.super_batch_size_for(s["step_batch_size"], _RATIO.value)
  return tfjest.select(learner=learner, batch_size=s["step_batch_size"], super_batch_size=n,
                       num_chunks=s["num_chunks"], seed=_SEED.value, **kwargs)


def placement_rule(s, accelerator, stream) -> list:
  """Part 1. Returns the failed checks."""
  learner, reference = measures.conv_models(s["image_size"])
  where = devices.model_device(learner)
  chosen = tfjest.attach(learner, _select(learner, s, reference=reference)).placement
  refused = None
  try:
    stream.apply(_select(learner, s, reference=reference))
  except ValueError as e:
    refused = str(e)
  expected = devices.ACCELERATOR if accelerator else devices.HOST
  print(f"[1] placement rule: learner variables on {where} ({devices.kind(where)}); "
        f"attach(placement='auto') chose {chosen!r}; the plain selector in the pipeline was "
        + ("refused: " + refused.split(". ")[0] if refused else "accepted"))
  failed = []
  if devices.kind(where) != expected:
    failed.append(f"learner variables on {where}, expected the {expected}")
  if chosen != ("train_step" if accelerator else "pipeline"):
    failed.append(f"attach chose {chosen!r}")
  if bool(refused) != bool(accelerator):
    failed.append("the pipeline was " + ("refused" if refused else "accepted"))
  return failed


def paper_scale(s, accelerator):
  """Part 2: time and peak memory of selection at the paper's scale (XLA)."""
  if accelerator:
    tf.config.experimental.reset_memory_stats(accelerator)
  r = measures.measure_selection(
      s["super_batch_size"], s["batch_size"], width=s["width"], num_chunks=s["num_chunks"],
      repeats=s["repeats"], jit_compile=True)
  peak = _peak_accelerator_bytes(accelerator) if accelerator else None
  print(f"[2] JEST selection of b={r['b']} of N={r['n']}, d={r['d']}, K={r['k']}, XLA: first "
        f"call {r['first_s']:.2f} s, median {r['median_s']:.3f} s (min-max {r['min_s']:.3f}-"
        f"{r['max_s']:.3f}); {r['selection_flops'] / 1e9:.3g} GFLOP; peak host RSS "
        f"{r['peak_rss_bytes'] / 2**30:.2f} GB (before: {r['rss_before_bytes'] / 2**30:.2f} "
        "GB); peak accelerator memory " +
        (f"{peak / 2**30:.2f} GB" if peak is not None else "n/a (no accelerator)"))


def overhead_with_xla(s, stream) -> list:
  """Part 3: (a) by hand against (b) select + fit, both with XLA. Returns the failed checks."""
  b = s["step_batch_size"]
  n = tfjest.super_batch_size_for(b, _RATIO.value)
  learner, reference = measures.conv_models(s["image_size"], jit_compile=True)
  path = os.path.join(tempfile.mkdtemp(prefix="tfjest_accelerator_check_"), "reference")
  cache = tfjest.cache_reference(reference, stream, path, id_key="id", batch_size=512)
  by_hand = measures.by_hand_step(learner, reference, b, live=False, jit_compile=True)
  attached = tfjest.attach(learner, _select(learner, s, reference_cache=cache, id_key="id"),
                           placement="train_step")
  comparison = measures.compare(
      by_hand, learner, stream.repeat().apply(attached), stream, n, rounds=s["rounds"],
      warmup=s["warmup"], steps=s["steps"])
  print(f"[3] step overhead with XLA on (jit_compile={learner.jit_compile}), b={b}, N={n}, "
        "cached reference, selection in the train step:")
  measures.print_comparison(comparison)
  steps = s["rounds"] * (s["warmup"] + s["steps"])
  got = attached.stats.result()
  want = {"batches": steps, "read": steps * n, "selected": steps * b}
  recorded = all(got[k] == v for k, v in want.items())
  print(f"  statistics of the whole-step XLA program: batches={got['batches']}, "
        f"read={got['read']}, selected={got['selected']} for {steps} steps: "
        + ("recorded" if recorded else f"NOT RECORDED (expected {want})"))
  return [] if recorded else [f"statistics {got} against {want}"]


def placements(s, accelerator, stream):
  """Part 4: the pipeline against the train step, per step, Keras' default jit_compile."""
  timed = {}
  learner, reference = measures.conv_models(s["image_size"])
  attached = tfjest.attach(learner, _select(learner, s, reference=reference),
                           placement="train_step")
  timed["train step"] = measures.fit_step_timings(
      learner, stream.repeat().apply(attached), warmup=s["warmup"], steps=s["steps"])
  label = "pipeline"
  if accelerator:  # refused (part 1 checks it): every model on the host instead
    label = "pipeline (refused on the GPU; learner and reference on the host CPU)"
    with tf.device("/cpu:0"):
      learner, reference = measures.conv_models(s["image_size"])
      timed[label] = measures.fit_step_timings(
          learner, stream.repeat().apply(_select(learner, s, reference=reference)),
          warmup=s["warmup"], steps=s["steps"])
  else:
    learner, reference = measures.conv_models(s["image_size"])
    timed[label] = measures.fit_step_timings(
        learner, stream.repeat().apply(_select(learner, s, reference=reference)),
        warmup=s["warmup"], steps=s["steps"])
  print(f"[4] placements, live reference, Keras' default jit_compile "
        f"({learner.jit_compile}), median per step:")
  for name, t in timed.items():
    print(f"  {name:<70} {t.wall * 1e3:8.1f} ms wall, {t.cpu * 1e3:8.1f} ms CPU")


def main(argv):
  del argv
  s = _sizes()
  accelerator = _accelerator()
  keras.utils.set_random_seed(_SEED.value)
  print(f"accelerator check: {accelerator or 'no accelerator (CPU only)'}, "
        f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, Keras {keras.__version__}"
        + (" (smoke sizes)" if _SMOKE.value else ""))
  stream = measures.conv_stream(s["examples"], s["image_size"], _SEED.value)
  failed = placement_rule(s, accelerator, stream)
  paper_scale(s, accelerator)
  failed += overhead_with_xla(s, stream)
  placements(s, accelerator, stream)
  print("checks: " + ("all passed" if not failed else "FAILED: " + "; ".join(failed)))
  if failed:
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
