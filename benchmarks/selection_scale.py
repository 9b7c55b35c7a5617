r"""Time and peak memory of streaming joint selection (JEST) as the super-batch grows.

For each super-batch size N, a fresh subprocess draws random L2-normalised embeddings for two
dual encoders (learner and reference, image and text, width d), then runs
`tfjest.joint_selection` on `tfjest.PairwiseScores("learnability", ...)` inside a
`tf.function`: the streaming form of docs/SPEC.md §5, which never forms the N x N matrix.
It reports the first call (tracing included), the steady-state time per selection (median of
`--repeats`), process CPU time (both through `benchmarks/timing.py`), and the subprocess's peak
resident memory (VmHWM), next to the memory it had before selecting. Each N runs in its own
process (`python -m benchmarks.selection_scale --worker_size=N`) so that its peak belongs to it.

b = N (1 - f) is rarely a multiple of the chunk count K, so b is rounded to the nearest
multiple of K (ties down) and the effective filter ratio is printed.

Before timing, an oracle check selects with the dense score matrix (`tfjest.DenseScores` of the
materialised N x N matrix) and with the streaming form on small N, for several steps, and
requires identical indices.

    python -m benchmarks.selection_scale

Flags: `--sizes=4096,16384,65536 --filter_ratio=0.9 --width=128 --num_chunks=16 --repeats=3`.
Targets on a 2-core CPU: N = 65,536 in at most 20 s and at most 2 GB peak resident memory.
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

import tfjest
from benchmarks import measures

_SIZES = flags.DEFINE_list("sizes", ["4096", "16384", "65536"], "Super-batch sizes N.")
_RATIO = flags.DEFINE_float("filter_ratio", 0.9, "Filter ratio f; b = N (1 - f), rounded.")
_WIDTH = flags.DEFINE_integer("width", 128, "Embedding width d.")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "JEST chunk count K.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed selections after the first call.")
_ORACLE_SIZES = flags.DEFINE_list("oracle_sizes", ["256", "1024"],
                                  "Small N where dense and streaming selections must agree.")
_ORACLE_STEPS = flags.DEFINE_integer("oracle_steps", 3, "Selection steps per oracle size.")
_JIT = flags.DEFINE_bool("jit_compile", False, "Compile the selection with XLA.")
_TIME_LIMIT = flags.DEFINE_float("time_limit", 20.0, "Target seconds per selection (largest N).")
_MEMORY_LIMIT = flags.DEFINE_float("memory_limit_gb", 2.0, "Target peak RSS in GB.")
_WORKER = flags.DEFINE_integer("worker_size", 0, "Internal: measure this N and print JSON.")


def batch_size_for(n: int, filter_ratio: float, num_chunks: int) -> int:
  """The multiple of `num_chunks` nearest to `n * (1 - filter_ratio)` (ties down), at least K."""
  exact = n * (1.0 - filter_ratio)
  below = max(num_chunks, int(exact // num_chunks) * num_chunks)
  above = below + num_chunks
  return above if abs(above - exact) < abs(exact - below) and above <= n else below


def oracle_check(sizes, filter_ratio, width, num_chunks, steps):
  """Dense (materialised N x N) and streaming selections on small N; returns mismatches."""
  lines, mismatches = [], 0
  for n in sizes:
    b = batch_size_for(n, filter_ratio, num_chunks)
    learner = measures.embeddings(n, width, 1)
    reference = measures.embeddings(n, width, 2)
    streaming = tfjest.PairwiseScores("learnability", learner, reference)
    dense = tfjest.DenseScores(streaming.block())  # the full N x N matrix
    same = 0
    for step in range(steps):
      kwargs = dict(num_chunks=num_chunks, seed=0, step=step)
      got = tfjest.joint_selection(streaming, b, **kwargs).numpy()
      want = tfjest.joint_selection(dense, b, **kwargs).numpy()
      same += int((got == want).all())
    mismatches += steps - same
    lines.append(f"  N={n:>5} b={b:>4}: {same}/{steps} steps with identical indices "
                 f"(dense N x N vs streaming)")
  return lines, mismatches


def measure(n: int) -> dict:
  """Runs in the subprocess: times the selection of one N and reads its peak memory."""
  k = _CHUNKS.value
  return measures.measure_selection(
      n, batch_size_for(n, _RATIO.value, k), width=_WIDTH.value, num_chunks=k,
      repeats=_REPEATS.value, jit_compile=_JIT.value)


def main(argv):
  del argv
  if _WORKER.value:
    print(json.dumps(measure(_WORKER.value)))
    return
  k = _CHUNKS.value
  print(f"streaming joint selection, learnability of two dual encoders: f={_RATIO.value}, "
        f"d={_WIDTH.value}, K={k}, {os.cpu_count()} CPU cores, "
        f"jit_compile={_JIT.value}")
  lines, mismatches = oracle_check([int(s) for s in _ORACLE_SIZES.value], _RATIO.value,
                                   _WIDTH.value, k, _ORACLE_STEPS.value)
  print("oracle check:")
  print("\n".join(lines))
  results = []
  for n in (int(s) for s in _SIZES.value):
    exact = n * (1.0 - _RATIO.value)
    b = batch_size_for(n, _RATIO.value, k)
    if b != exact:
      print(f"N={n}: N (1 - f) = {exact:g} is not a multiple of K={k}; using b={b} "
            f"(effective f={1 - b / n:.4f}, c={b // k} per chunk)")
    flags_out = [f"--worker_size={n}", f"--filter_ratio={_RATIO.value}",
                 f"--width={_WIDTH.value}", f"--num_chunks={k}", f"--repeats={_REPEATS.value}",
                 f"--jit_compile={_JIT.value}"]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.selection_scale"] + flags_out,
                          capture_output=True, text=True, check=False)
    if proc.returncode:
      sys.stderr.write(proc.stderr[-3000:])
      raise SystemExit(f"the measurement of N={n} failed (exit {proc.returncode})")
    results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

  print(f"{'N':>6} {'b':>5} {'first call s':>12} {'median s':>9} {'min-max s':>11} "
        f"{'CPU s':>6} {'GFLOP':>6} {'RSS before GB':>13} {'peak RSS GB':>11}")
  for r in results:
    print(f"{r['n']:>6} {r['b']:>5} {r['first_s']:>12.2f} {r['median_s']:>9.2f} "
          f"{r['min_s']:>5.2f}-{r['max_s']:<5.2f} {r['median_cpu_s']:>6.2f} "
          f"{r['selection_flops'] / 1e9:>6.0f} {r['rss_before_bytes'] / 2**30:>13.2f} "
          f"{r['peak_rss_bytes'] / 2**30:>11.2f}")
  largest = max(results, key=lambda r: r["n"])
  time_ok = max(largest["first_s"], largest["median_s"]) <= _TIME_LIMIT.value
  memory_ok = largest["peak_rss_bytes"] <= _MEMORY_LIMIT.value * 2**30
  print(f"target N={largest['n']}: time {'met' if time_ok else 'MISSED'} "
        f"(first call {largest['first_s']:.2f} s, median {largest['median_s']:.2f} s, "
        f"limit {_TIME_LIMIT.value:g} s); peak RSS {'met' if memory_ok else 'MISSED'} "
        f"({largest['peak_rss_bytes'] / 2**30:.2f} GB, limit {_MEMORY_LIMIT.value:g} GB); "
        f"oracle {'identical' if mismatches == 0 else f'{mismatches} MISMATCHED steps'}")
  if mismatches:
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
