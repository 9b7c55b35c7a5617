"""What the store fingerprints: an example's inputs, a model's weights, a stream of ids.

- `input_fingerprints`: a 64-bit FarmHash per example of its inputs (`x`, and `y` with
  `labels`), stored beside every value, so that a value is never joined to other inputs;
- `model_fingerprint`: SHA-256 of a built model's weights (and, for dual encoders, of its logit
  scale and bias): the source the values were computed from;
- `Digest`: SHA-256 of a stream of ids (or of `(id, input fingerprint)` pairs) in stream order,
  fed chunk by chunk, so that a shard of any size is fingerprinted in constant memory.
"""

import hashlib
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from tfjest import adapters


@tf.autograph.experimental.do_not_convert
def find_id(element, id_key: str):
  """The id feature of an element (or spec): `element[id_key]`, else `x[id_key]`, else `y[id_key]`.

  `(x, y, w)` elements are looked into in that order, so an id may travel with the inputs or
  beside the labels (e.g. `(inputs, {"id": ..., "label": ...})`). `id_key` may be a
  "/"-separated path into nested mappings.

  Raises:
    ValueError: if there is no such feature.
  """
  node = adapters.find_feature(element, id_key)
  if node is not None:
    return node
  raise ValueError(
      f"The store joins values by example id, but the elements have no feature "
      f"{id_key!r} (looked in the element, in its x and in its y). Add an id feature or "
      f"pass the right id_key. Received: id_key={id_key!r}, element_spec={spec_of(element)}")


def id_dtype(id_spec, id_key: str) -> str:
  """"int64" or "string", the stored dtype of scalar ids of `id_spec`.

  Raises:
    ValueError: if the ids are not integer or string scalars.
  """
  if id_spec.shape.rank != 0 or not (id_spec.dtype.is_integer or id_spec.dtype == tf.string):
    raise ValueError(f"Example ids must be integer or string scalars. Received: id feature "
                     f"{id_key!r} of dtype {id_spec.dtype.name} and shape {id_spec.shape}")
  return "string" if id_spec.dtype == tf.string else "int64"


@tf.autograph.experimental.do_not_convert
def input_fingerprints(element, labels: bool = True) -> tf.Tensor:
  """`[N]` int64: a FarmHash of every input feature (`x`, and `y` with `labels`) of each of `N`
  examples. Values that depend on the inputs only (a prior's targets) leave `labels` out."""
  x, y, _ = adapters.unpack(element)
  parts = [tf.fingerprint(tf.convert_to_tensor(t))  # [N, 8] uint8 per feature
           for t in tf.nest.flatten((x, y) if labels else x) if t is not None]
  return tf.bitcast(tf.fingerprint(tf.concat(parts, axis=1)), tf.int64)


@tf.autograph.experimental.do_not_convert
def ids_and_fingerprints(batch, id_key: str, labels: bool = True):
  """`{"id", "input_fingerprint"}` of a batch of elements, as the store keeps them."""
  ids = find_id(batch, id_key)
  return {"id": ids if ids.dtype == tf.string else tf.cast(ids, tf.int64),
          "input_fingerprint": input_fingerprints(batch, labels)}


def input_structure(element_spec, labels: bool = True) -> list:
  """What `input_fingerprints` hashes, as `[path, dtype, shape]` rows (JSON-friendly)."""
  x, y, _ = adapters.unpack(element_spec)
  rows = []

  def walk(path, node):
    if isinstance(node, Mapping):
      for key in sorted(node):  # tf.nest's order
        walk(f"{path}/{key}", node[key])
    elif isinstance(node, (tuple, list)):
      for i, item in enumerate(node):
        walk(f"{path}/{i}", item)
    elif node is not None:
      rows.append([path, node.dtype.name, node.shape.as_list()])

  walk("x", x)
  if labels:
    walk("y", y)
  return rows


def model_fingerprint(model: keras.Model, task: str, name: str = "model") -> str:
  """SHA-256 of a built model's weights (and, for dual encoders, its logit scale and bias).

  Raises:
    ValueError: if the model has no weights yet.
  """
  if not model.built or not model.weights:
    raise ValueError(
        f"The model has no weights yet, so stored values cannot be checked against it; build "
        f"it (call it once) first. Received: {name}={model.name!r} (not built)")
  digest = hashlib.sha256()
  for w in model.weights:
    value = np.asarray(keras.ops.convert_to_numpy(w))
    digest.update(f"{value.dtype.str}{value.shape};".encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  if task == "contrastive":
    for value in adapters.logit_parameters(model):
      digest.update(np.float64(value.numpy()).tobytes())
  return digest.hexdigest()


class Digest:
  """SHA-256 of arrays fed in order (ids: int64 or bytes; fingerprints: int64)."""

  def __init__(self):
    self._sha = hashlib.sha256()

  def update(self, *arrays) -> "Digest":
    for a in arrays:
      a = np.asarray(a)
      if a.dtype.kind in "OSU":
        self._sha.update(b"".join((v if isinstance(v, bytes) else str(v).encode()) + b"\0"
                                  for v in a))
      else:
        self._sha.update(np.ascontiguousarray(a.astype(np.int64)).tobytes())
    return self

  def hexdigest(self) -> str:
    return self._sha.hexdigest()


def spec_of(element):
  return tf.nest.map_structure(
      lambda t: t if isinstance(t, tf.TypeSpec) else tf.TensorSpec.from_tensor(t), element)
