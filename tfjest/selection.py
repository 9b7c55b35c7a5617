"""Choosing `b` of `N` candidates: joint blocked sampling, independent and uniform selection.

All three are one procedure (docs/SPEC.md §4), so comparisons between them measure only the
scores:

1. the first chunk of `c = b / K` is drawn uniformly (`first_chunk="uniform"`) or by Gumbel-top-c
   on `diag(S) / tau` (`first_chunk="scores"`);
2. every later chunk is the Gumbel-top-c of `u / tau`, with the conditional gains
   `u_k(A) = S_kk + sum_{j in A} S_kj + sum_{i in A} S_ik` updated after each chunk from
   `scores.chunk_gain(C)` (the streaming form of section 5; no `N x N` unless the scores are dense).

Independent selection is `K = 1` with `first_chunk="scores"` on per-example scores; uniform
selection is `K = 1` with `first_chunk="uniform"`. Everything has static shapes and a Python loop of
`K` steps, so it traces into `tf.data` maps, replicated steps and `tf.function(jit_compile=True)`.
Noise comes from a counter-based generator keyed by `(seed, step)` (docs/SPEC.md section 13.1): a
selection is a pure function of the scores, the seed and the step, hence reproducible and
resumable. The generator is MurmurHash3 (x86, 32-bit) of `(seed, step, index)` written with plain
int64 ops, because `tf.random.stateless_uniform` gives other bits under XLA than without it (also
with `alg="philox"`, seen on CPU with TensorFlow 2.21), which made the `tf.data` map
and an XLA-compiled train step pick different examples for the same seed. The uniforms are
bit-identical eagerly, in a `tf.function`, in a `tf.data` map and under XLA; the Gumbel transform
runs in float64 and is rounded to float32, see `gumbel_noise` for how far that is exact.

Policy for bad candidates: a candidate whose own score `S_kk` or key is not finite (a NaN or
infinite score, from a diverged model or a bad example) or that is marked invalid is taken only
when fewer than `c` usable candidates remain in a chunk, also in a uniform first chunk (one NaN
example in it would make every later dual-encoder gain NaN). The chunk is then filled by a
uniform random draw, valid non-finite candidates before invalid ones. So a wholly non-finite
super-batch falls back to uniform selection (the selection step counts and reports such
candidates). Chosen candidates are never taken again.

`Rule` is the whole rule as one frozen value: `select` builds it from its arguments, and both
placements (the `tf.data` map and the replicated train step) call `Rule.choose`.
"""

import dataclasses
import math
import numbers

import numpy as np
import tensorflow as tf

from tfjest import checks
from tfjest import scores as scores_lib

METHODS = ("jest", "independent", "uniform")
FIRST_CHUNK_RULES = ("uniform", "scores")
GAIN_NORMALIZATIONS = ("none", "set_size")
# Invalid candidates (padding, weight 0) are filled after valid non-finite ones: their fill key
# is lowered by more than the spread of Gumbel noise.
_INVALID_FILL_OFFSET = 1e4


_MASK32 = 0xFFFFFFFF


def _mul32(a: tf.Tensor, c: int) -> tf.Tensor:
  """`a * c mod 2**32` for int64 `a` in `[0, 2**32)`, without overflowing int64."""
  high = tf.bitwise.left_shift(tf.bitwise.bitwise_and(a * (c >> 16), 0xFFFF), 16)
  return tf.bitwise.bitwise_and(a * (c & 0xFFFF) + high, _MASK32)


def _rotl32(x: tf.Tensor, r: int) -> tf.Tensor:
  return tf.bitwise.bitwise_and(
      tf.bitwise.bitwise_or(tf.bitwise.left_shift(x, r), tf.bitwise.right_shift(x, 32 - r)),
      _MASK32)


def _murmur_word(h: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
  """One 32-bit block of MurmurHash3_x86_32."""
  k = _mul32(_rotl32(_mul32(k, 0xCC9E2D51), 15), 0x1B873593)
  h = _rotl32(tf.bitwise.bitwise_xor(h, k), 13)
  return tf.bitwise.bitwise_and(h * 5 + 0xE6546B64, _MASK32)


def _murmur_finish(h: tf.Tensor, num_words: int) -> tf.Tensor:
  h = tf.bitwise.bitwise_xor(h, 4 * num_words)
  h = _mul32(tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16)), 0x85EBCA6B)
  h = _mul32(tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13)), 0xC2B2AE35)
  return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def stateless_seed(seed, step) -> tf.Tensor:
  """The `[2]` int64 key `(seed, step)` of the noise of one selection step."""
  return tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])


def counter_bits(shape, seed: tf.Tensor) -> tf.Tensor:
  """32 random bits per element (int64 in `[0, 2**32)`), a pure function of the key and index.

  Element `i` (row-major) is MurmurHash3_x86_32, seed 0, of the five 32-bit words
  `(seed_lo, seed_hi, step_lo, step_hi, i)`. Only int64 multiplications of factors below
  `2**48`, shifts, ands and xors: the same bits eagerly, in graphs, in `tf.data` and under XLA.

  Args:
    shape: static shape (a list of ints) of the result.
    seed: the `[2]` int64 key from `stateless_seed`.
  """
  key = tf.cast(seed, tf.int64)
  h = tf.zeros([], tf.int64)
  for part in (key[0], key[1]):
    h = _murmur_word(h, tf.bitwise.bitwise_and(part, _MASK32))
    h = _murmur_word(h, tf.bitwise.bitwise_and(tf.bitwise.right_shift(part, 32), _MASK32))
  index = tf.reshape(tf.range(int(np.prod(shape)), dtype=tf.int64), shape)
  return _murmur_finish(_murmur_word(h, index), 5)


def counter_uniform(shape, seed: tf.Tensor) -> tf.Tensor:
  """float32 uniforms `(2m + 1) / 2**24` in `(0, 1)`, `m` the top 23 of `counter_bits`.

  Every value is exact in float32 (no rounding anywhere), never 0 nor 1.
  """
  m = tf.bitwise.right_shift(counter_bits(shape, seed), 9)
  return tf.cast(2 * m + 1, tf.float32) * (2.0 ** -24)


def gumbel_noise(shape, seed: tf.Tensor, dtype=tf.float32) -> tf.Tensor:
  """Standard Gumbel noise `-log(-log(u))` of `counter_uniform`, rounded to float32.

  The uniforms are bit-identical in every compilation mode; `log` is not (XLA's float32 log
  differs from TensorFlow's by an ulp on about a third of the values). So the transform runs in
  float64, where the two differ by a few float64 ulps (at most 2e-15 measured), and is rounded
  to float32: the results then differ only where a float64 value lies within those few ulps of
  a float32 rounding boundary, about once in 1e8 values by that margin (none among 19.2 million
  checked, tests/selection_noise_test.py). A flip there changes a pick only if it also reorders
  two keys, which needs two keys within one float32 ulp of each other.
  """
  u = tf.cast(counter_uniform(shape, seed), tf.float64)
  return tf.cast(tf.cast(-tf.math.log(-tf.math.log(u)), tf.float32), dtype)


def conditional_gains(scores, chosen) -> tf.Tensor:
  """`u_k(A) = S_kk + sum_{j in A} S_kj + sum_{i in A} S_ik` for every candidate `k`.

  Args:
    scores: a score object over `N` candidates.
    chosen: `[|A|]` int indices of the already chosen set `A`.

  Returns:
    `[N]` gains (members of `A` included; selection masks them).
  """
  return scores.diagonal() + scores.chunk_gain(tf.convert_to_tensor(chosen, tf.int32))


def _check_sizes(num_candidates: int, num_select: int, num_chunks: int):
  if num_select <= 0 or num_select > num_candidates:
    raise ValueError(
        f"Expected 0 < num_select <= the number of candidates ({num_candidates}). "
        f"Received: num_select={num_select}")
  if num_chunks <= 0 or num_select % num_chunks:
    raise ValueError(
        f"num_chunks must be positive and divide num_select={num_select}. "
        f"Received: num_chunks={num_chunks}")


def joint_selection(scores, num_select: int, *, num_chunks: int = 16, seed=0, step=0,
                    temperature: float = 1.0, first_chunk: str = "uniform",
                    normalization: str = "none", greedy: bool = False,
                    valid=None, set_size_per_chunk=None) -> tf.Tensor:
  """JEST blocked sampling of `num_select` candidates.

  Args:
    scores: a score object (`scores.PairwiseScores`, `DenseScores` or `DiagonalScores`) over `N`
      candidates; `N` must be static.
    num_select: `b`, how many to choose.
    num_chunks: `K`; must divide `b`. Each chunk holds `c = b / K`.
    seed: int (or int tensor), the run's seed.
    step: int (or int tensor), the selection step; with `seed` it keys the noise.
    temperature: `tau > 0`; keys are `u / tau` plus Gumbel noise.
    first_chunk: "uniform" (the released pseudo-code) or "scores" (softmax of `diag(S)`).
    normalization: "none", or "set_size" to divide the gains by `2|A| + 1` (as some
      re-implementations do), which keeps the draw from sharpening as `A` grows.
    greedy: if True, no noise in score-driven chunks (deterministic top-c). A "uniform" first
      chunk stays a uniform random draw.
    valid: optional `[N]` bool; False marks candidates to take only if nothing else is left.
    set_size_per_chunk: how many candidates join the conditioning set `A` per chunk, for
      `normalization="set_size"`; defaults to `c`. Global selection across `R` replicas, where
      each replica chooses `c` but `A` gains `R * c` per chunk, passes `R * c`.

  Returns:
    `[b]` int32 indices, in the order chosen (chunk by chunk), without duplicates.

  Raises:
    ValueError: on sizes or options outside their domain.
  """
  if first_chunk not in FIRST_CHUNK_RULES:
    raise ValueError(f"Expected first_chunk in {FIRST_CHUNK_RULES}. "
                     f"Received: first_chunk={first_chunk!r}")
  if normalization not in GAIN_NORMALIZATIONS:
    raise ValueError(f"Expected normalization in {GAIN_NORMALIZATIONS}. "
                     f"Received: normalization={normalization!r}")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
  diag = scores.diagonal()
  n = diag.shape[0]
  if n is None:
    raise ValueError(f"The number of candidates must be static. Received scores of shape "
                     f"{diag.shape}")
  _check_sizes(n, num_select, num_chunks)
  chunk = num_select // num_chunks
  growth = chunk if set_size_per_chunk is None else set_size_per_chunk
  dtype = diag.dtype
  noise = gumbel_noise([num_chunks, n], stateless_seed(seed, step), dtype)
  usable = tf.ones([n], tf.bool) if valid is None else tf.cast(valid, tf.bool)
  never = tf.constant(-np.inf, dtype)
  finite_diag = tf.math.is_finite(diag)
  positions = tf.range(chunk)

  gains = diag
  chosen = tf.zeros([n], tf.bool)
  picks = []
  for k in range(num_chunks):
    if k == 0 and first_chunk == "uniform":
      keys = noise[0]
    else:
      logits = gains / tf.cast(temperature, dtype)
      if normalization == "set_size":
        logits = logits / tf.cast(2 * k * growth + 1, dtype)
      keys = logits if greedy else logits + noise[k]
    # Candidates with a finite own score and key come first, by key; when fewer than c remain,
    # the chunk is filled with a uniform draw (by noise alone) from the rest, valid ones first.
    good = ~chosen & usable & finite_diag & tf.math.is_finite(keys)
    _, best = tf.math.top_k(tf.where(good, keys, never), k=chunk, sorted=True)
    fill_keys = noise[k] - tf.where(usable, tf.zeros([], dtype), _INVALID_FILL_OFFSET)
    _, fill = tf.math.top_k(tf.where(~chosen & ~good, fill_keys, never), k=chunk, sorted=True)
    num_good = tf.minimum(tf.reduce_sum(tf.cast(good, tf.int32)), chunk)
    idx = tf.where(positions < num_good, best,
                   tf.gather(fill, tf.maximum(positions - num_good, 0)))
    picks.append(idx)
    chosen = tf.tensor_scatter_nd_update(chosen, idx[:, None], tf.ones([chunk], tf.bool))
    if k + 1 < num_chunks:
      gains = gains + scores.chunk_gain(idx)
  return tf.concat(picks, axis=0)


def independent_selection(values, num_select: int, *, seed=0, step=0, temperature: float = 1.0,
                          greedy: bool = False, valid=None) -> tf.Tensor:
  """Per-example selection: Gumbel-top-b of `values / tau` (top-b if `greedy`).

  This samples `b` without replacement with probability proportional to `exp(values / tau)`.
  `values` is `[N]`; returns `[b]` int32 indices.
  """
  return joint_selection(scores_lib.DiagonalScores(values), num_select, num_chunks=1, seed=seed,
                         step=step, temperature=temperature, first_chunk="scores",
                         greedy=greedy, valid=valid)


def uniform_selection(num_candidates: int, num_select: int, *, seed=0, step=0,
                      valid=None) -> tf.Tensor:
  """`b` of `N` uniformly without replacement, through the same procedure as the others."""
  return joint_selection(scores_lib.DiagonalScores(tf.zeros([num_candidates])), num_select,
                         num_chunks=1, seed=seed, step=step, first_chunk="uniform", valid=valid)


def check_method(method: str) -> str:
  """Returns `method` if it is one of `METHODS`.

  Raises:
    ValueError: naming the method received.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown method. Expected one of {METHODS}. Received: method={method!r}")
  return method


@dataclasses.dataclass(frozen=True)
class Rule:
  """A selection rule as one frozen, self-validating value: which `b` of `N` to keep.

  Attributes:
    method: "jest" (joint blocked sampling), "independent" (per-example Gumbel-top-b) or
      "uniform" (the baseline, through the same sampler).
    num_chunks: `K` for "jest" (1 for the others).
    temperature: `tau > 0` of the sampling distribution `exp(u / tau)`.
    seed: int >= 0; with the step it keys the counter-based noise (`gumbel_noise`).
    first_chunk: "uniform" or "scores" (how JEST draws its first chunk).
    normalization: "none" or "set_size".
    greedy: deterministic top-c in score-driven chunks.

  Raises:
    ValueError: naming the first field outside its domain and the value received.
  """

  method: str = "jest"
  num_chunks: int = 16
  temperature: float = 1.0
  seed: int = 0
  first_chunk: str = "uniform"
  normalization: str = "none"
  greedy: bool = False

  def __post_init__(self):
    check_method(self.method)
    if not checks.is_int(self.num_chunks) or self.num_chunks <= 0:
      raise ValueError(f"num_chunks must be a positive integer. "
                       f"Received: num_chunks={self.num_chunks!r}")
    if (not isinstance(self.temperature, numbers.Real) or isinstance(self.temperature, bool)
        or not self.temperature > 0 or not math.isfinite(self.temperature)):
      raise ValueError(f"temperature must be a finite number > 0 (use greedy=True for "
                       f"deterministic top-k). Received: temperature={self.temperature!r}")
    if not checks.is_int(self.seed) or self.seed < 0:
      raise ValueError(f"seed must be an integer >= 0. Received: seed={self.seed!r}")
    checks.one_of(self.first_chunk, "first_chunk", FIRST_CHUNK_RULES)
    checks.one_of(self.normalization, "normalization", GAIN_NORMALIZATIONS)
    checks.boolean(self.greedy, "greedy")
    if self.method != "jest" and self.num_chunks != 1:
      object.__setattr__(self, "num_chunks", 1)  # only JEST works in chunks
    object.__setattr__(self, "temperature", float(self.temperature))
    # NumPy integers are welcome, but only Python ints go on into TensorFlow ops.
    object.__setattr__(self, "num_chunks", int(self.num_chunks))
    object.__setattr__(self, "seed", int(self.seed))

  @property
  def reads_scores(self) -> bool:
    """False for uniform selection, which needs no model."""
    return self.method != "uniform"

  def check_batch_size(self, batch_size: int):
    """Raises ValueError unless `num_chunks` divides `batch_size`."""
    if self.method == "jest" and batch_size % self.num_chunks:
      raise ValueError(f"num_chunks must divide batch_size={batch_size} (each chunk holds "
                       f"batch_size / num_chunks examples). "
                       f"Received: num_chunks={self.num_chunks}")

  def choose(self, scores, num_select: int, *, step, num_candidates: int, valid=None,
             set_size_per_chunk=None) -> tf.Tensor:
    """`[num_select]` int32 indices into the `num_candidates`, in the order chosen.

    Args:
      scores: a score object over the candidates (None for uniform selection).
      num_select: `b` (or a replica's share of it).
      step: int scalar; with `seed` it keys the noise.
      num_candidates: `N` (static).
      valid: optional `[N]` bool; False marks candidates taken only when nothing else is left.
      set_size_per_chunk: see `joint_selection` (global selection across replicas).
    """
    if self.method == "uniform" or scores is None:
      return uniform_selection(num_candidates, num_select, seed=self.seed, step=step,
                               valid=valid)
    if self.method == "jest":
      return joint_selection(
          scores, num_select, num_chunks=self.num_chunks, seed=self.seed, step=step,
          temperature=self.temperature, first_chunk=self.first_chunk,
          normalization=self.normalization, greedy=self.greedy, valid=valid,
          set_size_per_chunk=set_size_per_chunk)
    return independent_selection(scores.diagonal(), num_select, seed=self.seed, step=step,
                                 temperature=self.temperature, greedy=self.greedy, valid=valid)
