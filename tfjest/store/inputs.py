"""Input shards: the datasets a store is built from, one value shard each.

A builder takes one `tf.data.Dataset`, a list of them (one per input shard, e.g. per file) or
an `InputShards`, the shards as a function of their index for data in thousands of shards.
`input_shards` gives either form one interface: `len`, int indexing and iteration (a local
build and the reuse check read one shard at a time), `element_spec`, and `pick(index)`, the
shard of a scalar tensor index inside a graph (the tf.data service job, the join of input
shards).
"""

from typing import Callable, Iterator

import tensorflow as tf

from tfjest import checks


class InputShards:
  """Input shards given as a function of the shard index, each dataset made when it is needed.

  For data in thousands of input shards (files): a list of datasets makes every shard's
  pipeline up front (about 14 ms and 0.3 MB each), and a build on tf.data service workers
  ships a graph holding all of them. `InputShards(fn, count)` is accepted wherever a list of
  input shards is (`tfjest.cache_reference`, `tfjest.prior_targets`, `Store.join(inputs=)`):

  - indexed with a Python int (`shards[k]`, iteration), it calls `fn(k)`: a local build, and
    the reuse check, make one shard's dataset at a time;
  - in a graph (the tf.data service job, the join of input shards), `pick(index)` calls
    `fn(index)` with a scalar int64 tensor: one pipeline traced for every shard, so the graph
    does not grow with `count`.

  `fn` is traced as written (not converted by AutoGraph): what depends on the index must be
  TensorFlow ops, e.g. `tf.gather` of a tensor of file names, not a Python list's `files[i]`.

  >>> import tensorflow as tf
  >>> import tfjest
  >>> shards = tfjest.InputShards(lambda i: tf.data.Dataset.range(3 * i, 3 * i + 3), 4)
  >>> len(shards), [int(v) for v in shards[2]]
  (4, [6, 7, 8])

  Args:
    fn: `fn(index) -> tf.data.Dataset`, input shard `index` (a Python int, or a scalar int64
      tensor inside a graph); every shard's elements must have `fn(0)`'s `element_spec`.
    count: the number of input shards, a positive integer.

  Attributes:
    fn: the function given.
    num_shards: `count` (also `len(shards)`).

  Raises:
    TypeError: if `fn` is not callable.
    ValueError: if `count` is not a positive integer.
  """

  def __init__(self, fn: Callable[..., tf.data.Dataset], count: int):
    if not callable(fn):
      raise TypeError(f"fn must be a function of the input shard index returning its "
                      f"tf.data.Dataset. Received: fn={fn!r}")
    self.num_shards = checks.positive_int(count, "count")
    self.fn = fn
    self._spec = None

  def __len__(self) -> int:
    return self.num_shards

  def __getitem__(self, index: int) -> tf.data.Dataset:
    """Input shard `index` (a Python int; negative counts from the end), made now."""
    if not checks.is_int(index):
      raise TypeError(f"InputShards are indexed by an int (in a graph: pick(index)). "
                      f"Received: index={index!r}")
    if not -self.num_shards <= index < self.num_shards:
      raise IndexError(f"index must be in [{-self.num_shards}, {self.num_shards}). Received: "
                       f"index={index!r}")
    index = int(index) % self.num_shards
    return self._checked(self.fn(index), index, spec=index != 0)

  def __iter__(self) -> Iterator[tf.data.Dataset]:
    for index in range(self.num_shards):  # one dataset at a time
      yield self[index]

  def __repr__(self) -> str:
    return f"InputShards(fn={getattr(self.fn, '__name__', self.fn)!r}, count={self.num_shards})"

  @property
  def element_spec(self):
    """The shards' element structure: `fn(0)`'s (made once, then remembered)."""
    return self.check()._spec  # pylint: disable=protected-access

  def check(self) -> "InputShards":
    """Makes `fn(0)` now (once) for the shards' element structure; returns `self`.

    Raises:
      TypeError: if `fn(0)` is not a `tf.data.Dataset`.
    """
    if self._spec is None:
      self._spec = self._checked(self.fn(0), 0, spec=False).element_spec
    return self

  def pick(self, index: tf.Tensor) -> tf.data.Dataset:
    """Input shard `index`, a scalar integer tensor: `fn(index)` traced into the graph.

    Raises:
      TypeError: if `fn` does not return a `tf.data.Dataset`.
      ValueError: if its elements do not have `fn(0)`'s `element_spec`.
    """
    self.check()  # fn(0)'s element_spec, to check against
    index = tf.cast(index, tf.int64)
    return self._checked(tf.autograph.experimental.do_not_convert(self.fn)(index), index)

  def _checked(self, dataset, index, spec=True) -> tf.data.Dataset:
    shown = index if isinstance(index, int) else "a tensor index"
    if not isinstance(dataset, tf.data.Dataset):
      raise TypeError(f"fn must return a tf.data.Dataset (input shard {shown}). Received: "
                      f"fn({shown}) of type {type(dataset).__name__}")
    if spec and dataset.element_spec != self.element_spec:
      raise ValueError(f"Every input shard must have the same element structure as fn(0) "
                       f"({self.element_spec}). Received: fn({shown}) with element_spec="
                       f"{dataset.element_spec}")
    return dataset


class DatasetShards(list):
  """A list of input shard datasets, with the interface of `InputShards` (`element_spec`,
  `pick`)."""

  @property
  def element_spec(self):
    return self[0].element_spec

  def pick(self, index: tf.Tensor) -> tf.data.Dataset:
    """`self[index]` for a scalar integer tensor `index`, as graph ops the service can ship.

    A balanced tree of `tf.cond` (depth `log2 S`) over every shard's pipeline: a
    `switch_case` over `S` datasets traces in time quadratic in `S` (a build on the service
    from 400 shards: 72 s and 8.12 GB; with the tree 20.8 s and 1.96 GB; BENCHMARKS.md,
    "Per-example store at scale"); the graph still grows with `S` (`InputShards` does not). An
    index outside `[0, S)` picks the first or last shard.
    """
    def tree(low, high):
      if high - low == 1:
        return self[low]
      middle = (low + high) // 2
      return tf.cond(index < middle, lambda: tree(low, middle), lambda: tree(middle, high))

    return tree(0, len(self))


def input_shards(dataset, name: str = "dataset"):
  """`dataset` as input shards: one `Dataset`, a non-empty list of them or an `InputShards`.

  Returns:
    The `InputShards` itself (its datasets made only when indexed), else a `DatasetShards`
    (a list of the datasets). Both have `len`, int indexing, iteration, `element_spec` and
    `pick(index)` (the shard of a tensor index, in a graph).

  Raises:
    TypeError: if `dataset` is none of these (or an `InputShards`' `fn(0)` not a `Dataset`).
    ValueError: if the shards' elements differ in structure.
  """
  if isinstance(dataset, InputShards):
    return dataset.check()
  shards = [dataset] if isinstance(dataset, tf.data.Dataset) else dataset
  if (not isinstance(shards, (list, tuple)) or not shards or
      not all(isinstance(s, tf.data.Dataset) for s in shards)):
    raise TypeError(f"{name} must be a tf.data.Dataset, a non-empty list of them (one per "
                    f"input shard) or a tfjest.InputShards. Received: {name} of type "
                    f"{type(dataset).__name__}")
  specs = {str(s.element_spec) for s in shards}
  if len(specs) > 1:
    raise ValueError(f"Every input shard must have the same element structure. Received: "
                     f"{name} with element specs {sorted(specs)}")
  return DatasetShards(shards)
