"""Score matrices `S` (docs/SPEC.md §3), exposed in block form.

Selection only ever needs three things from `S`: its diagonal, the conditional-gain update of a
chosen chunk `C` (`S[:, C].sum(1) + S[C, :].sum(0)`), and, for statistics, the block of a chosen
set. Every class here provides exactly those, so the same selection code runs on

- `PairwiseScores`: two dual encoders' embeddings, never forming `N x N` (streaming form,
  docs/SPEC.md §5; memory `O(N * c)` per chunk);
- `DenseScores`: an explicit `[N, N]` matrix (small `N`, tests, the oracle);
- `DiagonalScores`: per-example scores (classification, Bad Students, RHO-LOSS, uniform).
"""

from typing import Optional

import tensorflow as tf

from tfjest import losses

SCORE_VARIANTS = ("learnability", "hard_learner", "easy_reference")

# Which models each variant reads.
NEEDS_LEARNER = {"learnability": True, "hard_learner": True, "easy_reference": False}
NEEDS_REFERENCE = {"learnability": True, "hard_learner": False, "easy_reference": True}


def check_variant(score: str) -> str:
  if score not in SCORE_VARIANTS:
    raise ValueError(
        f"Unknown score variant. Expected one of {SCORE_VARIANTS}. Received: score={score!r}")
  return score


def combine(score: str, learner_losses, reference_losses) -> tf.Tensor:
  """Turns learner and reference losses (same shape) into scores of the given variant."""
  check_variant(score)
  if score == "learnability":
    return learner_losses - reference_losses
  if score == "hard_learner":
    return learner_losses
  return -reference_losses


class DenseScores:
  """An explicit `[N, N]` score matrix."""

  def __init__(self, matrix):
    self.matrix = tf.convert_to_tensor(matrix)

  def diagonal(self) -> tf.Tensor:
    return tf.linalg.diag_part(self.matrix)

  def block(self, rows: Optional[tf.Tensor] = None,
            cols: Optional[tf.Tensor] = None) -> tf.Tensor:
    m = self.matrix
    if rows is not None:
      m = tf.gather(m, rows, axis=0)
    if cols is not None:
      m = tf.gather(m, cols, axis=1)
    return m

  def chunk_gain(self, chunk: tf.Tensor) -> tf.Tensor:
    return (tf.reduce_sum(tf.gather(self.matrix, chunk, axis=1), axis=1) +
            tf.reduce_sum(tf.gather(self.matrix, chunk, axis=0), axis=0))


class DiagonalScores:
  """Per-example scores: `S` is diagonal, so chunks never change the other gains."""

  def __init__(self, values):
    self.values = tf.convert_to_tensor(values)

  def diagonal(self) -> tf.Tensor:
    return self.values

  def block(self, rows: Optional[tf.Tensor] = None,
            cols: Optional[tf.Tensor] = None) -> tf.Tensor:
    n = tf.shape(self.values)[0]
    rows = tf.range(n) if rows is None else rows
    cols = tf.range(n) if cols is None else cols
    same = tf.equal(rows[:, None], cols[None, :])
    return tf.where(same, tf.gather(self.values, rows)[:, None],
                    tf.zeros([], self.values.dtype))

  def chunk_gain(self, chunk: tf.Tensor) -> tf.Tensor:
    del chunk  # no off-diagonal terms
    return tf.zeros_like(self.values)


class PairwiseScores:
  """Pairwise SigLIP scores of a super-batch, computed block by block from embeddings.

  Args:
    score: one of `SCORE_VARIANTS`.
    learner: the learner's `losses.Embeddings` (`None` for "easy_reference").
    reference: the reference's `losses.Embeddings` (`None` for "hard_learner").
  """

  def __init__(self, score: str, learner: Optional[losses.Embeddings],
               reference: Optional[losses.Embeddings]):
    self.score = check_variant(score)
    if NEEDS_LEARNER[score] and learner is None:
      raise ValueError(f"score={score!r} needs the learner's embeddings. Received: learner=None")
    if NEEDS_REFERENCE[score] and reference is None:
      raise ValueError(
          f"score={score!r} needs the reference's embeddings. Received: reference=None")
    self.learner = learner if NEEDS_LEARNER[score] else None
    self.reference = reference if NEEDS_REFERENCE[score] else None
    self._diagonals = None

  def _combine(self, fn) -> tf.Tensor:
    learner = fn(self.learner) if self.learner is not None else 0.0
    reference = fn(self.reference) if self.reference is not None else 0.0
    return combine(self.score, learner, reference)

  def role_diagonals(self):
    """`{"learner": [N], "reference": [N]}` positive-pair losses `l_ii` of the models read.

    Computed once per score object: selection (`diagonal`) and statistics share them.
    """
    if self._diagonals is None:
      self._diagonals = {role: losses.sigmoid_pair_loss_diagonal(emb)
                         for role, emb in (("learner", self.learner),
                                           ("reference", self.reference)) if emb is not None}
    return self._diagonals

  def diagonal(self) -> tf.Tensor:
    d = self.role_diagonals()
    return combine(self.score, d.get("learner", 0.0), d.get("reference", 0.0))

  def block(self, rows: Optional[tf.Tensor] = None,
            cols: Optional[tf.Tensor] = None) -> tf.Tensor:
    return self._combine(lambda emb: losses.sigmoid_pair_loss_block(emb, rows, cols))

  def chunk_gain(self, chunk: tf.Tensor) -> tf.Tensor:
    # S[:, C].sum(1) + S[C, :].sum(0) from [N, c] blocks: O(N * c) memory, never N x N.
    def both_directions(emb):
      as_image, as_text = losses.sigmoid_pair_loss_chunk_sums(emb, chunk)
      return as_image + as_text

    return self._combine(both_directions)


def batch_score(scores, chosen: tf.Tensor) -> tf.Tensor:
  """`s(B) = sum_{i, j in B} S_ij` for the chosen indices `B` (a `[b, b]` block)."""
  return tf.reduce_sum(scores.block(chosen, chosen))
