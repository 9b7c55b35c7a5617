"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 each read only their own value shards.

The store is built here over two input shards; each worker process joins its input shard
(`InputContext.input_pipeline_id`) through `distribute_datasets_from_function` and reports the
value shards it opened and the ids it read.
"""

import json
import os
import subprocess

import numpy as np
import tensorflow as tf

import tfjest
from tfjest import testing
from tests import workers
from tests.programs import launch

N = 64

_WORKER = """
import json, sys
import tensorflow as tf
import tfjest
from tfjest import testing
strategy = tf.distribute.MultiWorkerMirroredStrategy()
store = tfjest.ReferenceCache.load(sys.argv[1])
stream = testing.stream("classification", n={n})

def dataset_fn(context):
  index = context.input_pipeline_id  # this worker's input shard, and so its value shard
  shard = stream.filter(lambda x, y: x["id"] % context.num_input_pipelines == index)
  joined = store.join(id_key="id", shards=[index], inputs=[shard])
  return joined.batch(4)

ids = []
for batch in strategy.distribute_datasets_from_function(dataset_fn):
  for x, _ in strategy.experimental_local_results(batch):
    ids.extend(x["id"].numpy().tolist())
with open(sys.argv[2], "w") as f:
  json.dump({{"opened": store.opened_shards, "ids": ids}}, f)
"""


class MultiWorkerReadTest(tf.test.TestCase):

  def test_each_worker_opens_only_its_value_shard(self):
    directory = self.get_temp_dir()
    stream = testing.stream("classification", n=N)
    shards = [stream.filter(lambda x, y, i=i: x["id"] % 2 == i) for i in range(2)]
    path = os.path.join(directory, "cache")
    tfjest.cache_reference(testing.classifier(1, "reference"), shards, path)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in workers.free_ports(2)]}
    procs = []
    for index in range(2):
      env = {"TF_CONFIG": json.dumps({"cluster": cluster,
                                      "task": {"type": "worker", "index": index}})}
      procs.append(launch.start(
          None, path, os.path.join(directory, f"worker{index}.json"), code=_WORKER.format(n=N),
          log_path=os.path.join(directory, f"worker{index}.log"), env=env))
    outputs = []
    for index, proc in enumerate(procs):  # only the processes started here
      try:
        proc.wait(timeout=120)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
      with open(os.path.join(directory, f"worker{index}.log")) as f:
        outputs.append(f.read()[-3000:])
    for index, (proc, output) in enumerate(zip(procs, outputs)):
      self.assertEqual(proc.returncode, 0, output)
      with open(os.path.join(directory, f"worker{index}.json")) as f:
        result = json.load(f)
      self.assertEqual(result["opened"], [index])
      self.assertAllEqual(result["ids"], np.arange(index, N, 2))


if __name__ == "__main__":
  tf.test.main()
