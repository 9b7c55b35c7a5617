"""One data-efficiency experiment: train a learner on the noisy `web` split through `tfjest.select`.

`run(method, score, filter_ratio, ...)` trains a `captions_world.DualEncoder` with plain `fit` on
the stream `web -> tfjest.select(...) -> fit`, with uniform selection going through the same
code path as the scored methods (`method="uniform"`), and returns its evaluation curve: steps,
cumulative FLOPs (JEST_SPEC section 7, counted by the selector: `Selector.step_cost()`),
zero-shot accuracy and recall@1 on `test`, and the share of corrupted examples among those
selected. `train_reference` trains the frozen reference on `curated`; `cache_reference` runs it
once over `web` and saves its embeddings by example id (`tfjest.cache_reference`), so that the
runs given that cache never call the reference (the cheapest correct configuration: the same
selections, no reference FLOPs). Programs (`demo.py`, `train_reference.py`, the data-efficiency benchmark and the
distributed `train_learner.py`) call these functions; they hold no logic of their own.

```python
reference = experiment.train_reference(config="noise_0.5")
cache = experiment.cache_reference(reference, "/tmp/ref_cache", config="noise_0.5")
curve = experiment.run(method="jest", score="learnability", filter_ratio=0.8, batch_size=64,
                       steps=300, seed=0, noise=0.5, eval_every=25, reference=reference,
                       reference_cache=cache)
curve["steps"], curve["accuracy"], curve["flops"], curve["corrupted_share"]
```
"""

import functools
import os
import time
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Union

import keras

import tfjest
from examples import captions_world
from tfjest import datasets

METHODS = ("uniform", "independent", "jest")
SCORES = ("learnability", "hard_learner", "easy_reference")
# Scores that read the learner / the reference (tfjest's own table, JEST_SPEC section 3).
_READS_LEARNER = {"learnability": True, "hard_learner": True, "easy_reference": False}
_READS_REFERENCE = {"learnability": True, "hard_learner": False, "easy_reference": True}


def reads_learner(method: str, score: Optional[str]) -> bool:
  """Whether a configuration scores with the learner (so a proxy could score instead)."""
  return method in ("independent", "jest") and _READS_LEARNER[score]

# Defaults shared by the programs; sized for 2 CPU cores (see BENCHMARKS.md).
LEARNING_RATE = 1e-3
REFERENCE_EPOCHS = 100
REFERENCE_BATCH_SIZE = 64
REFERENCE_LEARNING_RATE = 3e-3
WIDTH = 64


# ---------------------------------------------------------------------------------------------
# Data and models.


class World(NamedTuple):
  """A config's data, decoded once: tokenizer and in-memory splits."""

  config: Union[str, datasets.SyntheticCaptionsConfig]
  tokenizer: datasets.CaptionTokenizer
  curated: captions_world.Split
  web: captions_world.Split
  test: captions_world.Split


@functools.lru_cache(maxsize=2)
def load_world(config: Union[str, datasets.SyntheticCaptionsConfig] = "noise_0.5",
               data_dir: Optional[str] = None) -> World:
  """Builds the dataset and vocabulary if needed and reads every split into memory (cached)."""
  tokenizer = captions_world.tokenizer_for(config, data_dir)
  splits = {split: captions_world.load_split(split, tokenizer=tokenizer, config=config,
                                             data_dir=data_dir)
            for split in ("curated", "web", "test")}
  return World(config=config, tokenizer=tokenizer, **splits)


def config_for(noise: float, config=None, sizes: Optional[Sequence] = None):
  """The registered config of a noise level, or `config` when given.

  `sizes` (`web, curated, test` example counts, e.g. the programs' `--sizes` flag) makes a
  custom config of that noise level instead (`datasets.make_config`; small ones for tests).
  """
  if config is not None:
    return config
  if sizes:
    web, curated, test = (int(size) for size in sizes)
    return datasets.make_config(noise=noise, web_size=web, curated_size=curated,
                                test_size=test)
  name = f"noise_{float(noise)!r}"
  if float(noise) not in datasets.NOISE_LEVELS:
    raise ValueError(f"No registered config for this noise level; expected one of "
                     f"{datasets.NOISE_LEVELS} or pass config=datasets.make_config(...). "
                     f"Received: noise={noise!r}")
  return name


def train_reference(*, config="noise_0.5", data_dir: Optional[str] = None,
                    epochs: int = REFERENCE_EPOCHS, batch_size: int = REFERENCE_BATCH_SIZE,
                    learning_rate: float = REFERENCE_LEARNING_RATE, seed: int = 0,
                    width: int = WIDTH, log: Callable[[str], None] = lambda s: None
                    ) -> captions_world.DualEncoder:
  """Trains the reference dual encoder on the clean `curated` split; returns it frozen.

  The curated split does not depend on the noise level (only `web` does), so one reference
  serves every noise level of a seed.
  """
  world = load_world(config, data_dir)
  keras.utils.set_random_seed(seed)
  model = captions_world.DualEncoder(world.tokenizer.vocab_size, width=width, name="reference")
  model.compile(optimizer=keras.optimizers.Adam(learning_rate))
  steps = len(world.curated) // batch_size
  data = (captions_world.stream(world.curated, seed=seed).batch(batch_size, drop_remainder=True)
          .map(captions_world.strip_meta()).prefetch(2))
  start = time.time()
  model.fit(data, steps_per_epoch=steps, epochs=epochs, verbose=0, shuffle=False)
  model.trainable = False
  log(f"reference: {epochs} epochs of {steps} steps on curated in {time.time() - start:.0f} s")
  return model


def save_reference(model: captions_world.DualEncoder, path: str) -> None:
  """Saves a reference as a `.keras` file, without optimizer state (it is frozen).

  The `.keras` format saves the optimizer of a compiled model whatever `include_optimizer`
  says, so an uncompiled copy with the same weights is saved instead.
  """
  copy = type(model).from_config(model.get_config())
  copy.build_from_config(copy.get_build_config())
  copy.set_weights(model.get_weights())
  copy.trainable = False
  copy.save(path)


def load_reference(path: str) -> captions_world.DualEncoder:
  """A reference saved by `train_reference.py` (a `.keras` file), frozen."""
  model = keras.saving.load_model(path)
  model.trainable = False
  return model


# The stream's elements are `(inputs, meta)`; the example id travels in `meta`.
ID_KEY = "id"


def cache_reference(reference: keras.Model, path: str, *, config="noise_0.5",
                    data_dir: Optional[str] = None,
                    log: Callable[[str], None] = lambda s: None) -> tfjest.ReferenceCache:
  """The reference's embeddings of every `web` example, by id, in a cache at `path`.

  Reuses the cache already at `path` when it was computed with these reference weights (else
  computes it again, replacing it): `tfjest.cache_reference` over the `web` stream's elements,
  exactly as `run` streams them. `tfjest.select` checks the cache against the reference and
  every super-batch's ids and inputs against the cache, so a stale cache stops a run with an
  error instead of being used.
  """
  world = load_world(config, data_dir)
  if os.path.exists(os.path.join(path, "metadata.json")):
    cache = tfjest.ReferenceCache.load(path)
    try:
      cache.check_reference(reference)
    except ValueError as e:
      log(f"reference cache: recomputing ({str(e).split(':')[0]})")
    else:
      if cache.num_examples == len(world.web):
        log(f"reference cache: reusing {path} ({cache.num_examples} examples)")
        return cache
  start = time.time()
  cache = tfjest.cache_reference(
      reference, captions_world.stream(world.web, seed=0, repeat=False), path, id_key=ID_KEY,
      batch_size=1024, overwrite=True)
  log(f"reference cache: embeddings of {cache.num_examples} web examples in "
      f"{time.time() - start:.0f} s ({path})")
  return cache


# ---------------------------------------------------------------------------------------------
# The experiment.


class _Evaluator(keras.callbacks.Callback):
  """Evaluates on `test` every `eval_every` steps (each fit epoch is `eval_every` steps)."""

  def __init__(self, record):
    super().__init__()
    self._record = record

  def on_epoch_end(self, epoch, logs=None):
    del logs
    self._record((epoch + 1))


def run(method: str = "jest", score: str = "learnability", filter_ratio: float = 0.8,
        batch_size: int = 64, steps: int = 300, seed: int = 0, noise: float = 0.5,
        eval_every: int = 25, *, config=None, data_dir: Optional[str] = None,
        reference: Optional[Union[keras.Model, str]] = None,
        reference_cache: Optional[Union[tfjest.ReferenceCache, str]] = None,
        num_chunks: int = 16,
        temperature: float = 1.0, first_chunk: str = "uniform", normalization: str = "none",
        learning_rate: float = LEARNING_RATE, width: int = WIDTH,
        proxy_filters: Optional[Sequence[int]] = None, proxy_width: int = 16,
        deterministic: bool = True,
        oracle_clean: bool = False, log: Callable[[str], None] = lambda s: None) -> Dict:
  """Trains a learner on `web` through `tfjest.select` and returns its evaluation curve.

  The learner (a fresh `DualEncoder`, initialised from `seed`) trains with `fit` on
  `stream(web) -> select -> strip meta`, `steps` steps of `batch_size` examples, and is
  evaluated (`captions_world.evaluate` on `test`) before training and every `eval_every` steps.
  Uniform selection goes through `tfjest.select(method="uniform")`, the same code path.

  Args:
    method: "uniform", "independent" or "jest".
    score: "learnability", "hard_learner" or "easy_reference" (ignored by "uniform").
    filter_ratio: `f`; each step reads `N = b / (1 - f)` candidates (uniform too).
    batch_size: `b`, examples per training step.
    steps: training steps; a multiple of `eval_every`.
    seed: seeds the learner's initialisation, the stream's shuffle and the selection noise.
    noise: the web noise level (a registered config `noise_<level>`), unless `config` is given.
    eval_every: steps between evaluations.
    config: a `tfjest.datasets` config (name or `make_config(...)`) overriding `noise`.
    data_dir: TFDS data directory (TFDS' default when None).
    reference: the frozen reference (a model or a `.keras` path). When None and the score
      needs one, one is trained on `curated` first (`train_reference`, seed 0).
    reference_cache: the reference's outputs on `web` (`cache_reference`; a `ReferenceCache`
      or its path). When given and the score reads the reference, the selection reads the
      cache instead of calling the reference (same selections, no reference scoring FLOPs);
      `reference`, when given too, must be the model the cache was computed with.
    num_chunks, temperature, first_chunk, normalization: passed to `tfjest.select`.
    learning_rate: Adam learning rate of the learner.
    width: embedding width of the learner.
    proxy_filters: when given, a small `DualEncoder` with these convolution widths and
      `proxy_width` scores for the learner (`tfjest.OnlineProxy`, Adam at `learning_rate`,
      trained by tfjest on every emitted batch; Bad Students): learner scoring then costs the
      proxy's forward pass on `N` plus its training step on `b`.
    proxy_width: the proxy's embedding width.
    deterministic: apply `tfjest.deterministic_options()` (scores read exactly one step after
      the previous one; reproducible, slightly slower).
    oracle_clean: an analysis baseline, not a selection method: with `method="uniform"`, draw
      only from the web examples whose `corruption` is "none" (this reads the flags the
      methods may not read): the curve of a perfect noise filter.
    log: called with one line per evaluation.

  Returns:
    A dict of the settings and the curves, lists with one entry per evaluation: `steps`
    (0, eval_every, ..., steps), `flops` (cumulative, `steps * flops_per_step["total"]`),
    `accuracy` (zero-shot), `recall_at_1`, `corrupted_share` (share of corrupted examples among
    all selected so far; None at step 0); and `corruption_shares` (final share of each
    corruption type among selected examples), `flops_per_step` (`selector.step_cost()` by
    part: training, learner_scoring, reference_scoring, proxy_training, selection, total),
    `selection_stats` (`selector.stats.result()`) and `wall_seconds`.

  Raises:
    ValueError: if `method`, `score`, `steps` or `eval_every` are invalid (and whatever
      `tfjest.select` raises for its arguments).
  """
  if method not in METHODS:
    raise ValueError(f"Unknown method. Expected one of {METHODS}. Received: method={method!r}")
  if score not in SCORES:
    raise ValueError(f"Unknown score. Expected one of {SCORES}. Received: score={score!r}")
  if not isinstance(eval_every, int) or eval_every < 1:
    raise ValueError(f"eval_every must be a positive integer. Received: eval_every={eval_every!r}")
  if not isinstance(steps, int) or steps < eval_every or steps % eval_every:
    raise ValueError(f"steps must be a positive multiple of eval_every={eval_every}. "
                     f"Received: steps={steps!r}")
  if proxy_filters and not reads_learner(method, score):
    raise ValueError(f"A proxy scores for the learner; {method!r} selection with the {score!r} "
                     f"score does not read the learner. Received: proxy_filters="
                     f"{proxy_filters!r}, method={method!r}, score={score!r}")
  if oracle_clean and method != "uniform":
    raise ValueError("oracle_clean is a uniform baseline over the clean web examples. "
                     f"Received: oracle_clean=True, method={method!r}")
  config = config_for(noise, config)
  world = load_world(config, data_dir)
  web = world.web.take(world.web.corruption == 0) if oracle_clean else world.web
  needs_reference = method != "uniform" and _READS_REFERENCE[score]
  if isinstance(reference, str):
    reference = load_reference(reference)
  if isinstance(reference_cache, str):
    reference_cache = tfjest.ReferenceCache.load(reference_cache)
  use_cache = needs_reference and reference_cache is not None
  if needs_reference and reference is None and not use_cache:
    reference = train_reference(config=config, data_dir=data_dir, log=log)

  keras.utils.set_random_seed(seed)
  learner = captions_world.DualEncoder(world.tokenizer.vocab_size, width=width, name="learner")
  learner.compile(optimizer=keras.optimizers.Adam(learning_rate))
  learner(captions_world.example_inputs(1))
  proxy = None
  if proxy_filters:
    small = captions_world.DualEncoder(world.tokenizer.vocab_size, width=proxy_width,
                                       filters=proxy_filters, name="proxy")
    small(captions_world.example_inputs(1))
    proxy = tfjest.OnlineProxy(small, optimizer=keras.optimizers.Adam(learning_rate))
  selector = tfjest.select(
      learner=learner, reference=reference if needs_reference else None,
      reference_cache=reference_cache if use_cache else None,
      id_key=ID_KEY if use_cache else None, batch_size=batch_size, filter_ratio=filter_ratio,
      method=method, score=score, num_chunks=num_chunks, temperature=temperature, seed=seed,
      first_chunk=first_chunk, normalization=normalization, proxy=proxy)
  counter = captions_world.CorruptionCounter()
  data = (captions_world.stream(web, seed=seed).apply(selector)
          .map(captions_world.strip_meta(counter)))
  if deterministic:
    data = data.with_options(tfjest.deterministic_options())

  cost = selector.step_cost()
  flops = {**cost._asdict(), "total": cost.total}
  curve = {key: [] for key in ("steps", "flops", "accuracy", "recall_at_1", "corrupted_share")}
  start = time.time()

  def record(epoch):
    step = epoch * eval_every
    metrics = captions_world.evaluate(learner, world.test, world.tokenizer)
    share = counter.result()["corrupted_share"] if step else None
    curve["steps"].append(step)
    curve["flops"].append(step * flops["total"])
    curve["accuracy"].append(metrics["accuracy"])
    curve["recall_at_1"].append(metrics["recall_at_1"])
    curve["corrupted_share"].append(share)
    name = method if method == "uniform" else f"{method}/{score}"
    log(f"{name} f={filter_ratio} seed={seed} step {step}: "
        f"accuracy {metrics['accuracy']:.3f} recall@1 {metrics['recall_at_1']:.3f}" +
        ("" if share is None else f" corrupted {share:.2f}") +
        f" ({time.time() - start:.0f} s)")

  record(0)
  learner.fit(data, steps_per_epoch=eval_every, epochs=steps // eval_every, verbose=0,
              shuffle=False, callbacks=[_Evaluator(record)])
  final = counter.result()
  return {
      "method": "oracle_clean" if oracle_clean else method,
      "score": score if method != "uniform" else None,
      "filter_ratio": filter_ratio, "batch_size": batch_size, "seed": seed,
      "noise": None if not isinstance(config, str) else noise,
      "config": config if isinstance(config, str) else config.name,
      "num_chunks": num_chunks, "temperature": temperature, "learning_rate": learning_rate,
      "reference_cached": use_cache,
      "proxy": None if proxy is None else {"filters": list(proxy.model.filters),
                                           "width": proxy_width},
      **curve,
      "corruption_shares": {name: final[name] for name in datasets.CORRUPTIONS},
      "flops_per_step": flops,
      "selection_stats": {k: float(v) for k, v in selector.stats.result().items()},
      "wall_seconds": time.time() - start,
  }
