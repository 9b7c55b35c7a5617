"""Runs benchmarks.store_scale as a user would, with `--smoke` (one tiny cell), and checks it.

The figures themselves are in BENCHMARKS.md ("Per-example store at scale").
"""

import json
import os

import tensorflow as tf

from tests.programs import launch


class StoreScaleTest(tf.test.TestCase):

  def test_smoke_records_every_phase_and_deletes_the_store(self):
    results, work = (os.path.join(self.get_temp_dir(), name) for name in ("results", "work"))
    done = launch.run("benchmarks.store_scale", "--smoke", f"--results_dir={results}",
                      f"--work_dir={work}")
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    with open(os.path.join(results, "smoke-M2048_d8.json")) as f:
      cell = json.load(f)
    phases = cell["phases"]
    self.assertEqual(sorted(phases),
                     ["build", "join", "join_shards", "open", "speed", "speed_shards"])
    self.assertEqual((phases["build"]["shards"], phases["open"]["num_examples"]), (2, 2048))
    self.assertGreater(phases["build"]["disk_bytes_per_example"], 16 + 2 * 8 * 4)
    self.assertEqual(phases["join"]["steps"], 2)
    self.assertEqual(phases["join_shards"]["steps"], 2)  # each input shard joined
    self.assertEqual(sorted(phases["speed_shards"]["examples_per_s"]), sorted(
        ["shards interleaved, plain", "shard after shard, joined",
         "input shards (a list) joined", "input shards (InputShards) joined"]))
    self.assertEqual((phases["speed_shards"]["examples"], phases["speed_shards"]["shards"]),
                     (2048, 2))
    self.assertEqual(sorted(phases["speed"]["examples_per_s"]), sorted(
        ["tfrecord plain", "tfrecord joined (ids)", "tfrecord joined (ids, inputs)",
         "tfrecord batched plain", "tfrecord batched plain + values' features",
         "tfrecord batched joined (ids, inputs)", "memory plain",
         "memory joined (ids, inputs)"]))
    for key in ("cpu_us_per_example", "first_batch_seconds"):
      self.assertEqual(sorted(phases["speed"][key]), sorted(phases["speed"]["examples_per_s"]))
    self.assertTrue(all(s > 0 for s in phases["speed"]["first_batch_seconds"].values()))
    self.assertEqual(phases["speed"]["examples"], 1024)
    self.assertFalse([n for n in os.listdir(work) if n.startswith("store-")])
    self.assertIn("| 2,048 | 8 |", done.stdout)


if __name__ == "__main__":
  tf.test.main()
