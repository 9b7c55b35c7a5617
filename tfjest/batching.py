"""How a stream is cut into super-batches: the sizes, the cutting, and the dropped tail.

`Sizes` is `select`'s batching configuration as one frozen value that checks itself
(`b`, `N = b / (1 - f)`, the final partial super-batch, batched input). `check_stackable` and
`batched_by` look at a dataset before anything is selected, so a stream that cannot be stacked,
or that yields batches where examples are expected, fails at once with the fix named.
`SuperBatcher` cuts a checked stream into super-batches; `keep_complete` is the one rule for a
block that came out short (a final partial super-batch here, an incomplete cluster window in
`tfjest.by_cluster`): it is dropped, its examples are counted as left over, and one warning is
printed per transformation. Nothing is dropped silently.
"""

import dataclasses
import numbers
import sys
from typing import Callable, Mapping, Optional, Sequence

import tensorflow as tf

from tfjest import checks

REMAINDERS = ("drop", "keep")


def super_batch_size_for(batch_size: int, filter_ratio: float) -> int:
  """The super-batch size `select` reads for a batch size and filter ratio: `N = b / (1 - f)`.

  `N` must come out whole: a ratio that would need rounding raises instead of silently reading
  more or fewer candidates than asked (pass `select(super_batch_size=...)` then).

  Raises:
    ValueError: if `b / (1 - f)` is not a whole number.
  """
  exact = batch_size / (1.0 - filter_ratio)
  n = int(round(exact))
  if abs(exact - n) > 1e-6 * exact:
    raise ValueError(
        f"batch_size / (1 - filter_ratio) must be a whole number of examples (the super-batch "
        f"size), but {batch_size} / (1 - {filter_ratio}) = {exact:.4f}. Choose another "
        f"filter_ratio or pass super_batch_size= instead. "
        f"Received: batch_size={batch_size}, filter_ratio={filter_ratio}")
  return n


@dataclasses.dataclass(frozen=True)
class Sizes:
  """How the stream is cut: `b` of every `N`, one example per element, and the tail.

  Build it with `Sizes.of(...)`, which takes `filter_ratio` or `super_batch_size` as `select`
  does. Raises ValueError naming the first field outside its domain.
  """

  batch_size: int
  super_batch_size: int
  remainder: str = "drop"
  input_batched: bool = False

  def __post_init__(self):
    if not checks.is_int(self.batch_size) or self.batch_size <= 0:
      raise ValueError(
          f"batch_size must be a positive integer. Received: batch_size={self.batch_size!r}")
    if not checks.is_int(self.super_batch_size) or self.super_batch_size < self.batch_size:
      raise ValueError(f"super_batch_size must be an integer >= batch_size ({self.batch_size})"
                       f". Received: super_batch_size={self.super_batch_size!r}")
    checks.one_of(self.remainder, "remainder", REMAINDERS)
    checks.boolean(self.input_batched, "input_batched")
    # NumPy integers are welcome, but only Python ints go on into TensorFlow ops.
    object.__setattr__(self, "batch_size", int(self.batch_size))
    object.__setattr__(self, "super_batch_size", int(self.super_batch_size))

  @classmethod
  def of(cls, *, batch_size, filter_ratio=None, super_batch_size=None, remainder="drop",
         input_batched=False) -> "Sizes":
    if not checks.is_int(batch_size) or batch_size <= 0:
      raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    if filter_ratio is not None and super_batch_size is not None:
      raise ValueError("Pass either filter_ratio or super_batch_size, not both. Received: "
                       f"filter_ratio={filter_ratio!r}, super_batch_size={super_batch_size!r}")
    if super_batch_size is None:
      filter_ratio = 0.8 if filter_ratio is None else filter_ratio
      if (not isinstance(filter_ratio, numbers.Real) or isinstance(filter_ratio, bool) or
          not 0.0 <= filter_ratio < 1.0):
        raise ValueError("filter_ratio must be a number in [0, 1). "
                         f"Received: filter_ratio={filter_ratio!r}")
      super_batch_size = super_batch_size_for(batch_size, float(filter_ratio))
    return cls(batch_size, super_batch_size, remainder, input_batched)


# Ops that keep a batched stream batched, and the ops that batch it.
_TRANSPARENT = ("Map", "ParallelMap", "Prefetch", "Shuffle", "Repeat", "Take", "Skip", "Cache",
                "Options", "Filter", "AssertCardinality", "Apply", "Snapshot", "Shard")
_BATCHING = ("Batch", "PaddedBatch", "ParallelBatch", "RaggedBatch", "DenseToSparseBatch")


def batched_by(dataset) -> Optional[str]:
  """The batching op a dataset ends in (through maps, prefetch, ...), or None."""
  for _ in range(64):
    name = type(dataset).__name__.strip("_").replace("Dataset", "").replace("V2", "")
    if name in _BATCHING:
      return f"{name.lower()}()"
    if name not in _TRANSPARENT:
      return None
    dataset = getattr(dataset, "_input_dataset", None)
    if dataset is None:
      return None
  return None


def check_stackable(spec):
  for path, s in flatten_with_paths(spec):
    if not isinstance(s, tf.TensorSpec):
      raise ValueError(
          f"select(...) stacks examples into super-batches and needs dense tensors; feature "
          f"{path!r} is a {type(s).__name__}. Pad or convert it to a dense tensor first. "
          f"Received: element_spec={spec}")
    if not s.shape.is_fully_defined():
      raise ValueError(
          f"select(...) stacks examples into super-batches, so every feature needs a fixed "
          f"shape, but feature {path!r} has shape {s.shape}. Pad or resize it to a fixed shape "
          f"first (or, if the dataset is already batched, pass input_batched=True). "
          f"Received: element_spec={spec}")


# The parts of an `(x, y[, sample_weight])` element, as `fit` names them.
_PARTS = ("x", "y", "sample_weight")


def flatten_with_paths(spec):
  """`[(path, leaf)]` in `tf.nest` order; paths join keys and indices with "/" ("x/tokens").

  The components of a top-level `(x, y)` or `(x, y, sample_weight)` tuple are named so.
  """
  out = []

  def walk(path, node):
    if isinstance(node, Mapping):
      for key in sorted(node):  # tf.nest's order
        walk(f"{path}/{key}" if path else str(key), node[key])
    elif isinstance(node, (tuple, list)):
      names = getattr(node, "_fields", None) or (
          _PARTS if not path and isinstance(node, tuple) and len(node) in (2, 3) else
          [str(i) for i in range(len(node))])
      for name, item in zip(names, node):
        walk(f"{path}/{name}" if path else str(name), item)
    else:
      out.append((path, node))

  walk("", spec)
  return out


def check_batched(spec):
  """Raises ValueError unless every feature has a leading (batch) axis to unbatch."""
  for path, s in flatten_with_paths(spec):
    if getattr(s, "shape", None) is not None and s.shape.rank == 0:
      raise ValueError(
          f"input_batched=True unbatches the elements, but feature {path!r} is a scalar "
          f"(shape ()), so the dataset yields single examples, not batches. Pass "
          f"input_batched=False (the default) for a stream of single examples. "
          f"Received: input_batched=True, element_spec={spec}")


def check_labels(spec, skip=()):
  """Raises ValueError if a label (`y` of an `(x, y[, w])` element) is a string tensor.

  Args:
    spec: the element spec of one example.
    skip: leaves to leave out (the example-id feature, which may be a string in `y`).
  """
  if not isinstance(spec, tuple) or len(spec) < 2:
    return
  for path, s in flatten_with_paths(spec):
    if (path == "y" or path.startswith("y/")) and not any(s is k for k in skip) and (
        getattr(s, "dtype", None) == tf.string):
      raise ValueError(
          f"Classification scoring computes each example's loss from its labels, which must "
          f"be numbers, but label feature {path!r} has dtype string. Map the labels to "
          f"integers first (e.g. with keras.layers.StringLookup). "
          f"Received: {path}={s}")


def leading_size(structure) -> tf.Tensor:
  """The leading (batch) dimension of a structure's first tensor, as an int32 scalar."""
  return tf.shape(tf.nest.flatten(structure)[0], out_type=tf.int32)[0]


@tf.autograph.experimental.do_not_convert
def keep_complete(complete, left_over, *, record: Callable, warned: tf.Variable,
                  message: Sequence[str]) -> tf.Tensor:
  """The dropped-tail rule: True for a complete block; an incomplete one is counted and shown.

  Args:
    complete: bool scalar, whether the block is complete.
    left_over: the block's example count (recorded only when it is incomplete).
    record: adds a count of left-over examples to the transformation's statistics.
    warned: a bool variable of the transformation: the warning is printed once per
      transformation (not once per epoch: the tail of every epoch is the same).
    message: `(before, after)`: the warning is `before <left_over> after`.

  Returns:
    `complete`, after the count is recorded and the warning printed: use it as a filter's
    predicate.
  """
  before, after = message

  def warn_once():
    printed = tf.print(before, left_over, after, output_stream=sys.stderr)
    with tf.control_dependencies([printed]):
      return warned.assign(True)

  recorded = record(tf.where(complete, tf.zeros_like(left_over), left_over))
  warn = tf.cond(complete | warned, lambda: tf.constant(True), warn_once)
  with tf.control_dependencies([recorded, warn]):
    return tf.identity(complete)


def with_cardinality(dataset, cardinality: int, n: int, remainder: str):
  """A filter of the dropped tail hides the length; restore it so `fit` knows an epoch."""
  if cardinality == tf.data.INFINITE_CARDINALITY:
    return dataset.repeat()
  if cardinality >= 0:
    batches = cardinality // n if remainder == "drop" else -(-cardinality // n)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))
  return dataset


class SuperBatcher:
  """Cuts a stream of single examples into super-batches of `N`, counting a dropped tail.

  Args:
    sizes: the `Sizes`.
    record_left_over: adds a count of dropped examples to the statistics.
    name: the transformation's public name, for the warning.
  """

  def __init__(self, sizes: Sizes, record_left_over: Callable, name: str = "tfjest.select"):
    self.sizes = sizes
    self._record_left_over = record_left_over
    self._name = name
    with tf.init_scope(), tf.device("/cpu:0"):
      self._warned = tf.Variable(False, trainable=False, name="warned_left_over")
      # Super-batches an endless stream skips when an iterator starts: a `fit` resumed by
      # `tfjest.backup_and_restore` sets it, so the stream goes on where the backup was taken.
      self.start = tf.Variable(0, dtype=tf.int64, trainable=False, name="resume_start")

  def __call__(self, dataset, cardinality: int, *, full_only: bool = False):
    """`(index, super-batch)` pairs of `N` stacked elements; a dropped tail is counted.

    With `full_only` (selection in a train step, which needs static shapes) a final partial
    super-batch is always dropped and counted, and the index is left out.
    """
    n = self.sizes.super_batch_size
    batches = dataset.batch(n, drop_remainder=False).enumerate()
    if cardinality == tf.data.INFINITE_CARDINALITY:
      # `start` is read when an iterator starts (in the flat_map), not when the dataset is
      # built: Keras' `fit` builds its iterator after the callbacks' `on_train_begin`. Skipped
      # super-batches keep their indices, which key the noise.
      whole, start = batches, self.start
      batches = tf.data.Dataset.from_tensors(0).flat_map(lambda _: whole.skip(start))
    if self.sizes.remainder == "drop" or full_only:
      batches = batches.filter(self._keep_full_or_count)
    if full_only:
      static = lambda index, batch: tf.nest.map_structure(
          lambda t: tf.ensure_shape(t, [n] + t.shape[1:]), batch)
      batches = batches.map(tf.autograph.experimental.do_not_convert(static))
      return with_cardinality(batches, cardinality, n, "drop")
    return batches

  @tf.autograph.experimental.do_not_convert
  def _keep_full_or_count(self, index, super_batch):
    del index
    size = leading_size(super_batch)
    return keep_complete(
        tf.equal(size, self.sizes.super_batch_size), size, record=self._record_left_over,
        warned=self._warned,
        message=(f"{self._name}: dropped a final partial super-batch of",
                 "examples (counted in stats as left_over; pass remainder='keep' to select "
                 "from it). Shown once."))
