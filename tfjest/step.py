"""The selection step: score -> rule -> gather -> statistics -> proxy training, written once.

Both placements call `SelectionStep`: the `tf.data` map of `tfjest.select` (one super-batch of
`N`, on the host) and the replicated train step of `tfjest.attach` (each replica's shard of
`N / R`). What differs between them is only how values cross replicas, which the caller passes
in as a `Collective`: in the pipeline every collective is the identity; in a replicated step it
all-reduces, all-gathers and records once through the replica context (`tfjest/distribute/replica.py`). So a
selection, its statistics and the proxy's training cannot drift apart between the placements
(the parity test in tests/step_test.py holds them together).

Candidates that are padding (a final partial super-batch with `remainder="keep"`) or whose
`sample_weight` is 0 are invalid: selection takes them only when nothing else is left, and they
do not enter the statistics' means. Candidates with a NaN or infinite score are taken last too,
counted as `non_finite` and kept out of the means and `s(B)`.
"""

import sys
from typing import Dict, Optional

import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

from tfjest import adapters
from tfjest import losses
from tfjest import scores as scores_lib
from tfjest import stats as stats_lib


class Collective:
  """How a step's values cross replicas: here, one replica (the pipeline, no strategy).

  A replicated step passes a subclass whose methods all-reduce and all-gather over the replicas
  and record the statistics once (see `replica.ReplicaCollective`).
  """

  num_replicas = 1
  replica_id = 0
  global_selection = False

  def reduce_sum(self, value: tf.Tensor) -> tf.Tensor:
    return value

  def all_gather(self, value: tf.Tensor) -> tf.Tensor:
    return value

  def record(self, stats: stats_lib.SelectionStats, values: Dict[str, tf.Tensor], proxy=None):
    """Adds one step to `stats` (and counts a proxy training step), once over the replicas."""
    ops = [stats.record_batch(values)]
    if proxy is not None:
      ops.append(proxy.steps.assign_add(1))
    return tf.group(ops)

  def count_proxy_step(self, proxy):
    """Counts one training step of an online proxy, once over the replicas."""
    return proxy.steps.assign_add(1)

  def record_local(self, fn, values: Dict[str, tf.Tensor]):
    """Calls `fn(values)` once, on the host, with the replicas' values concatenated."""
    return fn(values)


LOCAL = Collective()


class SelectionStep:
  """Selects `b` of `N` candidates (or a replica's `b / R` of `N / R`), records, trains a proxy.

  Args:
    rule: the `selection.Rule`.
    scorer: a prepared `scoring.Scorer`, or None for uniform selection.
    stats: the `SelectionStats` to record into.
    batch_size: `b` (global).
    super_batch_size: `N` (global).
    jit_compile: run the selection maths in an inner `tf.function(jit_compile=True)`.
    summaries: an optional `summaries.SelectionSummaries` that observes each selection.
  """

  def __init__(self, rule, scorer, stats: stats_lib.SelectionStats, *, batch_size: int,
               super_batch_size: int, jit_compile: bool = False, summaries=None):
    self.rule = rule
    self.summaries = summaries  # a `summaries.SelectionSummaries`, or None
    self.scorer = scorer
    self.stats = stats
    self.batch_size = batch_size
    self.super_batch_size = super_batch_size
    self.jit_compile = jit_compile
    setup = scorer.setup if scorer is not None else None
    self.proxy = setup.proxy if setup is not None else None
    self.scoring_view = setup.scoring_view if setup is not None else None
    self._choose_jit = tf.function(self._choose_from_parts, jit_compile=True,
                                   reduce_retracing=False, autograph=False)

  def __call__(self, super_batch, step, *, collective: Collective = LOCAL, valid=None,
               keep=None, record: bool = True, joined=None):
    """The selected examples of `super_batch`, in its order (graph-safe).

    Args:
      super_batch: `N / R` stacked elements (this replica's shard; `R = 1` in the pipeline).
      step: int scalar step index; with the rule's seed and the replica id it keys the noise.
      collective: how values cross replicas (`LOCAL` in the pipeline).
      valid: optional `[N / R]` bool, False for padding.
      keep: how many of the `b / R` picks to emit (a final partial super-batch keeps fewer);
        default all.
      record: add the step to the statistics (off where the host cannot be reached).
      joined: cached reference values joined by the pipeline (see `scoring.Scorer.outputs`).
    """
    replicas = collective.num_replicas
    n, b = self.super_batch_size // replicas, self.batch_size // replicas
    key = tf.cast(step, tf.int64) * replicas + tf.cast(collective.replica_id, tf.int64)
    real = tf.ones([n], tf.bool) if valid is None else tf.cast(valid, tf.bool)
    _, _, sample_weight = adapters.unpack(super_batch)
    usable = real & _nonzero_weight(sample_weight, n)

    scored = self.scorer(super_batch, joined) if self.scorer is not None else None
    if scored is None:
      finite = tf.ones([n], tf.bool)
    else:
      finite = tf.math.is_finite(scored.scores.diagonal())
    picks = self._choose(scored, key, usable, n, b, collective)
    kept = picks if keep is None else picks[:keep]
    chosen_idx = tf.sort(kept)  # keep the stream's order inside the batch
    # Stored reference values (features of the elements) never reach `fit` nor the summaries.
    plain = self.scorer.strip(super_batch) if self.scorer is not None else super_batch
    batch = tf.nest.map_structure(lambda t: tf.gather(t, chosen_idx), plain)

    updates = []
    if record:
      chosen = tf.scatter_nd(kept[:, None], tf.ones_like(kept, tf.bool), [n])
    if record and self.summaries is not None:  # what TensorBoard shows (tfjest/summaries.py)
      updates.append(self.summaries.observe(plain, step, scored=scored, chosen=chosen,
                                            n=n, usable=usable & finite, real=real,
                                            collective=collective))
    if record:
      values = stats_lib.batch_statistics(
          read=tf.reduce_sum(tf.cast(real, tf.int32)), selected=tf.size(kept), chosen=chosen,
          usable=usable & finite, finite=finite, real=real,
          losses=scored.losses if scored is not None else {},
          batch_score=(None if scored is None else
                       _batch_score(scored.scores, kept, finite, collective)),
          reduce_sum=collective.reduce_sum)
      updates.append(_warn_if(
          (values["non_finite"] > 0) & tf.equal(values["non_finite"], values["read"]),
          "tfjest.select: every candidate of a super-batch had a NaN or infinite score (a "
          "diverged model?); it was selected uniformly (counted in stats as non_finite; "
          "shown once). Step:", step, warned=self.stats.warned("non_finite")))
    if self.proxy is not None:
      # The proxy learns from the batch it helped choose, at the view it scores with; the
      # next super-batch is scored with the updated weights.
      x, y, weights = adapters.unpack(batch)
      view = x if self.scoring_view is None else self.scoring_view(x)
      updates.append(self.proxy.train_step(view, y, weights, replicas=replicas, count=False))
    with tf.control_dependencies(updates):  # counted after the proxy's update
      if record:
        updates.append(collective.record(self.stats, values, self.proxy))
      elif self.proxy is not None:
        updates.append(collective.count_proxy_step(self.proxy))
    with tf.control_dependencies(updates):
      return tf.nest.map_structure(tf.identity, batch)

  def _choose(self, scored, key, usable, n: int, b: int, collective: Collective):
    scores = scored.scores if scored is not None else None
    if (collective.global_selection and self.rule.method == "jest" and
        isinstance(scores, scores_lib.PairwiseScores)):
      from tfjest import global_scores  # pylint: disable=g-import-not-at-top
      scores = global_scores.GlobalScores(scores, collective.all_gather, collective.replica_id)
      return self.rule.choose(scores, b, step=key, num_candidates=n, valid=usable,
                              set_size_per_chunk=self.batch_size // self.rule.num_chunks)
    if self.jit_compile:  # the score object crosses the XLA function as its tensors
      return self._choose_jit(score_parts(scores), key, usable, n, b)
    return self.rule.choose(scores, b, step=key, num_candidates=n, valid=usable)

  def _choose_from_parts(self, parts, key, usable, n: int, b: int):
    return self.rule.choose(scores_from_parts(self.rule_score, parts), b, step=key,
                            num_candidates=n, valid=usable)

  @property
  def rule_score(self) -> Optional[str]:
    return self.scorer.setup.score if self.scorer is not None else None


def _nonzero_weight(sample_weight, n: int) -> tf.Tensor:
  """`[n]` bool: False where an example's sample weight is 0 (all True without weights)."""
  if sample_weight is None:
    return tf.ones([n], tf.bool)
  weights = tf.reshape(tf.convert_to_tensor(sample_weight), [n, -1])
  return tf.reduce_any(tf.not_equal(weights, 0), axis=1)


def score_parts(scores) -> Dict[str, tf.Tensor]:
  """The tensors of a score object, so that it can cross a `tf.function` boundary."""
  if scores is None:
    return {}
  if isinstance(scores, scores_lib.DiagonalScores):
    return {"values": scores.values}
  parts = {}
  for role, emb in (("learner", scores.learner), ("reference", scores.reference)):
    if emb is not None:
      parts.update({f"{role}_image": emb.image, f"{role}_text": emb.text,
                    f"{role}_scale": emb.logit_scale, f"{role}_bias": emb.logit_bias})
  return parts


def scores_from_parts(score: Optional[str], parts: Dict[str, tf.Tensor]):
  """Inverse of `score_parts` (None for no parts: uniform selection)."""
  if not parts:
    return None
  if "values" in parts:
    return scores_lib.DiagonalScores(parts["values"])
  emb = {role: losses.Embeddings(parts[f"{role}_image"], parts[f"{role}_text"],
                                 parts[f"{role}_scale"], parts[f"{role}_bias"])
         for role in ("learner", "reference") if f"{role}_image" in parts}
  return scores_lib.PairwiseScores(score, emb.get("learner"), emb.get("reference"))


def _batch_score(scores, kept, finite, collective: Collective) -> tf.Tensor:
  """`s(B)` of the emitted batch (over every replica's picks), non-finite entries left out."""
  if isinstance(scores, scores_lib.DiagonalScores):
    values = tf.gather(scores.values, kept)
    local = tf.reduce_sum(tf.where(tf.gather(finite, kept), values, tf.zeros_like(values)))
    return collective.reduce_sum(tf.cast(local, tf.float32))
  if collective.num_replicas > 1:
    # The batch's pairs cross replicas: gather the chosen examples' embeddings.
    parts = score_parts(scores)
    keys = sorted(k for k in parts if k.endswith(("_image", "_text")))
    local = tf.concat([tf.gather(parts[k], kept) for k in keys], axis=-1)
    gathered = tf.split(collective.all_gather(local), [parts[k].shape[-1] for k in keys],
                        axis=-1)
    scores = scores_from_parts(scores.score, dict(parts, **dict(zip(keys, gathered))))
    kept = None
  block = scores.block(kept, kept)
  return tf.cast(tf.reduce_sum(tf.where(tf.math.is_finite(block), block, 0.0)), tf.float32)


def _warn_if(condition, message, value, warned=None):
  """Prints `message value` to stderr when `condition` holds (graph-safe).

  With `warned` (a bool variable of the selector) it is printed the first time only: a
  diverged learner would otherwise print it for every super-batch. Inside a whole-step XLA
  compilation (Keras' `jit_compile`) nothing is printed: XLA has no print op. The condition
  still reaches the statistics (`non_finite == read`).
  """
  if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
    return tf.constant(False)

  def warn():
    with tf.control_dependencies([tf.print(message, value, output_stream=sys.stderr)]):
      if warned is None:
        return tf.constant(True)
      with tf.control_dependencies([warned.assign(True)]):
        return tf.constant(True)
  if warned is not None:
    condition = condition & tf.logical_not(warned.read_value())
  return tf.cond(condition, warn, lambda: tf.constant(False))
