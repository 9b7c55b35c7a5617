"""The store's disk format, its local writer and its one staleness check.

A store is a directory:

- `metadata.json`: `format` ("tfjest.store"), `version`, `kind` (which values: a reference
  cache, prior targets, clusters), `task`, `source` (the name and `model_fingerprint` of the
  model the values came from), `settings`, `inputs` (the element structure that
  `input_fingerprints` hashed), `values` (shape and dtype of each value), `ids` (dtype, count
  and the fingerprint of every shard's ids in order) and `shards`: per value shard its file,
  its example count and two order-sensitive SHA-256 digests, of its ids and of its
  `(id, input fingerprint)` pairs;
- `values-00000-of-0000S.tfrecord`, ...: one value shard per input shard, in that shard's
  order. A record (a "chunk" in the metadata) is `n` examples as raw little-endian bytes,
  row-major: the input fingerprints (`n` int64), each value in the order of `values`
  (`n x shape`), then the ids (`n` int64; string ids: a serialised string tensor, then `n` as
  int64). Decoding is one `decode_raw` copy and views of it (no proto parse, no per-tensor
  copies), which is what makes the streamed join cheap (`join.py`). The writer groups the
  computed batches (the build's `batch_size`, the model's forward batch) into records of
  `RECORD_SIZE` examples whatever that batch size (a shard's last record holds the rest), so
  that the join's per-record costs are shared by many examples. Each shard's metadata records
  its `chunk_size`, the size of every record but the last (which is at most that; None if the
  records differ): the streamed join then reads a record as one block. Stores written with
  other record sizes (e.g. the build's batches of 256, before records were grouped) are read
  the same way. Reading is a `TFRecordDataset` (CRC-checked): memory is a record per open
  shard (`RECORD_SIZE` x the bytes per example: 2 MB at 528 bytes), whatever the number of
  examples; writing holds at most a record and a batch.
  Written here (`write`), or by tf.data service workers (`service.py`), byte for byte alike.

On disk per example: the id (8 bytes, or the string), the input fingerprint (8 bytes) and the
values (4 bytes per float32), plus 16 bytes of TFRecord framing per record (docs/SPEC.md §13).
"""

import json
import os
from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfjest.store import fingerprints
from tfjest.store import inputs as inputs_lib

FORMAT = "tfjest.store"
VERSION = 3  # 3: raw chunk records; 2: tf.train.Examples of serialised tensors
METADATA = "metadata.json"
PROCESSING_MODES = ("distributed_epoch", "parallel_epochs")
RECORD_SIZE = 4096  # examples per value record (a shard's last record holds the rest)


def shard_file(index: int, count: int) -> str:
  return f"values-{index:05d}-of-{count:05d}.tfrecord"


def has_store(path) -> bool:
  """Whether a store (its metadata) exists at `path`."""
  return os.path.exists(os.path.join(os.fspath(path), METADATA))


def read_metadata(path, kind) -> dict:
  """The parsed `metadata.json` of a store of `kind` (a `Store` subclass), checked.

  Raises:
    ValueError: if there is no readable store of this kind and version at `path`.
  """
  meta_path = os.path.join(os.fspath(path), METADATA)
  try:
    with open(meta_path) as f:
      metadata = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"No readable tfjest {kind.NAME} at this path ({e}). Build one with "
                     f"{kind.BUILDER}. Received: path={os.fspath(path)!r}") from e
  got = (metadata.get("format"), metadata.get("version"), metadata.get("kind"))
  if got != (FORMAT, VERSION, kind.KIND):
    raise ValueError(f"Expected a {FORMAT} of version {VERSION} holding {kind.KIND}. Received: "
                     f"format={got[0]!r}, version={got[1]!r}, kind={got[2]!r}")
  return metadata


def compute_chunks(shards: Sequence[tf.data.Dataset], compute: Callable, *,
                   batch_size: int) -> Iterator[Iterator[dict]]:
  """Per input shard, its chunks `compute(batch)` as NumPy dicts, in the shard's order.

  `compute` maps a batch of elements to a dict with `id`, `input_fingerprint` and the values.
  This process computes them; a build on tf.data service workers is `service.py`'s `write`
  (the workers compute and write the shards).
  """
  # One trace for all the shards: each shard's `map` calls this one function (traced at its
  # first shard), rather than tracing `compute` (e.g. the reference's forward) once per shard.
  traced = tf.function(compute)
  for shard in shards:
    yield _chunks(shard, traced, batch_size)


def _chunks(shard, compute, batch_size):
  # `map` passes a tuple element's parts as separate arguments.
  pipeline = shard.batch(batch_size).map(
      lambda *parts: compute(parts if len(parts) > 1 else parts[0]))
  for chunk in pipeline.prefetch(2):
    yield tf.nest.map_structure(lambda t: t.numpy(), chunk)


def _serialize(chunk: dict, keys: Sequence[str]) -> bytes:
  """A chunk as one record: see the module docstring (`keys`: the values, in order)."""
  parts = [np.ascontiguousarray(chunk[k]).astype(np.asarray(chunk[k]).dtype.newbyteorder("<"))
           .tobytes() for k in ("input_fingerprint", *keys)]
  ids = np.asarray(chunk["id"])
  if ids.dtype.kind in "OSU":
    parts += [tf.io.serialize_tensor(tf.constant(ids, tf.string)).numpy(),
              np.int64(len(ids)).astype("<i8").tobytes()]
  else:
    parts.append(ids.astype("<i8").tobytes())
  return b"".join(parts)


def decode_fn(values: dict, id_dtype: str) -> Callable:
  """`fn(record) -> {"id", "input_fingerprint", values: [n, ...]}` of a value shard's records.

  One copy (`decode_raw`) and views of it: `split` and `bitcast` share the buffer when each
  section starts at an aligned offset (e.g. records of 4,096 examples), else copy a
  section. A view must not reach `rebatch` (it logs an error per element that a view's
  reference count is unreliable): pass what leaves the join through `owned`. An empty record
  (the streamed join's end marker) decodes to `n = 0`.
  """
  specs = [("input_fingerprint", tf.int64, [])] + [
      (k, tf.as_dtype(v["dtype"]), list(v["shape"])) for k, v in values.items()]
  strings = id_dtype == "string"
  if not strings:
    specs.append(("id", tf.int64, []))
  row = [int(np.prod(shape, dtype=np.int64)) * dtype.size for _, dtype, shape in specs]

  def decode(record):
    raw = tf.io.decode_raw(record, tf.uint8)
    length = tf.size(raw, out_type=tf.int64)
    if strings:  # the fixed sections, the serialised ids, then n
      n = tf.cond(length > 0, lambda: tf.bitcast(tf.reshape(raw[-8:], [1, 8]), tf.int64)[0],
                  lambda: tf.constant(0, tf.int64))
      sizes = n * tf.constant(row, tf.int64)
      parts = tf.split(raw, tf.concat([sizes, [length - tf.reduce_sum(sizes)]], 0))
    else:  # as few ops as possible: the streamed join runs this per block
      parts = tf.split(raw, length // sum(row) * tf.constant(row, tf.int64))
    out = {}
    for (key, dtype, shape), part in zip(specs, parts):
      part = tf.reshape(part, [-1] + shape + ([dtype.size] if dtype.size > 1 else []))
      out[key] = (tf.cast(part, tf.bool) if dtype == tf.bool else part if dtype == tf.uint8
                  else tf.bitcast(part, dtype))
    if strings:
      tail = tf.strings.substr(record, tf.cast(tf.reduce_sum(sizes), tf.int32), tf.cast(
          length - tf.reduce_sum(sizes) - 8, tf.int32))
      out["id"] = tf.cond(n > 0, lambda: tf.ensure_shape(tf.io.parse_tensor(tail, tf.string),
                                                         [None]),
                          lambda: tf.zeros([0], tf.string))
    return out

  return decode


def owned(tensor: tf.Tensor) -> tf.Tensor:
  """A copy of `tensor` in a buffer of its own (not a view of a decoded record)."""
  return tf.raw_ops.DeepCopy(x=tensor)


def _records(chunks: Iterable[dict], size: int) -> Iterator[dict]:
  """`chunks` (dicts of arrays, any sizes) regrouped into `size` examples each, the last fewer."""
  held, count = [], 0
  for chunk in chunks:
    held.append(chunk)
    count += len(chunk["id"])
    if count < size:
      continue
    joined = {k: np.concatenate([c[k] for c in held]) if len(held) > 1 else held[0][k]
              for k in chunk}
    stop = count - count % size
    for start in range(0, stop, size):
      yield {k: v[start:start + size] for k, v in joined.items()}
    held = [{k: v[stop:] for k, v in joined.items()}] if stop < count else []
    count -= stop
  if count:
    yield {k: np.concatenate([c[k] for c in held]) for k in held[0]}


def _unique(chunks, index, shard_ids, shard_inputs):
  """`chunks`, with their ids checked unique and ids and inputs appended to the two lists."""
  seen = set()
  for chunk in chunks:
    ids = chunk["id"]
    for i in ids.tolist():  # memory: one shard's ids
      if i in seen:
        shown = i.decode() if isinstance(i, bytes) else i
        raise ValueError(f"Example ids must be unique: two examples of input shard {index} "
                         f"share an id, so stored values could be joined to the wrong one. "
                         f"Received: id={shown!r}")
      seen.add(i)
    shard_ids.append(ids)
    shard_inputs.append(chunk["input_fingerprint"])
    yield chunk


def write(path: str, metadata: dict, shard_chunks: Iterable[Iterable[dict]], *,
          num_shards: int, empty_message: str, late: Optional[Callable[[], dict]] = None,
          record_size: Optional[int] = None) -> dict:
  """The local writer: value shards in order, then `metadata.json` (completed and returned).

  (With `service=`, tf.data service workers write the same bytes: `service.py`.)

  Each shard is written under a temporary name and renamed when complete; the metadata comes
  last, so a store whose build stopped has no metadata and is not a store. The chunks (of any
  sizes, e.g. the build's batches) are written as records of `record_size` examples (default
  `RECORD_SIZE`), a shard's last record holding the rest.

  Raises:
    ValueError: with `empty_message` if no example was written; if two examples of a shard
      share an id; if `record_size` is not a positive int.

  `late`: optional `() -> dict` of metadata entries known only once the shards are written.
  """
  record_size = RECORD_SIZE if record_size is None else record_size
  if isinstance(record_size, bool) or not isinstance(record_size, int) or record_size < 1:
    raise ValueError(f"record_size must be a positive int. Received: record_size="
                     f"{record_size!r}")
  os.makedirs(path, exist_ok=True)
  for name in os.listdir(path):  # a store is replaced whole
    if name == METADATA or name.startswith("values-"):
      os.remove(os.path.join(path, name))
  shards, values, whole = [], None, fingerprints.Digest()
  for index, chunks in enumerate(shard_chunks):
    name = shard_file(index, num_shards)
    shard_ids, shard_inputs = [], []
    sizes = []
    with tf.io.TFRecordWriter(os.path.join(path, name + ".tmp")) as writer:
      for record in _records(_unique(chunks, index, shard_ids, shard_inputs), record_size):
        if values is None:
          values = {k: {"shape": list(v.shape[1:]), "dtype": v.dtype.name}
                    for k, v in record.items() if k not in ("id", "input_fingerprint")}
        sizes.append(len(record["id"]))
        writer.write(_serialize(record, list(values)))
    count = sum(sizes)
    os.replace(os.path.join(path, name + ".tmp"), os.path.join(path, name))
    ids_fingerprint, content_fingerprint = _shard_digests(shard_ids, shard_inputs)
    uniform = sizes and set(sizes[:-1]) <= {sizes[0]} and sizes[-1] <= sizes[0]
    shards.append({"file": name, "num_examples": count, "ids_fingerprint": ids_fingerprint,
                   "content_fingerprint": content_fingerprint,
                   "chunk_size": sizes[0] if uniform else None})
    whole.update(np.array([s.encode() for s in (shards[-1]["ids_fingerprint"],
                                                shards[-1]["content_fingerprint"])], object))
  total = sum(s["num_examples"] for s in shards)
  if not total:
    raise ValueError(empty_message)
  metadata = dict(metadata, values=values, shards=shards, **(late() if late else {}))
  metadata["ids"] = dict(metadata.get("ids", {}), num_examples=total,
                         fingerprint=whole.hexdigest())
  with open(os.path.join(path, METADATA + ".tmp"), "w") as f:
    json.dump(metadata, f, indent=1)
  os.replace(os.path.join(path, METADATA + ".tmp"), os.path.join(path, METADATA))
  return metadata


def stale_reason(path, kind, *, source_fingerprint: Optional[str] = None,
                 expected: Optional[dict] = None, shards=None, id_key: str = "id",
                 batch_size: int = 256) -> Optional[str]:
  """Why the store at `path` is not what `kind`'s builder would write now, or None.

  The one staleness check, cheapest first: the metadata (format, kind), the source model's
  fingerprint, every entry of `expected` (settings, task, ...), then, with `shards` (the input
  shards), the element structure, the shard count and, per shard, one pass over its ids and
  inputs (no model call) compared with that shard's two digests.
  """
  if not has_store(path):
    return f"no {kind.NAME} at this path"
  try:
    metadata = read_metadata(path, kind)
  except ValueError as e:
    return f"the {kind.NAME} there is unreadable ({e})"
  if source_fingerprint is not None and metadata["source"]["fingerprint"] != source_fingerprint:
    return (f"the {kind.SOURCE} differ from those the {kind.NAME} was built from "
            f"({metadata['source']['name']!r})")
  for key, value in (expected or {}).items():
    if key == "inputs" and metadata.get(key) != value:
      return (f"the dataset's elements have another structure than those the {kind.NAME} was "
              f"built from ({metadata.get(key)})")
    if metadata.get(key) != value:
      return f"the {kind.NAME} was built with other {key} ({metadata.get(key)!r}, not {value!r})"
  if shards is None:
    return None
  return _other_inputs(metadata, kind, inputs_lib.input_shards(shards), id_key, batch_size)


def _other_inputs(metadata, kind, shards, id_key, batch_size) -> Optional[str]:
  spec = shards.element_spec
  id_spec = fingerprints.find_id(spec, id_key)
  if (fingerprints.id_dtype(id_spec, id_key) != metadata["ids"]["dtype"] or
      fingerprints.input_structure(spec, kind.LABELS) != metadata["inputs"]):
    return "the dataset's elements have another structure or id dtype"
  if len(shards) != len(metadata["shards"]):
    return (f"the dataset has {len(shards)} input shards, the {kind.NAME} "
            f"{len(metadata['shards'])}")
  compute = lambda batch: fingerprints.ids_and_fingerprints(batch, id_key, kind.LABELS)
  for index, (chunks, recorded) in enumerate(zip(
      compute_chunks(shards, compute, batch_size=batch_size), metadata["shards"])):
    ids, inputs = [], []
    for chunk in chunks:
      ids.append(chunk["id"])
      inputs.append(chunk["input_fingerprint"])
    count = sum(len(i) for i in ids)
    ids_fingerprint, content_fingerprint = _shard_digests(ids, inputs)
    if ids_fingerprint != recorded["ids_fingerprint"]:
      return (f"the dataset holds other example ids in input shard {index} ({count} examples, "
              f"the {kind.NAME} {recorded['num_examples']})")
    if content_fingerprint != recorded["content_fingerprint"]:
      return (f"the inputs of some examples differ from those the {kind.NAME} was built from "
              f"(input shard {index})")
  return None


def _shard_digests(ids, inputs) -> Tuple[str, str]:
  """`(ids, content)` digests of a shard's ids and `(id, input fingerprint)` pairs.

  Both are of the pairs sorted by id, so they do not depend on the order the shard was read in
  (a seeded shuffle follows the global seed, which a resumed program may set differently): the
  join by id does not care, and the streamed join checks the order on every element.
  """
  if not ids:
    ids, inputs = [np.zeros([0], np.int64)], [np.zeros([0], np.int64)]
  ids, inputs = np.concatenate(ids), np.concatenate(inputs)
  order = np.argsort(ids, kind="stable")
  ids_digest = fingerprints.Digest().update(ids[order])
  inputs_digest = fingerprints.Digest().update(inputs[order])
  content = fingerprints.Digest().update(np.array(
      [ids_digest.hexdigest().encode(), inputs_digest.hexdigest().encode()], object))
  return ids_digest.hexdigest(), content.hexdigest()
