"""Keras 3 `fit` under `MultiWorkerMirroredStrategy`: a narrow, version-guarded fix.

Keras 3's TensorFlow trainer fails under `MultiWorkerMirroredStrategy` in multi-worker mode
(keras-team/keras#20585, open; tensorflow/tensorflow#72388), in two places:

1. `TensorFlowTrainer._maybe_symbolic_build` averages the first batch over replicas to build the
   model; under this strategy the cross-worker reduce of a `PerReplica` batch fails with
   "Attempt to convert a value (PerReplica...) to a Tensor".
2. `reduce_per_replica` reduces every log of the train step with `axis=0`, which fails on the
   scalar loss and metrics: "Invalid reduction dimension 0 for input with 0 dimensions".

`ensure_multi_worker_fit` replaces these two functions with wrappers that change only those
cases (build from one local replica's batch, which has the same shapes; reduce scalars with
`axis=None`) and call the originals otherwise. It is applied only when a model is trained under
that strategy in multi-worker mode, with the TensorFlow backend, on a Keras version where the
failure was seen and the fix verified; elsewhere it does nothing. `tfjest.attach` applies it.
"""

import re
from typing import Tuple

import keras
import tensorflow as tf

# [first, last] Keras versions on which the failure was reproduced and this fix verified
# (two workers on 127.0.0.1 end with equal weights). Widen after checking a newer release.
VERIFIED_VERSIONS = ((3, 0), (3, 15))
_MARK = "_tfjest_multi_worker_fix"


def _version(text: str) -> Tuple[int, int]:
  match = re.match(r"(\d+)\.(\d+)", text)
  return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def keras_version() -> Tuple[int, int]:
  return _version(keras.__version__)


def needs_multi_worker_fix(strategy) -> bool:
  """True for `MultiWorkerMirroredStrategy` in multi-worker mode with Keras' TF backend."""
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and
          strategy.extended._in_multi_worker_mode() and  # pylint: disable=protected-access
          keras.backend.backend() == "tensorflow")


def is_applied() -> bool:
  from keras.src.backend.tensorflow import trainer  # pylint: disable=g-import-not-at-top
  return getattr(trainer.reduce_per_replica, _MARK, False)


def ensure_multi_worker_fit(strategy) -> bool:
  """Makes `model.fit` work under `strategy` if it is a multi-worker strategy that needs it.

  Args:
    strategy: the strategy the model was created under.

  Returns:
    True if the fix is active (applied now or before), False if the strategy does not need it
    or the installed Keras is outside `VERIFIED_VERSIONS` (then a warning is logged and Keras
    is left untouched).
  """
  if not needs_multi_worker_fix(strategy):
    return False
  version = keras_version()
  low, high = VERIFIED_VERSIONS
  if not low <= version <= high:
    tf.get_logger().warning(
        "tfjest: Keras %s is outside the versions on which tfjest's MultiWorkerMirroredStrategy "
        "fix was verified (%s to %s); leaving Keras unchanged. If fit fails with \"Attempt to "
        "convert a value (PerReplica...)\" or \"Invalid reduction dimension 0\", see "
        "keras-team/keras#20585.", keras.__version__, "%d.%d" % low, "%d.%d" % high)
    return False
  _apply()
  return True


def _apply():
  from keras.src.backend.tensorflow import trainer  # pylint: disable=g-import-not-at-top
  if getattr(trainer.reduce_per_replica, _MARK, False):
    return
  original_reduce = trainer.reduce_per_replica
  trainer_class = trainer.TensorFlowTrainer
  original_build = trainer_class._maybe_symbolic_build  # pylint: disable=protected-access

  def reduce_per_replica(values, strategy, reduction):
    if reduction not in ("auto", "mean") or not needs_multi_worker_fix(strategy):
      return original_reduce(values, strategy, reduction)

    def reduce(v):
      if not isinstance(v, (tf.Tensor, tf.distribute.DistributedValues)):
        return original_reduce(v, strategy, reduction)
      local = strategy.experimental_local_results(v)[0]
      axis = 0 if local.shape.rank else None  # Keras uses axis=0, invalid for scalars
      return strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=axis)

    return tf.nest.map_structure(reduce, values)

  def maybe_symbolic_build(self, iterator=None, data_batch=None):
    strategy = self._distribute_strategy  # pylint: disable=protected-access
    if strategy is None or iterator is None or not needs_multi_worker_fix(strategy):
      return original_build(self, iterator=iterator, data_batch=data_batch)
    for _, _, batches in iterator:
      batch = next(batches)
      break
    # One local replica's batch has the shapes the model is built for; no collective needed.
    batch = tf.nest.map_structure(
        lambda v: (strategy.experimental_local_results(v)[0]
                   if isinstance(v, tf.distribute.DistributedValues) else v), batch)
    with strategy.scope():
      self._symbolic_build(data_batch=batch)  # pylint: disable=protected-access

  setattr(reduce_per_replica, _MARK, True)
  setattr(maybe_symbolic_build, _MARK, True)
  trainer.reduce_per_replica = reduce_per_replica
  trainer_class._maybe_symbolic_build = maybe_symbolic_build  # pylint: disable=protected-access
