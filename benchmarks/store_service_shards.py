r"""A store built on tf.data service workers from many input shards: time and memory.

`cache_reference(..., service=)` over S input shards of a small synthetic stream (the
`store_scale` stream, 100 examples per shard, a tiny dual encoder of width d: the build's
per-shard work is what is measured), with a dispatcher and 2 workers in this process (the
peak RSS is theirs and the client's together). The job the service runs picks input shard `k`
in a graph (`DatasetShards.pick`, tfjest/store/inputs.py), which the dispatcher receives
whole: its tracing and size grow with S. With `--lazy` the shards are a `tfjest.InputShards` of the same shards made from a
tensor index (`store_scale.input_shard_by_tensor`): the job traces that function once, so
its graph does not grow with S. One fresh process per S (`--shards`), so the peak RSS is that
build's.

    python -m benchmarks.store_service_shards --shards=100,400
    python -m benchmarks.store_service_shards --shards=100,400,2000 --lazy
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_SHARDS = flags.DEFINE_list("shards", ["100", "400"], "Numbers of input shards, one run each.")
_PER = flags.DEFINE_integer("per_shard", 100, "Examples per input shard.")
_D = flags.DEFINE_integer("width", 64, "The reference's width.")
_LAZY = flags.DEFINE_bool("lazy", False, "Input shards as tfjest.InputShards(fn, S), each made "
                          "from its index, not a list of S datasets.")
_ONE = flags.DEFINE_integer("one_count", 0, "Internal: run this S here and print JSON.")


def run(count, per, d, lazy=False):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfjest  # pylint: disable=g-import-not-at-top
  from benchmarks import store_scale  # pylint: disable=g-import-not-at-top
  from tfjest import testing  # pylint: disable=g-import-not-at-top
  dispatcher, workers = testing.local_service(2)
  base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  start = time.perf_counter()
  if lazy:
    shards = tfjest.InputShards(
        lambda i: store_scale.input_shard_by_tensor(i, count * per, per), count)
  else:
    shards = store_scale.input_shards(count * per, per)
  made = time.perf_counter() - start
  path = tempfile.mkdtemp(prefix="store_service_shards-")
  try:
    start = time.perf_counter()
    cache = tfjest.cache_reference(store_scale.dual_encoder(d, 1, "reference"), shards,
                                   os.path.join(path, "cache"), id_key="id", batch_size=100,
                                   service=dispatcher.target)
    seconds = time.perf_counter() - start
    assert cache.num_shards == count and cache.num_examples == count * per
  finally:
    shutil.rmtree(path, ignore_errors=True)
  del workers
  return {"shards": count, "lazy": lazy, "examples": count * per, "make_inputs_seconds": made,
          "build_seconds": seconds, "base_rss_bytes": base,
          "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main(argv):
  del argv
  if _ONE.value:
    print("RESULT " + json.dumps(run(_ONE.value, _PER.value, _D.value, _LAZY.value)),
          flush=True)
    return
  for count in (int(s) for s in _SHARDS.value):
    done = subprocess.run([sys.executable, "-m", "benchmarks.store_service_shards",
                           f"--one_count={count}", f"--per_shard={_PER.value}",
                           f"--width={_D.value}", f"--lazy={_LAZY.value}"],
                          capture_output=True, text=True, check=False)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if done.returncode or not lines:
      raise RuntimeError(f"S={count} failed:\n{done.stderr[-3000:]}")
    r = json.loads(lines[-1][len("RESULT "):])
    form = "InputShards" if r["lazy"] else "list"
    print(f"S={count} ({form}): build {r['build_seconds']:.1f} s (inputs made in "
          f"{r['make_inputs_seconds']:.1f} s), peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB "
          f"(base {r['base_rss_bytes'] / 1e9:.2f} GB)", flush=True)


if __name__ == "__main__":
  app.run(main)
