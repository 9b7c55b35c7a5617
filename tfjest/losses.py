"""Per-pair sigmoid-contrastive losses (SigLIP) and per-example losses, as tensor functions.

The SigLIP loss of a batch is a plain sum of pair terms (JEST_SPEC section 2):

    logit_ij = t * <x_i, y_j> + beta,   z_ij = +1 if i == j else -1
    l_ij     = softplus(-z_ij * logit_ij)

so any block of the pair-loss matrix can be computed from the embeddings of its rows and
columns alone. Nothing here forms the N x N matrix unless a caller asks for that block.
"""

from typing import NamedTuple, Optional, Tuple

import tensorflow as tf


class Embeddings(NamedTuple):
  """What one dual-encoder model says about a super-batch.

  Attributes:
    image: `[N, d]` float tensor of (L2-normalised) image embeddings.
    text: `[N, d]` float tensor of (L2-normalised) text embeddings.
    logit_scale: scalar `t`, the multiplier of the cosine similarity.
    logit_bias: scalar `beta`, added to every logit.
  """

  image: tf.Tensor
  text: tf.Tensor
  logit_scale: tf.Tensor
  logit_bias: tf.Tensor


def sigmoid_pair_loss_block(
    emb: Embeddings,
    rows: Optional[tf.Tensor] = None,
    cols: Optional[tf.Tensor] = None,
) -> tf.Tensor:
  """Pair losses `l_ij` for image rows `i in rows` and text columns `j in cols`.

  Args:
    emb: the model's `Embeddings` of the super-batch, `N` examples.
    rows: `[r]` int indices into the super-batch (images), or `None` for all `N`.
    cols: `[c]` int indices into the super-batch (texts), or `None` for all `N`.

  Returns:
    `[r, c]` float tensor; entry `(a, b)` is `l_{rows[a], cols[b]}`, the positive-pair loss
    where `rows[a] == cols[b]` and the negative-pair loss elsewhere. Memory is `O(r * c)`.
  """
  n = tf.shape(emb.image)[0]
  rows = tf.range(n) if rows is None else tf.cast(rows, tf.int32)
  cols = tf.range(n) if cols is None else tf.cast(cols, tf.int32)
  image = tf.gather(emb.image, rows)
  text = tf.gather(emb.text, cols)
  scale = tf.cast(emb.logit_scale, image.dtype)
  bias = tf.cast(emb.logit_bias, image.dtype)
  logits = scale * tf.matmul(image, text, transpose_b=True) + bias
  positive = tf.equal(rows[:, None], cols[None, :])
  signs = tf.where(positive, tf.ones_like(logits), -tf.ones_like(logits))
  return tf.math.softplus(-signs * logits)


# Rows per tile of the streaming chunk sums: a [8192, c] float32 block of a 410-example chunk is
# 13 MB, small enough to stay in cache between the matmul and the softplus, and tiles give a
# graph independent ops to run on every core.
CHUNK_SUM_ROW_TILE = 8192


def sigmoid_pair_loss_chunk_sums(emb: Embeddings, chunk: tf.Tensor,
                                 row_tile: int = CHUNK_SUM_ROW_TILE) -> Tuple[tf.Tensor, tf.Tensor]:
  """Both streaming sums of a chunk `C`: `sum_{j in C} l_kj` and `sum_{i in C} l_ik` for all `k`.

  The same numbers as `reduce_sum(sigmoid_pair_loss_block(emb, None, C), 1)` and
  `reduce_sum(sigmoid_pair_loss_block(emb, C, None), 0)`, computed with less work: every pair
  is first taken as a negative, `softplus(logit)`, and the positive pairs `(k, k)` with `k in C`
  are corrected afterwards from their `c` logits, using `softplus(-x) = softplus(x) - x`. So no
  `[N, c]` sign mask, no gathered copy of the `N` rows, and both directions as `[N, c]` blocks
  reduced along their last axis, in row tiles of at most `row_tile` (independent ops that a
  graph runs in parallel, each small enough to stay in cache). Memory is `O(row_tile * c)` per
  tile, never `N x N`; work is two `[N, d] x [d, c]` matmuls and `2 N c` softplus.

  Args:
    emb: the model's `Embeddings` of the super-batch, `N` examples.
    chunk: `[c]` int indices of the chunk.
    row_tile: the most rows per tile.

  Returns:
    `(as_image, as_text)`, two `[N]` tensors: `as_image[k] = sum_{j in C} l_kj` (image `k`
    against the chunk's texts) and `as_text[k] = sum_{i in C} l_ik` (the chunk's images
    against text `k`).
  """
  chunk = tf.cast(chunk, tf.int32)
  dtype = emb.image.dtype
  scale = tf.cast(emb.logit_scale, dtype)
  bias = tf.cast(emb.logit_bias, dtype)
  image_c = tf.gather(emb.image, chunk)
  text_c = tf.gather(emb.text, chunk)

  def negative_sums(rows, chunk_side):
    return tf.reduce_sum(
        tf.math.softplus(scale * tf.matmul(rows, chunk_side, transpose_b=True) + bias), axis=1)

  def tiled(rows, chunk_side):
    n = rows.shape[0]
    if n is None or n <= row_tile:
      return negative_sums(rows, chunk_side)
    sizes = [row_tile] * (n // row_tile) + ([n % row_tile] if n % row_tile else [])
    return tf.concat([negative_sums(tile, chunk_side)
                      for tile in tf.split(rows, sizes, axis=0)], axis=0)

  positive_logits = scale * tf.reduce_sum(image_c * text_c, axis=-1) + bias
  correction = tf.scatter_nd(chunk[:, None], positive_logits, tf.shape(emb.image)[:1])
  return tiled(emb.image, text_c) - correction, tiled(emb.text, image_c) - correction


def sigmoid_pair_loss_diagonal(emb: Embeddings) -> tf.Tensor:
  """Positive-pair losses `l_ii`, `[N]`, without forming any off-diagonal term."""
  scale = tf.cast(emb.logit_scale, emb.image.dtype)
  bias = tf.cast(emb.logit_bias, emb.image.dtype)
  logits = scale * tf.reduce_sum(emb.image * emb.text, axis=-1) + bias
  return tf.math.softplus(-logits)


def siglip_loss(emb: Embeddings) -> tf.Tensor:
  """The SigLIP batch loss `(1/|B|) * sum_ij l_ij` (dense; for small batches and tests)."""
  n = tf.cast(tf.shape(emb.image)[0], emb.image.dtype)
  return tf.reduce_sum(sigmoid_pair_loss_block(emb)) / n


def siglip_replica_loss(emb: Embeddings) -> tf.Tensor:
  """`siglip_loss` of this replica's batch divided by the replicas in sync.

  What a dual encoder's Keras `compute_loss` should return: under a `tf.distribute` strategy
  each of R replicas sees 1/R of the global batch and their gradients are summed, so dividing
  by R (as Keras' compiled losses do) makes the update the mean over the global batch. Without
  a strategy (R = 1) it is `siglip_loss`. The negatives are the replica's own batch.
  """
  return siglip_loss(emb) / tf.distribute.get_strategy().num_replicas_in_sync


def per_example_loss(loss_fn, y_true, y_pred) -> tf.Tensor:
  """Calls a Keras-style loss and reduces every axis but the first, giving `[N]`.

  Args:
    loss_fn: a `keras.losses.Loss` (its unreduced `call` is used) or a function
      `(y_true, y_pred) -> per-example (or finer) losses`.
    y_true: targets of `N` examples.
    y_pred: model predictions for the same `N` examples.

  Returns:
    `[N]` float tensor.
  """
  call = getattr(loss_fn, "call", loss_fn)
  losses = tf.convert_to_tensor(call(y_true, y_pred))
  if losses.shape.rank == 0:
    raise ValueError(
        "The per-example loss must keep the batch axis, but `loss_fn` returned a scalar. "
        "Pass a loss without reduction (e.g. `keras.losses.get(name)` or a "
        "`keras.losses.Loss`, whose unreduced `call` tfjest uses). "
        f"Received: loss_fn={loss_fn!r}")
  if losses.shape.rank > 1:
    losses = tf.reduce_mean(losses, axis=tf.range(1, tf.rank(losses)))
  return losses
