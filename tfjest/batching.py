"""How a stream is cut into super-batches: the sizes, and what elements can be stacked.

`Sizes` is `select`'s batching configuration as one frozen value that checks itself
(`b`, `N = b / (1 - f)`, the final partial super-batch, batched input). `check_stackable` and
`batched_by` look at a dataset before anything is selected, so a stream that cannot be stacked,
or that yields batches where examples are expected, fails at once with the fix named.
"""

import dataclasses
import numbers
from typing import Optional

import tensorflow as tf

REMAINDERS = ("drop", "keep")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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
    if not _is_int(self.batch_size) or self.batch_size <= 0:
      raise ValueError(
          f"batch_size must be a positive integer. Received: batch_size={self.batch_size!r}")
    if not _is_int(self.super_batch_size) or self.super_batch_size < self.batch_size:
      raise ValueError(f"super_batch_size must be an integer >= batch_size ({self.batch_size})"
                       f". Received: super_batch_size={self.super_batch_size!r}")
    if self.remainder not in REMAINDERS:
      raise ValueError(f"Expected remainder in {REMAINDERS}. "
                       f"Received: remainder={self.remainder!r}")
    if not isinstance(self.input_batched, bool):
      raise ValueError(
          f"input_batched must be a bool. Received: input_batched={self.input_batched!r}")

  @classmethod
  def of(cls, *, batch_size, filter_ratio=None, super_batch_size=None, remainder="drop",
         input_batched=False) -> "Sizes":
    if not _is_int(batch_size) or batch_size <= 0:
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
  for path, s in _flatten_with_paths(spec):
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


def _flatten_with_paths(spec):
  flat = tf.nest.flatten(spec)
  try:
    paths = [p for p, _ in tf.nest.flatten_with_joined_string_paths(spec)]
  except (AttributeError, TypeError):
    paths = [str(i) for i in range(len(flat))]
  return zip(paths, flat)
