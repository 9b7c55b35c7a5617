"""The frozen reference's outputs per example: stored (`cache_reference`) or given as features.

The reference never changes, so what it says about an example can be computed once
(docs/SPEC.md §7: "reference scoring; 0 when cached"). Pair losses cannot be stored (they
depend on the super-batch); the embeddings they come from can:

- dual encoder: per example its image and text embeddings, plus the model's logit scale and
  bias (scalars, in the metadata);
- classifier: per example its loss against the example's label.

`cache_reference` writes them as a store (`tfjest/store/`: one value shard per input shard,
the reference's weights fingerprinted as the store's `source`). `select` reads reference
values through one contract, `ReferenceValues`, whatever wrote them:

- features of each element: a stream joined with `cache.join(id_key=...)` (streamed, in the
  build's order), or values another engine (Apache Beam, Spark) wrote beside each example,
  named with `select(reference_features=..., logit_scale=..., logit_bias=...)`;
- or looked up by id in memory (`select(reference_cache=cache, id_key=...)` on a stream that
  was not joined): today's join, for small data.

Either way the shapes, dtypes and (for a dual encoder) the scale and bias are checked when the
selector is applied, and the stored features never reach the learner's `fit` inputs.
"""

import numbers
import os
from typing import Callable, Dict, Mapping, Optional, Sequence

import keras
import tensorflow as tf

from tfjest import adapters
from tfjest import checks
from tfjest import losses
from tfjest.store import fingerprints
from tfjest.store import service as service_lib
from tfjest.store import inputs as inputs_lib
from tfjest.store import shards as shards_lib
from tfjest.store import values as values_lib

EMBEDDINGS = ("image_embeddings", "text_embeddings")


class ReferenceCache(values_lib.Store):
  """Reference outputs per example id, stored in shards (see the module docstring).

  Create one with `cache_reference` or `ReferenceCache.load` (which reads the metadata only).
  Attributes as `Store`'s (`path`, `metadata`, `task`, `num_examples`, `num_shards`,
  `verify_inputs`, `reused`, `rebuild_reason`, `opened_shards`).
  """

  KIND = "reference_cache"
  NAME = "reference cache"
  BUILDER = "tfjest.cache_reference(...)"
  SOURCE = "reference weights"

  @property
  def FEATURES(self) -> Dict[str, str]:  # pylint: disable=invalid-name
    keys = EMBEDDINGS if self.task == "contrastive" else ("loss",)
    return {k: f"reference_{k}" for k in keys}

  @property
  def logit_scale(self) -> Optional[float]:
    return self.metadata.get("logit_scale")

  @property
  def logit_bias(self) -> Optional[float]:
    return self.metadata.get("logit_bias")

  def check_reference(self, model: keras.Model):
    """Raises ValueError unless `model` is the reference (same weights) the cache was built with."""
    got = fingerprints.model_fingerprint(model, self.task, "reference")
    if got != self.source_fingerprint:
      raise ValueError(
          f"The reference cache at {self.path!r} was computed with other reference weights "
          f"(cache fingerprint {self.source_fingerprint[:16]}..., built from model "
          f"{self.metadata['source']['name']!r}): it is stale for this reference. Rebuild it "
          f"with {self.BUILDER}. Received: reference={model.name!r} with fingerprint "
          f"{got[:16]}...")

  def outputs_for(self, super_batch, id_key: str):
    """The stored outputs of `N` stacked elements, by id from memory (graph-safe)."""
    return ReferenceValues.from_cache(self, id_key).outputs_from(
        self.values_for(super_batch, id_key))


class ReferenceValues:
  """The reference's outputs as `select` reads them (see the module docstring).

  Attributes:
    task: "contrastive" or "classification".
    names: `{value key: feature name}` ("image_embeddings", "text_embeddings" or "loss").
    cache: the `ReferenceCache` they come from, or None for values written elsewhere.
    streamed: whether the values are features of the elements (known once prepared).
  """

  def __init__(self, *, task: str, names: Mapping[str, str], logit_scale=None,
               logit_bias=None, cache: Optional[ReferenceCache] = None,
               id_key: Optional[str] = None):
    self.task, self.names, self.cache, self.id_key = task, dict(names), cache, id_key
    self.logit_scale, self.logit_bias = logit_scale, logit_bias
    self.streamed = cache is None

  @classmethod
  def from_cache(cls, cache: ReferenceCache, id_key: str) -> "ReferenceValues":
    return cls(task=cache.task, names=cache.FEATURES, logit_scale=cache.logit_scale,
               logit_bias=cache.logit_bias, cache=cache, id_key=id_key)

  @classmethod
  def from_features(cls, features, logit_scale=None, logit_bias=None) -> "ReferenceValues":
    """Checks `select`'s `reference_features`, `logit_scale` and `logit_bias`.

    Raises:
      ValueError: naming the argument, if `features` does not map exactly the two embedding
        keys (a dual encoder) or "loss" (a classifier) to feature names, or a dual encoder's
        `logit_scale`/`logit_bias` is not a real number (or is given for a classifier).
    """
    keys = set(features) if isinstance(features, Mapping) else None
    if keys not in (set(EMBEDDINGS), {"loss"}) or not all(
        isinstance(v, str) and v for v in features.values()):
      raise ValueError(f"reference_features must map {EMBEDDINGS} (a dual encoder's stored "
                       f"embeddings) or ('loss',) (a classifier's stored losses) to feature "
                       f"names. Received: reference_features={features!r}")
    task = "contrastive" if keys == set(EMBEDDINGS) else "classification"
    for name, value in (("logit_scale", logit_scale), ("logit_bias", logit_bias)):
      if task == "contrastive" and (not isinstance(value, numbers.Real) or isinstance(
          value, bool)):
        raise ValueError(f"A dual encoder's stored embeddings are scored with the reference's "
                         f"logit scale and bias: pass {name}= as a number (the reference's, "
                         f"as its loss used it). Received: {name}={value!r}")
      if task == "classification" and value is not None:
        raise ValueError(f"{name} applies to a dual encoder's embeddings, not to stored "
                         f"losses. Received: {name}={value!r}")
    return cls(task=task, names=features, logit_scale=logit_scale, logit_bias=logit_bias)

  def prepare(self, element_spec) -> Optional[int]:
    """Checks the elements against the contract; returns a dual encoder's width `d`.

    Raises:
      ValueError: if only some of a cache's features are present, a feature is missing or of
        the wrong dtype or shape (`[d]` float embeddings of one width, a scalar float loss),
        or the elements do not fit the cache (see `Store.check_element_spec`).
    """
    found = {k: adapters.find_feature(element_spec, n) for k, n in self.names.items()}
    if self.cache is not None:
      present = [n for k, n in self.names.items() if found[k] is not None]
      self.streamed = len(present) == len(self.names)
      if not self.streamed:
        if present:
          raise ValueError(f"The elements hold some of the reference cache's features but not "
                           f"all. Received: features {present} of {sorted(self.names.values())}")
        self.cache.check_element_spec(element_spec, self.id_key)
        self.cache.load_in_memory()  # now, not while the selection step is traced
        return (self.cache.metadata["values"]["image_embeddings"]["shape"][0]
                if self.task == "contrastive" else None)
    widths = set()
    for key, name in self.names.items():
      spec = found[key]
      rank = 1 if key in EMBEDDINGS else 0
      if not isinstance(spec, tf.TensorSpec) or not spec.dtype.is_floating or (
          spec.shape.rank != rank) or (rank and spec.shape[0] is None):
        what = "[d] float embeddings" if rank else "a scalar float loss"
        got = ("no such feature (looked in the element, its x and its y)" if spec is None
               else f"dtype {spec.dtype.name} and shape {spec.shape}")
        raise ValueError(f"Expected feature {name!r} to hold the reference's {key}, "
                         f"{what} per example. Received: {name!r} with {got}")
      if rank:
        widths.add(spec.shape[0])
    if len(widths) > 1:
      raise ValueError(f"The stored image and text embeddings must have one width. Received: "
                       f"widths {sorted(widths)} of features {sorted(self.names.values())}")
    if self.cache is not None and self.task == "contrastive":
      stored = self.cache.metadata["values"]["image_embeddings"]["shape"][0]
      if widths != {stored}:
        raise ValueError(f"The joined embeddings are not the cache's (width {stored}). "
                         f"Received: width {sorted(widths)}")
    return widths.pop() if widths else None

  def values(self, batch) -> Dict[str, tf.Tensor]:
    """`{key: [N, ...]}` of `N` stacked elements: their features, or looked up by id."""
    if self.streamed:
      return {k: adapters.find_feature(batch, n) for k, n in self.names.items()}
    return self.cache.values_for(batch, self.id_key, tuple(self.names))

  def outputs_from(self, values):
    """`losses.Embeddings` (dual encoder) or `[N]` float32 losses (classifier)."""
    if self.task == "contrastive":
      return losses.Embeddings(tf.cast(values["image_embeddings"], tf.float32),
                               tf.cast(values["text_embeddings"], tf.float32),
                               tf.constant(self.logit_scale, tf.float32),
                               tf.constant(self.logit_bias, tf.float32))
    return tf.cast(values["loss"], tf.float32)

  def drop(self, element):
    """`element` (or its spec) without the stored features: what the models and `fit` see."""
    if not self.streamed:
      return element
    names = set(self.names.values())
    strip = lambda d: {k: v for k, v in d.items() if k not in names} if isinstance(
        d, dict) else d
    return tuple(strip(p) for p in element) if isinstance(element, tuple) else strip(element)


def _reference_compute(reference, spec, *, task, embedding_keys, loss_fn, id_key):
  """`(task, compute)`: the reference called as `select` calls it (`tfjest.adapters`)."""
  x_spec, y_spec, _ = adapters.unpack(spec)
  outputs = adapters.build_and_probe(reference, x_spec, "reference")
  task = adapters.resolve_task(outputs, task=task, embedding_keys=embedding_keys,
                               loss_fn=loss_fn, has_labels=y_spec is not None,
                               role="reference", model=reference)
  loss = adapters.resolve_loss_fn(reference, loss_fn, "reference") if task != "contrastive" \
      else None

  def compute(batch):
    out = fingerprints.ids_and_fingerprints(batch, id_key)
    x, y, _ = adapters.unpack(batch)
    if task == "contrastive":
      emb = adapters.contrastive_embeddings(reference, x, embedding_keys, "reference")
      out["image_embeddings"] = tf.cast(emb.image, tf.float32)
      out["text_embeddings"] = tf.cast(emb.text, tf.float32)
    else:
      out["loss"] = adapters.classification_losses(reference, x, y, loss, "reference")
    return out

  return task, compute


def cache_reference(reference: keras.Model, dataset, path: str, *,
                    id_key: str = "id",
                    batch_size: int = 256,
                    task: str = "auto",
                    embedding_keys: Sequence[str] = EMBEDDINGS,
                    loss_fn: Optional[Callable] = None,
                    service: Optional[str] = None,
                    processing_mode: str = "distributed_epoch",
                    overwrite: bool = False,
                    reuse: bool = False) -> ReferenceCache:
  """Runs the frozen reference once over `dataset` and stores its outputs per example.

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
  >>> joined = train_ds.apply(cache.join(id_key="id"))   # streamed, in the build's order
  >>> x, y = next(iter(joined.shuffle(64, seed=0).apply(selector)))   # no reference call
  >>> x["id"].shape, "reference_loss" in x   # the stored values do not reach fit
  (TensorShape([8]), False)

  A stream that was not joined is joined by id in memory (small data), with the same picks:

  >>> x, y = next(iter(train_ds.apply(selector)))
  >>> tfjest.ReferenceCache.load(path).num_shards   # opening reads the metadata only
  1

  Args:
    reference: the frozen reference model (dual encoder or classifier, as for `select`).
    dataset: the examples, one per element, with the structure `select` will see (ids
      unique; every feature of fixed shape): a `tf.data.Dataset`, or a list of them, one per
      input shard (e.g. per file), each written to its own value shard in its order, or a
      `tfjest.InputShards(fn, count)` (each shard's dataset made by `fn(index)` when needed:
      for thousands of shards).
    path: the store's directory (created).
    id_key: the id feature, in the element or its `x` ("/" for nested paths): an integer or
      string scalar per example.
    batch_size: examples per reference call (and per stored chunk).
    task: "contrastive", "classification" or "auto" (from the reference's outputs).
    embedding_keys: `(image_key, text_key)` of a dual encoder's outputs.
    loss_fn: a classifier's per-example loss (default: its compiled loss).
    service: optional tf.data service dispatcher address (e.g. "grpc://127.0.0.1:5050"): the
      build then runs on the service's workers, each taking whole input shards, running the
      reference and writing their value shards itself; this process receives ids and input
      fingerprints only and writes the metadata (`tfjest/store/service.py`). The workers
      write to `path`: on other machines, it must be storage they reach (e.g. GCS).
    processing_mode: with `service`, "distributed_epoch" (each input shard goes to one worker)
      or "parallel_epochs" (every worker builds every shard; one copy is kept, the others
      must agree).
    overwrite: replace an existing store at `path`.
    reuse: return the store already at `path` (without calling the reference) when it holds
      exactly what this call would write: the reference's weights match its fingerprint, and
      every input shard has its element structure, its ids and, in order, inputs with its
      fingerprints (one pass over `dataset`); otherwise compute it, replacing any store there.
      `reused` and `rebuild_reason` say which happened and why (also logged at INFO). A
      classifier's `loss_fn` is not fingerprinted: reuse assumes the loss it was built with.

  Returns:
    The `ReferenceCache`.

  Raises:
    ValueError: on bad arguments, an existing store without `overwrite`, elements without the
      id feature, or two examples of an input shard with the same id.
    TypeError: if `reference` is not a `keras.Model` or `dataset` not a `tf.data.Dataset` (or
      a list of them, or an `InputShards`).
  """
  if not isinstance(reference, keras.Model):
    raise TypeError(f"reference must be a keras.Model. Received: reference of type "
                    f"{type(reference).__name__}")
  inputs = inputs_lib.input_shards(dataset)
  if not isinstance(id_key, str) or not id_key:
    raise ValueError(f"id_key must be a non-empty string. Received: id_key={id_key!r}")
  batch_size = checks.positive_int(batch_size, "batch_size")
  if task not in adapters.TASKS:
    raise ValueError(f"Expected task in {adapters.TASKS}. Received: task={task!r}")
  check_service(service, processing_mode)
  spec = inputs.element_spec
  id_dtype = fingerprints.id_dtype(fingerprints.find_id(spec, id_key), id_key)
  path = os.fspath(path)
  called = {}

  def resolve():  # calls the reference once (a zero example): only to build, or if unknown
    if not called:
      called["task"], called["compute"] = _reference_compute(
          reference, spec, task=task, embedding_keys=embedding_keys, loss_fn=loss_fn,
          id_key=id_key)
    return called["task"], called["compute"]

  known = task
  if known == "auto" and reuse and shards_lib.has_store(path):
    try:  # reuse never calls the reference: its task is the stored one, if any
      known = shards_lib.read_metadata(path, ReferenceCache)["task"]
    except ValueError:
      pass
  if known == "auto" or not reference.built:
    known = resolve()[0]
  try:
    fingerprint = fingerprints.model_fingerprint(reference, known, "reference")
  except ValueError:
    if not reuse:
      raise
    known = resolve()[0]  # not the stored kind of model: it is rebuilt
    fingerprint = fingerprints.model_fingerprint(reference, known, "reference")
  expected = {"task": known, "inputs": fingerprints.input_structure(spec),
              "settings": {"embedding_keys": list(embedding_keys) if known == "contrastive"
                           else None}}

  def late():
    if known != "contrastive":
      return {}
    scale, bias = adapters.logit_parameters(reference)
    return {"logit_scale": float(scale.numpy()), "logit_bias": float(bias.numpy())}

  writer = None if service is None else (
      lambda path, metadata, **kwargs: service_lib.write(
          path, metadata, inputs, resolve()[1], batch_size=batch_size, service=service,
          processing_mode=processing_mode, **kwargs))
  return ReferenceCache.build(
      path, source={"name": reference.name, "fingerprint": fingerprint},
      expected=expected, metadata={"ids": {"dtype": id_dtype}}, late_metadata=late,
      num_shards=len(inputs), shards=inputs, writer=writer,
      chunks=lambda: shards_lib.compute_chunks(inputs, resolve()[1], batch_size=batch_size),
      id_key=id_key, batch_size=batch_size, overwrite=overwrite, reuse=reuse,
      empty_message="cache_reference(...) was given an empty dataset. Received: dataset with "
                    "no elements")


def check_service(service, processing_mode):
  """Raises ValueError unless `service` is None or an address, and the mode is known."""
  if service is not None and not isinstance(service, str):
    raise ValueError(f"service must be a dispatcher address string such as "
                     f"'grpc://127.0.0.1:5050'. Received: service={service!r}")
  if processing_mode not in shards_lib.PROCESSING_MODES:
    raise ValueError(f"Expected processing_mode in {shards_lib.PROCESSING_MODES}. "
                     f"Received: processing_mode={processing_mode!r}")
