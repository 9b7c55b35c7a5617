r"""Trains a learner on selected data (uniform, independent or JEST), under any strategy.

The same program runs on one CPU, on several replicas, on several workers and on a TPU: under a
strategy, scoring and selection run inside the replicated train step (`tfjest.attach`); without
one, in the input pipeline. It trains a small frozen reference on clean pairs (or loads one),
trains the learner with `model.fit` on `dataset.apply(tfjest.select(...))`, evaluates every
`--eval_every` steps, checks that every replica holds identical weights, and writes the curve.

    # One CPU, no strategy (selection in the tf.data pipeline):
    python -m examples.train_learner --method=jest --steps=100 --output=/tmp/jest.json

    # MirroredStrategy over 2 logical CPU devices (selection in the replicated step):
    python -m examples.train_learner --strategy=mirrored --num_cpu_devices=2 --method=jest \
        --steps=20 --eval_every=10

    # MultiWorkerMirroredStrategy: one process per worker, each with its TF_CONFIG, e.g.
    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
                "task": {"type": "worker", "index": 0}}' \
        python -m examples.train_learner --strategy=multi_worker --dataset=toy --method=jest \
        --steps=20 &
    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
                "task": {"type": "worker", "index": 1}}' \
        python -m examples.train_learner --strategy=multi_worker --dataset=toy --method=jest \
        --steps=20
    (The captions dataset is built on first use; under several workers build it once first, e.g.
    with one run without a strategy, so that workers do not build it at the same time.)

    # A larger web split of the offline benchmark dataset (the default data), f = 0.9:
    python -m examples.train_learner --method=jest --filter_ratio=0.9 --stream_examples=100000 \
        --steps=1000 --eval_every=50 --output=/tmp/jest.json

    # A Cloud TPU (fails with a clear message where there is none):
    python -m examples.train_learner --strategy=tpu --tpu=local --method=jest

The last line reads `identical replica weights: True (<R> replicas)`; `--output` gets
`{"steps": [...], "flops": [...], "accuracy": [...], ...}` as JSON.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging

import tfjest
from examples.lib import harness
from examples.lib import reference as reference_lib
from examples.lib import strategies
from examples.lib import tasks
from tfjest import testing

_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", strategies.STRATEGIES,
    "default: no strategy (selection in the tf.data pipeline); mirrored: MirroredStrategy over "
    "all GPUs, or all logical CPUs (see --num_cpu_devices); multi_worker: "
    "MultiWorkerMirroredStrategy, cluster from TF_CONFIG; tpu: TPUStrategy at --tpu.")
_TPU = flags.DEFINE_string(
    "tpu", "", "With --strategy=tpu: the TPU for TPUClusterResolver (a name, "
    "grpc://<host>:<port>, or 'local' on a TPU VM).")
_CPUS = flags.DEFINE_integer(
    "num_cpu_devices", 1, "Split the CPU into this many logical devices (replicas for "
    "--strategy=mirrored on a machine without GPUs).", lower_bound=1)
_DATASET = flags.DEFINE_enum("dataset", "captions", ["captions", "toy"],
                             "The data and models: toy = tfjest.testing's image-caption pairs "
                             "(generated in memory, fast); captions = the offline benchmark "
                             "dataset (tfjest.datasets, `web` split of --stream_examples, "
                             "`curated` of --reference_examples; examples/lib/models.py models).")
_METHOD = flags.DEFINE_enum("method", "jest", harness.METHODS,
                            "Selection: uniform (baseline), independent (per-example), "
                            "jest (joint).")
_SCORE = flags.DEFINE_enum("score", "learnability", harness.SCORES,
                           "Score: learnability (learner - reference loss), hard_learner, "
                           "easy_reference.")
_REPLICA_SELECTION = flags.DEFINE_enum(
    "replica_selection", "local", ("local", "global"),
    "Under a strategy: each replica selects from its own shard (local), or JEST chunks are "
    "conditioned on every replica's choices (global).")
_RATIO = flags.DEFINE_float("filter_ratio", 0.8, "Share of each super-batch filtered out (f).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Examples trained on per step (b, global).",
                              lower_bound=1)
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "JEST chunks per batch (K).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 100, "Training steps of the learner.", lower_bound=1)
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 20, "Evaluate every this many steps (and after "
                                   "the last one).", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed for data, models and selection.", lower_bound=0)
_NOISE = flags.DEFINE_float("noise", 0.5, "Share of training pairs with a swapped (wrong) caption.")
_LR = flags.DEFINE_float("learning_rate", 1e-3, "Learner's Adam learning rate.")
_REFERENCE_PATH = flags.DEFINE_string(
    "reference_path", "", "Load the reference from this .keras file instead of training one.")
_REF_EXAMPLES = flags.DEFINE_integer("reference_examples", 4096,
                                     "Clean pairs the reference trains on.", lower_bound=128)
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", 3, "Epochs of reference training.",
                                   lower_bound=0)
_STREAM_EXAMPLES = flags.DEFINE_integer("stream_examples", 4096,
                                        "Distinct examples in the (repeated) training stream.",
                                        lower_bound=1)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "", "TFDS data directory for --dataset=captions (built there offline on first "
    "use); TFDS' default when empty.")
_BACKUP_DIR = flags.DEFINE_string(
    "backup_dir", "", "If set, keras.callbacks.BackupAndRestore backs training up here after "
    "every evaluation interval and resumes from it after a restart (written by the chief).")
_OUTPUT = flags.DEFINE_string("output", "", "Write the evaluation curve (steps, accuracy) and "
                              "run details here as JSON.")


def _run(log):
  strategy = strategies.make_strategy(_STRATEGY.value, tpu=_TPU.value)
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  log(f"strategy: {_STRATEGY.value}, {replicas} replica(s)")
  task = tasks.make_task(_DATASET.value, noise=_NOISE.value, seed=_SEED.value,
                         sizes=(_STREAM_EXAMPLES.value, _REF_EXAMPLES.value),
                         data_dir=_DATA_DIR.value or None)
  config = harness.RunConfig(
      method=_METHOD.value, score=_SCORE.value, filter_ratio=_RATIO.value,
      batch_size=_BATCH.value, steps=_STEPS.value, eval_every=_EVAL_EVERY.value,
      seed=_SEED.value, learning_rate=_LR.value, num_chunks=_CHUNKS.value,
      replica_selection=_REPLICA_SELECTION.value, backup_dir=_BACKUP_DIR.value)
  # The reference trains with plain fit, before attach would apply the fix.
  if strategy is not None and tfjest.ensure_multi_worker_fit(strategy):
    log("keras: tfjest's MultiWorkerMirroredStrategy fit fix is active (keras-team/keras#20585)")
  reference = None
  if "reference" in config.models_read:
    if _REFERENCE_PATH.value:
      if strategy is not None:
        with strategy.scope():
          reference = reference_lib.load(_REFERENCE_PATH.value)
      else:
        reference = reference_lib.load(_REFERENCE_PATH.value)
      log(f"reference: loaded {_REFERENCE_PATH.value}")
    else:
      reference = reference_lib.train(task, epochs=_REF_EPOCHS.value, batch_size=128,
                                      seed=_SEED.value, strategy=strategy, log=log)
      log(f"reference: accuracy {task.evaluate(reference)['accuracy']:.3f}")
  result = harness.run(config, task, reference=reference, strategy=strategy, log=log)
  stats = result["selection_stats"]
  log(f"selected {stats['selected']:.0f} of {stats['read']:.0f} examples")
  log(f"identical replica weights: {result['identical_replica_weights']} ({replicas} "
      f"replicas)")
  return result


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # tf.distribute logs every collective at INFO
  if not testing.configure_cpu_devices(_CPUS.value):
    sys.exit(f"train_learner: could not create {_CPUS.value} logical CPU devices. "
             f"Received: num_cpu_devices={_CPUS.value}")
  try:
    result = _run(lambda line: print(line, flush=True))
  except (ValueError, RuntimeError) as e:
    if "Received:" not in str(e):
      raise
    sys.exit(f"train_learner: {e}")  # a wrong flag or environment: the message, no traceback
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
