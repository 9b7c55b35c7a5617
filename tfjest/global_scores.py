"""Scores of one shard's candidates, conditioned on every shard's choices (docs/SPEC.md §6).

In global joint selection across `R` replicas, each replica keeps its own `n = N / R` candidates
and chooses `c / R` of them per chunk, but the conditioning set `A` is global: after each chunk,
the chosen examples' embeddings (never the examples) are gathered from every replica, so that

    u_k(A) = S_kk + sum_{j in A} S_kj + sum_{i in A} S_ik

counts every replica's choices. `GlobalScores` is the score object that makes this so: its
`chunk_gain(chunk)` gathers the chosen embeddings through an injected `gather` function and
computes the `[n, R c/R]` and `[R c/R, n]` blocks with the same pair-loss maths as
`PairwiseScores`. `joint_selection` runs on it unchanged.

The module stays pure: `gather` is any function concatenating every shard's tensor in shard order
(`tf.distribute.ReplicaContext.all_gather(x, axis=0)` in a replicated step, a plain function in
tests).
"""

from typing import Callable

import tensorflow as tf

from tfjest import losses
from tfjest import scores as scores_lib


class GlobalScores:
  """A shard's score object whose conditional gains count every shard's chosen chunks.

  Args:
    local: the shard's `scores.PairwiseScores` over its `n` candidates, or a
      `scores.DiagonalScores` (per-example scores have no cross terms: gains are never
      gathered and global selection equals per-shard selection).
    gather: `fn(tensor [m, w]) -> [R * m, w]`, every shard's tensor concatenated in shard order.
    shard_index: this shard's position in that order (int or scalar int tensor).

  The diagonal and `block` are the local ones (statistics of a shard's own candidates).
  """

  def __init__(self, local, gather: Callable[[tf.Tensor], tf.Tensor], shard_index):
    if not isinstance(local, (scores_lib.PairwiseScores, scores_lib.DiagonalScores)):
      raise TypeError("GlobalScores wraps a PairwiseScores or DiagonalScores. "
                      f"Received: local of type {type(local).__name__}")
    self.local = local
    self.gather = gather
    self.shard_index = shard_index

  def diagonal(self) -> tf.Tensor:
    return self.local.diagonal()

  def block(self, rows=None, cols=None) -> tf.Tensor:
    return self.local.block(rows, cols)

  def chunk_gain(self, chunk: tf.Tensor) -> tf.Tensor:
    """`S[k, C] + S[C, k]` summed over the global chunk `C`, for each local candidate `k`.

    Args:
      chunk: `[m]` int indices of this shard's part of the chunk (every shard passes the same
        `m`).

    Returns:
      `[n]` gains. Local candidates that are in `chunk` get their positive-pair term, exactly
      as the one-device computation over all `R * n` candidates would give them.
    """
    if isinstance(self.local, scores_lib.DiagonalScores):
      return self.local.chunk_gain(chunk)
    chunk = tf.cast(chunk, tf.int32)
    models = [e for e in (self.local.learner, self.local.reference) if e is not None]
    # One collective per chunk: every model's chosen image and text embeddings side by side.
    pieces = [tf.gather(part, chunk) for emb in models for part in (emb.image, emb.text)]
    widths = [p.shape[-1] for p in pieces]
    gathered = tf.split(self.gather(tf.concat(pieces, axis=-1)), widths, axis=-1)
    extended = []
    for i, emb in enumerate(models):
      extended.append(losses.Embeddings(
          tf.concat([emb.image, tf.cast(gathered[2 * i], emb.image.dtype)], axis=0),
          tf.concat([emb.text, tf.cast(gathered[2 * i + 1], emb.text.dtype)], axis=0),
          emb.logit_scale, emb.logit_bias))
    it = iter(extended)
    joint = scores_lib.PairwiseScores(
        self.local.score,
        next(it) if self.local.learner is not None else None,
        next(it) if self.local.reference is not None else None)

    n = tf.shape(models[0].image)[0]
    m = tf.shape(chunk)[0]
    total = tf.shape(gathered[0])[0]
    position = tf.range(total)
    # This shard's own entries point back at its local rows, so that a chosen candidate meets
    # itself as a positive pair; every other shard's entries are distinct examples (negatives).
    own = tf.equal(position // m, tf.cast(self.shard_index, tf.int32))
    cols = tf.where(own, tf.gather(chunk, position % m), n + position)
    rows = tf.range(n)
    return (tf.reduce_sum(joint.block(rows, cols), axis=1) +
            tf.reduce_sum(joint.block(cols, rows), axis=0))
