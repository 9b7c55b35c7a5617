"""Per-pair sigmoid-contrastive losses (SigLIP) and per-example losses, as tensor functions.

The SigLIP loss of a batch is a plain sum of pair terms (docs/SPEC.md §2):

    logit_ij = t * <x_i, y_j> + beta,   z_ij = +1 if i == j else -1
    l_ij     = softplus(-z_ij * logit_ij)

so any block of the pair-loss matrix can be computed from the embeddings of its rows and
columns alone. Nothing here forms the N x N matrix unless a caller asks for that block.
"""

from typing import Any, NamedTuple, Optional, Tuple

import keras
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


# `compile(loss="crossentropy")` (or "ce") picks one of these from the shapes of the first batch.
_CROSSENTROPY_ALIASES = ("crossentropy", "ce")


def per_example_loss(loss_fn, y_true, y_pred) -> tf.Tensor:
  """Each example's loss alone, as a model compiled with `loss_fn` computes it: `[N]` float32.

  Entry `i` equals `model.compute_loss(x=None, y=y_true[i:i+1], y_pred=y_pred[i:i+1])` of a
  model compiled with `loss=loss_fn` and no regularisation losses: what `fit` optimises on that
  example. So, as `compile` does, labels and predictions are converted to the loss's dtype, a
  last axis of size 1 is squeezed or added so that `[N]` labels meet `[N, 1]` outputs, and a
  Keras mask (on the predictions, or set by the loss, e.g. by `ignore_class`) is honoured.
  Finer losses (`[N, T, ...]`) are reduced over the non-batch axes as the loss's reduction
  reduces a batch of one: a (masked) mean, or a sum for `reduction="sum"` ("none" is taken as
  the mean). Sample weights are not applied, nor any loss weight. A loss that reduces over the
  batch itself (`Dice`, `Tversky` with `axis=None`, a function returning a scalar) is computed
  one example at a time (`tf.vectorized_map`).

  Args:
    loss_fn: what `compile(loss=...)` takes for one output: a name known to
      `keras.losses.get` (or "crossentropy"), a `keras.losses.Loss` (its options honoured) or
      its class, or a function `(y_true, y_pred) -> losses` of shape `[N]` or finer. A callable
      returned by `tfjest.adapters.resolve_loss_fn` is used as it is.
    y_true: targets of `N` examples.
    y_pred: model predictions for the same `N` examples.

  Returns:
    `[N]` float32 tensor.

  Raises:
    ValueError: if `loss_fn` is a name Keras does not know, the Circle loss (which compares
      examples with each other), or a loss that does not keep the batch axis first.
    TypeError: if `loss_fn` is not a loss.
  """
  return PerExampleLoss(loss_fn)(y_true, y_pred)


class PerExampleLoss:
  """A loss as `compile` applies it, unreduced: `(y_true, y_pred) -> [N]` float32.

  Calling it is `per_example_loss(loss, y_true, y_pred)`; the name or class of the loss is
  resolved once, here. Wrapping a `PerExampleLoss` again returns the same loss.

  Attributes:
    loss: the `keras.losses.Loss`, function or crossentropy alias it applies.
  """

  def __init__(self, loss_fn: Any):
    self.loss = loss_fn.loss if isinstance(loss_fn, PerExampleLoss) else _as_loss(loss_fn)

  def __repr__(self):
    return f"PerExampleLoss({self.loss!r})"

  def __call__(self, y_true, y_pred) -> tf.Tensor:
    if tf.nest.is_nested(y_pred) and not tf.nest.is_nested(y_true):
      leaves = tf.nest.flatten(y_pred)
      if len(leaves) == 1:  # `compile` scores the one output of a list or mapping as itself
        y_pred = leaves[0]
    loss = self.loss
    if isinstance(loss, str):
      loss = _crossentropy(y_true, y_pred)
    if isinstance(loss, keras.losses.Loss):
      call, reduction, dtype = loss.call, loss.reduction, loss.dtype
    else:  # `compile` wraps a function in a Loss with the default reduction and dtype.
      call, reduction, dtype = loss, "sum_over_batch_size", keras.backend.floatx()
    in_mask = None if tf.nest.is_nested(y_pred) else getattr(y_pred, "_keras_mask", None)
    convert = lambda t: keras.ops.convert_to_tensor(t, dtype=dtype)
    y_true = tf.nest.map_structure(convert, y_true)
    y_pred = tf.nest.map_structure(convert, y_pred)
    y_true, y_pred = _align_structures(y_true, y_pred)

    values, mask = _call(call, y_true, y_pred, in_mask)
    if values.shape.rank == 0:
      def one_example(example):
        one_true, one_pred = tf.nest.map_structure(lambda t: t[None], example)
        return _reduce(*_call(call, one_true, one_pred, None), reduction, rank_from=0)
      values = tf.vectorized_map(one_example, (y_true, y_pred))
    else:
      batch = tf.nest.flatten(y_pred)[0].shape[:1]
      if not values.shape[:1].is_compatible_with(batch):
        raise ValueError(
            f"The per-example loss must keep the batch axis first: {batch[0]} predictions gave "
            f"losses of shape {values.shape}. Pass a loss that returns one value (or one per "
            f"element) for each example. Received: loss_fn={loss!r}")
      values = _reduce(values, mask, reduction, rank_from=1)
    return tf.cast(values, tf.float32)


def _as_loss(loss_fn):
  """A name or class as the `Loss` or function `compile` would use; other losses as given."""
  if isinstance(loss_fn, str):
    if loss_fn.lower() in _CROSSENTROPY_ALIASES:
      return loss_fn.lower()
    try:
      loss_fn = keras.losses.get(loss_fn)
    except ValueError:
      raise ValueError(
          f"Unknown loss name {loss_fn!r}: `keras.losses.get` does not know it. Pass a name it "
          "knows (e.g. \"sparse_categorical_crossentropy\"), a `keras.losses.Loss` or a "
          f"function (y_true, y_pred) -> losses. Received: loss_fn={loss_fn!r}") from None
  if isinstance(loss_fn, type) and issubclass(loss_fn, keras.losses.Loss):
    loss_fn = loss_fn()
  if not callable(loss_fn):
    raise TypeError(
        "Expected a loss: a name, a `keras.losses.Loss` or a function (y_true, y_pred) -> "
        f"losses. Received: loss_fn={loss_fn!r} of type {type(loss_fn).__name__}")
  if getattr(loss_fn, "fn", loss_fn) is keras.losses.circle:
    raise ValueError(
        "The Circle loss compares each example with the others of its batch, so no loss "
        "belongs to one example and tfjest cannot score examples with it. Pass a per-example "
        f"`loss_fn=` (e.g. a classification loss). Received: loss_fn={loss_fn!r}")
  return loss_fn


def _crossentropy(y_true, y_pred):
  """The loss `compile` picks for "crossentropy" from the shapes of labels and predictions."""
  true_shape, pred_shape = tf.TensorShape(y_true.shape), tf.TensorShape(y_pred.shape)
  if pred_shape[-1] == 1:
    return keras.losses.binary_crossentropy
  if true_shape.rank < pred_shape.rank or (true_shape[-1] == 1 and pred_shape[-1] > 1):
    return keras.losses.sparse_categorical_crossentropy
  return keras.losses.categorical_crossentropy


def _align_ranks(x1, x2):
  """Squeezes or adds a last axis of size 1 when the ranks differ by one, as Keras losses do."""
  rank1, rank2 = x1.shape.rank, x2.shape.rank
  if rank1 is None or rank2 is None:
    return x1, x2
  if rank1 == rank2 + 1 and x1.shape[-1] == 1:
    if rank2 == 1:
      x2 = tf.expand_dims(x2, -1)
    else:
      x1 = tf.squeeze(x1, -1)
  elif rank2 == rank1 + 1 and x2.shape[-1] == 1:
    if rank1 == 1:
      x1 = tf.expand_dims(x1, -1)
    else:
      x2 = tf.squeeze(x2, -1)
  return x1, x2


def _align_structures(y_true, y_pred):
  """`_align_ranks` on each pair of a shared structure; different structures stay as they are."""
  try:
    tf.nest.assert_same_structure(y_true, y_pred)
  except (ValueError, TypeError):
    return y_true, y_pred  # A user's function of several outputs reads them itself.
  pairs = [_align_ranks(t, p) for t, p in zip(tf.nest.flatten(y_true), tf.nest.flatten(y_pred))]
  return (tf.nest.pack_sequence_as(y_true, [t for t, _ in pairs]),
          tf.nest.pack_sequence_as(y_pred, [p for _, p in pairs]))


def _call(call, y_true, y_pred, in_mask):
  """The unreduced losses and their Keras mask (the predictions' and the loss's, combined)."""
  values = tf.convert_to_tensor(call(y_true, y_pred))
  out_mask = getattr(values, "_keras_mask", None)
  masks = [tf.cast(m, tf.bool) for m in (in_mask, out_mask) if m is not None]
  mask = None
  if masks:
    mask = masks[0] if len(masks) == 1 else tf.logical_and(*_per_example_broadcast(*masks))
  return values, mask


def _per_example_broadcast(x1, x2):
  """Aligns ranks as Keras does, then lets each example broadcast as a batch of one would.

  On a batch of one, shapes broadcast right-aligned after the batch axis (`[1]` against
  `[1, T]` is every step); batched, the lower-rank tensor needs axes after the batch axis.
  """
  x1, x2 = _align_ranks(x1, x2)
  for _ in range(x2.shape.rank - x1.shape.rank):
    x1 = tf.expand_dims(x1, 1)
  for _ in range(x1.shape.rank - x2.shape.rank):
    x2 = tf.expand_dims(x2, 1)
  return x1, x2


def _reduce(values, mask, reduction, rank_from):
  """Reduces the axes from `rank_from` on as `reduction` reduces a batch of one.

  Keras weights each kept element by `size / kept` (mean reductions) or 1 (`"sum"`), so a
  mean is over the kept elements only, and an example with none kept has loss 0.
  """
  if mask is None:
    axes = list(range(rank_from, values.shape.rank))
    return tf.reduce_sum(values, axes) if reduction == "sum" else tf.reduce_mean(values, axes)
  mask = tf.cast(mask, values.dtype)
  mask_axes = list(range(rank_from, mask.shape.rank))
  weighted = tf.multiply(*_per_example_broadcast(values, mask))
  axes = list(range(rank_from, weighted.shape.rank))
  total = tf.reduce_sum(weighted, axes)
  if reduction == "sum":
    return total
  size = lambda t: tf.cast(tf.reduce_prod(tf.shape(t)[rank_from:]), t.dtype)
  weight = tf.math.divide_no_nan(size(mask), tf.reduce_sum(mask, mask_axes))
  return total * weight / size(weighted)
