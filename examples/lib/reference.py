"""The one recipe for the frozen reference: train on the task's clean data, save, load, cache.

Every program gets its reference here: the demo, `train_reference.py`, `train_learner.py` and
the benchmarks. `train` fits a fresh model of the task on its clean reference data with plain
`fit` (under `strategy`'s scope when given, so it is replicated like the learner) and freezes
it; `save` / `load` keep it as a `.keras` file; `cached` computes its outputs on the training
split once (`tfjest.cache_reference`), or reuses a cache already computed with the same weights
over the same examples.
"""

import contextlib
import time
from typing import Callable, Optional, Sequence

import keras

import tfjest
from examples.lib import data
from examples.lib import models  # also registers the saved classes

# The recipe's defaults, sized for 2 CPU cores (see BENCHMARKS.md).
EPOCHS = 100
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
WIDTH = 64


def train(task, *, epochs: int = EPOCHS, batch_size: int = BATCH_SIZE,
          learning_rate: float = LEARNING_RATE, seed: int = 0, width: int = WIDTH,
          filters: Sequence[int] = models.FILTERS, name: str = "reference",
          strategy=None, log: Callable[[str], None] = lambda s: None) -> keras.Model:
  """Trains the task's reference model on its clean data; returns it frozen.

  `epochs` epochs of `task.reference_examples // batch_size` steps of Adam at `learning_rate`
  over `task.reference_stream(seed)`, the model (`width`, convolution `filters`, `name`)
  initialised from `seed`. (For the captions task
  the curated split does not depend on the noise level, so one reference serves every noise
  level of a seed.)
  """
  keras.utils.set_random_seed(seed)
  scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
  with scope:
    model = task.make_model(name, width=width, filters=filters)
    model(task.example_inputs(1))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    # Built before fit: Keras would create the optimizer's variables while it traces its train
    # step, and a tf.function that creates variables is traced twice.
    model.optimizer.build(model.trainable_variables)
  steps = task.reference_examples // batch_size
  stream = (task.reference_stream(seed).batch(batch_size, drop_remainder=True)
            .map(data.strip_meta()).prefetch(2))
  start = time.time()
  model.fit(stream, steps_per_epoch=steps, epochs=epochs, verbose=0, shuffle=False)
  model.trainable = False
  log(f"{name}: {epochs} epochs of {steps} steps on {task.reference_examples} clean examples "
      f"in {time.time() - start:.0f} s")
  return model


def save(model: keras.Model, path: str) -> None:
  """Saves a reference as a `.keras` file, without optimizer state (it is frozen).

  The `.keras` format saves the optimizer of a compiled model whatever `include_optimizer`
  says, so an uncompiled copy with the same weights is saved instead.
  """
  copy = type(model).from_config(model.get_config())
  copy.build_from_config(copy.get_build_config())
  copy.set_weights(model.get_weights())
  copy.trainable = False
  copy.save(path)


def load(path: str) -> keras.Model:
  """A reference saved by `save` (a `.keras` file), frozen."""
  model = keras.saving.load_model(path)
  model.trainable = False
  return model


def cached(reference: keras.Model, task, path: str,
           log: Callable[[str], None] = lambda s: None) -> tfjest.ReferenceCache:
  """The reference's outputs on every training example, by id, in a cache at `path`.

  Reuses the cache at `path` when it was computed with these reference weights over the same
  examples (ids and inputs), else computes it again over `task.cache_stream()`. `tfjest.select`
  checks the cache against the reference and every super-batch's ids and inputs, so a stale
  cache stops a run with an error instead of being used.
  """
  start = time.time()
  cache = tfjest.cache_reference(reference, task.cache_stream(), path, id_key=task.id_key,
                                 batch_size=1024, reuse=True)
  how = "reused" if cache.reused else f"computed ({cache.rebuild_reason})"
  log(f"reference cache: {how}, {cache.num_examples} examples at {path} "
      f"({time.time() - start:.0f} s)")
  return cache
