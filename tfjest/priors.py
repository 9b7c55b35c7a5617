"""ReLA-D: a frozen prior model's standardised representations as per-example training targets.

ReLA (arXiv 2405.14669, docs/SPEC.md §11) runs a frozen *prior* model once over the data,
at one fixed, un-augmented view of each example (`view_fn`: the prior's own resolution or
preprocessing), and keeps per example its pooled features or embedding projected by PCA onto
`k = min(width, prior width)` components (`width`: the student's feature width), each component
standardised with its global mean and standard deviation. A learner then regresses onto these
targets early in training (`tfjest.ReLAAid`).

`prior_targets(prior, dataset, path, width=...)` computes them and writes them to disk in the
reference cache's format (`tfjest.cache`: `metadata.json` and a `tf.data` snapshot of
`id`, `input_fingerprint` and `target` per example), with the same staleness checks:

- the prior's weights are fingerprinted (`cache.reference_fingerprint`): `PriorTargets.check_prior`
  and `reuse=True` refuse targets of another prior;
- the ids and each example's input fingerprint (of `x`, which the prior reads, not of the
  labels) are recorded, and `join` checks, for every element it joins, that its id is known
  and that its inputs hash to the recorded fingerprint
  (another dataset or preprocessing stops the pipeline with an error naming the id);
- the element structure is checked when the join is applied.

Memory: the targets are held in one `tf.Variable` (`[M, k]` float32, on the host CPU) and the
ids in a `tf.lookup.StaticHashTable`, created outside any function (`tf.init_scope`). A dataset
that joins them captures the two *resource handles*, not their values: its graph stays a few
kilobytes however many examples there are, where a `tf.constant` of a million 64-wide targets
(256 MB) would be copied into every graph that captures it (and into every serialised
pipeline and every `tf.function` trace). A lookup table alone cannot hold vectors, hence the
table from id to row plus a gather from the variable. The join therefore runs in the consuming
process's pipeline (not on tf.data service workers, which cannot read this process's
resources); the one-off prior pass can run on tf.data service workers (`service=`), as
`cache_reference` does, because the prior is frozen.
"""

import os
from typing import Callable, Optional, Union

import keras
import numpy as np
import tensorflow as tf

from tfjest import checks
from tfjest import adapters
from tfjest import cache

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


def pca_standardize(features: np.ndarray, components: int) -> np.ndarray:
  """ReLA-D's projection: PCA onto `components` directions, then each one standardised.

  Args:
    features: `[M, D]` features of `M` examples.
    components: `k <= D`, directions kept (those of the largest variance, in order).

  Returns:
    `[M, k]` float32: `(X - mean) @ V_k` with `V_k` the top-`k` right singular vectors of the
    centred `X` (each signed so that its largest-magnitude entry is positive, for
    reproducibility), each column then shifted and scaled to mean 0 and standard deviation 1
    over the `M` examples (a constant column stays 0).
  """
  x = np.asarray(features, np.float64)
  centred = x - x.mean(axis=0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  vt = vt[:components]
  signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
  projected = centred @ (vt * signs[:, None]).T
  projected -= projected.mean(axis=0)
  std = projected.std(axis=0)
  return (projected / np.where(std > 0, std, 1.0)).astype(np.float32)


class PriorTargets(cache.PerIdValues):
  """A prior's ReLA targets per example id, held in memory (see the module docstring).

  Create one with `prior_targets` or `PriorTargets.load`.

  Attributes:
    width: `k`, the targets' width.
    path, metadata, num_examples, ids, verify_inputs, reused, rebuild_reason: as for
      `tfjest.ReferenceCache` (both are `PerIdValues`).
  """

  FORMAT = FORMAT
  KIND = "prior targets"
  BUILDER = "tfjest.prior_targets(...)"
  JOINED = ("target",)
  # The targets depend on the inputs `x` only: data with other labels may join them.
  LABELS = False

  @property
  def width(self) -> int:
    return int(self.metadata["outputs"]["target"][0])

  def check_prior(self, model: keras.Model):
    """Raises ValueError unless `model` is the prior (same weights) the targets came from."""
    got = cache.reference_fingerprint(model, TASK)
    if got != self.reference_fingerprint:
      raise ValueError(
          f"The prior targets at {self.path!r} were computed by another prior (fingerprint "
          f"{self.reference_fingerprint[:16]}..., model {self.metadata['reference']['name']!r}):"
          f" they are stale for this prior. Recompute them with tfjest.prior_targets(prior, "
          f"dataset, path). Received: prior={model.name!r} with fingerprint {got[:16]}...")

  def targets_for(self, elements, id_key: str = "id") -> tf.Tensor:
    """`[N, k]` float32 targets of `N` stacked elements (graph-safe; checks ids and inputs)."""
    return self.values_for(elements, id_key)["target"]

  def join(self, id_key: str = "id", key: str = TARGET_KEY):
    """A transformation adding each element's target to its inputs, as `x[key]`.

    Works on single or batched elements (`[k]` or `[B, k]` targets): apply it before or after
    `tfjest.select` (the key passes through selection), or after `batch`. With a reference
    cache that verifies inputs, join after `select`: the target would otherwise count as an
    input the reference cache did not see.

    Args:
      id_key: the id feature (in the element, its `x` or its `y`; "/" for nested paths).
      key: the name of the target in `x`.

    Returns:
      A `Dataset` transformation function, which can be passed to `tf.data.Dataset.apply`.

    Raises:
      ValueError: when applied, if the elements' `x` is not a dict, already has `key`, or the
        elements are not those the targets were computed from (structure, id dtype).
    """
    if not isinstance(key, str) or not key:
      raise ValueError(f"key must be a non-empty string. Received: key={key!r}")

    def _apply_fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
      spec = dataset.element_spec
      x_spec, _, _ = adapters.unpack(spec)
      if not isinstance(x_spec, dict):
        raise ValueError(f"join adds the target to the elements' inputs, a dict. Received: "
                         f"inputs {x_spec}")
      if key in x_spec:
        raise ValueError(f"The elements' inputs already have a feature {key!r}. Received: "
                         f"key={key!r}")
      single = cache.find_id(spec, id_key).shape.rank == 0
      self.check_element_spec(spec if single else tf.nest.map_structure(
          lambda s: tf.TensorSpec(s.shape[1:], s.dtype), spec), id_key)

      def add(*parts):
        element = parts if len(parts) > 1 else parts[0]
        batch = tf.nest.map_structure(lambda t: t[None], element) if single else element
        targets = self.targets_for(batch, id_key)
        x, *rest = element if isinstance(element, tuple) else (element,)
        x = {**x, key: targets[0] if single else targets}
        return (x, *rest) if rest else x

      return dataset.map(add, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return _apply_fn

  @classmethod
  def load(cls, path: str, *, verify_inputs: bool = True) -> "PriorTargets":
    """Reads targets written by `prior_targets` (see `tfjest.ReferenceCache.load`)."""
    return super().load(path, verify_inputs=verify_inputs)


def prior_targets(prior: keras.Model, dataset: tf.data.Dataset, path: str, *, width: int,
                  id_key: str = "id",
                  features: Features = None,
                  view_fn: Optional[Callable] = None,
                  batch_size: int = 256,
                  service: Optional[str] = None,
                  processing_mode: str = "distributed_epoch",
                  overwrite: bool = False,
                  reuse: bool = False) -> PriorTargets:
  """Runs a frozen prior once over `dataset`; writes each example's ReLA target by id.

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
      (ids unique; every feature of fixed shape). Elements are `x`, `(x,)`, `(x, y)` or
      `(x, y, w)` with `x` a dict.
    path: the targets' directory (created).
    width: the student's feature width; the targets keep `min(width, prior width)` PCA
      components.
    id_key: the id feature (in the element, its `x` or its `y`): integer or string scalars.
    features: what the prior outputs per example (see `features_fn`): None (its tensor
      output), an output key, a functional model's layer name, or `fn(model, inputs, training)`.
    view_fn: the prior's fixed, un-augmented view, `view_fn(x) -> prior inputs` for a batch of
      `x` (e.g. a resize to the prior's resolution); default: `x` itself.
    batch_size: examples per prior call.
    service: optional tf.data service dispatcher address: the prior then runs on its workers.
    processing_mode: with `service`, "distributed_epoch" or "parallel_epochs".
    overwrite: replace existing targets at `path`.
    reuse: return the targets already at `path` (without calling the prior) when they were
      computed by this prior (same weights), with these `width` and `features`, from the same
      examples (ids and inputs, one pass over `dataset`); otherwise compute them again. A
      `view_fn` is recorded by name only: a changed function of the same name is not noticed.

  Returns:
    The `PriorTargets`, loaded.

  Raises:
    TypeError: if `prior` is not a `keras.Model` or `dataset` not a `tf.data.Dataset`.
    ValueError: on bad arguments (`width` not a positive integer, a prior without weights),
      existing targets without `overwrite`, elements without the id feature, features that
      are not `[B, D]`, or two examples with the same id and different inputs.
  """
  if not isinstance(prior, keras.Model):
    raise TypeError(f"prior must be a keras.Model (a frozen model). Received: prior of type "
                    f"{type(prior).__name__}")
  if not isinstance(dataset, tf.data.Dataset):
    raise TypeError(f"dataset must be a tf.data.Dataset. Received: dataset of type "
                    f"{type(dataset).__name__}")
  if not checks.is_int(width) or width <= 0:
    raise ValueError(f"width (the student's feature width) must be a positive integer. "
                     f"Received: width={width!r}")
  width = int(width)
  batch_size = checks.positive_int(batch_size, "batch_size")
  if view_fn is not None and not callable(view_fn):
    raise ValueError(f"view_fn must be a function of a batch of inputs. Received: "
                     f"view_fn={view_fn!r}")
  if processing_mode not in cache.PROCESSING_MODES:
    raise ValueError(f"Expected processing_mode in {cache.PROCESSING_MODES}. "
                     f"Received: processing_mode={processing_mode!r}")
  path = os.fspath(path)
  if cache.has_cache(path) and not (overwrite or reuse):
    raise ValueError(f"Prior targets already exist there; pass overwrite=True to replace them. "
                     f"Received: path={path!r}")
  fingerprint = cache.reference_fingerprint(prior, TASK)
  spec = dataset.element_spec
  id_spec = cache.find_id(spec, id_key)
  if id_spec.shape.rank != 0 or not (id_spec.dtype.is_integer or id_spec.dtype == tf.string):
    raise ValueError(f"Example ids must be integer or string scalars. Received: id feature "
                     f"{id_key!r} of dtype {id_spec.dtype.name} and shape {id_spec.shape}")
  settings = {"width": width, "features": _describe(features), "view_fn": _describe(view_fn)}

  rebuild_reason = None
  if reuse:
    rebuild_reason = _stale(path, fingerprint, settings, dataset, id_key, batch_size)
    if rebuild_reason is None:
      found = PriorTargets.load(path)
      found.reused = True
      return found
    overwrite = True

  extract = features_fn(prior, features, "prior")
  view = view_fn or (lambda x: x)

  def compute(batch):
    out = cache.ids_and_fingerprints(batch, id_key, labels=False)
    x, _, _ = adapters.unpack(batch)
    values = tf.convert_to_tensor(extract(view(x), False))
    if values.shape.rank != 2:
      raise ValueError(f"The prior's features must be [batch, width]. Received: features of "
                       f"shape {values.shape} (features={settings['features']})")
    out["features"] = tf.cast(values, tf.float32)
    return out

  arrays = cache.collect(dataset, compute, batch_size=batch_size, service=service,
                         processing_mode=processing_mode)
  if arrays is None:
    raise ValueError("prior_targets(...) was given an empty dataset. Received: dataset with no "
                     "elements")
  raw = arrays.pop("features")
  k = min(width, raw.shape[1])
  arrays["target"] = pca_standardize(raw, k)
  metadata = {
      "format": FORMAT, "version": cache.VERSION, "task": TASK,
      "reference": {"name": prior.name, "fingerprint": fingerprint},
      "prior_width": int(raw.shape[1]), "settings": settings,
      "dataset": cache.dataset_metadata(arrays, id_spec),
      "inputs": cache.input_structure(spec, labels=False),
      "outputs": {"target": [k]},
  }
  cache.write(path, metadata, arrays, overwrite=overwrite)
  targets = PriorTargets(path, metadata, arrays)
  targets.rebuild_reason = rebuild_reason
  return targets


def _describe(fn) -> Optional[str]:
  if fn is None or isinstance(fn, str):
    return fn
  return getattr(fn, "__qualname__", type(fn).__name__)


def _stale(path, fingerprint, settings, dataset, id_key, batch_size) -> Optional[str]:
  """Why the targets at `path` are not what `prior_targets` would write, or None."""
  if not cache.has_cache(path):
    return "no prior targets at this path"
  try:
    metadata = cache.read_metadata(path, PriorTargets)
  except ValueError as e:
    return f"the directory is unreadable ({e})"
  if metadata["reference"]["fingerprint"] != fingerprint:
    return (f"the prior's weights differ from those the targets were computed with (model "
            f"{metadata['reference']['name']!r})")
  if metadata["settings"] != settings:
    return f"the targets were computed with {metadata['settings']}, not {settings}"
  return cache.other_examples(metadata, dataset, id_key=id_key, batch_size=batch_size,
                              labels=False)
