"""`tfjest.select`: a `tf.data` transformation that keeps the most learnable examples.

This module is the `tf.data` side only, and one job: it checks `select`'s arguments into frozen
values (the rule, `selection.Rule`; the scoring set-up, `scoring.Setup`; the sizes,
`batching.Sizes`), refuses placements where the pipeline is the wrong place to score, and maps
the one selection step (`step.SelectionStep`) over the super-batches that
`batching.SuperBatcher` cuts. The FLOPs of a step are `cost.selector_step_cost`'s. Selection
inside a replicated train step is `tfjest.attach` (`tfjest/distribute/`), which reuses the same
super-batching and the same step; this module knows nothing of `tf.distribute`.
"""

from typing import Any, Callable, Mapping, Optional, Sequence

from absl import logging
import keras
import tensorflow as tf

from tfjest import adapters
from tfjest import batching
from tfjest import checks
from tfjest import cost as cost_lib
from tfjest import devices
from tfjest import proxy as proxy_lib
from tfjest import scoring
from tfjest import selection
from tfjest import stats as stats_lib
from tfjest import step as step_lib
from tfjest import summaries as summaries_lib
from tfjest.store import fingerprints
from tfjest.store import reference as reference_lib

class Selector:
  """The transformation returned by `select`: call it (or `dataset.apply` it) on a dataset.

  Attributes:
    rule: the `selection.Rule`.
    setup: the `scoring.Setup` (models, score, views, cache, proxy).
    sizes: the `Sizes` (`batch_size`, `super_batch_size`, `remainder`, `input_batched`).
    stats: the `SelectionStats` of every dataset this selector has been applied to.
    scorer: the `scoring.Scorer` that calls the models (None for uniform selection).
    step: the `step.SelectionStep` mapped over the super-batches.
  """

  placement = "pipeline"

  def __init__(self, rule: selection.Rule, setup: scoring.Setup, sizes: batching.Sizes,
               summaries: Optional[summaries_lib.SelectionSummaries] = None):
    rule.check_batch_size(sizes.batch_size)
    self.rule, self.setup, self.sizes = rule, setup, sizes
    self.stats = stats_lib.SelectionStats()
    self.summaries = summaries or summaries_lib.SelectionSummaries()
    # Its rates and fidelity are part of `stats.result()`.
    self.stats.extra_result, self.stats.extra_reset = self.summaries.result, self.summaries.reset
    # Uniform selection reads no model: the baseline costs no scoring.
    self.scorer = scoring.Scorer(setup) if rule.reads_scores else None
    self.step = step_lib.SelectionStep(rule, self.scorer, self.stats,
                                       batch_size=sizes.batch_size,
                                       super_batch_size=sizes.super_batch_size,
                                       summaries=self.summaries)
    self.super_batches = batching.SuperBatcher(sizes, self.stats.record_left_over)
    self._element_spec = None
    self._step_cost = None

  batch_size = property(lambda self: self.sizes.batch_size)
  super_batch_size = property(lambda self: self.sizes.super_batch_size)
  method = property(lambda self: self.rule.method)
  num_chunks = property(lambda self: self.rule.num_chunks)
  learner = property(lambda self: self.setup.learner)
  reference = property(lambda self: self.setup.reference)
  proxy = property(lambda self: self.setup.proxy)

  @property
  def task(self) -> Optional[str]:
    """"contrastive" or "classification" once applied (None for uniform: nothing is scored)."""
    return None if self.scorer is None else self.scorer.task

  def __call__(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    dataset, cardinality = self.check_dataset(dataset)
    models = self.scorer.models.values() if self.scorer is not None else ()
    for model in list(models) + [self.setup.learner]:
      strategy = adapters.model_strategy(model) if model is not None else None
      if strategy is not None:
        raise ValueError(
            "Under a tf.distribute strategy the learner's variables live on the replicas, so "
            "tfjest scores and selects inside the replicated train step, not in the input "
            "pipeline. Call `tfjest.attach(model, selector)` and apply what it returns "
            "(the same code then also runs without a strategy). "
            f"Received: strategy={type(strategy).__name__}")
    self.prepare(dataset.element_spec)  # builds unbuilt models, where their variables go
    if self.models_location() == devices.ACCELERATOR:
      role, model = next((r, m) for r, m in self.scorer.models.items()
                         if devices.location([m]) == devices.ACCELERATOR)
      raise ValueError(
          "On a GPU or TPU the scoring models' variables live on the accelerator and the input "
          "pipeline runs on the host CPU, so tfjest scores and selects inside the train step, "
          "not in the input pipeline. Call `tfjest.attach(model, selector)` and apply what it "
          "returns (the same code then also runs on CPU). Received: "
          f"{role}={model.name!r} with variables on {devices.model_device(model)}")
    # Unconverted by AutoGraph, as in Keras' own train step: traces in about half the time.
    unconverted = tf.autograph.experimental.do_not_convert(self._select_super_batch)
    selected = self.super_batches(dataset, cardinality).map(unconverted)
    # The map reads the models' variables and updates `stats`, state that lives outside the
    # iterator. An iterator checkpoint is correct only together with that state, which
    # `tfjest.selection_checkpoint` saves alongside; with it, the external state is accounted
    # for, so iterator saving need not refuse.
    options = tf.data.Options()
    options.experimental_external_state_policy = (
        tf.data.experimental.ExternalStatePolicy.IGNORE)
    selected = selected.with_options(options)
    return batching.with_cardinality(selected, cardinality, self.super_batch_size,
                                     self.sizes.remainder)

  def models_location(self) -> str:
    """"accelerator" if a model this selection reads has variables on a GPU or TPU, else "host".

    The models read are the learner (or the online proxy scoring for it) and the reference; a
    cached reference and uniform selection read none. See `tfjest.devices`.
    """
    return devices.location(self.scorer.models.values() if self.scorer is not None else ())

  def check_dataset(self, dataset):
    """Unbatches if asked and checks the elements; returns `(dataset, cardinality)`."""
    if not isinstance(dataset, tf.data.Dataset):
      raise TypeError(f"select(...) applies to a tf.data.Dataset. "
                      f"Received: dataset of type {type(dataset).__name__}")
    if self.sizes.input_batched:
      batching.check_batched(dataset.element_spec)
      dataset = dataset.unbatch()
    else:
      batched = batching.batched_by(dataset)
      if batched is not None:
        raise ValueError(
            f"The dataset yields batches (it ends in a {batched} op), but select(...) takes "
            "one example per element and would select whole batches as if they were "
            "examples. Pass input_batched=True (they are unbatched first) or apply select "
            f"before batching. Received: element_spec={dataset.element_spec}")
    batching.check_stackable(dataset.element_spec)
    cardinality = int(tf.data.experimental.cardinality(dataset))
    if cardinality == 0:
      raise ValueError("select(...) was applied to an empty dataset. Received: dataset with "
                       "cardinality 0")
    n = self.super_batch_size
    if self.sizes.remainder == "drop" and 0 <= cardinality < n:
      raise ValueError(
          f"The dataset holds fewer examples than one super-batch ({n}), so nothing would be "
          "selected. Use a smaller batch_size or super_batch_size, or remainder='keep'. "
          f"Received: dataset of {cardinality} examples")
    return dataset, cardinality

  def prepare(self, element_spec):
    """Builds and checks the models for elements of `element_spec`; fixes the step's cost."""
    scoring.check_proxy_optimizer(self.setup.proxy, self.setup.learner)
    if self.scorer is not None:
      self.scorer.prepare(element_spec)
      if self.scorer.task == "classification":
        ids = (fingerprints.find_id(element_spec, self.setup.id_key)
               if self.setup.id_key is not None else None)
        batching.check_labels(element_spec, skip=(ids,) if ids is not None else ())
      if self.setup.proxy is not None:
        self.setup.proxy.prepare(self.scorer.task, self.setup.embedding_keys)
    if element_spec != self._element_spec:
      self._element_spec = element_spec
      try:
        self._step_cost = cost_lib.selector_step_cost(
            rule=self.rule, setup=self.setup, scorer=self.scorer, sizes=self.sizes,
            x_spec=adapters.unpack(self.model_spec(element_spec))[0])
      except Exception as e:  # pylint: disable=broad-except
        # FLOPs are a report; a model the counter cannot trace must not stop training.
        logging.warning("tfjest: FLOP accounting is off for these statistics: %s", e)
        self._step_cost = None
      self.stats.set_unit_costs(cost_lib.unit_costs(self._step_cost, self.batch_size))
    self.summaries.prepare(self.model_spec(element_spec), setup=self.setup, scorer=self.scorer,
                           super_batch_size=self.super_batch_size)

  def model_spec(self, element_spec):
    """The elements' spec as the models and `fit` see it: without stored reference features."""
    return self.scorer.strip(element_spec) if self.scorer is not None else element_spec

  def select_batch(self, super_batch, step=0):
    """Selects from one super-batch outside a pipeline (eagerly or in a `tf.function`).

    This is the computation `select` maps over the stream, for custom training loops and for
    checking a pipeline's output: `super_batch` (tensors or NumPy arrays) has the input's
    element structure with a leading axis of `super_batch_size` (or fewer with
    `remainder="keep"`), and `step` is the super-batch index that keys the noise. Statistics
    are recorded as in the pipeline.

    Returns:
      The selected batch, with the input's structure.

    Raises:
      ValueError: if the leading axis is not `super_batch_size` (or, with `remainder="keep"`,
        is larger).
    """
    super_batch = tf.nest.map_structure(tf.convert_to_tensor, super_batch)
    size = tf.nest.flatten(super_batch)[0].shape[0]
    n = self.super_batch_size
    if size is not None and (size > n or (size < n and self.sizes.remainder == "drop")):
      raise ValueError(
          f"select_batch takes one super-batch of super_batch_size={n} examples on the "
          "leading axis (fewer only with remainder='keep'). "
          f"Received: super_batch with {size} examples")
    self.prepare(tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape[1:], t.dtype),
                                       super_batch))
    return self._select_super_batch(tf.constant(step, tf.int64), super_batch)

  def step_cost(self) -> cost_lib.StepCost:
    """FLOPs of one training step on this selector's batches (docs/SPEC.md §7).

    Counts, per full super-batch: training the learner on `b` (when `learner` was given),
    learner scoring on `N` at the scoring view (or the proxy's scoring and training), reference
    scoring (0 with a cache) and the selection maths. See `tfjest.cost` for how FLOPs are
    counted. Computed once, when the selector is applied.

    Raises:
      ValueError: if the selector has not been applied to a dataset yet, or its models could
        not be counted.
    """
    if self._element_spec is None:
      raise ValueError("step_cost() needs the elements' structure: apply the selector to a "
                       "dataset (or call select_batch) first. Received: a selector never applied")
    if self._step_cost is None:
      raise ValueError("The FLOPs of these models could not be counted (see the warning logged "
                       "when the selector was applied). Received: models that forward_flops "
                       "cannot trace")
    return self._step_cost

  def _select_super_batch(self, step, super_batch):
    n, b = self.super_batch_size, self.batch_size
    if self.sizes.remainder == "drop":
      padded = tf.nest.map_structure(lambda t: tf.ensure_shape(t, [n] + t.shape[1:]),
                                     super_batch)
      return self.step(padded, step)
    # A final partial super-batch is padded to N with copies of its last example, which are
    # marked invalid so selection takes them only after every real candidate; the batch keeps
    # round(size * b / N) examples, the same share as the others.
    size = batching.leading_size(super_batch)
    fill = tf.minimum(tf.range(n), size - 1)
    padded = tf.nest.map_structure(
        lambda t: tf.ensure_shape(tf.gather(t, fill), [n] + t.shape[1:]), super_batch)
    keep = tf.cast(tf.math.round(tf.cast(size * b, tf.float64) / n), tf.int32)
    keep = tf.clip_by_value(keep, 1, b)
    return self.step(padded, step, valid=tf.range(n) < size, keep=keep)


def check_selector(value, name: str = "selector") -> "Selector":
  """The `Selector` behind `value` (a selector, or what `tfjest.attach` returned).

  Raises:
    TypeError: naming `name`, if `value` is neither.
  """
  selector = getattr(value, "selector", value)
  if not isinstance(selector, Selector):
    raise TypeError(f"{name} must be the object returned by tfjest.select(...) (or by "
                    f"tfjest.attach). Received: {name} of type {type(value).__name__}")
  return selector


def select(*, learner: Optional[keras.Model] = None,
           reference: Optional[keras.Model] = None,
           batch_size: int,
           filter_ratio: Optional[float] = None,
           super_batch_size: Optional[int] = None,
           method: str = "jest",
           score: str = "learnability",
           num_chunks: int = 16,
           temperature: float = 1.0,
           seed: int = 0,
           first_chunk: str = "uniform",
           normalization: str = "none",
           greedy: bool = False,
           task: str = "auto",
           embedding_keys: Sequence[str] = ("image_embeddings", "text_embeddings"),
           loss_fn: Optional[Any] = None,
           input_batched: bool = False,
           remainder: str = "drop",
           reference_cache: Optional[reference_lib.ReferenceCache] = None,
           id_key: Optional[str] = None,
           reference_features: Optional[Mapping[str, str]] = None,
           logit_scale: Optional[float] = None,
           logit_bias: Optional[float] = None,
           scoring_view: Optional[Callable] = None,
           proxy: Optional[proxy_lib.OnlineProxy] = None,
           group_key: Optional[str] = None,
           max_groups: int = 8) -> Selector:
  """Keeps `batch_size` of every `N` examples, chosen by learnability.

  The input is a stream of single examples. They are grouped into super-batches of `N`; each is
  scored with the learner's current weights (the model is called inside the pipeline and reads
  its variables live, so the scores follow training, 0-2 steps behind because of prefetching)
  and with the reference; `batch_size` examples are selected and emitted as one batch with the
  input's element structure, in stream order. `model.fit` consumes the result unchanged. A
  classifier selects examples independently, as below; a dual encoder selects them jointly with
  the default `method="jest"`.

  >>> import keras
  >>> import numpy as np
  >>> import tensorflow as tf
  >>> import tfjest
  >>> def classifier(seed):
  ...   keras.utils.set_random_seed(seed)
  ...   model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
  ...                             keras.layers.Dense(3)])
  ...   model.compile(optimizer="sgd",
  ...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  ...   return model
  >>> model, reference = classifier(seed=0), classifier(seed=1)  # reference: trained elsewhere
  >>> rng = np.random.default_rng(0)
  >>> train_ds = tf.data.Dataset.from_tensor_slices(   # single examples, not batches
  ...     (rng.normal(size=(80, 6)).astype("float32"), rng.integers(0, 3, size=80)))
  >>> selector = tfjest.select(learner=model, reference=reference, batch_size=8,
  ...                          filter_ratio=0.8, method="independent")
  >>> selector.super_batch_size  # b / (1 - f)
  40
  >>> selected = train_ds.apply(selector)
  >>> x, y = next(iter(selected))
  >>> x.shape, y.shape  # 8 of every 40, with the input's element structure
  (TensorShape([8, 6]), TensorShape([8]))
  >>> history = model.fit(selected, epochs=1, verbose=0)
  >>> int(model.optimizer.iterations)  # 80 examples: 2 super-batches, 2 steps
  2

  Args:
    learner: the Keras model being trained (not needed for "easy_reference" or "uniform").
    reference: a frozen Keras model (not needed for "hard_learner" or "uniform"); never the
      learner itself.
    batch_size: `b`, examples per emitted batch.
    filter_ratio: `f` in [0, 1), the share discarded: `N = b / (1 - f)`. Defaults to 0.8 when
      `super_batch_size` is not given either.
    super_batch_size: `N` directly (instead of `filter_ratio`); at least `batch_size`.
    method: "jest" (joint blocked sampling), "independent" (per-example Gumbel-top-b, as in
      RHO-LOSS / Bad Students) or "uniform" (the baseline, same sampler, no scores).
    score: "learnability" (`l_learner - l_reference`), "hard_learner" (`l_learner`) or
      "easy_reference" (`-l_reference`).
    num_chunks: `K` for "jest"; must divide `batch_size`. Ignored by the other methods.
    temperature: `tau > 0` of the sampling distribution `exp(u / tau)`.
    seed: int >= 0. With the super-batch index it keys the counter-based noise, so a selection is
      reproducible and resumable.
    first_chunk: "uniform" (default, the released pseudo-code) or "scores".
    normalization: "none" or "set_size" (divide gains by `2|A| + 1`).
    greedy: deterministic top-c in score-driven chunks.
    task: "contrastive", "classification", or "auto" (from the model's outputs).
    embedding_keys: `(image_key, text_key)` of a dual encoder's output mapping.
    loss_fn: per-example loss for classifiers, in any form `compile` takes for one output (a
      name such as "mae", a `keras.losses.Loss` or its class, a function); defaults to the
      compiled loss. Applied as `fit` applies it: labels aligned to the outputs' rank, the
      loss of each example alone.
    input_batched: set True if the dataset yields batches; they are unbatched first.
    remainder: what to do with a final super-batch shorter than `N`: "drop" (default; its
      examples are counted in `stats` as `left_over` and a warning is printed once) or "keep"
      (select from it at the same ratio, emitting one smaller batch).
    reference_cache: a `ReferenceCache` (from `cache_reference`) holding the frozen
      reference's outputs per example id: the reference is then never called. If `reference`
      is given too, its weights must match the cache's fingerprint.
      A stream joined with `reference_cache.join(id_key=...)` (streamed, in the build's
      order) carries them as features, which are read; any other stream is joined by id in
      memory (small data; see README, "Per-example values at scale").
    id_key: the example-id feature that joins `reference_cache` to the stream (in the element,
      else in its `x`, else in its `y`; "/" for nested paths). Required with `reference_cache`.
    reference_features: the reference's outputs stored as features of each element (written by
      another engine, e.g. Apache Beam or Spark): `{"image_embeddings": name,
      "text_embeddings": name}` (`[d]` floats each) for a dual encoder, with `logit_scale`
      and `logit_bias`, or `{"loss": name}` (a float) for a classifier. The reference is then
      never called; the features are dropped from the emitted batches.
    logit_scale: with dual-encoder `reference_features`, the reference's logit scale.
    logit_bias: with dual-encoder `reference_features`, the reference's logit bias.
    scoring_view: a function applied to the super-batch's inputs `x` (leading axis `N`) before
      the learner (or proxy) scores them, e.g. downscaled images: a cheaper forward pass. The
      reference and the emitted batches see the inputs unchanged.
    proxy: an `OnlineProxy`: a small model that scores instead of the learner and that tfjest
      trains on every emitted batch. `learner` is then never called (it is still used, if
      given, to count training FLOPs).
    group_key: a scalar string or integer feature (a source, a domain, a label, a corruption
      tag; in the element, its x or its y, "/" for nested paths) whose values get their own
      selection rate (`selected / read`), in `stats.result()` as `group_rate/<value>` and in
      TensorBoard (see `tfjest.summaries`).
    max_groups: how many of the most read values of `group_key` are reported by name; all
      others together are reported as "other".

  Returns:
    A `Selector`: a `Dataset` transformation function, which can be passed to
    `tf.data.Dataset.apply`. Its `stats` attribute holds the selection statistics.

  Under a `tf.distribute` strategy, or when a model it reads has its variables on a GPU or TPU,
  pass the selector to `tfjest.attach(model, selector)` and apply what it returns: scoring and
  selection then run in the model's (replicated) train step, and the transformation emits
  super-batches of `N`.

  Examples with `sample_weight` 0 are not selected while others remain (and stay out of the
  statistics' means); other weights do not change the scores and weigh the training loss as
  `fit` does.

  Raises:
    ValueError: if an argument is outside its domain (each message names the argument and the
      value received); if `reference` is the learner; if `proxy` shares the learner's
      optimizer (also checked when applied); if `loss_fn` is a loss name Keras does not know;
      if `reference_cache` was computed for other reference weights; when applied, if the
      elements cannot be stacked or scored (a feature of no fixed shape, named by its path
      such as 'x/tokens'; a string label under classification scoring), are batches (without
      `input_batched=True`) or single examples (with it), do not fit the cache, or under a
      strategy or with a scoring model on a GPU or TPU, without `tfjest.attach`.
    TypeError: if a model argument is not a `keras.Model`, `reference_cache` not a
      `ReferenceCache`, `proxy` not an `OnlineProxy` or `loss_fn` not a loss.
  """
  sizes = batching.Sizes.of(batch_size=batch_size, filter_ratio=filter_ratio,
                   super_batch_size=super_batch_size, remainder=remainder,
                   input_batched=input_batched)
  rule = selection.Rule(method=method, num_chunks=num_chunks, temperature=temperature,
                        seed=seed, first_chunk=first_chunk, normalization=normalization,
                        greedy=greedy)
  setup = scoring.Setup(
      score=score, learner=learner, reference=reference, proxy=proxy, task=task,
      embedding_keys=embedding_keys, loss_fn=loss_fn, scoring_view=scoring_view,
      reference_cache=reference_cache, id_key=id_key, reference_features=reference_features,
      logit_scale=logit_scale, logit_bias=logit_bias, method=rule.method)
  if group_key is not None and (not isinstance(group_key, str) or not group_key):
    raise ValueError(f"group_key must be a feature name. Received: group_key={group_key!r}")
  max_groups = checks.integer(max_groups, "max_groups", minimum=1)
  return Selector(rule, setup, sizes, summaries_lib.SelectionSummaries(
      group_key=group_key, max_groups=max_groups))
