"""ReLA-D: a frozen prior model's standardised representations as per-example training targets.

ReLA (arXiv 2405.14669, docs/SPEC.md §11) runs a frozen *prior* model once over the data,
at one fixed, un-augmented view of each example (`view_fn`: the prior's own resolution or
preprocessing), and keeps per example its pooled features or embedding projected by PCA onto
`k = min(width, prior width)` components (`width`: the student's feature width), each component
standardised with its global mean and standard deviation. A learner then regresses onto these
targets early in training (`tfjest.ReLAAid`).

`prior_targets(prior, dataset, path, width=...)` stores them with the store every per-example
value uses (`tfjest/store/`: value shards per input shard, the prior's weights fingerprinted as
the store's `source`, reuse and staleness by `stale_reason`). The PCA (`pca.py`) is computed
out of core: a first pass stores the prior's raw features and accumulates their mean and
covariance (`D x D`, float64, centred: parts' means and scatter matrices combined exactly), a
second rewrites each shard projected and standardised (memory `O(D^2)` plus a chunk, whatever the
number of examples). With `service=` every pass runs on tf.data service workers: the prior
and pass 1, each shard's moments (`service.reduce_shards`) and pass 2 (the projection, the same
TF function as here), each worker writing its own shards; this process holds `O(D^2)` numbers
and one shard's ids and input fingerprints at a time (the store's checks), never a feature.
The targets' fingerprints leave the labels out (they depend on `x` only), so data with other
labels may join them.

`PriorTargets.join` adds each element's target to its inputs: by id in memory (the default,
any order) or streamed in the build's order (`in_order=True`; see `tfjest/store/join.py`).
"""

import os
import shutil
from typing import Callable, Optional, Union

import keras
import tensorflow as tf

from tfjest import adapters
from tfjest import checks
from tfjest.rela import pca as pca_lib
from tfjest.store import fingerprints
from tfjest.store import reference as reference_lib
from tfjest.store import service as service_lib
from tfjest.store import inputs as inputs_lib
from tfjest.store import shards as shards_lib
from tfjest.store import values as values_lib

FORMAT = "tfjest.prior_targets"
TASK = "rela_targets"
TARGET_KEY = "rela_target"

Features = Union[None, str, Callable]


def features_fn(model: keras.Model, features: Features, name: str) -> Callable:
  """`fn(inputs, training) -> [B, D]` features of `model` as `features` names them.

  Args:
    model: the model.
    features: None (the model's output, a tensor), a key of the model's dict output, the name
      of a layer of a functional model (its output), or a callable `fn(model, inputs,
      training) -> [B, D]` (e.g. pooled features of a subclassed model's backbone).
    name: the argument's name, for errors (e.g. "prior").

  Raises:
    ValueError: if a string names neither an output key nor a layer.
  """
  if callable(features):
    return lambda inputs, training: features(model, inputs, training)
  if features is not None and not isinstance(features, str):
    raise ValueError(f"features must be None, an output key, a layer name or a callable "
                     f"fn(model, inputs, training). Received: features={features!r}")
  layer_model = None
  if isinstance(features, str) and getattr(model, "_is_graph_network", False):
    names = [layer.name for layer in model.layers]
    if features in names:
      layer_model = keras.Model(model.inputs, model.get_layer(features).output)

  def fn(inputs, training):
    if layer_model is not None:
      return layer_model(inputs, training=training)
    outputs = model(inputs, training=training)
    if features is None:
      if isinstance(outputs, dict):
        raise ValueError(f"The {name} returns a dict ({sorted(outputs)}); name the features "
                         f"with features=<key>. Received: features=None")
      return outputs
    if not isinstance(outputs, dict) or features not in outputs:
      keys = sorted(outputs) if isinstance(outputs, dict) else "a tensor"
      raise ValueError(f"features must name an output key or a layer of the {name} "
                       f"{model.name!r} (outputs: {keys}). Received: features={features!r}")
    return outputs[features]

  return fn


class PriorTargets(values_lib.Store):
  """A prior's ReLA targets per example id, stored in shards (see the module docstring).

  Create one with `prior_targets` or `PriorTargets.load`.

  Attributes:
    width: `k`, the targets' width.
    path, metadata, num_examples, num_shards, verify_inputs, reused, rebuild_reason: as for
      `tfjest.ReferenceCache` (both are stores, `tfjest/store/`).
  """

  KIND = "prior_targets"
  NAME = "prior targets"
  BUILDER = "tfjest.prior_targets(...)"
  SOURCE = "prior's weights"
  FEATURES = {"target": TARGET_KEY}
  # The targets depend on the inputs `x` only: data with other labels may join them.
  LABELS = False

  @property
  def width(self) -> int:
    return int(self.metadata["values"]["target"]["shape"][0])

  def check_prior(self, model: keras.Model):
    """Raises ValueError unless `model` is the prior (same weights) the targets came from."""
    got = fingerprints.model_fingerprint(model, TASK, "prior")
    if got != self.source_fingerprint:
      raise ValueError(
          f"The prior targets at {self.path!r} were computed by another prior (fingerprint "
          f"{self.source_fingerprint[:16]}..., model {self.metadata['source']['name']!r}):"
          f" they are stale for this prior. Recompute them with tfjest.prior_targets(prior, "
          f"dataset, path). Received: prior={model.name!r} with fingerprint {got[:16]}...")

  def targets_for(self, elements, id_key: str = "id") -> tf.Tensor:
    """`[N, k]` float32 targets of `N` stacked elements (graph-safe; checks ids and inputs)."""
    return self.values_for(elements, id_key)["target"]

  def join(self, id_key: str = "id", key: str = TARGET_KEY, *, in_order: bool = False,
           **kwargs):
    """A transformation adding each element's target to its inputs, as `x[key]`.

    By id in memory (default): single or batched elements in any order; apply it before or
    after `tfjest.select` (the key passes through selection), or after `batch`. With a
    reference cache joined by id that verifies inputs, join after `select`: the target would
    otherwise count as an input the reference cache did not see. With `in_order=True` the
    stream, read in the build's order, is zipped with the value shards (`Store.join`, whose
    keyword arguments `kwargs` takes).

    Args:
      id_key: the id feature (in the element, its `x` or its `y`; "/" for nested paths).
      key: the name of the target in `x`.
      in_order: stream the targets in the build's order instead of looking them up by id.
      **kwargs: `shards`, `verify_inputs`, `inputs` of the streamed join.

    Returns:
      A `Dataset` transformation function, which can be passed to `tf.data.Dataset.apply`.

    Raises:
      ValueError: if `key` is not a non-empty string; when applied, if the elements' `x` is not
        a dict, already has `key`, or the elements are not those the targets were computed
        from (structure, id dtype).
    """
    if not isinstance(key, str) or not key:
      raise ValueError(f"key must be a non-empty string. Received: key={key!r}")
    return super().join(id_key, in_order=in_order, features={"target": key}, **kwargs)


class _PriorFeatures(values_lib.Store):
  """The prior's raw features, the first pass of `prior_targets` (removed when it is done)."""

  KIND = "prior_features"
  NAME = "raw prior features"
  LABELS = False


def prior_targets(prior: keras.Model, dataset, path: str, *, width: int,
                  id_key: str = "id",
                  features: Features = None,
                  batch_size: int = 256,
                  service: Optional[str] = None,
                  processing_mode: str = "distributed_epoch",
                  overwrite: bool = False,
                  reuse: bool = False,
                  view_fn: Optional[Callable] = None) -> PriorTargets:
  """Runs a frozen prior once over `dataset`; stores each example's ReLA target by id.

  >>> import os
  >>> import tempfile
  >>> import tfjest
  >>> from tfjest import testing
  >>> prior = testing.dual_encoder(seed=7)          # any frozen model: its outputs, width 4
  >>> train_ds = testing.stream("contrastive", n=64)   # {"image", "text", "id"} examples
  >>> path = os.path.join(tempfile.mkdtemp(), "prior_targets")
  >>> targets = tfjest.prior_targets(prior, train_ds, path, width=3,
  ...                                features="image_embeddings")
  >>> targets.width, targets.num_examples          # min(student width 3, prior width 4)
  (3, 64)
  >>> element = next(iter(train_ds.apply(targets.join(id_key="id")).batch(8)))
  >>> element["rela_target"].shape
  TensorShape([8, 3])

  Args:
    prior: the frozen prior, a built `keras.Model`.
    dataset: the examples, one per element, with the structure the training stream will have
      (ids unique; every feature of fixed shape): a `tf.data.Dataset` or a list of them, one
      per input shard, or a `tfjest.InputShards(fn, count)` (each shard made by `fn(index)`
      when needed). Elements are `x`, `(x,)`, `(x, y)` or `(x, y, w)` with `x` a dict.
    path: the targets' directory (created).
    width: the student's feature width; the targets keep `min(width, prior width)` PCA
      components.
    id_key: the id feature (in the element, its `x` or its `y`): integer or string scalars.
    features: what the prior outputs per example (see `features_fn`): None (its tensor
      output), an output key, a functional model's layer name, or `fn(model, inputs, training)`.
    view_fn: the prior's fixed, un-augmented view, `view_fn(x) -> prior inputs` for a batch of
      `x` (e.g. a resize to the prior's resolution); default: `x` itself.
    batch_size: examples per prior call.
    service: optional tf.data service dispatcher address: every pass then runs on its workers
      (`tfjest/store/service.py`), each taking whole input shards: the prior, writing the raw
      features; a reduction of each raw shard to its moments (count, mean, centred scatter
      matrix), which this process combines into the PCA; the projection, writing the targets.
      This process reads no feature: it receives `O(D^2)` numbers per shard and each chunk's
      ids and input fingerprints. The targets are a local build's (metadata equal, values to
      float32 rounding).
    processing_mode: with `service`, "distributed_epoch" or "parallel_epochs".
    overwrite: replace existing targets at `path`.
    reuse: return the targets already at `path` (without calling the prior) when they were
      computed by this prior (same weights), with these `width` and `features`, from the same
      examples (ids and inputs per input shard, one pass over `dataset`); otherwise compute
      them again. `reused` and `rebuild_reason` say which and why. A `view_fn` is recorded by
      name only: a changed function of the same name is not noticed.

  Returns:
    The `PriorTargets`.

  Raises:
    TypeError: if `prior` is not a `keras.Model` or `dataset` not a `tf.data.Dataset`.
    ValueError: on bad arguments (`width` not a positive integer, a prior without weights),
      existing targets without `overwrite`, elements without the id feature, features that
      are not `[B, D]`, or two examples with the same id.
  """
  if not isinstance(prior, keras.Model):
    raise TypeError(f"prior must be a keras.Model (a frozen model). Received: prior of type "
                    f"{type(prior).__name__}")
  inputs = inputs_lib.input_shards(dataset)
  if not checks.is_int(width) or width <= 0:
    raise ValueError(f"width (the student's feature width) must be a positive integer. "
                     f"Received: width={width!r}")
  width = int(width)
  batch_size = checks.positive_int(batch_size, "batch_size")
  if view_fn is not None and not callable(view_fn):
    raise ValueError(f"view_fn must be a function of a batch of inputs. Received: "
                     f"view_fn={view_fn!r}")
  reference_lib.check_service(service, processing_mode)
  path = os.fspath(path)
  fingerprint = fingerprints.model_fingerprint(prior, TASK, "prior")
  spec = inputs.element_spec
  id_dtype = fingerprints.id_dtype(fingerprints.find_id(spec, id_key), id_key)
  settings = {"width": width, "features": _describe(features), "view_fn": _describe(view_fn)}
  extract = features_fn(prior, features, "prior")
  view = view_fn or (lambda x: x)

  def compute(batch):
    out = fingerprints.ids_and_fingerprints(batch, id_key, labels=False)
    x, _, _ = adapters.unpack(batch)
    values = tf.convert_to_tensor(extract(view(x), False))
    if values.shape.rank != 2:
      raise ValueError(f"The prior's features must be [batch, width]. Received: features of "
                       f"shape {values.shape} (features={settings['features']})")
    out["features"] = tf.cast(values, tf.float32)
    return out

  raw_path = os.path.join(path, "raw_features")
  empty = "prior_targets(...) was given an empty dataset. Received: dataset with no elements"

  def raw_features():
    """Pass 1 and the PCA: `(shards, targets)`, the raw feature shards and pass 2's compute."""
    raw_metadata = {"format": shards_lib.FORMAT, "version": shards_lib.VERSION,
                    "kind": _PriorFeatures.KIND, "ids": {"dtype": id_dtype}}
    moments = pca_lib.Moments()
    if service is None:  # the moments accumulated on the way
      raw = shards_lib.write(
          raw_path, raw_metadata, ((moments.add(c) for c in shard) for shard in
                                   shards_lib.compute_chunks(inputs, compute,
                                                             batch_size=batch_size)),
          num_shards=len(inputs), empty_message=empty)
      stored = _PriorFeatures(raw_path, raw)
    else:  # the workers write the raw shards, then reduce each to its moments
      raw = service_lib.write(raw_path, raw_metadata, inputs, compute, batch_size=batch_size,
                              service=service, processing_mode=processing_mode,
                              empty_message=empty)
      stored = _PriorFeatures(raw_path, raw)
      # combined as they arrive: one shard's moments held at a time (the order changes the
      # float64 rounding only)
      for _, shard in service_lib.reduce_shards(
          _stored_shards(stored, chunked=True), pca_lib.shard_moments, service=service,
          processing_mode=processing_mode):
        moments.merge(shard["count"], shard["mean"], shard["scatter"])
    project = moments.projection(width)

    def targets(batch):  # pass 2: a batch of raw features projected and standardised
      return {"id": batch["id"], "input_fingerprint": batch["input_fingerprint"],
              "target": project(batch["features"])}

    return _stored_shards(stored, chunked=False), targets

  def chunks():  # pass 2 here, each shard in its order
    shards, targets = raw_features()
    return shards_lib.compute_chunks(shards, targets, batch_size=batch_size)

  def writer(target_path, metadata, **kwargs):  # pass 2 on the workers, each writing a shard
    shards, targets = raw_features()
    return service_lib.write(target_path, metadata, shards, targets, batch_size=batch_size,
                             service=service, processing_mode=processing_mode, **kwargs)

  try:
    return PriorTargets.build(
        path, source={"name": prior.name, "fingerprint": fingerprint},
        expected={"task": TASK, "inputs": fingerprints.input_structure(spec, labels=False),
                  "settings": settings},
        metadata={"ids": {"dtype": id_dtype}}, chunks=chunks, num_shards=len(inputs),
        shards=inputs, id_key=id_key, batch_size=batch_size, overwrite=overwrite, reuse=reuse,
        writer=None if service is None else writer, empty_message=empty)
  finally:
    shutil.rmtree(raw_path, ignore_errors=True)


def _describe(fn) -> Optional[str]:
  if fn is None or isinstance(fn, str):
    return fn
  return getattr(fn, "__qualname__", type(fn).__name__)


def _stored_shards(stored, chunked: bool) -> inputs_lib.InputShards:
  """The shards of `stored` as input shards made by index (one traced pipeline in a service
  job, not one per shard): per example, or per stored chunk with `chunked`."""
  files = [os.path.join(stored.path, s["file"]) for s in stored.metadata["shards"]]

  def shard(index):
    chunks = stored.chunks(files[index] if isinstance(index, int) else tf.gather(files, index))
    return chunks if chunked else chunks.unbatch()

  return inputs_lib.InputShards(shard, stored.num_shards)
