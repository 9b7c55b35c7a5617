"""Micro-benchmark: the streamed join's cost per example (docs/SPEC.md §13.4).

Run from the repository root: `python tools/store_join_cost.py [M] [d]`. Builds a store of M
examples of d-wide float32 values (written directly through the store's writer: no model), then
times one pass of (a) the plain stream, (b) the stream joined with the ids checked, (c) joined
with the ids and input fingerprints checked. The full scale benchmark is issue 23's.
"""

import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfjest.store import fingerprints  # pylint: disable=g-import-not-at-top
from tfjest.store import reference
from tfjest.store import shards


def main():
  m = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
  d = int(sys.argv[2]) if len(sys.argv) > 2 else 64
  rng = np.random.default_rng(0)
  x = rng.normal(size=(m, 8)).astype(np.float32)
  stream = tf.data.Dataset.from_tensor_slices({"x": x, "id": np.arange(m)})
  path = os.path.join(tempfile.mkdtemp(), "store")

  def chunks():
    for start in range(0, m, 1024):
      batch = {"x": x[start:start + 1024], "id": np.arange(start, min(m, start + 1024))}
      yield {**{k: v.numpy() for k, v in fingerprints.ids_and_fingerprints(batch, "id").items()},
             "loss": rng.normal(size=(len(batch["id"]), d)).astype(np.float32)}

  metadata = {"format": shards.FORMAT, "version": shards.VERSION,
              "kind": reference.ReferenceCache.KIND, "task": "classification",
              "source": {"name": "none", "fingerprint": ""}, "ids": {"dtype": "int64"},
              "inputs": fingerprints.input_structure(stream.element_spec)}
  start = time.perf_counter()
  shards.write(path, metadata, [chunks()], num_shards=1, empty_message="empty")
  print(f"M={m} d={d}: write {time.perf_counter() - start:.2f} s, "
        f"{os.path.getsize(os.path.join(path, shards.shard_file(0, 1))) / m:.1f} bytes/example")
  store = reference.ReferenceCache.load(path)
  for name, dataset in (
      ("plain stream", stream),
      ("joined, ids checked", stream.apply(store.join(id_key="id", verify_inputs=False))),
      ("joined, ids and inputs checked", stream.apply(store.join(id_key="id")))):
    dataset = dataset.batch(256).prefetch(2)
    for _ in dataset.take(2):
      pass
    start = time.perf_counter()
    count = sum(int(tf.shape(b["id"])[0]) for b in dataset)
    seconds = time.perf_counter() - start
    print(f"{name}: {count / seconds:,.0f} examples/s, {1e6 * seconds / count:.2f} us/example")


if __name__ == "__main__":
  main()
