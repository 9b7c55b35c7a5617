"""The two joins of stored values to a stream (docs/SPEC.md §13).

Streamed (`Streamed`): the stream, read in the order the store was built from (before any
shuffle: shuffle after the join), is zipped with the value shards. Both sides end with a marker,
so that a stream longer or shorter than its shards is caught, not cut by `zip`; every element's
id must equal its value's id, and (with `verify_inputs`) its inputs must hash to the stored
fingerprint. Otherwise the pipeline stops with an `InvalidArgumentError` naming the id, the
value shard and the position in it: a reordered or missing shard, a missing or extra example
and other ids all stop it, and none becomes a silent wrong join. Both sides are read in blocks
with one vectorised check per block: single examples are batched once and unbatched once; a
stream of batches in the build's order (e.g. records parsed with `parse_example`) is cut into
blocks and stays batched. The blocks are the value shards' records (`RECORD_SIZE` examples,
4,096, whatever the build's `batch_size`; a shard's last record the rest; stores written
before, in records of the build's batches, alike), or pieces of `P` examples of them when a
block of 4,096 of the stream's examples would exceed 4 MB (`block_limit`): each shard is read
in blocks of `P` (its last the rest), and the stream is cut to that static sequence of sizes
(`block_sizes`; `rebatch` with the vector), whatever the shards' numbers of examples. Whole
records are the values side alone (the `TFRecordDataset`), each decoded in the map that checks
it (one `decode_raw` copy); pieces are decoded, copied and cut by `rebatch`. Stores whose
shards' records differ in size fall back to tagging every value with its shard and position
and regrouping into blocks of the stream's size. The
join is one map per block with no control flow (a branch in a tf.data function costs more than
the check itself), so its fixed costs (a tf.data function call, a read, a few dozen ops: about
1 ms) are shared by a record's examples; the per-example cost is one comparison and one
FarmHash of the inputs. Memory: per open shard, a block of the stream and a few records of
values (two read ahead, and the blocks the parallel map holds), a record being 4,096 x 528
bytes = 2 MB at d = 64 and 16 MB at d = 512, whatever the number of examples. With input
shards (`interleave`), each is zipped with its own value shard, `cycle_length` of them open at
a time and read round-robin, deterministically (`Dataset.interleave`'s order); one pipeline
serves every shard (the input shards sliced from a vector of dataset variants, or
`InputShards`' function of the index; the value shard's file looked up by position), so
tracing, startup and memory do not grow with the number of shards.
Under `MultiWorkerMirroredStrategy` a worker that reads only its input shards opens only their
value shards.

By id (`by_id`): values looked up in memory (`Store.values_for`); any order, single or batched
elements. For small data and for streams that are shuffled before the values are needed.
"""

import os
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfjest import adapters
from tfjest import checks
from tfjest.store import fingerprints
from tfjest.store import inputs as inputs_lib
from tfjest.store import shards as shards_lib

_SHARD, _POSITION = "_shard", "_position"
# The most examples checked at a time: the largest record read as one block (the stream holds
# one), and the block when records cannot be blocks.
_BLOCK = shards_lib.RECORD_SIZE
# A block of the stream is at most this many bytes of fixed-size features (at least
# `_MIN_BLOCK` examples): a larger one is fresh memory, page-faulted in for every block (4,096
# examples of 12 KB are 50 MB, beyond glibc's largest reuse threshold of 32 MB), which cost
# more than the rest of the join (BENCHMARKS.md, "Per-example store at scale"). 4 MB rather
# than 8: 12 KB examples parsed 256 at a time then keep their own batches as blocks (no copy
# by `rebatch`), about 0.4 us of CPU per example less.
_BLOCK_BYTES = 4 << 20
_MIN_BLOCK = 256


def block_limit(example_spec) -> int:
  """The most examples per block of a stream whose examples have `example_spec` (one example).

  `_BLOCK` unless the fixed-size features of `_BLOCK` examples exceed `_BLOCK_BYTES`; then the
  largest power of two that fits (at least `_MIN_BLOCK`). Strings and unknown shapes count 0.
  """
  size = 0
  for s in tf.nest.flatten(example_spec):
    if s.dtype != tf.string and s.shape.is_fully_defined():
      size += s.shape.num_elements() * s.dtype.size
  if size * _BLOCK <= _BLOCK_BYTES:
    return _BLOCK
  return max(_MIN_BLOCK, 1 << (max(_BLOCK_BYTES // size, 1).bit_length() - 1))


def block_sizes(counts: Sequence[int], size: int, position=None):
  """The sizes of the blocks of shards of `counts` examples read `size` at a time (each
  shard's last block the rest), in order: a NumPy vector; with `position` (a tensor), of the
  one shard `counts[position]`, a tensor."""
  if position is None:
    out = [b for n in counts for b in [size] * (n // size) + ([n % size] if n % size else [])]
    return np.array(out or [size], np.int64)
  n = tf.gather(tf.constant(counts, tf.int64), position)
  rest = n % size
  return tf.concat([tf.fill([n // size], tf.constant(size, tf.int64)),
                    tf.reshape(rest, [1])[:tf.cast(rest > 0, tf.int32)]], 0)


def add_features(element, features: Mapping[str, tf.Tensor]):
  """`element` with `features` added to its dict: the element itself, else its `x`."""
  if isinstance(element, dict):
    return {**element, **features}
  if isinstance(element, tuple) and element and isinstance(element[0], dict):
    return ({**element[0], **features},) + element[1:]
  raise ValueError(f"Stored values are added as features of the elements' inputs, a dict. "
                   f"Received: element_spec={fingerprints.spec_of(element)}")


def _check_new(spec, names):
  x, _, _ = adapters.unpack(spec)
  held = set(spec) if isinstance(spec, dict) else set(x) if isinstance(x, dict) else set()
  clash = sorted(set(names) & held)
  if clash:
    raise ValueError(f"The elements already have features {clash}: join each store once, or "
                     f"pass other names with features=. Received: element_spec={spec}")


class Streamed:
  """A store's value shards zipped with the stream read in the build's order."""

  def __init__(self, store, id_key: str, features: Mapping[str, str], shards, verify: bool):
    self.store, self.id_key, self.features, self.verify = store, id_key, dict(features), verify
    count = store.num_shards
    indices = list(range(count)) if shards is None else list(shards)
    if not indices or not all(isinstance(i, int) and 0 <= i < count for i in indices):
      raise ValueError(f"shards must list value shards of the {store.NAME} at {store.path!r} "
                       f"(0 to {count - 1}). Received: shards={shards!r}")
    self.indices = indices
    self.names = [store.metadata["shards"][i]["file"] for i in range(count)]

  def apply_fn(self):
    def _apply_fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
      return self._zip(dataset, self.indices)
    return _apply_fn

  def interleave(self, inputs: Sequence[tf.data.Dataset], cycle_length: int) -> tf.data.Dataset:
    """Each input shard zipped with its value shard, `cycle_length` of them open at a time,
    interleaved round-robin (deterministic; with `cycle_length` >= the shards, all of them).

    One pipeline is traced for all the shards (the input shard picked by its position, the
    value shard's file and sizes looked up): tracing, startup and memory do not grow with
    the number of shards, only with `cycle_length`. `inputs`: a list of datasets (sliced from
    a vector of their variants), or a `inputs.InputShards` whose `fn(position)` is traced
    once (no dataset made per shard), position `k` being the value shard `shards[k]`.
    """
    lazy = isinstance(inputs, inputs_lib.InputShards)
    if (not (lazy or isinstance(inputs, (list, tuple))) or len(inputs) != len(self.indices) or
        not (lazy or all(isinstance(d, tf.data.Dataset) for d in inputs))):
      raise ValueError(f"inputs must be one dataset per value shard joined ({len(self.indices)}"
                       f": {self.indices}), a list or a tfjest.InputShards of that count. "
                       f"Received: inputs={inputs!r}")
    if not checks.is_int(cycle_length) or cycle_length <= 0:
      raise ValueError(f"cycle_length (input shards open at a time) must be a positive "
                       f"integer. Received: cycle_length={cycle_length!r}")
    if len(inputs) == 1:
      return self._zip(inputs[0], self.indices)
    if lazy:  # one trace of `fn`, with the position as a tensor
      inputs.check()  # fn(0) made here, not in the trace

      @tf.autograph.experimental.do_not_convert
      def made(position):
        return self._zip(inputs.pick(position), self.indices, position=position)

      return tf.data.Dataset.range(len(inputs)).interleave(
          made, cycle_length=min(int(cycle_length), len(inputs)), block_length=1)
    spec = inputs[0].element_spec
    for k, d in enumerate(inputs[1:], 1):
      if d.element_spec != spec:
        raise ValueError(f"The input shards must have one element_spec (inputs[0]: {spec}). "
                         f"Received: inputs[{k}] with element_spec={d.element_spec}")
    # The shards as a vector of dataset variants, sliced: no graph per shard (a `switch_case`
    # over them traces in time quadratic in their number: 25 s for 400 shards).
    shards = tf.data.Dataset.from_tensor_slices((
        tf.range(len(inputs), dtype=tf.int64),
        tf.stack([tf.data.experimental.to_variant(d) for d in inputs])))

    @tf.autograph.experimental.do_not_convert
    def one(position, variant):
      shard = tf.data.experimental.from_variant(variant, spec)
      return self._zip(shard, self.indices, position=position)

    return shards.interleave(one, cycle_length=min(int(cycle_length), len(inputs)),
                             block_length=1)

  def _piece(self, indices, limit):
    """`(P, C)`: blocks of `P` examples that never span two value records, else None.

    When every shard's records have one size `C` (but its last, the rest; or a shard of one
    smaller record) and `P = min(C, limit)` divides `C`, each shard is read in blocks of `P`
    (its last block the rest): `P = C` reads the records themselves as blocks, a smaller `P`
    (a stream of large examples) splits them. The stream is cut to the same sizes
    (`block_sizes`), whatever the shards' numbers of examples.
    """
    shards = [self.store.metadata["shards"][i] for i in indices]
    sizes = [s.get("chunk_size") for s in shards]
    if not all(sizes):
      return None
    record = max(sizes)
    if any(c != record and s["num_examples"] != c for c, s in zip(sizes, shards)):
      return None
    size = min(record, limit)
    return (size, record) if record % size == 0 else None

  def _values(self, indices, piece, limit, position=None):
    """The value blocks of `indices` in order, then an empty end marker; `decode` (or None),
    `locate` and the blocks' sizes (None: blocks of `limit`).

    With `piece` (`(P, C)`), the blocks are the records (`P = C`, decoded in the check: no
    other stage) or pieces of `P` of them (decoded, then cut by `rebatch`); else chunks are
    decoded, tagged with their shard and position and regrouped into blocks of `limit`.
    `locate(block, value, k) -> (shard file, position)` of example `k` of a block, for
    messages only. With `position` (a tensor), the values are those of the one shard
    `indices[position]`.
    """
    store, names = self.store, tf.constant([self.names[i] for i in indices])
    files = [os.path.join(store.path, self.names[i]) for i in indices]
    if position is not None:
      files = tf.gather(files, position)
    if piece:
      size, record = piece
      store.opened_shards.extend(indices)
      counts = [store.metadata["shards"][i]["num_examples"] for i in indices]
      sizes = block_sizes(counts, size, position)
      records = tf.data.TFRecordDataset(files, buffer_size=1 << 20)
      if size == record:
        decode = store.decode_fn()
        values = records.concatenate(tf.data.Dataset.from_tensors(tf.constant(b"")))
      else:  # records cut into blocks (decoded views must not reach `rebatch`: owned)
        decode, values = None, store.chunks(files).rebatch(sizes)
        values = values.concatenate(tf.data.Dataset.from_tensors(tf.nest.map_structure(
            lambda s: _zeros(tf.TensorSpec([0] + s.shape[1:], s.dtype)), values.element_spec)))
      # Read ahead on a thread of its own (two records: 4 MB at d = 64): the zip then finds a
      # value record ready while the stream's block is parsed (idle machine, d = 64, records
      # parsed 256 at a time: 64% -> 75% of the plain stream's examples/s; CPU unchanged).
      values = values.prefetch(2)
      first = np.cumsum([0] + [-(-n // size) for n in counts])  # each shard's first block

      def locate_block(block, value, k):
        del value
        if position is not None:
          return names[position], block * size + tf.cast(k, tf.int64)
        j = tf.clip_by_value(tf.searchsorted(first, block[None], side="right")[0] - 1, 0,
                             len(indices) - 1)
        return names[j], (block - tf.gather(first, j)) * size + tf.cast(k, tf.int64)

      return values, decode, locate_block, sizes
    out = None
    for j, i in enumerate(indices if position is None else [None]):
      def tag(offset, chunk, j=tf.cast(position if i is None else j, tf.int64)):
        n = tf.shape(chunk["id"], out_type=tf.int64)[0]
        return offset + n, dict(chunk, **{_SHARD: tf.fill([n], j),
                                          _POSITION: offset + tf.range(n)})
      if i is None:
        store.opened_shards.extend(indices)
        chunks = store.chunks(files)
      else:
        chunks = store.shard_dataset(i, chunked=True)
      values = chunks.scan(tf.constant(0, tf.int64), tag)
      out = values if out is None else out.concatenate(values)
    out = out.rebatch(limit)
    end = tf.nest.map_structure(lambda s: _zeros(tf.TensorSpec([0] + s.shape[1:], s.dtype)),
                                out.element_spec)

    def locate_tagged(block, value, k):
      del block
      return (tf.gather(names, _at(value[_SHARD], k)), _at(value[_POSITION], k))

    return out.concatenate(tf.data.Dataset.from_tensors(end)), None, locate_tagged, None

  def _zip(self, dataset: tf.data.Dataset, indices, position=None) -> tf.data.Dataset:
    """`dataset` joined with the value shards `indices` in order; with `position` (a tensor)
    with the one shard `indices[position]`."""
    store, id_key = self.store, self.id_key
    spec = dataset.element_spec
    id_spec = fingerprints.find_id(spec, id_key)
    if id_spec.shape.rank not in (0, 1):
      raise ValueError(f"The streamed join reads single examples (or batches of them, in "
                       f"order) as the {store.NAME} was built from: join before batching "
                       f"further (and before shuffling). Received: id feature {id_key!r} of "
                       f"shape {id_spec.shape}")
    batched = id_spec.shape.rank == 1
    one = spec if not batched else tf.nest.map_structure(
        lambda s: tf.TensorSpec(s.shape[1:], s.dtype), spec)
    _check_new(one, self.features.values())
    store.check_element_spec(one, id_key)
    # Both sides are read in blocks (the last one partial) and end with an empty marker
    # block: a stream longer or shorter than its values has a block of another length, or
    # meets the other side's marker (zip cannot hide it). One vectorised check per block.
    # Single examples are batched once and unbatched once; batches (e.g. records parsed with
    # `parse_example`) are regrouped into blocks and stay batches: no work per example.
    limit = block_limit(one)
    piece = self._piece(indices, limit)
    values, decode, locate, sizes = self._values(indices, piece, limit, position)
    if sizes is None:
      stream = dataset.rebatch(limit) if batched else dataset.batch(limit)
    elif batched:  # cut to the value blocks' sizes
      stream = dataset.rebatch(sizes)
    elif position is not None or not np.any(sizes[:-1] != piece[0]):
      stream = dataset.batch(piece[0])  # every block but the last holds P
    else:  # shards of other sizes than multiples of P: batched by their common divisor, cut
      stream = dataset.batch(int(np.gcd.reduce(sizes))).rebatch(sizes)
    stream = stream.concatenate(tf.data.Dataset.from_tensors(tf.nest.map_structure(
        lambda s: _zeros(tf.TensorSpec([0] + s.shape, s.dtype)), one)))
    last = (self.names[indices[-1]] if position is None else
            tf.gather([self.names[i] for i in indices], position))
    labels, verify, features = store.LABELS, self.verify, self.features

    @tf.autograph.experimental.do_not_convert
    def check(element, value, block=None):
      value = decode(value) if decode else value
      all_ids = fingerprints.find_id(element, id_key)
      all_ids = all_ids if all_ids.dtype == tf.string else tf.cast(all_ids, tf.int64)
      # As few ops as possible: every op is optimised (Grappler) each time an iterator is made.
      ns, nv = tf.size(all_ids), tf.size(value["id"])
      first = tf.reshape(tf.minimum(ns, nv), [1])  # the first n of both sides are compared
      head = lambda t: tf.slice(t, [0], first)
      ok = tf.equal(head(all_ids), head(value["id"]))
      if verify:
        ok &= tf.equal(head(fingerprints.input_fingerprints(element, labels)),
                       head(value["input_fingerprint"]))

      # No `tf.cond`: a branch in a tf.data function costs more than the whole check (the
      # graph's control flow). The message's few scalars are computed for every block, and
      # `Assert` formats them only when the check fails.
      k = tf.argmin(tf.concat([tf.cast(ok, tf.int32), [0]], 0), output_type=tf.int32)
      at_id, want = _at(all_ids, k), _at(value["id"], k)
      name, position = locate(block, value, k)
      messages = tf.stack([
          tf.strings.format(
              "an extra example: id {} comes after the last stored value (of shard {}). The "
              "stream holds examples or input shards the store was not built from. "
              "Received: id={}", [at_id, last, at_id]),
          tf.strings.format(
              "the stream ended before the value of id {} (position {} of shard {}): a "
              "missing example or input shard. Received: end of stream, shard={}",
              [want, position, name, name]),
          tf.strings.format(
              "example id {} met the value stored for id {} (position {} of shard {}): the "
              "stream is not read in the build's order (a reordered or missing shard, a "
              "shuffle before the join) or holds other ids. Received: id={}, shard={}",
              [at_id, want, position, name, at_id, name]),
          tf.strings.format(
              "the inputs of example id {} differ from those its value was computed from "
              "(position {} of shard {}): the store is stale. Rebuild it, or join with "
              "verify_inputs=False to accept stale values. Received: id={}, shard={}",
              [at_id, position, name, at_id, name])])
      which = tf.argmax(tf.stack([(k < ns) & (k >= nv), (k >= ns) & (k < nv),
                                  tf.not_equal(at_id, want), True]), output_type=tf.int32)
      checked = tf.debugging.Assert(
          tf.reduce_all(ok) & tf.equal(ns, nv),
          [f"tfjest: the stream and the {store.NAME} at {store.path} are not aligned: ",
           messages[which]])
      # No value leaves before its check; blocks leave as they are (a decoded record's views
      # are then copied: see `shards.decode_fn`), single examples are copied by `unbatch`.
      leave = shards_lib.owned if batched and decode else tf.identity
      with tf.control_dependencies([checked]):
        added = {name: leave(value[k]) for k, name in features.items()}
      return add_features(element, added)

    # Blocks of known sizes are counted, for messages.
    joined = tf.data.Dataset.zip((stream, values) + (
        (tf.data.Dataset.range(1 << 62),) if sizes is not None else ())).map(
            check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if batched:  # blocks, without the end marker's empty one
      nonempty = lambda *e: tf.shape(fingerprints.find_id(e if len(e) > 1 else e[0], id_key))[0] > 0
      return joined.filter(tf.autograph.experimental.do_not_convert(nonempty))
    return joined.unbatch()


def by_id(store, id_key: str, features: Mapping[str, str]):
  """The in-memory join by id, as a transformation (single or batched elements, any order)."""

  def _apply_fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
    spec = dataset.element_spec
    single = fingerprints.find_id(spec, id_key).shape.rank == 0
    store.check_element_spec(spec if single else tf.nest.map_structure(
        lambda s: tf.TensorSpec(s.shape[1:], s.dtype), spec), id_key)
    _check_new(spec, features.values())
    store.load_in_memory()

    @tf.autograph.experimental.do_not_convert
    def add(*parts):
      element = parts if len(parts) > 1 else parts[0]
      batch = tf.nest.map_structure(lambda t: t[None], element) if single else element
      values = store.values_for(batch, id_key, tuple(features))
      return add_features(element, {name: values[k][0] if single else values[k]
                                    for k, name in features.items()})

    return dataset.map(add, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  return _apply_fn


def _at(tensor, k):
  """`tensor[k]`, or a zero (an empty string) past its end (a block may be empty)."""
  padded = tf.concat([tensor, [_zeros(tf.TensorSpec([], tensor.dtype))]], 0)
  return tf.gather(padded, tf.minimum(tf.cast(k, tf.int32), tf.size(tensor)))


def _zeros(spec):
  if spec.dtype == tf.string:
    return tf.fill(spec.shape, "") if spec.shape.rank else tf.constant("")
  return tf.zeros(spec.shape, spec.dtype)
