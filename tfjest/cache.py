"""Cached reference outputs: the frozen reference runs once per example, not once per step.

The reference never changes, so what it says about an example can be computed once and joined
into the stream by example id (docs/SPEC.md §7: "reference scoring; 0 when cached"). Pair
losses cannot be cached (they depend on the super-batch); the embeddings they come from can:

- dual encoder: per example its image and text embeddings, plus the model's logit scale and
  bias (scalars, in the metadata);
- classifier: per example its loss against the example's label.

On disk a cache is a directory holding `metadata.json` and `data/`, a `tf.data.Dataset.save`
snapshot with one element per example: `id`, `input_fingerprint` and the outputs. The metadata
records what the cache is valid for:

- `reference.fingerprint`: SHA-256 of the reference's weights (values, shapes, dtypes, in
  order) and, for dual encoders, of its logit scale and bias;
- `dataset.ids_fingerprint`: SHA-256 of the sorted ids, and `dataset.content_fingerprint`: of
  the sorted `(id, input_fingerprint)` pairs; `input_fingerprint` is a 64-bit FarmHash of the
  example's inputs (`x` and `y` as `fit` reads them, every feature);
- the element structure the fingerprints were computed from, the task and the output widths.

Using it, `select(..., reference_cache=cache, id_key="id")` never calls the reference. A cache
is never used silently where it does not apply: when `select` also gets the `reference`, its
weights must match the cache's fingerprint (checked at once); when the transformation is
applied, the elements must have the recorded structure; and in every super-batch each id
must be in the cache and each example's inputs must hash to the recorded fingerprint, or the
pipeline stops with an error naming the id. The whole cache is held in memory (`M * 2 * d`
floats for `M` examples of a dual encoder) behind a hash table from id to row.

Precomputing can run on tf.data service workers (`service=`): the reference is frozen, so a
model captured at `distribute()` time is exactly right (unlike the live learner).

Load or build: `cache_reference(..., reuse=True)` returns the cache already at `path` when its
metadata says it holds exactly what the call would write (the reference's fingerprint, the ids,
the element structure and every example's input fingerprint, checked in one pass over the
dataset's inputs that never calls the reference), and otherwise builds it again; the returned
cache's `reused` and `rebuild_reason` say which and why. It is a keyword of `cache_reference`
rather than a second function because what decides a cache's contents (`id_key`, `task`,
`embedding_keys`) is then validated once, by the function that writes caches.
"""

import hashlib
import json
import os
import shutil
from typing import Callable, Mapping, Optional, Sequence, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfjest import checks
from tfjest import adapters
from tfjest import losses
from tfjest import scoring

FORMAT = "tfjest.reference_cache"
VERSION = 1
PROCESSING_MODES = ("distributed_epoch", "parallel_epochs")
_METADATA = "metadata.json"
_DATA = "data"


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
      f"The reference cache joins outputs by example id, but the elements have no feature "
      f"{id_key!r} (looked in the element, in its x and in its y). Add an id feature or "
      f"pass the right id_key. Received: id_key={id_key!r}, element_spec={_spec_of(element)}")


def input_fingerprints(element, labels: bool = True) -> tf.Tensor:
  """`[N]` int64: a FarmHash of every input feature (`x`, and `y` with `labels`) of each of `N`
  examples. Values that depend on the inputs only (a prior's targets) leave `labels` out."""
  x, y, _ = adapters.unpack(element)
  parts = [tf.fingerprint(tf.convert_to_tensor(t))  # [N, 8] uint8 per feature
           for t in tf.nest.flatten((x, y) if labels else x) if t is not None]
  return tf.bitcast(tf.fingerprint(tf.concat(parts, axis=1)), tf.int64)


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


def reference_fingerprint(model: keras.Model, task: str) -> str:
  """SHA-256 of a built model's weights (and, for dual encoders, its logit scale and bias)."""
  if not model.built or not model.weights:
    raise ValueError(
        f"The reference has no weights yet, so a cache cannot be checked against it; build it "
        f"(call it once) first. Received: reference={model.name!r} (not built)")
  digest = hashlib.sha256()
  for w in model.weights:
    value = np.asarray(keras.ops.convert_to_numpy(w))
    digest.update(f"{value.dtype.str}{value.shape};".encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  if task == "contrastive":
    for value in adapters.logit_parameters(model):
      digest.update(np.float64(value.numpy()).tobytes())
  return digest.hexdigest()


class PerIdValues:
  """Values computed once per example id, held in memory and joined to a stream by id.

  The part a reference cache shares with the per-id stores built like it (a prior's ReLA
  targets, `tfjest.PriorTargets`; DnC's cluster ids, `tfjest.Clusters`): a directory of
  `metadata.json` (format, version, the model's and the dataset's fingerprints, the input
  structure) and a `data/` snapshot of `id`, `input_fingerprint` and the values; the in-graph
  join with its missing-id and stale-input checks. Subclasses name themselves (`KIND`,
  `BUILDER`, `FORMAT`, `VERSION`: what the messages talk about) and say which values the join
  returns (`JOINED`, or `joined_keys()`).

  Attributes:
    path: the directory.
    metadata: the parsed `metadata.json`.
    task: "contrastive" or "classification" (the model's).
    num_examples: `M`, examples held.
    ids: `[M]` the ids (int64 or bytes), sorted.
    verify_inputs: whether every super-batch's inputs are checked against the fingerprints.
    reused: True when the builder (`reuse=True`) returned what it found at `path` (the model
      was not called).
    rebuild_reason: when the builder (`reuse=True`) computed the values again, why the ones at
      `path` could not be reused (e.g. "no cache at this path"); else None.
  """

  KIND = "reference cache"
  BUILDER = "tfjest.cache_reference(...)"
  # Whether the labels are part of an example's fingerprint (a reference's loss reads them).
  LABELS = True
  FORMAT = FORMAT
  VERSION = VERSION
  JOINED = ()

  def __init__(self, path: str, metadata: dict, arrays: dict, verify_inputs: bool = True):
    self.path = path
    self.metadata = metadata
    self.task = metadata["task"]
    self.num_examples = int(metadata["dataset"]["num_examples"])
    self.verify_inputs = verify_inputs
    self.reused = False
    self.rebuild_reason = None
    self.ids = arrays["id"]
    self._string_ids = metadata["dataset"]["id_dtype"] == "string"
    with tf.init_scope(), tf.device("/cpu:0"):
      keys = tf.constant(arrays["id"], tf.string if self._string_ids else tf.int64)
      self._table = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(keys, tf.range(self.num_examples, dtype=tf.int64)),
          default_value=-1)
      self._values = {k: tf.Variable(v, trainable=False, name=f"cached_{k}")
                      for k, v in arrays.items() if k != "id"}

  @classmethod
  def read_arrays(cls, path: str):
    """`(metadata, arrays)` of a directory written by the builder, checked for format."""
    metadata = read_metadata(path, cls)
    data = tf.data.Dataset.load(os.path.join(os.fspath(path), _DATA))
    chunks = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in data.batch(1 << 16)]
    return metadata, {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

  @staticmethod
  def write_arrays(path: str, metadata: dict, arrays: dict, overwrite: bool):
    """Writes `metadata.json` and the `data/` snapshot (replacing them with `overwrite`)."""
    write(path, metadata, arrays, overwrite=overwrite)

  @classmethod
  def load(cls, path: str, *, verify_inputs: bool = True):
    """Reads a directory written by the builder (`cache_reference` for a reference cache).

    Args:
      path: the directory.
      verify_inputs: check, in every super-batch, that each example's inputs hash to the
        fingerprint recorded for its id. Turn off only for streams that deliberately change
        the inputs the reference saw (e.g. random augmentation), accepting stale outputs.

    Raises:
      ValueError: if the directory is not one of this kind (`KIND`) of a known version.
    """
    metadata, arrays = cls.read_arrays(path)
    return cls(os.fspath(path), metadata, arrays, verify_inputs=verify_inputs)

  def array(self, key: str) -> np.ndarray:
    """The `[M, ...]` values stored under `key`, row `i` for `ids[i]` (a NumPy copy).

    Raises:
      ValueError: if there is no such value.
    """
    if key not in self._values:
      raise ValueError(f"The {self.KIND} at {self.path!r} holds {sorted(self._values)}. "
                       f"Received: key={key!r}")
    return self._values[key].numpy()

  @property
  def reference_fingerprint(self) -> str:
    return self.metadata["reference"]["fingerprint"]

  def check_reference(self, model: keras.Model):
    """Raises ValueError unless `model` is the reference (same weights) the cache was built with."""
    got = reference_fingerprint(model, self.task)
    if got != self.reference_fingerprint:
      raise ValueError(
          f"The {self.KIND} at {self.path!r} was computed with other reference weights "
          f"(cache fingerprint {self.reference_fingerprint[:16]}..., built from model "
          f"{self.metadata['reference']['name']!r}): it is stale for this reference. Rebuild "
          f"it with {self.BUILDER}. "
          f"Received: reference={model.name!r} with fingerprint {got[:16]}...")

  def check_element_spec(self, element_spec, id_key: str):
    """Raises ValueError if the elements are not those the cache was built from (structure)."""
    ids = find_id(element_spec, id_key)
    want = self.metadata["dataset"]["id_dtype"]
    got = "string" if ids.dtype == tf.string else ("int64" if ids.dtype.is_integer else None)
    if got != want or ids.shape.rank != 0:
      raise ValueError(
          f"The {self.KIND} at {self.path!r} is keyed by scalar {want} ids. "
          f"Received: id feature {id_key!r} of dtype {ids.dtype.name} and shape {ids.shape}")
    structure = input_structure(element_spec, self.LABELS)
    if self.verify_inputs and structure != self.metadata["inputs"]:
      raise ValueError(
          f"The {self.KIND} at {self.path!r} was built from elements of another structure "
          f"(another dataset or preprocessing): it is stale for these elements. Recorded "
          f"inputs: {self.metadata['inputs']}. Received: inputs {structure}")

  def values_for(self, super_batch, id_key: str):
    """The cached per-example values of `N` stacked elements, a dict of `[N, ...]` tensors.

    The join runs where `tf.data` runs: with selection in a train step (`tfjest.attach`) the
    pipeline joins these values to each super-batch, so the step (possibly XLA-compiled, on an
    accelerator) never looks up a hash table.

    Raises:
      tf.errors.InvalidArgumentError: when run, if an id is not in the cache or (with
        `verify_inputs`) an example's inputs differ from those the cache was built from.
    """
    ids = find_id(super_batch, id_key)
    ids = ids if self._string_ids else tf.cast(ids, tf.int64)
    rows = self._table.lookup(ids)
    missing = rows < 0
    checks = [tf.debugging.Assert(tf.logical_not(tf.reduce_any(missing)), [tf.strings.format(
        f"The {self.KIND} at {{}} has no entry for example id {{}} ({{}} ids of this batch "
        f"are missing): the stream holds examples the cache was not built from. Rebuild the "
        f"cache with {self.BUILDER} over this dataset. Received: id={{}}",
        [self.path, _first(ids, missing), tf.reduce_sum(tf.cast(missing, tf.int32)),
         _first(ids, missing)])])]
    rows = tf.maximum(rows, 0)
    if self.verify_inputs:
      changed = tf.not_equal(tf.gather(self._values["input_fingerprint"], rows),
                             input_fingerprints(super_batch, self.LABELS)) & ~missing
      checks.append(tf.debugging.Assert(tf.logical_not(tf.reduce_any(changed)), [
          tf.strings.format(
              f"The {self.KIND} entry for example id {{}} was computed from other inputs "
              "(the dataset or its preprocessing changed since the cache was built, or two "
              "examples share an id): the cache at {} is stale. Rebuild it, or load it with "
              "verify_inputs=False to accept stale outputs. Received: id={}",
              [_first(ids, changed), self.path, _first(ids, changed)])]))
    with tf.control_dependencies(checks):
      rows = tf.identity(rows)
    return {k: tf.gather(self._values[k], rows) for k in self.joined_keys()}

  def joined_keys(self) -> Tuple[str, ...]:
    """The per-example values `values_for` returns."""
    return self.JOINED


class ReferenceCache(PerIdValues):
  """Reference outputs per example id, loaded in memory (see the module docstring).

  Create one with `cache_reference` or `ReferenceCache.load`. Attributes as `PerIdValues`'
  (`path`, `metadata`, `task`, `num_examples`, `ids`, `verify_inputs`, `reused`,
  `rebuild_reason`).
  """

  def __init__(self, path: str, metadata: dict, arrays: dict, verify_inputs: bool = True):
    super().__init__(path, metadata, arrays, verify_inputs=verify_inputs)
    if self.task == "contrastive":
      with tf.init_scope(), tf.device("/cpu:0"):
        self._scale = tf.constant(metadata["logit_scale"], tf.float32)
        self._bias = tf.constant(metadata["logit_bias"], tf.float32)

  def joined_keys(self) -> Tuple[str, ...]:
    return (("image_embeddings", "text_embeddings") if self.task == "contrastive"
            else ("loss",))

  def outputs_for(self, super_batch, id_key: str):
    """The cached outputs of `N` stacked elements (graph-safe): `outputs_from(values_for(...))`.

    Returns:
      `losses.Embeddings` for a dual encoder, `[N]` float32 losses for a classifier.
    """
    return self.outputs_from(self.values_for(super_batch, id_key))

  def outputs_from(self, values):
    """`losses.Embeddings` (dual encoder) or `[N]` losses (classifier) from `values_for`'s."""
    if self.task == "contrastive":
      return losses.Embeddings(values["image_embeddings"], values["text_embeddings"],
                               self._scale, self._bias)
    return values["loss"]


def read_metadata(path, kind=ReferenceCache) -> dict:
  """The parsed `metadata.json` of a cache directory, checked for format and version.

  `kind`: the class (`ReferenceCache` or another `PerIdValues`) whose `FORMAT` and `VERSION`
  are expected.
  """
  meta_path = os.path.join(os.fspath(path), _METADATA)
  try:
    with open(meta_path) as f:
      metadata = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"No readable tfjest {kind.KIND} at this path ({e}). Build one with "
                     f"{kind.BUILDER}. Received: path={os.fspath(path)!r}") from e
  if metadata.get("format") != kind.FORMAT or metadata.get("version") != kind.VERSION:
    raise ValueError(f"Expected a {kind.FORMAT} of version {kind.VERSION}. Received: "
                     f"format={metadata.get('format')!r}, version={metadata.get('version')!r}")
  return metadata


def _first(ids, mask):
  return tf.gather(ids, tf.argmax(tf.cast(mask, tf.int32)))


def _spec_of(element):
  return tf.nest.map_structure(
      lambda t: t if isinstance(t, tf.TypeSpec) else tf.TensorSpec.from_tensor(t), element)


def cache_reference(reference: keras.Model, dataset: tf.data.Dataset, path: str, *,
                    id_key: str = "id",
                    batch_size: int = 256,
                    task: str = "auto",
                    embedding_keys: Sequence[str] = ("image_embeddings", "text_embeddings"),
                    loss_fn: Optional[Callable] = None,
                    service: Optional[str] = None,
                    processing_mode: str = "distributed_epoch",
                    overwrite: bool = False,
                    reuse: bool = False) -> ReferenceCache:
  """Runs the frozen reference once over `dataset` and writes its outputs per example id.

  >>> import os
  >>> import tempfile
  >>> import tfjest
  >>> from tfjest import testing
  >>> reference = testing.classifier(seed=1)   # the frozen reference, trained beforehand
  >>> train_ds = testing.stream("classification", n=64)   # ({"x", "id"}, label) examples
  >>> path = os.path.join(tempfile.mkdtemp(), "reference_cache")
  >>> cache = tfjest.cache_reference(reference, train_ds, path, id_key="id")
  >>> cache.task, cache.num_examples
  ('classification', 64)
  >>> model = testing.classifier(seed=0)
  >>> selector = tfjest.select(learner=model, reference_cache=cache, id_key="id", batch_size=8,
  ...                          super_batch_size=32, method="independent")
  >>> x, y = next(iter(train_ds.apply(selector)))   # the reference itself is never called
  >>> x["id"].shape
  TensorShape([8])

  The cache is a directory; later runs load it without the reference:

  >>> tfjest.ReferenceCache.load(path).num_examples
  64

  Args:
    reference: the frozen reference model (dual encoder or classifier, as for `select`).
    dataset: the examples, one per element, with the structure `select` will see (ids
      unique; every feature of fixed shape).
    path: the cache directory (created).
    id_key: the id feature, in the element or its `x` ("/" for nested paths): an integer or
      string scalar per example.
    batch_size: examples per reference call.
    task: "contrastive", "classification" or "auto" (from the reference's outputs).
    embedding_keys: `(image_key, text_key)` of a dual encoder's outputs.
    loss_fn: a classifier's per-example loss (default: its compiled loss).
    service: optional tf.data service dispatcher address (e.g. "grpc://127.0.0.1:5050"): the
      reference then runs on the service's workers.
    processing_mode: with `service`, "distributed_epoch" (each example goes to one worker) or
      "parallel_epochs" (every worker runs the whole dataset; duplicates are dropped).
    overwrite: replace an existing cache at `path`.
    reuse: return the cache already at `path` (without calling the reference) when it holds
      exactly what this call would write: the reference's weights match its fingerprint, and
      `dataset` has its element structure, its ids and, id by id, inputs with its fingerprints
      (one pass over `dataset`); otherwise compute it, replacing any cache there (no
      `overwrite` needed). The result's `reused` and `rebuild_reason` say which happened and
      why (also logged at INFO). A classifier's `loss_fn` is not fingerprinted: reuse assumes
      the loss the cache was built with.

  Returns:
    The `ReferenceCache`, loaded.

  Raises:
    ValueError: on bad arguments, an existing cache without `overwrite`, elements without the
      id feature, or two examples with the same id and different inputs.
    TypeError: if `reference` is not a `keras.Model` or `dataset` not a `tf.data.Dataset`.
  """
  if not isinstance(reference, keras.Model):
    raise TypeError(f"reference must be a keras.Model. Received: reference of type "
                    f"{type(reference).__name__}")
  if not isinstance(dataset, tf.data.Dataset):
    raise TypeError(f"dataset must be a tf.data.Dataset. Received: dataset of type "
                    f"{type(dataset).__name__}")
  if not isinstance(id_key, str) or not id_key:
    raise ValueError(f"id_key must be a non-empty string. Received: id_key={id_key!r}")
  batch_size = checks.positive_int(batch_size, "batch_size")
  if task not in adapters.TASKS:
    raise ValueError(f"Expected task in {adapters.TASKS}. Received: task={task!r}")
  if service is not None and not isinstance(service, str):
    raise ValueError(f"service must be a dispatcher address string such as "
                     f"'grpc://127.0.0.1:5050'. Received: service={service!r}")
  if processing_mode not in PROCESSING_MODES:
    raise ValueError(f"Expected processing_mode in {PROCESSING_MODES}. "
                     f"Received: processing_mode={processing_mode!r}")
  if not isinstance(reuse, bool):
    raise ValueError(f"reuse must be a bool. Received: reuse={reuse!r}")
  path = os.fspath(path)
  if os.path.exists(os.path.join(path, _METADATA)) and not (overwrite or reuse):
    raise ValueError(f"A reference cache already exists there; pass overwrite=True to replace "
                     f"it. Received: path={path!r}")

  spec = dataset.element_spec
  id_spec = find_id(spec, id_key)
  if id_spec.shape.rank != 0 or not (id_spec.dtype.is_integer or id_spec.dtype == tf.string):
    raise ValueError(f"Example ids must be integer or string scalars. Received: id feature "
                     f"{id_key!r} of dtype {id_spec.dtype.name} and shape {id_spec.shape}")
  rebuild_reason = None
  if reuse:
    found, rebuild_reason = _reusable(reference, dataset, path, id_key=id_key,
                                      batch_size=batch_size, task=task,
                                      embedding_keys=embedding_keys)
    if found is not None:
      logging.info("tfjest.cache_reference: reused the cache at %s (%d examples): the "
                   "reference, ids and inputs match", path, found.num_examples)
      return found
    logging.info("tfjest.cache_reference: computing the cache at %s: %s", path, rebuild_reason)
    overwrite = True
  # The reference is called through the one scoring path, as `select` would call it.
  scorer = scoring.Scorer(scoring.Setup(score="easy_reference", reference=reference, task=task,
                                        embedding_keys=embedding_keys, loss_fn=loss_fn))
  scorer.prepare(spec)
  task = scorer.task

  def compute(batch):
    out = ids_and_fingerprints(batch, id_key)
    outputs = scorer.outputs(batch)["reference"]
    if task == "contrastive":
      out["image_embeddings"] = tf.cast(outputs.image, tf.float32)
      out["text_embeddings"] = tf.cast(outputs.text, tf.float32)
    else:
      out["loss"] = outputs
    return out

  arrays = collect(dataset, compute, batch_size=batch_size, service=service,
                   processing_mode=processing_mode)
  if arrays is None:
    raise ValueError("cache_reference(...) was given an empty dataset. Received: dataset with "
                     "no elements")

  metadata = {
      "format": FORMAT, "version": VERSION, "task": task,
      "reference": {"name": reference.name,
                    "fingerprint": reference_fingerprint(reference, task)},
      "dataset": dataset_metadata(arrays, id_spec),
      "inputs": input_structure(spec),
      "outputs": {k: list(v.shape[1:]) for k, v in arrays.items()
                  if k not in ("id", "input_fingerprint")},
  }
  if task == "contrastive":
    scale, bias = adapters.logit_parameters(reference)
    metadata.update(logit_scale=float(scale.numpy()), logit_bias=float(bias.numpy()),
                    embedding_keys=list(embedding_keys))
  write(path, metadata, arrays, overwrite=overwrite)
  cache = ReferenceCache(path, metadata, arrays)
  cache.rebuild_reason = rebuild_reason
  return cache


def collect(dataset: tf.data.Dataset, compute: Callable, *, batch_size: int,
            service: Optional[str] = None, processing_mode: str = "distributed_epoch"):
  """`compute(batch)` over `dataset` in batches (on tf.data service workers with `service`).

  `compute` returns a dict with at least `id` and `input_fingerprint` (`ids_and_fingerprints`).
  Returns the concatenated numpy arrays sorted by id (repeats dropped, `_unique_by_id`), or None
  for an empty dataset.
  """
  # `map` passes a tuple element's parts as separate arguments.
  pipeline = dataset.batch(batch_size).map(lambda *parts: compute(
      parts if len(parts) > 1 else parts[0]))
  if service is not None:
    pipeline = pipeline.apply(tf.data.experimental.service.distribute(
        processing_mode=processing_mode, service=service))
  chunks = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in pipeline]
  if not chunks:
    return None
  return _unique_by_id({k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})


def dataset_metadata(arrays, id_spec) -> dict:
  """The `dataset` entry of a cache's metadata: size, id dtype, ids and content fingerprints."""
  return {"num_examples": int(len(arrays["id"])),
          "id_dtype": "string" if id_spec.dtype == tf.string else "int64",
          "ids_fingerprint": _digest(arrays["id"]),
          "content_fingerprint": _digest(arrays["id"], arrays["input_fingerprint"])}


def write(path: str, metadata: dict, arrays: dict, *, overwrite: bool):
  """Writes a cache directory: `metadata.json` and the per-example arrays under `data/`."""
  if overwrite:
    shutil.rmtree(os.path.join(path, _DATA), ignore_errors=True)
  tf.data.Dataset.from_tensor_slices(arrays).save(os.path.join(path, _DATA))
  with open(os.path.join(path, _METADATA), "w") as f:
    json.dump(metadata, f, indent=1)


def has_cache(path: str) -> bool:
  """Whether a cache directory (its metadata) exists at `path`."""
  return os.path.exists(os.path.join(os.fspath(path), _METADATA))


def ids_and_fingerprints(batch, id_key: str, labels: bool = True):
  """`{"id", "input_fingerprint"}` of a batch of elements, as the cache stores them."""
  ids = find_id(batch, id_key)
  return {"id": ids if ids.dtype == tf.string else tf.cast(ids, tf.int64),
          "input_fingerprint": input_fingerprints(batch, labels)}


def _reusable(reference, dataset, path: str, *, id_key: str, batch_size: int, task: str,
              embedding_keys) -> Tuple[Optional[ReferenceCache], Optional[str]]:
  """`(the cache at path, None)` if it holds what `cache_reference` would write, else `(None, why)`.

  Cheap checks first (metadata, weights), then one pass over the ids and inputs of `dataset`.
  """
  if not has_cache(path):
    return None, "no cache at this path"
  try:
    metadata = read_metadata(path)
  except ValueError as e:
    return None, f"the cache there is unreadable ({e})"
  cached_task = metadata["task"]
  if task not in ("auto", cached_task):
    return None, f"the cache holds {cached_task} outputs, task={task!r} was asked"
  if cached_task == "contrastive" and metadata.get("embedding_keys") != list(embedding_keys):
    return None, (f"the cache was built with embedding_keys={metadata.get('embedding_keys')}, "
                  f"not {list(embedding_keys)}")
  try:
    fingerprint = reference_fingerprint(reference, cached_task)
  except ValueError as e:
    return None, f"the reference cannot be fingerprinted as a {cached_task} model ({e})"
  if fingerprint != metadata["reference"]["fingerprint"]:
    return None, (f"the reference weights differ from those the cache was built with (model "
                  f"{metadata['reference']['name']!r})")
  why = other_examples(metadata, dataset, id_key=id_key, batch_size=batch_size)
  if why is not None:
    return None, why
  cache = ReferenceCache.load(path)
  cache.reused = True
  return cache, None


def other_examples(metadata: dict, dataset: tf.data.Dataset, *, id_key: str,
                   batch_size: int, labels: bool = True) -> Optional[str]:
  """Why `dataset` holds other examples than the cache of `metadata` was built from, else None.

  Checks the element structure and id dtype, then (one pass over the ids and inputs, no model
  call) the ids and every example's input fingerprint.
  """
  spec = dataset.element_spec
  id_dtype = "string" if find_id(spec, id_key).dtype == tf.string else "int64"
  if (id_dtype != metadata["dataset"]["id_dtype"] or
      input_structure(spec, labels) != metadata["inputs"]):
    return "the dataset's elements have another structure or id dtype"
  arrays = collect(dataset, lambda batch: ids_and_fingerprints(batch, id_key, labels),
                   batch_size=batch_size)
  if arrays is None:
    return "the dataset is empty"
  recorded = metadata["dataset"]
  if _digest(arrays["id"]) != recorded["ids_fingerprint"]:
    return (f"the dataset holds other example ids ({len(arrays['id'])} examples, the "
            f"cache {recorded['num_examples']})")
  if _digest(arrays["id"], arrays["input_fingerprint"]) != recorded["content_fingerprint"]:
    return "the inputs of some examples differ from those the cache was built from"
  return None


def _unique_by_id(arrays):
  """Sorts by id; drops repeats (parallel epochs) and rejects ids shared by other inputs."""
  order = np.argsort(arrays["id"], kind="stable")
  arrays = {k: v[order] for k, v in arrays.items()}
  ids, fingerprints = arrays["id"], arrays["input_fingerprint"]
  repeat = np.zeros(len(ids), bool)
  repeat[1:] = ids[1:] == ids[:-1]
  clash = repeat & (fingerprints != np.roll(fingerprints, 1))
  if clash.any():
    bad = ids[np.argmax(clash)]
    bad = bad.decode() if isinstance(bad, bytes) else bad.item()
    raise ValueError(f"Example ids must be unique: two examples with different inputs share "
                     f"an id, so cached outputs could be joined to the wrong one. Received: "
                     f"id={bad!r}")
  return {k: v[~repeat] for k, v in arrays.items()}


def _digest(*arrays) -> str:
  digest = hashlib.sha256()
  for a in arrays:
    if a.dtype.kind in "OSU":
      digest.update(b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in a))
    else:
      digest.update(np.ascontiguousarray(a.astype(np.int64)).tobytes())
  return digest.hexdigest()
