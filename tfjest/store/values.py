"""`Store`: per-example values on disk, opened by their metadata, joined to a stream.

Opening a store (`load`) reads `metadata.json` only. The values reach a pipeline by one of two
joins (docs/SPEC.md §13), behind one method, `join`:

- streamed (`in_order=True`, the default): the stream, read in the build's order, is zipped
  with the value shards, every element's id checked against its value's id (`join.py`);
  memory is a few value records and a block of the stream per open shard. For web-scale data
  and any stream read as it was built.
- in memory (`in_order=False`, and `values_for`, which `select` uses on a stream that was not
  joined): every shard is read once into a table from id to row, and each element's values
  are looked up by id; any order, shuffles and batches included. Memory is `M` rows: for
  small data.

`build` is the one build-or-reuse path of every kind of values (`tfjest.cache_reference`,
`tfjest.prior_targets`, `tfjest.cluster_reference` call it with their compute function).
"""

import os
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from tfjest.store import fingerprints
from tfjest.store import join as join_lib
from tfjest.store import shards as shards_lib


class Store:
  """Values computed once per example, stored in shards (see the module docstring).

  Subclasses name their kind (`KIND` in the metadata; `NAME`, `BUILDER`, `SOURCE` in messages),
  whether labels are part of an example's fingerprint (`LABELS`) and the features a join adds
  (`FEATURES`: value key -> feature name).

  Attributes:
    path: the directory.
    metadata: the parsed `metadata.json`.
    task: the source model's task ("contrastive", "classification", ...).
    num_examples: `M`, examples stored.
    num_shards: value shards (one per input shard).
    verify_inputs: whether joins check each example's inputs against its fingerprint.
    reused: True when the builder (`reuse=True`) returned what it found at `path`.
    rebuild_reason: when the builder (`reuse=True`) computed the values again, why the ones
      at `path` could not be reused (e.g. "no reference cache at this path"); else None.
    opened_shards: indices of the value shards the streamed joins of this object opened.
  """

  KIND = "values"
  NAME = "store"
  BUILDER = "its builder"
  SOURCE = "model's weights"
  LABELS = True
  FEATURES: Mapping[str, str] = {}

  def __init__(self, path: str, metadata: dict, verify_inputs: bool = True):
    self.path = os.fspath(path)
    self.metadata = metadata
    self.task = metadata.get("task")
    self.num_examples = int(metadata["ids"]["num_examples"])
    self.num_shards = len(metadata["shards"])
    self.verify_inputs = verify_inputs
    self.reused = False
    self.rebuild_reason = None
    self.opened_shards = []
    self._memory = None

  @classmethod
  def load(cls, path: str, *, verify_inputs: bool = True):
    """Opens a store written by the builder: reads its metadata only.

    Args:
      path: the directory.
      verify_inputs: check, in every join, that each example's inputs hash to the fingerprint
        recorded for its id. Turn off only for streams that deliberately change the inputs
        the values were computed from (e.g. random augmentation), accepting stale values.

    Raises:
      ValueError: if the directory is not a store of this kind (`NAME`) of a known version.
    """
    return cls(path, shards_lib.read_metadata(path, cls), verify_inputs=verify_inputs)

  @classmethod
  def build(cls, path, *, source: dict, expected: dict, metadata: dict,
            chunks: Optional[Callable[[], Iterable[Iterable[dict]]]], num_shards: int, shards=None,
            id_key: str = "id", batch_size: int = 256, overwrite: bool = False,
            reuse: bool = False, empty_message: str = "empty dataset",
            late_metadata: Optional[Callable[[], dict]] = None,
            writer: Optional[Callable[..., dict]] = None):
    """The one build-or-reuse path: returns the store at `path` if current, else writes it.

    Args:
      path: the directory.
      source: `{"name", "fingerprint"}` of what the values are computed from.
      expected: metadata entries that must match for reuse (task, settings, ...); written.
      metadata: further metadata entries (written, not compared).
      chunks: `() -> per shard, its chunks` (see `shards.compute_chunks`); called only to build.
      num_shards: how many shards `chunks` yields.
      shards: the input shards, fingerprinted for reuse (None: the source decides alone).
      id_key, batch_size: for that fingerprinting pass.
      overwrite: replace a store at `path`.
      reuse: return the store at `path` when `shards.stale_reason` finds nothing.
      empty_message: the error when no example was written.
      late_metadata: `() -> dict` of metadata known once the values are written (written).
      writer: optional `(path, metadata, empty_message=, late=) -> metadata` that writes the
        store instead of `shards.write` of `chunks()`: `service.write` on tf.data service
        workers (`chunks` is then unused).

    Raises:
      ValueError: if a store exists at `path` without `overwrite` or `reuse`.
    """
    path = os.fspath(path)
    if not isinstance(reuse, bool):
      raise ValueError(f"reuse must be a bool. Received: reuse={reuse!r}")
    if shards_lib.has_store(path) and not (overwrite or reuse):
      raise ValueError(f"The {cls.NAME} already exists there; pass overwrite=True to replace "
                       f"it (or reuse=True to keep it if current). Received: path={path!r}")
    reason = None
    if reuse:
      reason = shards_lib.stale_reason(path, cls, source_fingerprint=source["fingerprint"],
                                       expected=expected, shards=shards, id_key=id_key,
                                       batch_size=batch_size)
      if reason is None:
        found = cls.load(path)
        found.reused = True
        logging.info("%s: reused the %s at %s (%d examples): it is current", cls.BUILDER,
                     cls.NAME, path, found.num_examples)
        return found
      logging.info("%s: computing the %s at %s: %s", cls.BUILDER, cls.NAME, path, reason)
    metadata = dict(metadata, format=shards_lib.FORMAT, version=shards_lib.VERSION,
                    kind=cls.KIND, source=source, **expected)
    if writer is None:
      written = shards_lib.write(path, metadata, chunks(), num_shards=num_shards,
                                 empty_message=empty_message, late=late_metadata)
    else:
      written = writer(path, metadata, empty_message=empty_message, late=late_metadata)
    store = cls(path, written)
    store.rebuild_reason = reason
    return store

  # Reading.
  @property
  def value_keys(self) -> Tuple[str, ...]:
    return tuple(self.metadata["values"])

  @property
  def source_fingerprint(self) -> str:
    return self.metadata["source"]["fingerprint"]

  def shard_dataset(self, index: int, chunked: bool = False) -> tf.data.Dataset:
    """The values of shard `index`, one element per example: `id`, `input_fingerprint`, values.

    With `chunked`, one element per stored chunk (`[n, ...]` each).
    """
    self.opened_shards.append(int(index))
    chunks = self.chunks(os.path.join(self.path, self.metadata["shards"][index]["file"]))
    return chunks if chunked else chunks.unbatch()

  def chunks(self, file) -> tf.data.Dataset:
    """The records of the value shard `file` (a path, or a string tensor), decoded."""
    decode = self.decode_fn()
    owned = lambda r: tf.nest.map_structure(shards_lib.owned, decode(r))
    return tf.data.TFRecordDataset(file, buffer_size=1 << 20).map(
        tf.autograph.experimental.do_not_convert(owned),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def decode_fn(self):
    """`fn(record) -> {"id", "input_fingerprint", values}` of this store's value records."""
    return shards_lib.decode_fn(self.metadata["values"], self.metadata["ids"]["dtype"])

  def read(self, shards: Optional[Sequence[int]] = None) -> tf.data.Dataset:
    """The values of `shards` (default all), shard after shard, in the build's order."""
    indices = range(self.num_shards) if shards is None else shards
    datasets = [self.shard_dataset(i) for i in indices]
    out = datasets[0]
    for d in datasets[1:]:
      out = out.concatenate(d)
    return out

  def join(self, id_key: str = "id", *, in_order: bool = True, shards=None,
           features: Optional[Mapping[str, str]] = None, verify_inputs: Optional[bool] = None,
           inputs=None, cycle_length: Optional[int] = None):
    """Adds each element's stored values to it as features (`FEATURES`, or `features`).

    See `tfjest/store/join.py` for the rules (streamed with `in_order=True`, else in memory).

    Args:
      id_key: the id feature (in the element, its `x` or its `y`; "/" for nested paths).
      in_order: True: the stream is read in the build's order (zip and check); False: look
        each id up in memory (any order).
      shards: with `in_order`, the value shards the stream holds (default all), in order.
      features: `{value key: feature name}` of the values added (default `FEATURES`).
      verify_inputs: check each example's inputs against its fingerprint (default: the
        store's `verify_inputs`).
      inputs: with `in_order`, optionally a list of input-shard datasets, one per entry of
        `shards`, or a `tfjest.InputShards` of that count (entry `k` is `fn(k)`, traced once
        for all the shards): then the result is a `Dataset` that interleaves them, each
        zipped with its own value shard, rather than a transformation.
      cycle_length: with `inputs`, how many input shards are read at a time (default 4),
        round-robin; each holds a block of its stream and a few records of values (see
        `tfjest/store/join.py`), so memory grows with it, not with the number of shards.

    Returns:
      A `Dataset` transformation function, which can be passed to `tf.data.Dataset.apply`
      (a `Dataset` when `inputs` is given).

    Raises:
      ValueError: on unknown value keys or feature names that clash; when applied, on
        elements of another structure (see `check_element_spec`).
    """
    features = dict(self.FEATURES if features is None else features)
    unknown = sorted(set(features) - set(self.value_keys))
    if unknown or not all(isinstance(v, str) and v for v in features.values()):
      raise ValueError(f"features must map stored values ({list(self.value_keys)}) to feature "
                       f"names. Received: features={features!r}")
    verify = self.verify_inputs if verify_inputs is None else bool(verify_inputs)
    if not in_order:
      if inputs is not None or shards is not None:
        raise ValueError(f"inputs and shards apply to the streamed join (in_order=True). "
                         f"Received: in_order=False, shards={shards!r}")
      return join_lib.by_id(self, id_key, features)
    streamed = join_lib.Streamed(self, id_key, features, shards, verify)
    if inputs is None:
      if cycle_length is not None:
        raise ValueError(f"cycle_length applies to the join of input shards (inputs=[...]). "
                         f"Received: cycle_length={cycle_length!r}, inputs=None")
      return streamed.apply_fn()
    return streamed.interleave(inputs, 4 if cycle_length is None else cycle_length)

  # The in-memory join.
  def _in_memory(self):
    if self._memory is None:
      self._memory = _InMemory(self)
    return self._memory

  def load_in_memory(self) -> "Store":
    """Reads the store into memory for the join by id now (once), outside any function.

    The joins by id call it before they trace: the table's variables created while a
    pipeline's function is traced would make TensorFlow trace that function a second time.
    Returns the store.
    """
    with tf.init_scope():
      self._in_memory()
    return self

  @property
  def ids(self) -> np.ndarray:
    """`[M]` the ids (int64 or bytes), sorted (reads the whole store once)."""
    return self._in_memory().arrays["id"]

  def array(self, key: str) -> np.ndarray:
    """The `[M, ...]` values stored under `key`, row `i` for `ids[i]` (reads the store once).

    Raises:
      ValueError: if there is no such value.
    """
    arrays = self._in_memory().arrays
    if key == "id" or key not in arrays:
      raise ValueError(f"The {self.NAME} at {self.path!r} holds {sorted(self.value_keys)}. "
                       f"Received: key={key!r}")
    return arrays[key]

  def check_element_spec(self, element_spec, id_key: str):
    """Raises ValueError if the elements are not those the values were built from (structure)."""
    ids = fingerprints.find_id(element_spec, id_key)
    want = self.metadata["ids"]["dtype"]
    got = "string" if ids.dtype == tf.string else ("int64" if ids.dtype.is_integer else None)
    if got != want or ids.shape.rank != 0:
      raise ValueError(
          f"The {self.NAME} at {self.path!r} is keyed by scalar {want} ids. "
          f"Received: id feature {id_key!r} of dtype {ids.dtype.name} and shape {ids.shape}")
    structure = fingerprints.input_structure(element_spec, self.LABELS)
    if self.verify_inputs and structure != self.metadata["inputs"]:
      raise ValueError(
          f"The {self.NAME} at {self.path!r} was built from elements of another structure "
          f"(another dataset or preprocessing): it is stale for these elements. Recorded "
          f"inputs: {self.metadata['inputs']}. Received: inputs {structure}")

  @tf.autograph.experimental.do_not_convert
  def values_for(self, super_batch, id_key: str, keys: Optional[Sequence[str]] = None
                 ) -> Dict[str, tf.Tensor]:
    """The stored values of `N` stacked elements, by id from memory: `{key: [N, ...]}`.

    Raises:
      tf.errors.InvalidArgumentError: when run, if an id is not stored or (with
        `verify_inputs`) an example's inputs differ from those the values were built from.
    """
    return self._in_memory().lookup(super_batch, id_key, keys or self.joined_keys())

  def joined_keys(self) -> Tuple[str, ...]:
    """The values `values_for` returns by default."""
    return tuple(self.FEATURES)


class _InMemory:
  """Every shard read once into host memory: a hash table from id to row, a variable per value.

  Created outside any function (`tf.init_scope`): a dataset that joins them captures resource
  handles, not `M` rows of constants.
  """

  def __init__(self, store: Store):
    self.store = store
    with tf.init_scope():  # eager, even when first needed while a pipeline is traced
      chunks = [tf.nest.map_structure(lambda t: t.numpy(), b)
                for b in store.read().batch(1 << 16)]
    arrays = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    order = np.argsort(arrays["id"], kind="stable")
    self.arrays = {k: v[order] for k, v in arrays.items()}
    ids = self.arrays["id"]
    repeat = np.flatnonzero(ids[1:] == ids[:-1])
    if repeat.size:
      bad = ids[repeat[0]]
      raise ValueError(f"Example ids must be unique across the shards of the {store.NAME} at "
                       f"{store.path!r} for a join by id. Received: id="
                       f"{bad.decode() if isinstance(bad, bytes) else bad.item()!r}")
    self.string_ids = store.metadata["ids"]["dtype"] == "string"
    with tf.init_scope(), tf.device("/cpu:0"):
      keys = tf.constant(ids, tf.string if self.string_ids else tf.int64)
      self.table = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(ids), dtype=tf.int64)),
          default_value=-1)
      self.values = {k: tf.Variable(v, trainable=False, name=f"stored_{k}")
                     for k, v in self.arrays.items() if k != "id"}

  def lookup(self, batch, id_key: str, keys) -> Dict[str, tf.Tensor]:
    store = self.store
    ids = fingerprints.find_id(batch, id_key)
    ids = ids if self.string_ids else tf.cast(ids, tf.int64)
    rows = self.table.lookup(ids)
    missing = rows < 0
    checks = [tf.debugging.Assert(tf.logical_not(tf.reduce_any(missing)), [tf.strings.format(
        f"The {store.NAME} at {{}} has no entry for example id {{}} ({{}} ids of this batch "
        f"are missing): the stream holds examples the values were not built from. Rebuild "
        f"them with {store.BUILDER} over this dataset. Received: id={{}}",
        [store.path, _first(ids, missing), tf.reduce_sum(tf.cast(missing, tf.int32)),
         _first(ids, missing)])])]
    rows = tf.maximum(rows, 0)
    if store.verify_inputs:
      changed = tf.not_equal(tf.gather(self.values["input_fingerprint"], rows),
                             fingerprints.input_fingerprints(batch, store.LABELS)) & ~missing
      checks.append(tf.debugging.Assert(tf.logical_not(tf.reduce_any(changed)), [
          tf.strings.format(
              f"The {store.NAME} entry for example id {{}} was computed from other inputs "
              "(the dataset or its preprocessing changed since it was built, or two "
              "examples share an id): the values at {} are stale. Rebuild them, or load them "
              "with verify_inputs=False to accept stale values. Received: id={}",
              [_first(ids, changed), store.path, _first(ids, changed)])]))
    with tf.control_dependencies(checks):
      rows = tf.identity(rows)
    return {k: tf.gather(self.values[k], rows) for k in keys}


def _first(ids, mask):
  return tf.gather(ids, tf.argmax(tf.cast(mask, tf.int32)))
