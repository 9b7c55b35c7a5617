"""Building a store on tf.data service workers, each writing its own value shards.

`write` is the builders' path when given `service=` (a dispatcher address): the job the
service runs is over input shard indices (`Dataset.range(S)`), so a worker that receives index
`k` reads input shard `k` whole and in order (the input shards are captured in the job's
function, not split by the service; an `InputShards`' `fn` is traced there once, a list is a
tree of `tf.cond` over every shard's pipeline: `inputs.py`'s `pick`), computes its chunks,
serialises each chunk to the store's record bytes with TensorFlow ops (the format of
`shards.py`, byte for byte what a local build writes) and writes the value shard itself
(`DatasetToTFRecord`), under a temporary name. It then reads its shard back and returns, per
chunk, only the chunk's ids and input fingerprints (16 bytes per example; no values), then an
end marker.

The building process (the client) holds no values and writes no shard: it checks that every
shard came back exactly once and whole (chunk indices `0..m-1`, one end marker), that ids are
unique per shard (one shard's ids in memory at a time, as `shards.write`), computes the same
per-shard digests, renames the shards and writes `metadata.json` last, so a build that stops
leaves no store.

Processing modes: "distributed_epoch" (the default) sends each shard index to one worker; the
service may lose a split when a worker fails (or repeat one), which is then an error naming the
shard, never a silently incomplete store. "parallel_epochs" makes every worker build every
shard, each under its own temporary name: the copies must agree (ids and input digests), one is
kept. That is redundancy, not speed.

`reduce_shards` is the same kind of job for a small result per shard (e.g. the sufficient
statistics of the values a store holds): a worker that receives index `k` reduces shard `k`
whole (`fn(shard) -> {name: tensor}`) and returns that only; the client gets one result per
shard as it arrives, checked (every shard present; copies, from "parallel_epochs" or a repeated
split, equal to the first), and holds one result at a time.

The workers write to the store's path: with workers on other machines it must be on a
filesystem they all reach under the same name (e.g. GCS, or a shared mount). Values are
written in the workers' native byte order, which must be little-endian (x86, ARM).
"""

import hashlib
import json
import os
import sys
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfjest.store import fingerprints
from tfjest.store import inputs as inputs_lib
from tfjest.store import shards as shards_lib

_FIXED = ("id", "input_fingerprint")


def raw_bytes(tensor: tf.Tensor) -> tf.Tensor:
  """A numeric tensor's bytes, row-major in native order, as a scalar string (TF ops only).

  `serialize_tensor` of a flat uint8 tensor is a `TensorProto` whose last field is
  `tensor_content`, the raw bytes: they are its last `size` bytes.
  """
  if tensor.dtype == tf.bool:
    tensor = tf.cast(tensor, tf.uint8)
  flat = tf.reshape(tf.bitcast(tensor, tf.uint8) if tensor.dtype != tf.uint8 else tensor, [-1])
  proto = tf.io.serialize_tensor(flat)
  size = tf.size(flat)
  return tf.strings.substr(proto, tf.strings.length(proto) - size, size)


def record(chunk: Dict[str, tf.Tensor], keys: Sequence[str]) -> tf.Tensor:
  """A chunk as one value record, as `shards._serialize` writes it (`keys`: the values)."""
  parts = [raw_bytes(chunk[k]) for k in ("input_fingerprint", *keys)]
  ids = chunk["id"]
  if ids.dtype == tf.string:
    parts += [tf.io.serialize_tensor(ids), raw_bytes(tf.size(ids, out_type=tf.int64)[None])]
  else:
    parts.append(raw_bytes(tf.cast(ids, tf.int64)))
  return tf.strings.join(parts)


def values_of(chunk_spec) -> Dict[str, dict]:
  """The metadata's `values` (shape and dtype per value) from a chunk's element spec.

  Raises:
    ValueError: if a value's shape past the batch dimension is not fully known.
  """
  values = {}
  for key, spec in chunk_spec.items():
    if key in _FIXED:
      continue
    if not spec.shape[1:].is_fully_defined():
      raise ValueError(f"Stored values must have a fixed shape per example. Received: value "
                       f"{key!r} of shape {spec.shape}")
    values[key] = {"shape": spec.shape[1:].as_list(), "dtype": spec.dtype.name}
  return values


def summaries(path: str, shards: Sequence[tf.data.Dataset], compute: Callable, *,
              batch_size: int, id_dtype: str, unique_names: bool = False):
  """`(job, values)`: the dataset the service runs (see the module docstring) and the values'
  shapes and dtypes.

  An element of `job` is `{"shard", "chunk", "file", "id", "input_fingerprint"}`: a chunk of
  value shard `shard` as written to `file` (its temporary name); `chunk` is -1 for the end
  marker, which follows the shard's chunks.
  """
  shards = inputs_lib.input_shards(shards, "shards")  # a list or InputShards: `pick`
  count = len(shards)
  names = tf.constant([os.path.join(path, shards_lib.shard_file(i, count)) + ".tmp"
                       for i in range(count)])
  call = lambda *parts: compute(parts if len(parts) > 1 else parts[0])
  traced = {}

  def per_shard(index):
    shard = shards.pick(index)
    chunks = shard.batch(batch_size).map(call)
    traced["values"] = values_of(chunks.element_spec)
    keys = list(traced["values"])
    name = names[index]
    if unique_names:  # every worker writes its own copy ("parallel_epochs"): seeds 0 and 0
      # seed the op from the OS, whatever the global seed (which every worker would share)
      name = tf.strings.join([name, "-", tf.strings.as_string(tf.raw_ops.RandomUniformInt(
          shape=tf.constant([], tf.int32), minval=tf.constant(0, tf.int64),
          maxval=tf.constant(tf.int64.max, tf.int64), seed=0, seed2=0))])
    # records of RECORD_SIZE examples (a shard's last holds the rest), as `shards.write` groups
    # the computed batches
    records = chunks.rebatch(shards_lib.RECORD_SIZE).map(lambda c: record(c, keys))
    written = tf.raw_ops.DatasetToTFRecord(input_dataset=tf.data.experimental.to_variant(
        records), filename=name, compression_type="")
    with tf.control_dependencies([written]):
      name = tf.identity(name)
    decode = shards_lib.decode_fn(traced["values"], id_dtype)

    def summary(position, raw):
      out = decode(raw)
      return {"shard": index, "chunk": position, "file": name,
              "id": shards_lib.owned(out["id"]),
              "input_fingerprint": shards_lib.owned(out["input_fingerprint"])}

    end = {"shard": index, "chunk": tf.constant(-1, tf.int64), "file": name,
           "id": tf.zeros([0], tf.string if id_dtype == "string" else tf.int64),
           "input_fingerprint": tf.zeros([0], tf.int64)}
    return tf.data.TFRecordDataset(name).enumerate().map(summary).concatenate(
        tf.data.Dataset.from_tensors(end))

  job = tf.data.Dataset.range(count).flat_map(per_shard)
  return job, traced["values"]


def write(path: str, metadata: dict, shards: Sequence[tf.data.Dataset], compute: Callable, *,
          batch_size: int, service: str, processing_mode: str = "distributed_epoch",
          empty_message: str, late: Optional[Callable[[], dict]] = None) -> dict:
  """Builds the store at `path` on the service's workers; returns its metadata (as `shards.write`).

  Raises:
    ValueError: with `empty_message` if no example was written; if two examples of a shard
      share an id; if the service returned a shard other than exactly once and whole.
  """
  if sys.byteorder != "little":
    raise ValueError(f"The store is little-endian; building on tf.data service workers needs "
                     f"little-endian machines. Received: byte order {sys.byteorder!r}")
  path = os.path.abspath(os.fspath(path))
  os.makedirs(path, exist_ok=True)
  for name in os.listdir(path):  # a store is replaced whole
    if name == shards_lib.METADATA or name.startswith("values-"):
      os.remove(os.path.join(path, name))
  id_dtype = metadata["ids"]["dtype"]
  job, values = summaries(path, shards, compute, batch_size=batch_size, id_dtype=id_dtype,
                          unique_names=processing_mode == "parallel_epochs")
  job = job.apply(tf.data.experimental.service.distribute(
      processing_mode=processing_mode, service=service))
  try:
    copies = _collect(received(job), len(shards))
    entries = _keep_one(copies, len(shards))
  except BaseException:
    _remove_temporary(path)
    raise
  whole = fingerprints.Digest()
  for index, entry in enumerate(entries):
    name = shards_lib.shard_file(index, len(shards))
    os.replace(entry.pop("written"), os.path.join(path, name))
    entry["file"] = name
    whole.update(np.array([entry["ids_fingerprint"].encode(),
                           entry["content_fingerprint"].encode()], object))
  total = sum(e["num_examples"] for e in entries)
  if not total:
    raise ValueError(empty_message)
  metadata = dict(metadata, values=values, shards=[
      {k: e[k] for k in ("file", "num_examples", "ids_fingerprint", "content_fingerprint",
                         "chunk_size")} for e in entries], **(late() if late else {}))
  metadata["ids"] = dict(metadata.get("ids", {}), num_examples=total,
                         fingerprint=whole.hexdigest())
  meta_path = os.path.join(path, shards_lib.METADATA)
  with open(meta_path + ".tmp", "w") as f:
    json.dump(metadata, f, indent=1)
  os.replace(meta_path + ".tmp", meta_path)
  return metadata


def reduce_shards(shards: Sequence[tf.data.Dataset], fn: Callable[[tf.data.Dataset],
                                                                  Dict[str, tf.Tensor]], *,
                  service: str, processing_mode: str = "distributed_epoch"
                  ) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
  """Per input shard, `fn(shard)` computed on the service's workers (see the module docstring).

  Args:
    shards: the input shards.
    fn: `fn(shard) -> {name: tensor}`, a shard's reduction (e.g. `Dataset.reduce`): small
      tensors, the only thing the workers return.
    service: the dispatcher address.
    processing_mode: "distributed_epoch" (each shard reduced by one worker) or
      "parallel_epochs" (by every worker: the copies must agree).

  Yields:
    `(index, result)`: shard `index`'s result as NumPy arrays, once per shard, in the order
    the workers return them (not the shards' order). This process holds one result at a time
    and a digest per shard (to check other copies against it).

  Raises:
    ValueError: once every result came back, if a shard's is missing; as soon as two copies
      of a shard's result differ (`fn` or the shard is not deterministic).
  """
  shards = inputs_lib.input_shards(shards, "shards")  # a list or InputShards: `pick`
  count = len(shards)

  def per_shard(index):
    shard = shards.pick(index)
    out = dict(fn(shard))
    if "shard" in out:
      raise ValueError(f"A shard's reduction must not return a value named 'shard' (the "
                       f"index). Received: keys {sorted(out)}")
    return dict(out, shard=index)

  job = tf.data.Dataset.range(count).map(per_shard).apply(
      tf.data.experimental.service.distribute(processing_mode=processing_mode,
                                              service=service))
  digests = {}
  for element in received(job):
    index = int(element.pop("shard"))
    if not 0 <= index < count:
      raise ValueError(_twice(index, count))
    digest = _digest(element)
    if index in digests:  # another copy: it must be the one already yielded
      if digests[index] != digest:
        raise ValueError(f"Two tf.data service workers reduced input shard {index} to "
                         f"different results (the shard or the reduction is not "
                         f"deterministic). Received: shard index {index}")
      continue
    digests[index] = digest
    yield index, element
  missing = sorted(set(range(count)) - set(digests))
  if missing:
    raise ValueError(f"The tf.data service did not return every input shard's result (a worker "
                     f"may have stopped): run again. Received: missing shard indices {missing}")


def received(job: tf.data.Dataset):
  """The summaries as the client receives them, NumPy dicts (a seam for tests)."""
  for element in job:
    yield {k: v.numpy() for k, v in element.items()}


def _collect(elements, count: int) -> Dict[int, List[dict]]:
  """Per shard index, the summary of each complete copy the workers wrote."""
  open_copies, copies, finished = {}, {}, set()
  for element in elements:
    index, position = int(element["shard"]), int(element["chunk"])
    key = (index, element["file"])
    if key in finished or not 0 <= index < count:
      raise ValueError(_twice(index, count))
    state = open_copies.setdefault(key, {"id": {}, "input_fingerprint": {}})
    if position >= 0:
      if position in state["id"]:
        raise ValueError(_twice(index, count))
      state["id"][position] = element["id"]
      state["input_fingerprint"][position] = element["input_fingerprint"]
      continue
    del open_copies[key]  # the end marker: the copy is whole if no chunk is missing
    finished.add(key)
    order = sorted(state["id"])
    if order != list(range(len(order))):
      raise ValueError(f"The tf.data service returned input shard {index} with chunks missing "
                       f"(chunks {order}). Received: shard index {index}")
    ids = [state["id"][i] for i in order]
    _check_unique(ids, index)
    sizes = [len(i) for i in ids]
    digests = shards_lib._shard_digests  # pylint: disable=protected-access
    ids_fingerprint, content_fingerprint = digests(
        ids, [state["input_fingerprint"][i] for i in order])
    uniform = sizes and set(sizes[:-1]) <= {sizes[0]} and sizes[-1] <= sizes[0]
    copies.setdefault(index, []).append({
        "written": element["file"].decode(), "num_examples": sum(sizes),
        "ids_fingerprint": ids_fingerprint, "content_fingerprint": content_fingerprint,
        "chunk_size": sizes[0] if uniform else None})
  missing = sorted(set(range(count)) - set(copies))
  if missing or open_copies:
    raise ValueError(f"The tf.data service did not return every input shard whole (a worker "
                     f"may have stopped): build again. Received: missing shard indices "
                     f"{missing or sorted({k for k, _ in open_copies})}")
  return copies


def _keep_one(copies: Dict[int, List[dict]], count: int) -> List[dict]:
  """One summary per shard; other copies (parallel epochs) must agree and are removed."""
  kept = []
  for index in range(count):
    first, *others = copies[index]
    for other in others:
      if any(other[k] != first[k] for k in ("num_examples", "ids_fingerprint",
                                            "content_fingerprint", "chunk_size")):
        raise ValueError(f"Two tf.data service workers wrote input shard {index} with other "
                         f"examples (the input shard is not deterministic). Received: "
                         f"{first['num_examples']} and {other['num_examples']} examples")
      os.remove(other["written"])
    kept.append(first)
  return kept


def _check_unique(ids: List[np.ndarray], index: int):
  ids = np.concatenate(ids) if ids else np.zeros([0], np.int64)
  ordered = np.sort(ids, kind="stable")
  repeat = np.flatnonzero(ordered[1:] == ordered[:-1])
  if repeat.size:
    shown = ordered[repeat[0]]
    shown = shown.decode() if isinstance(shown, bytes) else shown.item()
    raise ValueError(f"Example ids must be unique: two examples of input shard {index} share "
                     f"an id, so stored values could be joined to the wrong one. Received: "
                     f"id={shown!r}")


def _digest(result: Dict[str, np.ndarray]) -> str:
  """A SHA-256 of a reduction's result, bit for bit (NaNs included): its keys, dtypes, shapes
  and bytes."""
  digest = hashlib.sha256()
  for key in sorted(result):
    value = np.asarray(result[key])
    data = (repr(value.tolist()).encode() if value.dtype.kind == "O" else
            np.ascontiguousarray(value).tobytes())
    digest.update(repr((key, value.dtype.str, value.shape, len(data))).encode())
    digest.update(data)
  return digest.hexdigest()


def _twice(index: int, count: int) -> str:
  return (f"The tf.data service returned input shard {index} more than once (or a shard that "
          f"does not exist): a worker may have restarted; build again. Received: shard index "
          f"{index} of {count} shards")


def _remove_temporary(path: str):
  for name in os.listdir(path):
    if name.startswith("values-") and ".tmp" in name:
      os.remove(os.path.join(path, name))
