"""`tfjest.select`: a `tf.data` transformation that keeps the most learnable examples."""

import contextlib
import sys
from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from tfjest import adapters
from tfjest import arguments
from tfjest import cache as cache_lib
from tfjest import cost as cost_lib
from tfjest import proxy as proxy_lib
from tfjest import scoring
from tfjest import selection
from tfjest import stats as stats_lib



class Selector:
  """The transformation returned by `select`: call it (or `dataset.apply` it) on a dataset.

  Attributes:
    stats: the `SelectionStats` of every dataset this selector has been applied to.
    scorer: the `scoring.Scorer` that calls the models (None for uniform selection).
    placement: where selection runs: "pipeline" (in the `tf.data` map, the default) or
      "train_step" (set by `tfjest.attach`: the pipeline emits super-batches of `N` and the
      model's replicated train step scores and selects).
    batch_size: `b`, examples per emitted batch.
    super_batch_size: `N`, candidates per selection.
  """

  def __init__(self, *, learner, reference, batch_size, super_batch_size, method, score,
               num_chunks, temperature, seed, first_chunk, normalization, greedy, task,
               embedding_keys, loss_fn, input_batched, remainder, reference_cache=None,
               id_key=None, scoring_view=None, proxy=None):
    self.learner = learner
    self.reference = reference
    self.reference_cache = reference_cache
    self.id_key = id_key
    self.scoring_view = scoring_view
    self.proxy = proxy
    self.embedding_keys = tuple(embedding_keys)
    self.batch_size = batch_size
    self.super_batch_size = super_batch_size
    self.method = method
    self.score = score
    self.num_chunks = num_chunks
    self.temperature = temperature
    self.seed = seed
    self.first_chunk = first_chunk
    self.normalization = normalization
    self.greedy = greedy
    self.input_batched = input_batched
    self.remainder = remainder
    self.stats = stats_lib.SelectionStats()
    self.placement = "pipeline"
    self.strategy = None  # the learner's tf.distribute strategy once attached
    self.stats.set_cost_source(self._unit_costs)
    self._element_spec = None
    self._step_cost = None
    # Uniform selection reads no model: the baseline costs no scoring.
    self.scorer = None if method == "uniform" else scoring.Scorer(
        learner=proxy.model if proxy is not None else learner, reference=reference,
        score=score, task=task, embedding_keys=embedding_keys, loss_fn=loss_fn,
        learner_view=scoring_view, reference_cache=reference_cache, id_key=id_key)

  @property
  def task(self) -> Optional[str]:
    """"contrastive" or "classification" once applied (None for uniform: nothing is scored)."""
    return None if self.scorer is None else self.scorer.task

  def __call__(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    if not isinstance(dataset, tf.data.Dataset):
      raise TypeError(f"select(...) applies to a tf.data.Dataset. "
                      f"Received: dataset of type {type(dataset).__name__}")
    if self.input_batched:
      dataset = dataset.unbatch()
    spec = dataset.element_spec
    _check_stackable(spec)
    cardinality = int(tf.data.experimental.cardinality(dataset))
    if cardinality == 0:
      raise ValueError("select(...) was applied to an empty dataset. Received: dataset with "
                       "cardinality 0")
    n = self.super_batch_size
    if self.remainder == "drop" and 0 <= cardinality < n:
      raise ValueError(
          f"The dataset holds fewer examples than one super-batch ({n}), so nothing would be "
          "selected. Use a smaller batch_size or super_batch_size, or remainder='keep'. "
          f"Received: dataset of {cardinality} examples")
    if self.placement == "train_step":
      return self._super_batches(dataset, cardinality)
    self._check_no_strategy()
    self._prepare(spec)

    super_batches = dataset.batch(n, drop_remainder=False).enumerate()
    if self.remainder == "drop":
      super_batches = super_batches.filter(self._keep_full_or_count)
    selected = super_batches.map(self._select_super_batch)
    # The map reads the models' variables and updates `stats`, state that lives outside the
    # iterator. An iterator checkpoint is correct only together with that state, which
    # `tfjest.selection_checkpoint` saves alongside; with it, the external state is accounted
    # for, so iterator saving need not refuse.
    options = tf.data.Options()
    options.experimental_external_state_policy = (
        tf.data.experimental.ExternalStatePolicy.IGNORE)
    selected = selected.with_options(options)
    # The filter hides the length; restore it so that `fit` knows the epoch's size.
    if cardinality == tf.data.INFINITE_CARDINALITY:
      selected = selected.repeat()
    elif cardinality >= 0:
      batches = cardinality // n if self.remainder == "drop" else -(-cardinality // n)
      selected = selected.apply(tf.data.experimental.assert_cardinality(batches))
    return selected

  def select_batch(self, super_batch, step=0):
    """Selects from one super-batch outside a pipeline (eagerly or in a `tf.function`).

    This is the computation `select` maps over the stream, for custom training loops and for
    checking a pipeline's output: `super_batch` has the input's element structure with a
    leading axis of `super_batch_size` (or fewer with `remainder="keep"`), and `step` is the
    super-batch index that keys the noise. Statistics are recorded as in the pipeline.

    Returns:
      The selected batch, with the input's structure.
    """
    self._prepare(tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape[1:], t.dtype),
                                        super_batch))
    return self._select_super_batch(tf.constant(step, tf.int64), super_batch)

  def _prepare(self, spec):
    if self.scorer is not None:
      self.scorer.prepare(spec)
      if self.proxy is not None:
        self.proxy.prepare(self.scorer.task, self.embedding_keys)
    if spec != self._element_spec:
      self._element_spec, self._step_cost = spec, None

  def step_cost(self) -> cost_lib.StepCost:
    """FLOPs of one training step on this selector's batches (JEST_SPEC section 7).

    Counts, per full super-batch: training the learner on `b` (when `learner` was given),
    learner scoring on `N` at the scoring view (or the proxy's scoring and training), reference
    scoring (0 with a cache) and the selection maths. See `tfjest.cost` for how FLOPs are
    counted. Available once the selector has been applied (it needs the element spec).

    Raises:
      ValueError: if the selector has not been applied to a dataset yet.
    """
    if self._element_spec is None:
      raise ValueError("step_cost() needs the elements' structure: apply the selector to a "
                       "dataset (or call select_batch) first. Received: a selector never applied")
    if self._step_cost is None:
      self._step_cost = self._compute_step_cost()
    return self._step_cost

  def _compute_step_cost(self) -> cost_lib.StepCost:
    x_spec = adapters.unpack(self._element_spec)[0]
    n, b = self.super_batch_size, self.batch_size
    learner_flops = (None if self.learner is None
                     else cost_lib.forward_flops(self.learner, x_spec))
    if self.scorer is None:
      return cost_lib.step_cost(batch_size=b, super_batch_size=n, learner_flops=learner_flops,
                                learner_scoring_flops=0,
                                selection=cost_lib.selection_flops(n, b, method="uniform"))
    specs = self.scorer.input_specs
    scoring_flops = (cost_lib.forward_flops(self.scorer.models["learner"], specs["learner"])
                     if "learner" in self.scorer.models else 0)
    reference_flops = (cost_lib.forward_flops(self.reference, x_spec)
                       if "reference" in self.scorer.models else 0)
    selection = cost_lib.selection_flops(
        n, b, width=self.scorer.width, num_chunks=self.num_chunks,
        num_models=len(self.scorer.roles), task=self.scorer.task, method=self.method)
    return cost_lib.step_cost(
        batch_size=b, super_batch_size=n, learner_flops=learner_flops,
        learner_scoring_flops=scoring_flops, reference_flops=reference_flops,
        reference_cached=self.scorer.reference_cache is not None,
        proxy_flops=scoring_flops if self.proxy is not None else None, selection=selection)

  def _unit_costs(self):
    """Per selected example and per super-batch FLOPs, for the statistics (None before use)."""
    if self._element_spec is None:
      return None
    cost = self.step_cost()
    b = self.batch_size
    return {"training": None if cost.training is None else cost.training / b,
            "proxy_training": cost.proxy_training / b,
            "learner_scoring": cost.learner_scoring,
            "reference_scoring": cost.reference_scoring,
            "selection": cost.selection}

  def choose_indices(self, scores, step, valid=None, num_select=None, num_candidates=None,
                     set_size_per_chunk=None):
    """Runs this selector's rule on a score object: `[num_select or b]` indices, chosen order.

    `scores` is None for uniform selection (then `N` is `num_candidates` or
    `super_batch_size`); `num_select` lets a replica choose its share of the batch, and
    `set_size_per_chunk` is passed to `joint_selection` (global selection across replicas).
    """
    b = num_select or self.batch_size
    if self.method == "uniform":
      n = num_candidates or self.super_batch_size
      if scores is not None:
        n = scores.diagonal().shape[0]
      return selection.uniform_selection(n, b, seed=self.seed, step=step, valid=valid)
    if self.method == "jest":
      return selection.joint_selection(
          scores, b, num_chunks=self.num_chunks, seed=self.seed, step=step,
          temperature=self.temperature, first_chunk=self.first_chunk,
          normalization=self.normalization, greedy=self.greedy, valid=valid,
          set_size_per_chunk=set_size_per_chunk)
    return selection.independent_selection(
        scores.diagonal(), b, seed=self.seed, step=step, temperature=self.temperature,
        greedy=self.greedy, valid=valid)

  def _check_no_strategy(self):
    strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    models = self.scorer.models.values() if self.scorer is not None else ()
    for model in models:
      strategy = strategy or getattr(model, "_distribute_strategy", None)
    if strategy is not None:
      raise ValueError(
          "Under a tf.distribute strategy the learner's variables live on the replicas, so "
          "tfjest scores and selects inside the replicated train step, not in the input "
          "pipeline. Call `tfjest.attach(model, selector)` before applying the selector "
          "(the same code then also runs without a strategy). "
          f"Received: strategy={type(strategy).__name__}")

  def _super_batches(self, dataset, cardinality):
    """The stream of an attached selector: super-batches of `N`; the train step selects."""
    if self.remainder != "drop":
      raise ValueError(
          "Selection in the train step needs static shapes, so a final partial super-batch "
          "is always dropped. Use remainder='drop'. Received: remainder='keep'")
    scope = self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()
    with scope:  # models built here get their variables on the replicas
      self._prepare(dataset.element_spec)
    n = self.super_batch_size
    # A final partial super-batch is dropped (the train step needs static shapes) but counted
    # as left over, as in the pipeline.
    super_batches = dataset.batch(n, drop_remainder=False).enumerate().filter(
        self._keep_full_or_count).map(
            lambda step, batch: tf.nest.map_structure(
                lambda t: tf.ensure_shape(t, [n] + t.shape[1:]), batch))
    if cardinality == tf.data.INFINITE_CARDINALITY:
      return super_batches.repeat()
    if cardinality >= 0:
      super_batches = super_batches.apply(tf.data.experimental.assert_cardinality(
          cardinality // n))
    return super_batches

  def _keep_full_or_count(self, step, super_batch):
    del step
    size = _leading_size(super_batch)
    full = tf.equal(size, self.super_batch_size)

    def warn():
      with tf.control_dependencies([tf.print(
          "tfjest.select: dropped a final partial super-batch of", size, "examples (counted "
          "in stats as left_over; pass remainder='keep' to select from it).",
          output_stream=sys.stderr)]):
        return tf.constant(False)

    record = self.stats.record_left_over(tf.where(full, 0, size))
    with tf.control_dependencies([record]):
      return tf.cond(full, lambda: tf.constant(True), warn)

  def _select_super_batch(self, step, super_batch):
    n = self.super_batch_size
    size = _leading_size(super_batch)
    if self.remainder == "drop":
      padded = tf.nest.map_structure(lambda t: tf.ensure_shape(t, [n] + t.shape[1:]),
                                     super_batch)
      valid = None
      keep = self.batch_size
    else:
      # A final partial super-batch is padded to N with copies of its last example, which
      # are marked invalid so selection takes them only after every real candidate; the
      # batch keeps round(size * b / N) examples, the same share as the others.
      fill = tf.minimum(tf.range(n), size - 1)
      padded = tf.nest.map_structure(
          lambda t: tf.ensure_shape(tf.gather(t, fill), [n] + t.shape[1:]), super_batch)
      valid = tf.range(n) < size
      keep = tf.cast(tf.math.round(tf.cast(size * self.batch_size, tf.float64) / n), tf.int32)
      keep = tf.clip_by_value(keep, 1, self.batch_size)

    non_finite = tf.constant(0, tf.int32)
    if self.scorer is None:
      picks, values = self.choose_indices(None, step, valid), {}
    else:
      scored = self.scorer(padded)
      finite = tf.math.is_finite(scored.scores.diagonal())
      real = tf.ones([n], tf.bool) if valid is None else valid  # padding is no candidate
      non_finite = tf.reduce_sum(tf.cast(~finite & real, tf.int32))
      picks = self.choose_indices(scored.scores, step, valid)
      values = _batch_values(scored.scores, picks, scored.losses, n, finite & real)
    chosen = tf.sort(picks[:keep])  # keep the stream's order inside the batch
    batch = tf.nest.map_structure(lambda t: tf.gather(t, chosen), padded)
    updates = [self.stats.record_batch(size, tf.size(chosen), values, non_finite),
               _warn_if(tf.equal(non_finite, size),
                        "tfjest.select: every candidate of a super-batch had a NaN or infinite "
                        "score (a diverged model?); it was selected uniformly. Super-batch "
                        "index:", step)]
    if self.proxy is not None:
      # The proxy learns from the batch it helped choose, at the view it scores with; the
      # next super-batch is scored with the updated weights.
      x, y, sample_weight = adapters.unpack(batch)
      view = x if self.scoring_view is None else self.scoring_view(x)
      updates.append(self.proxy.train_step(view, y, sample_weight))
    with tf.control_dependencies(updates):
      return tf.nest.map_structure(tf.identity, batch)


def check_selector(value, name: str = "selector") -> "Selector":
  """Returns `value` if it is a `Selector`; otherwise raises a TypeError naming `name`."""
  if not isinstance(value, Selector):
    raise TypeError(f"{name} must be the object returned by tfjest.select(...). "
                    f"Received: {name} of type {type(value).__name__}")
  return value


def _batch_values(scores, picks, diag_losses, n, include):
  """Means of learner/reference losses over chosen vs rejected candidates, and s(B).

  Only candidates in `include` (real, with finite scores) enter the means, and non-finite
  pair scores are left out of s(B), so one bad example cannot poison the running sums.
  """
  chosen = tf.scatter_nd(picks[:, None], tf.ones_like(picks, tf.bool), [n])
  out = {}
  for role in ("learner", "reference"):
    values = diag_losses.get(role)
    for part, mask in (("selected", chosen & include), ("rejected", ~chosen & include)):
      key = f"{role}_loss_{part}"
      if values is None:
        out[key] = tf.constant(0.0)
      else:
        out[key] = tf.math.divide_no_nan(
            tf.reduce_sum(tf.where(mask, tf.cast(values, tf.float32), 0.0)),
            tf.reduce_sum(tf.cast(mask, tf.float32)))
  block = scores.block(picks, picks)
  out["batch_score"] = tf.reduce_sum(tf.where(tf.math.is_finite(block), block, 0.0))
  return out


def _warn_if(condition, message, value):
  """Prints `message value` to stderr when `condition` holds (graph-safe)."""
  def warn():
    with tf.control_dependencies([tf.print(message, value, output_stream=sys.stderr)]):
      return tf.constant(True)
  return tf.cond(condition, warn, lambda: tf.constant(False))


def _leading_size(structure):
  return tf.shape(tf.nest.flatten(structure)[0], out_type=tf.int32)[0]


def _check_stackable(spec):
  for path, s in _flatten_with_paths(spec):
    if not isinstance(s, tf.TensorSpec):
      raise ValueError(
          f"select(...) stacks examples into super-batches and needs dense tensors; feature "
          f"{path!r} is a {type(s).__name__}. Pad or convert it to a dense tensor first. "
          f"Received: element_spec={spec}")
    if not s.shape.is_fully_defined():
      raise ValueError(
          f"select(...) stacks examples into super-batches, so every feature needs a fixed "
          f"shape, but feature {path!r} has shape {s.shape}. Pad or resize it to a fixed shape "
          f"first (or, if the dataset is already batched, pass input_batched=True). "
          f"Received: element_spec={spec}")


def _flatten_with_paths(spec):
  flat = tf.nest.flatten(spec)
  try:
    paths = [p for p, _ in tf.nest.flatten_with_joined_string_paths(spec)]
  except (AttributeError, TypeError):
    paths = [str(i) for i in range(len(flat))]
  return zip(paths, flat)


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
           loss_fn: Optional[Callable] = None,
           input_batched: bool = False,
           remainder: str = "drop",
           reference_cache: Optional[cache_lib.ReferenceCache] = None,
           id_key: Optional[str] = None,
           scoring_view: Optional[Callable] = None,
           proxy: Optional[proxy_lib.OnlineProxy] = None) -> Selector:
  """Keeps `batch_size` of every `N` examples, chosen by learnability.

  The input is a stream of single examples. They are grouped into super-batches of `N`; each is
  scored with the learner's current weights (the model is called inside the pipeline and reads
  its variables live, so the scores follow training, 0-2 steps behind because of prefetching)
  and with the reference; `batch_size` examples are selected and emitted as one batch with the
  input's element structure, in stream order. `model.fit` consumes the result unchanged.

  ```python
  selected = train_ds.apply(tfjest.select(
      learner=model, reference=reference, batch_size=64, filter_ratio=0.8))
  model.fit(selected, epochs=3)
  ```

  Args:
    learner: the Keras model being trained (not needed for "easy_reference" or "uniform").
    reference: a frozen Keras model (not needed for "hard_learner" or "uniform").
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
    seed: int >= 0. With the super-batch index it keys the stateless noise, so a selection is
      reproducible and resumable.
    first_chunk: "uniform" (default, the released pseudo-code) or "scores".
    normalization: "none" or "set_size" (divide gains by `2|A| + 1`).
    greedy: deterministic top-c in score-driven chunks.
    task: "contrastive", "classification", or "auto" (from the model's outputs).
    embedding_keys: `(image_key, text_key)` of a dual encoder's output mapping.
    loss_fn: per-example loss for classifiers; defaults to the compiled loss.
    input_batched: set True if the dataset yields batches; they are unbatched first.
    remainder: what to do with a final super-batch shorter than `N`: "drop" (default; its
      examples are counted in `stats` as `left_over` and a warning is logged) or "keep" (select
      from it at the same ratio, emitting one smaller batch).
    reference_cache: a `ReferenceCache` (from `cache_reference`) holding the frozen
      reference's outputs per example id: the reference is then never called. If `reference`
      is given too, its weights must match the cache's fingerprint.
    id_key: the example-id feature that joins `reference_cache` to the stream (in the element,
      else in its `x`, else in its `y`; "/" for nested paths). Required with `reference_cache`.
    scoring_view: a function applied to the super-batch's inputs `x` (leading axis `N`) before
      the learner (or proxy) scores them, e.g. downscaled images: a cheaper forward pass. The
      reference and the emitted batches see the inputs unchanged.
    proxy: an `OnlineProxy`: a small model that scores instead of the learner and that tfjest
      trains on every emitted batch. `learner` is then never called (it is still used, if
      given, to count training FLOPs).

  Returns:
    A `Selector`: a `Dataset` transformation function, which can be passed to
    `tf.data.Dataset.apply`. Its `stats` attribute holds the selection statistics.

  Under a `tf.distribute` strategy, pass the selector to `tfjest.attach(model, selector)`
  before applying it: scoring and selection then run in the model's replicated train step, and
  the transformation emits super-batches of `N`.

  Raises:
    ValueError: if an argument is outside its domain (each message names the argument and the
      value received); if `reference_cache` was computed for other reference weights; when
      applied, if the elements cannot be stacked or scored, do not fit the cache, or under a
      strategy without `tfjest.attach`.
    TypeError: if a model argument is not a `keras.Model`, `reference_cache` not a
      `ReferenceCache` or `proxy` not an `OnlineProxy`.
  """
  super_batch_size = arguments.check_select(
      learner=learner, reference=reference, batch_size=batch_size, filter_ratio=filter_ratio,
      super_batch_size=super_batch_size, method=method, score=score, num_chunks=num_chunks,
      temperature=temperature, seed=seed, first_chunk=first_chunk,
      normalization=normalization, greedy=greedy, task=task, embedding_keys=embedding_keys,
      loss_fn=loss_fn, input_batched=input_batched, remainder=remainder,
      reference_cache=reference_cache, id_key=id_key, scoring_view=scoring_view, proxy=proxy)
  return Selector(learner=learner, reference=reference, batch_size=batch_size,
                  super_batch_size=super_batch_size, method=method, score=score,
                  num_chunks=num_chunks if method == "jest" else 1, temperature=float(temperature),
                  seed=seed, first_chunk=first_chunk, normalization=normalization, greedy=greedy,
                  task=task, embedding_keys=embedding_keys, loss_fn=loss_fn,
                  input_batched=input_batched, remainder=remainder,
                  reference_cache=reference_cache, id_key=id_key, scoring_view=scoring_view,
                  proxy=proxy)
