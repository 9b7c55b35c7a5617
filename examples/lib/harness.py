"""One run: a learner trained with `fit` on selected data, evaluated along the way.

`run(RunConfig(...), task)` trains a fresh learner of the task on
`task.stream(seed) -> tfjest.select(...) -> fit`, evaluating every `eval_every` steps, and
returns the curve: steps, cumulative FLOPs (docs/SPEC.md §7, `Selector.step_cost()`), the
task's metrics (zero-shot accuracy and recall@1 for captions), the share of corrupted examples
among those selected, examples read, and the selection statistics. Uniform selection goes
through `tfjest.select(method="uniform")`, the same code path. `tfjest.efficiency` turns curves
into docs/SPEC.md §9's speedups.

Without a strategy selection runs in the `tf.data` pipeline; with one (`strategy=`) the learner
is built in its scope and `tfjest.attach` moves scoring and selection into the replicated train
step (the corruption flags are then dropped before selection, so `corrupted_share` is None).

    task = tasks.CaptionsTask("noise_0.5")
    ref = reference.train(task)
    cache = reference.cached(ref, task, "/tmp/ref_cache")
    curve = harness.run(harness.RunConfig(method="jest", steps=300), task, reference=ref,
                        reference_cache=cache)
    curve["steps"], curve["accuracy"], curve["flops"], curve["corrupted_share"]
"""

import contextlib
import dataclasses
import hashlib
import time
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Union

from absl import flags
import keras
import numpy as np
import tensorflow as tf

import tfjest
from examples.lib import data
from examples.lib import reference as reference_lib
from tfjest import testing

METHODS = ("uniform", "independent", "jest")
SCORES = ("learnability", "hard_learner", "easy_reference")
LEARNING_RATE = 1e-3


class RunFlags(NamedTuple):
  """A program's `--steps`, `--eval_every`, `--batch_size` and `--learning_rate` flags."""
  steps: flags.FlagHolder
  eval_every: flags.FlagHolder
  batch_size: flags.FlagHolder
  learning_rate: flags.FlagHolder


def define_run_flags(*, steps: int, eval_every: int, batch_size: int = 64,
                     steps_help: str = "Training steps per run (the budget).",
                     batch_help: str = "Examples per training step (b).") -> RunFlags:
  """Defines the flags of a run's budget and optimiser (once, at a program's import)."""
  return RunFlags(flags.DEFINE_integer("steps", steps, steps_help),
                  flags.DEFINE_integer("eval_every", eval_every, "Steps between evaluations."),
                  flags.DEFINE_integer("batch_size", batch_size, batch_help),
                  flags.DEFINE_float("learning_rate", LEARNING_RATE, "Adam rate."))
WIDTH = 64


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One run's settings.

  Attributes:
    method: "uniform", "independent" or "jest".
    score: "learnability", "hard_learner" or "easy_reference" (ignored by "uniform").
    filter_ratio: `f`; each step reads `N = b / (1 - f)` candidates (uniform too).
    batch_size: `b`, examples per training step (global under a strategy).
    steps: training steps; a multiple of `eval_every`.
    eval_every: steps between evaluations.
    seed: seeds the learner's initialisation, the stream's shuffle and the selection noise.
    learning_rate: the learner's Adam rate.
    width: the learner's embedding width.
    num_chunks, temperature, first_chunk, normalization: passed to `tfjest.select`.
    proxy_filters: when given, a small model of the task with these convolution widths and
      `proxy_width` scores for the learner (`tfjest.OnlineProxy`, Bad Students).
    proxy_width: the proxy's embedding width.
    scoring_resolution: when given, the learner scores candidates on images average-pooled to
      this side (`data.lower_resolution`, a `scoring_view`): cheaper learner scoring.
    train_resolutions: when given, the learner trains on batches at these image sides in turn
      (`tfjest.multi_resolution`, Flexi-JEST), so that low-resolution scores stay accurate;
      the training FLOPs per step are then the mean over the sides.
    deterministic: apply `tfjest.deterministic_options()` (reproducible, slightly slower).
    oracle_clean: an analysis baseline, not a selection method: with `method="uniform"`, draw
      only the training examples whose corruption is "none" (the curve of a perfect filter).
    replica_selection: under a strategy, "local" or "global" (`tfjest.attach`).
    backup_dir: when given, `tfjest.backup_and_restore` there (resume after preemption).
    rela_switch: with `train(..., prior_targets=...)` (ReLA): `tfjest.ReLAAid`'s `switch`
      ("adaptive", a step, or a fraction of `steps`).
    rela_features: the learner's output the ReLA head reads.
  """

  method: str = "jest"
  score: str = "learnability"
  filter_ratio: float = 0.8
  batch_size: int = 64
  steps: int = 300
  eval_every: int = 25
  seed: int = 0
  learning_rate: float = LEARNING_RATE
  width: int = WIDTH
  num_chunks: int = 16
  temperature: float = 1.0
  first_chunk: str = "uniform"
  normalization: str = "none"
  proxy_filters: Optional[Sequence[int]] = None
  proxy_width: int = 16
  scoring_resolution: Optional[int] = None
  train_resolutions: Optional[Sequence[int]] = None
  deterministic: bool = True
  oracle_clean: bool = False
  replica_selection: str = "local"
  backup_dir: str = ""
  rela_switch: Union[str, int, float] = "adaptive"
  rela_features: str = "image_embeddings"

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"Expected method in {METHODS}. Received: method={self.method!r}")
    if self.score not in SCORES:
      raise ValueError(f"Expected score in {SCORES}. Received: score={self.score!r}")
    if not isinstance(self.eval_every, int) or self.eval_every < 1:
      raise ValueError("eval_every must be a positive integer. "
                       f"Received: eval_every={self.eval_every!r}")
    if (not isinstance(self.steps, int) or self.steps < self.eval_every or
        self.steps % self.eval_every):
      raise ValueError(f"steps must be a positive multiple of eval_every={self.eval_every}. "
                       f"Received: steps={self.steps!r}")
    if self.proxy_filters and "learner" not in self.models_read:
      raise ValueError(f"A proxy scores for the learner; {self.method!r} selection with the "
                       f"{self.score!r} score does not read the learner. Received: "
                       f"proxy_filters={self.proxy_filters!r}")
    if self.scoring_resolution and "learner" not in self.models_read:
      raise ValueError(f"A scoring view changes what the learner scores; {self.method!r} "
                       f"selection with the {self.score!r} score does not read the learner. "
                       f"Received: scoring_resolution={self.scoring_resolution!r}")
    if self.oracle_clean and self.method != "uniform":
      raise ValueError("oracle_clean is a uniform baseline over the clean examples. "
                       f"Received: oracle_clean=True, method={self.method!r}")

  @property
  def models_read(self):
    """The models this configuration scores with (`tfjest.models_read`)."""
    return tfjest.models_read(self.method, self.score)

  @property
  def name(self) -> str:
    if self.oracle_clean:
      return "oracle_clean"
    return self.method if self.method == "uniform" else f"{self.method}/{self.score}"


class _Evaluate(keras.callbacks.Callback):
  """Calls `record(step)` after every fit 'epoch' (each is `eval_every` steps)."""

  def __init__(self, record: Callable[[int], None], eval_every: int):
    super().__init__()
    self._record, self._eval_every = record, eval_every

  def on_epoch_end(self, epoch, logs=None):
    del logs
    self._record((epoch + 1) * self._eval_every)


def weights_digest(model: keras.Model) -> str:
  """A hash of the model's weights (first replica): equal across workers iff weights are."""
  digest = hashlib.sha256()
  for w in model.weights:
    digest.update(np.ascontiguousarray(np.asarray(w)).tobytes())
  return digest.hexdigest()[:16]


def _mixed_training_flops(learner, task, config) -> float:
  """`3 b F_L(s)` averaged over the training sides `s` (the rotation gives each one share)."""
  spec = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape[1:], t.dtype),
                               task.example_inputs(1))
  per_side = []
  for side in config.train_resolutions:
    image = spec["image"]
    sided = {**spec, "image": tf.TensorSpec([side, side, image.shape[-1]], image.dtype)}
    per_side.append(3 * config.batch_size * tfjest.forward_flops(learner, sided))
  return float(np.mean(per_side))


def run(config: RunConfig, task, **kwargs) -> Dict:
  """Trains a learner of `task` on selected data; returns its curve and what it cost.

  `train(config, task, **kwargs)[1]`: see `train` for the arguments and the result.
  """
  return train(config, task, **kwargs)[1]


def train(config: RunConfig, task, *, reference: Optional[keras.Model] = None,
          reference_cache: Optional[tfjest.ReferenceCache] = None, strategy=None,
          prior_targets: Optional[tfjest.PriorTargets] = None,
          before_selection: Optional[Callable[[tf.data.Dataset], tf.data.Dataset]] = None,
          proxy_model: Optional[keras.Model] = None,
          tensorboard_dir: Optional[str] = None, summary_every: int = 100,
          log: Callable[[str], None] = lambda s: None):
  """Trains a learner of `task` on selected data; returns `(learner, result)`.

  Args:
    config: the run's settings.
    task: an `examples.lib.tasks` task.
    reference: the frozen reference. When None and the score reads one (and no
      `reference_cache` is given), one is trained first (`reference.train`, seed 0).
    reference_cache: the reference's outputs on the training split (`reference.cached`):
      when the score reads the reference, selection reads the cache instead of calling it
      (the same selections, no reference scoring FLOPs).
    strategy: a `tf.distribute.Strategy`: select in the replicated train step.
    prior_targets: ReLA: a prior's targets of the training split (`tfjest.prior_targets`),
      joined to the selected batches by id; the learner trains through `tfjest.ReLAAid`
      (`config.rela_switch`, `config.rela_features`). Not with a strategy.
    before_selection: a transformation applied to the task's stream of single examples
      before selection (e.g. `tfjest.by_cluster(...)`: cluster-conditioned super-batches).
    proxy_model: with `config.proxy_filters`, the proxy's model to train (built like
      `task.make_model("proxy", ...)`), for a caller that scores with it afterwards; else the
      harness builds it.
    tensorboard_dir: write TensorBoard summaries of selection there
      (`tfjest.SelectionStatsCallback`: scalars, and every `summary_every` steps a sampled
      super-batch's images, captions and score histograms, per-corruption selection rates
      when selecting in the pipeline, proxy fidelity); the result then holds
      `selection_sample`: `{"step", "candidates"}`, the shown candidates of the last sampled
      super-batch (`tfjest.tensorboard.SummaryWriter.candidates`).
    summary_every: steps between sampled super-batches (with `tensorboard_dir`).
    log: called with one line per evaluation.

  Returns:
    The trained learner, and a dict of the settings and the curves, lists with one entry per evaluation: `steps`
    (0, eval_every, ..., steps), `flops` (cumulative), `accuracy` and the task's other metrics,
    `corrupted_share` (among all selected so far; None at step 0 and under a strategy); and
    `corruption_shares`, `flops_per_step` (by part, and `total`), `super_batch_size`
    (examples a step reads: `N`, or `b` for uniform), `dataset_size`, `examples_read`, `selection_stats`, `wall_seconds`, `replicas`,
    `identical_replica_weights` (learner and reference, this worker's replicas) and
    `weights_digest` (of the learner: equal across workers iff their weights are).
  """
  if prior_targets is not None and strategy is not None:
    raise ValueError("The harness joins ReLA targets in the tf.data pipeline, without a "
                     "strategy. Received: prior_targets and a strategy")
  if proxy_model is not None and not config.proxy_filters:
    raise ValueError("A proxy model trains only with config.proxy_filters set. Received: "
                     f"proxy_model={proxy_model.name!r}, proxy_filters={config.proxy_filters!r}")
  needs_reference = "reference" in config.models_read
  use_cache = needs_reference and reference_cache is not None
  if needs_reference and reference is None and not use_cache:
    reference = reference_lib.train(task, strategy=strategy, log=log)
  scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
  with scope:
    keras.utils.set_random_seed(config.seed)
    learner = task.make_model("learner", width=config.width)
    learner.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    learner(task.example_inputs(1))
    learner.optimizer.build(learner.trainable_variables)  # fit then traces its step once
    proxy = None
    if config.proxy_filters:
      small = proxy_model or task.make_model("proxy", width=config.proxy_width,
                                             filters=config.proxy_filters)
      small(task.example_inputs(1))
      proxy = tfjest.OnlineProxy(small, optimizer=keras.optimizers.Adam(config.learning_rate))
    select_kwargs = dict(
        learner=learner, reference=reference if needs_reference else None,
        reference_cache=reference_cache if use_cache else None,
        id_key=task.id_key if use_cache else None, batch_size=config.batch_size,
        filter_ratio=config.filter_ratio, method=config.method, score=config.score,
        num_chunks=config.num_chunks, temperature=config.temperature, seed=config.seed,
        first_chunk=config.first_chunk, normalization=config.normalization, proxy=proxy,
        scoring_view=(data.lower_resolution(config.scoring_resolution)
                      if config.scoring_resolution else None))
    selector = tfjest.select(**select_kwargs)
    if tensorboard_dir and strategy is None and selector.models_location() == "host":
      # In the pipeline the elements still carry their corruption tag (the train step's do
      # not): selection rates per tag.
      selector = tfjest.select(**select_kwargs, group_key="corruption")
    # Under a strategy, or with a scoring model on a GPU/TPU, selection runs in the train step.
    if strategy is not None or selector.models_location() == "accelerator":
      selector = tfjest.attach(learner, selector, replica_selection=config.replica_selection)
  log(f"selection: {config.name} keeps {config.batch_size} of {selector.super_batch_size} per "
      f"step, in the {selector.placement}")
  stream = task.stream(config.seed, clean_only=config.oracle_clean)
  if before_selection is not None:
    stream = stream.apply(before_selection)
  counter = None
  if selector.placement == "pipeline":
    counter = data.CorruptionCounter()
    stream = stream.apply(selector)
    if prior_targets is not None:
      stream = stream.apply(prior_targets.join(task.id_key))
    stream = stream.map(data.strip_meta(counter))
    if config.train_resolutions:
      stream = stream.apply(tfjest.multi_resolution(list(config.train_resolutions)))
  else:
    stream = stream.map(lambda inputs, meta: inputs).apply(selector)
  if config.deterministic:
    stream = stream.with_options(tfjest.deterministic_options())

  cost = selector.step_cost()._asdict()
  if config.train_resolutions:
    cost["training"] = _mixed_training_flops(learner, task, config)
  flops = {**cost, "total": sum(cost.values())}
  curve = {"steps": [], "flops": [], "corrupted_share": []}
  start = time.time()

  def record(step):
    metrics = task.evaluate(learner)
    share = counter.result()["corrupted_share"] if step and counter is not None else None
    curve["steps"].append(step)
    curve["flops"].append(step * flops["total"])
    for key, value in metrics.items():
      curve.setdefault(key, []).append(value)
    curve["corrupted_share"].append(share)
    log(f"{config.name} f={config.filter_ratio} seed={config.seed} step {step}: " +
        " ".join(f"{k} {v:.3f}" for k, v in metrics.items()) +
        ("" if share is None else f" corrupted {share:.2f}") +
        f" ({time.time() - start:.0f} s)")

  record(0)
  callbacks = [_Evaluate(record, config.eval_every)]
  stats_callback = None
  if tensorboard_dir:
    vocab = getattr(getattr(getattr(task, "world", None), "tokenizer", None), "vocab", None)
    stats_callback = tfjest.SelectionStatsCallback(
        selector, log_dir=tensorboard_dir, every_n_steps=summary_every,
        vocabulary=None if vocab is None else ["" if w == "[PAD]" else w for w in vocab])
    callbacks.append(stats_callback)
  if config.backup_dir:
    callbacks.append(tfjest.backup_and_restore(config.backup_dir, strategy))
  trained = learner
  if prior_targets is not None:
    trained = tfjest.ReLAAid(learner, features=config.rela_features, switch=config.rela_switch,
                             total_steps=config.steps)
    trained.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
  trained.fit(stream, steps_per_epoch=config.eval_every,
              epochs=config.steps // config.eval_every, verbose=0, shuffle=False,
              callbacks=callbacks)
  shares = counter.result() if counter is not None else {}
  reads_per_step = (config.batch_size if config.method == "uniform"
                    else selector.super_batch_size)
  result = {
      **dataclasses.asdict(config), "method": "oracle_clean" if config.oracle_clean else
      config.method, "score": config.score if config.method != "uniform" else None,
      "task": getattr(task, "config_name", task.name),
      "reference_cached": use_cache,
      "proxy": None if proxy is None else {"filters": list(config.proxy_filters),
                                           "width": config.proxy_width},
      **curve,
      "corruption_shares": {k: v for k, v in shares.items()
                            if k not in ("corrupted_share", "selected")},
      "flops_per_step": flops,
      # Examples a step reads (`tfjest.efficiency`'s convention): N for a selecting method, b for
      # uniform, whose draw of b of every N of a shuffled stream is a uniform sample of b (a
      # uniform baseline without tfjest reads b per step).
      "super_batch_size": reads_per_step,
      "dataset_size": task.training_examples,
      "examples_read": config.steps * reads_per_step,
      "selection_stats": {k: float(v) for k, v in selector.stats.result().items()},
      "wall_seconds": time.time() - start,
  }
  sample = stats_callback.selector.summaries.sample() if stats_callback is not None else None
  if sample is not None:
    result["selection_sample"] = {"step": sample["step"],
                                  "candidates": stats_callback.pictures.candidates(sample)}
  if prior_targets is not None:
    result["rela"] = {"switch_step": int(trained.switch_step.numpy()),
                      "prior": prior_targets.metadata["source"]["name"],
                      "target_width": prior_targets.width}
  result.update(replicas=strategy.num_replicas_in_sync if strategy is not None else 1,
                identical_replica_weights=all(
                    testing.replicas_identical(m, strategy)
                    for m in (learner, reference) if m is not None),
                weights_digest=weights_digest(learner))
  return learner, result
