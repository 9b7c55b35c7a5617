"""What selection did, recorded for pictures: a sampled super-batch, per-group rates, fidelity.

The selection step (`tfjest/step.py`, both placements) hands every super-batch to
`SelectionSummaries.observe`, which keeps in host-side `tf.Variable`s:

- per-group counts, every step: `group_key=` names a scalar feature (string or integer: a
  source, a domain, a label, a corruption tag); each value is hashed into one of `GROUP_BUCKETS`
  buckets, whose examples read and selected are counted (memory does not grow with the number
  of values; values that share a bucket are counted together and shown under one of their
  names). `result()` reports the rate `selected / read` of the `max_groups` most read values,
  and of all the others together as "other".
- every `every` steps (a variable: 0, its initial value, records nothing; the
  `SelectionStatsCallback` sets it while it has somewhere to write, so turning it on needs no
  retrace), the sampled super-batch: every candidate's score, per-model losses, whether it was
  chosen, and the elements of its `NUM_SHOWN` highest- and lowest-scoring candidates (only
  those are copied, so an image super-batch is never kept whole).
- proxy fidelity, at the same steps, when an online proxy or a scoring view scores for the
  learner: the learner (at full resolution) scores the same super-batch; `overlap` is the share
  of the selected examples that the top of the learner's scores would also hold, and
  `rank_correlation` the Spearman correlation of the two per-example scores. These extra
  forward passes are counted as `flops_fidelity` (and in `flops_total`). Joint selection (JEST)
  is compared through per-example (diagonal) scores.

Under a strategy, each replica reduces its shard to these few values and the host records them
once, concatenated over the worker's replicas (`Collective.record_local`, a `merge_call`), as
the statistics are recorded (tested with `MirroredStrategy` on two logical CPUs; under several
workers each worker records its own replicas). A train step that Keras compiles whole with XLA
(its default "auto" on one GPU, with `tfjest.attach`) records no summaries: XLA cannot update
host variables. Nothing here changes what is selected.
"""

from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

from tfjest import adapters
from tfjest import cost as cost_lib
from tfjest import scores as scores_lib

NUM_SHOWN = 4  # highest- and lowest-scoring candidates kept of a sampled super-batch
GROUP_BUCKETS = 1024
# Below this rank correlation of the proxy's and the learner's per-example scores, one warning
# (`tfjest.tensorboard`): on the captions benchmark a 2/4/8 proxy that kept the learner's
# accuracy stayed at 0.75-0.80 over 5,000 steps (BENCHMARKS.md, "Proxy fidelity over training").
FIDELITY_THRESHOLD = 0.5


def flatten_with_paths(structure, prefix: str = "") -> List[Tuple[str, object]]:
  """`[(path, leaf)]` of a nest of dicts and tuples, paths joined with "/" (tuples by index)."""
  if isinstance(structure, dict):
    return [item for k in sorted(structure)
            for item in flatten_with_paths(structure[k], f"{prefix}{k}/")]
  if isinstance(structure, (tuple, list)):
    return [item for i, v in enumerate(structure)
            for item in flatten_with_paths(v, f"{prefix}{i}/")]
  return [(prefix.rstrip("/"), structure)]


class SelectionSummaries(tf.Module):
  """The recorder behind TensorBoard's pictures of selection (see the module docstring).

  Args:
    group_key: the feature whose values get per-group selection rates, or None.
    max_groups: how many of the most read values `result()` names (the rest are "other").
  """

  def __init__(self, *, group_key: Optional[str] = None, max_groups: int = 8):
    super().__init__(name="selection_summaries")
    self.group_key = group_key
    self.max_groups = max_groups
    with tf.init_scope(), tf.device("/cpu:0"):
      self.every = tf.Variable(0, dtype=tf.int64, trainable=False, name="every")
      self.sampled_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="sampled_step")
      self.samples = tf.Variable(0, dtype=tf.int64, trainable=False, name="samples")
      self.group_read = tf.Variable(tf.zeros([GROUP_BUCKETS], tf.int64), trainable=False)
      self.group_selected = tf.Variable(tf.zeros([GROUP_BUCKETS], tf.int64), trainable=False)
      # Only with a group key: a string variable cannot be broadcast by
      # MultiWorkerMirroredStrategy's collectives (so group_key is not for that strategy).
      self.group_names = (tf.Variable(tf.fill([GROUP_BUCKETS], ""), trainable=False)
                          if group_key is not None else None)
      self.fidelity_checks = tf.Variable(0, dtype=tf.int64, trainable=False)
      self.overlap = tf.Variable(np.nan, dtype=tf.float32, trainable=False)
      self.rank_correlation = tf.Variable(np.nan, dtype=tf.float32, trainable=False)
    self.buffers = None  # created by `prepare`, once the elements' structure is known
    self.shown = None
    self.element_spec = None
    self.fidelity_learner = None
    self._fidelity_loss_fn = None
    self._setup = None
    self.fidelity_flops = None

  # ---- set-up (eager) ----------------------------------------------------------------------

  def prepare(self, element_spec, *, setup, scorer, super_batch_size: int):
    """Creates the buffers for elements of `element_spec` (eagerly; once per structure)."""
    if self.element_spec == element_spec:
      return
    # Not a tracked attribute: tf.Module would wrap the spec's dicts in place (DictWrapper), and
    # the same dicts are the dataset's element_spec, which the rest of the pipeline walks.
    object.__setattr__(self, "element_spec", element_spec)
    self._setup = setup
    if self.group_key is not None:
      spec = adapters.find_feature(element_spec, self.group_key)
      if spec is None or spec.shape.rank != 0 or not (spec.dtype == tf.string or
                                                       spec.dtype.is_integer):
        raise ValueError(
            "group_key must name a scalar string or integer feature of the elements (in the "
            "element, its x or its y). Received: group_key="
            f"{self.group_key!r}, feature spec={spec}, element_spec={element_spec}")
    n = super_batch_size
    roles = tuple(scorer.roles) if scorer is not None else ()
    names = ("score",) + tuple(f"{r}_loss" for r in roles)
    learner = setup.learner
    self.fidelity_learner = None
    if (scorer is not None and "learner" in setup.models_read and learner is not None and
        (setup.proxy is not None or setup.scoring_view is not None)):
      self.fidelity_learner = learner
      x_spec, _, _ = adapters.unpack(element_spec)
      from tfjest import scoring  # pylint: disable=g-import-not-at-top
      adapters.build_and_probe(learner, x_spec, "learner")
      if scorer.task == "classification":
        self._fidelity_loss_fn = adapters.resolve_loss_fn(learner, setup.loss_fn, "learner")
      names += ("learner_score", "learner_full_loss")
      try:
        self.fidelity_flops = float(cost_lib.forward_flops(learner, x_spec)) * n
      except Exception:  # pylint: disable=broad-except
        self.fidelity_flops = None  # FLOPs are a report; see cost.selector_step_cost
    with tf.init_scope(), tf.device("/cpu:0"):
      self.buffers = {k: tf.Variable(tf.zeros([n], tf.float32), trainable=False, name=k)
                      for k in names}
      for k in ("chosen", "usable"):
        self.buffers[k] = tf.Variable(tf.zeros([n], tf.bool), trainable=False, name=k)
      self.shown = {"score": tf.Variable(tf.zeros([2 * NUM_SHOWN], tf.float32)),
                    "chosen": tf.Variable(tf.zeros([2 * NUM_SHOWN], tf.bool)),
                    "usable": tf.Variable(tf.zeros([2 * NUM_SHOWN], tf.bool))}
      self.shown_elements = [
          (path, tf.Variable(tf.zeros([2 * NUM_SHOWN] + s.shape.as_list(), s.dtype)
                             if s.dtype != tf.string else
                             tf.fill([2 * NUM_SHOWN] + s.shape.as_list(), ""),
                             trainable=False))
          for path, s in flatten_with_paths(element_spec)]

  def set_every(self, every: int):
    """Records a sampled super-batch every `every` steps (0: never)."""
    self.every.assign(int(every))

  # ---- in the step (graph) -----------------------------------------------------------------

  def observe(self, super_batch, step, *, scored, chosen, n: int, usable, real, collective):
    """Records one selection (graph-safe); returns the update op. Called by the step.

    Args:
      super_batch: the `n` candidates (this replica's shard).
      step: the step index that keys the noise.
      scored: the `scoring.Scored` super-batch (None for uniform selection).
      chosen: `[n]` bool, the candidates emitted (the step's mask, also its statistics').
      n: candidates in `super_batch`.
      usable, real: `[n]` bool, as the step computes them.
      collective: the step's `Collective`.
    """
    if self.buffers is None or control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph()):
      # A step that Keras compiles whole with XLA cannot update host variables or hash
      # strings: it records no summaries (its statistics go on the device; see stats.py).
      return tf.no_op()
    every = self.every
    sampled = (every > 0) & tf.equal(tf.math.floormod(tf.cast(step, tf.int64),
                                                      tf.maximum(every, 1)), 0)
    score = (tf.cast(scored.scores.diagonal(), tf.float32) if scored is not None
             else tf.zeros([n], tf.float32))
    local = {"sampled": sampled, "step": tf.cast(step, tf.int64), "chosen": chosen,
             "usable": usable, "score": score}
    if scored is not None:
      for role, loss in scored.losses.items():
        if f"{role}_loss" in self.buffers:
          local[f"{role}_loss"] = tf.cast(loss, tf.float32)
    if self.group_key is not None:
      value = adapters.find_feature(super_batch, self.group_key)
      names = value if value.dtype == tf.string else tf.strings.as_string(value)
      local["group_bucket"] = tf.strings.to_hash_bucket_fast(names, GROUP_BUCKETS)
      local["group_name"] = names
      local["real"] = real
    if self.fidelity_learner is not None:
      def learner_scores():
        return self._learner_scores(super_batch, scored)
      zeros = (tf.zeros([n], tf.float32), tf.zeros([n], tf.float32))
      local["learner_score"], local["learner_full_loss"] = tf.cond(
          sampled, learner_scores, lambda: zeros)
    # The highest and lowest of this shard: the host keeps the highest and lowest of those.
    idx = _extremes(score, usable, NUM_SHOWN)
    local["shown_score"] = tf.gather(score, idx)
    local["shown_chosen"] = tf.gather(chosen, idx)
    local["shown_usable"] = tf.gather(usable, idx)
    flat = [leaf for _, leaf in flatten_with_paths(super_batch)]
    for i, leaf in enumerate(flat):
      local[f"shown_element_{i}"] = tf.gather(leaf, idx)
    return collective.record_local(self._record, local)

  def _learner_scores(self, super_batch, scored):
    """The learner's own per-example scores and losses at full resolution (fidelity)."""
    setup = self._setup
    x, y, _ = adapters.unpack(super_batch)
    learner = self.fidelity_learner
    if isinstance(scored.scores, scores_lib.PairwiseScores):
      emb = adapters.contrastive_embeddings(learner, x, setup.embedding_keys, "learner")
      full = scores_lib.PairwiseScores(setup.score, emb, scored.scores.reference)
      loss = full.role_diagonals()["learner"]
      score = full.diagonal()
    else:
      loss = adapters.classification_losses(learner, x, y, self._fidelity_loss_fn, "learner")
      score = scores_lib.combine(setup.score, loss, scored.losses.get("reference", 0.0))
    return tf.cast(score, tf.float32), tf.cast(loss, tf.float32)

  def _record(self, local: Dict[str, tf.Tensor]):
    """Host side: `local` holds the worker's replicas' values, concatenated."""
    ops = []
    if "group_bucket" in local:
      real = local["real"]
      buckets = tf.boolean_mask(local["group_bucket"], real)
      picked = tf.cast(tf.boolean_mask(local["chosen"], real), tf.int64)
      ops.append(self.group_read.scatter_add(tf.IndexedSlices(
          tf.ones_like(buckets), buckets)))
      ops.append(self.group_selected.scatter_add(tf.IndexedSlices(picked, buckets)))
      ops.append(self.group_names.scatter_update(tf.IndexedSlices(
          tf.boolean_mask(local["group_name"], real), buckets)))

    def sample():
      updates = [self.sampled_step.assign(local["step"]), self.samples.assign_add(1)]
      for k, v in self.buffers.items():
        updates.append(v.assign(local[k]))
      idx = _extremes(local["shown_score"], local["shown_usable"], NUM_SHOWN)
      for k, v in self.shown.items():
        updates.append(v.assign(tf.gather(local[f"shown_{k}"], idx)))
      for i, (_, v) in enumerate(self.shown_elements):
        updates.append(v.assign(tf.gather(local[f"shown_element_{i}"], idx)))
      if self.fidelity_learner is not None:
        overlap, corr = fidelity(local["score"], local["learner_score"], local["chosen"],
                                 local["usable"])
        updates += [self.overlap.assign(overlap), self.rank_correlation.assign(corr),
                    self.fidelity_checks.assign_add(1)]
      with tf.control_dependencies(updates):
        return tf.constant(True)

    if any(local[k].shape[0] != v.shape[0] for k, v in self.buffers.items()):
      # Several workers: this one holds only its own replicas' share of the super-batch, so
      # no picture is sampled (the per-group counts above are still this worker's).
      return tf.group(ops)
    ops.append(tf.cond(local["sampled"], sample, lambda: tf.constant(False)))
    return tf.group(ops)

  # ---- readings (eager) --------------------------------------------------------------------

  def reset(self):
    for v in (self.group_read, self.group_selected, self.fidelity_checks, self.samples):
      v.assign(tf.zeros_like(v))
    self.overlap.assign(np.nan)
    self.rank_correlation.assign(np.nan)

  def group_rates(self) -> Dict[str, Tuple[int, int]]:
    """`{value: (read, selected)}` of the `max_groups` most read values and "other"."""
    if self.group_names is None:
      return {}
    read, selected = self.group_read.numpy(), self.group_selected.numpy()
    names = [n.decode("utf-8", "replace") for n in self.group_names.numpy()]
    seen = np.flatnonzero(read > 0)
    order = seen[np.argsort(-read[seen], kind="stable")]
    out = {names[i]: (int(read[i]), int(selected[i])) for i in order[:self.max_groups]}
    rest = order[self.max_groups:]
    if rest.size:
      out["other"] = (int(read[rest].sum()), int(selected[rest].sum()))
    return out

  def result(self, unit_costs=None) -> Dict[str, float]:
    """Per-group rates (`group_rate/<value>`), fidelity and `flops_fidelity`, when recorded."""
    out = {}
    if self.group_key is not None:
      for name, (read, selected) in self.group_rates().items():
        out[f"group_rate/{name}"] = selected / read
    if self.fidelity_learner is not None and int(self.fidelity_checks.numpy()) > 0:
      out["fidelity_overlap"] = float(self.overlap.numpy())
      out["fidelity_rank_correlation"] = float(self.rank_correlation.numpy())
      if self.fidelity_flops is not None and unit_costs:
        out["flops_fidelity"] = self.fidelity_flops * int(self.fidelity_checks.numpy())
    return out

  def sample(self) -> Optional[dict]:
    """The last sampled super-batch as NumPy values, or None before the first sample."""
    step = int(self.sampled_step.numpy())
    if step < 0 or self.buffers is None:
      return None
    return {"step": step,
            "buffers": {k: v.numpy() for k, v in self.buffers.items()},
            "shown": {k: v.numpy() for k, v in self.shown.items()},
            "elements": [(path, v.numpy()) for path, v in self.shown_elements]}


def _extremes(score, usable, k: int) -> tf.Tensor:
  """Indices of the `k` highest then the `k` lowest usable scores (usable ones first)."""
  n = score.shape[0]
  k = min(k, n)
  inf = tf.constant(np.inf, tf.float32)
  finite = usable & tf.math.is_finite(score)
  high = tf.math.top_k(tf.where(finite, score, -inf), k).indices
  low = tf.math.top_k(tf.where(finite, -score, -inf), k).indices
  return tf.concat([high, low], 0)


def fidelity(proxy_score, learner_score, chosen, usable) -> Tuple[tf.Tensor, tf.Tensor]:
  """`(overlap, rank_correlation)` of a proxy's selection against the learner's scores.

  `overlap`: of the usable chosen examples, the share that are among the same number of
  usable examples with the highest learner scores. `rank_correlation`: Spearman's rho of the
  two scores over the usable examples (ties broken by position).
  """
  picks = chosen & usable
  count = tf.reduce_sum(tf.cast(picks, tf.int32))
  masked = tf.where(usable, learner_score, -np.inf)
  order = tf.argsort(masked, direction="DESCENDING")
  top = tf.scatter_nd(order[:, None], tf.range(tf.size(order)) < count, tf.shape(masked))
  overlap = tf.math.divide_no_nan(tf.reduce_sum(tf.cast(top & picks, tf.float32)),
                                  tf.cast(count, tf.float32))

  def ranks(v):
    v = tf.boolean_mask(v, usable)
    return tf.cast(tf.argsort(tf.argsort(v)), tf.float32)

  a, b = ranks(proxy_score), ranks(learner_score)
  a, b = a - tf.reduce_mean(a), b - tf.reduce_mean(b)
  corr = tf.math.divide_no_nan(tf.reduce_sum(a * b),
                               tf.sqrt(tf.reduce_sum(a * a) * tf.reduce_sum(b * b)))
  return overlap, corr
