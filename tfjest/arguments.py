"""The arguments of `tfjest.select`: checks in the Keras form, and the sizes they imply.

Everything that can be checked without the data is checked here, when `select` is called, so a
wrong argument fails at once and names itself ("... Received: name=value"); what depends on the
elements is checked when the transformation is applied.
"""

import math
import numbers

import keras

from tfjest import adapters
from tfjest import cache as cache_lib
from tfjest import proxy as proxy_lib
from tfjest import scores as scores_lib
from tfjest import selection

METHODS = ("jest", "independent", "uniform")
REMAINDERS = ("drop", "keep")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def super_batch_size_for(batch_size: int, filter_ratio: float) -> int:
  """`N = b / (1 - f)`, which must come out whole."""
  exact = batch_size / (1.0 - filter_ratio)
  n = int(round(exact))
  if abs(exact - n) > 1e-6 * exact:
    raise ValueError(
        f"batch_size / (1 - filter_ratio) must be a whole number of examples (the super-batch "
        f"size), but {batch_size} / (1 - {filter_ratio}) = {exact:.4f}. Choose another "
        f"filter_ratio or pass super_batch_size= instead. "
        f"Received: batch_size={batch_size}, filter_ratio={filter_ratio}")
  return n


def check_select(*, learner, reference, batch_size, filter_ratio, super_batch_size, method,
                 score, num_chunks, temperature, seed, first_chunk, normalization, greedy, task,
                 embedding_keys, loss_fn, input_batched, remainder, reference_cache, id_key,
                 scoring_view, proxy) -> int:
  """Checks `select`'s arguments (see its docstring); returns the super-batch size `N`.

  Raises:
    ValueError, TypeError: naming the first argument outside its domain and its value.
  """
  if not _is_int(batch_size) or batch_size <= 0:
    raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
  if filter_ratio is not None and super_batch_size is not None:
    raise ValueError("Pass either filter_ratio or super_batch_size, not both. Received: "
                     f"filter_ratio={filter_ratio!r}, super_batch_size={super_batch_size!r}")
  if super_batch_size is None:
    filter_ratio = 0.8 if filter_ratio is None else filter_ratio
    if (not isinstance(filter_ratio, numbers.Real) or isinstance(filter_ratio, bool) or
        not 0.0 <= filter_ratio < 1.0):
      raise ValueError("filter_ratio must be a number in [0, 1). "
                       f"Received: filter_ratio={filter_ratio!r}")
    super_batch_size = super_batch_size_for(batch_size, float(filter_ratio))
  elif not _is_int(super_batch_size) or super_batch_size < batch_size:
    raise ValueError(f"super_batch_size must be an integer >= batch_size ({batch_size}). "
                     f"Received: super_batch_size={super_batch_size!r}")
  if method not in METHODS:
    raise ValueError(f"Unknown method. Expected one of {METHODS}. Received: method={method!r}")
  scores_lib.check_variant(score)
  if reference_cache is not None and not isinstance(reference_cache, cache_lib.ReferenceCache):
    raise TypeError("reference_cache must be a tfjest.ReferenceCache (from "
                    "tfjest.cache_reference or ReferenceCache.load). "
                    f"Received: reference_cache of type {type(reference_cache).__name__}")
  if proxy is not None and not isinstance(proxy, proxy_lib.OnlineProxy):
    raise TypeError("proxy must be a tfjest.OnlineProxy. "
                    f"Received: proxy of type {type(proxy).__name__}")
  if method != "uniform":
    if scores_lib.NEEDS_LEARNER[score] and learner is None and proxy is None:
      raise ValueError(f"score={score!r} scores with the learner. Pass learner=<the model "
                       "being trained> (or proxy=). Received: learner=None")
    if scores_lib.NEEDS_REFERENCE[score] and reference is None and reference_cache is None:
      raise ValueError(f"score={score!r} needs a frozen reference model. Pass reference= or "
                       "reference_cache=, or use score='hard_learner'. Received: reference=None")
    if reference_cache is not None and not scores_lib.NEEDS_REFERENCE[score]:
      raise ValueError(f"score={score!r} does not read the reference, so reference_cache "
                       f"would be unused. Received: reference_cache={reference_cache.path!r}")
    for name, value in (("scoring_view", scoring_view), ("proxy", proxy)):
      if value is not None and not scores_lib.NEEDS_LEARNER[score]:
        raise ValueError(f"{name} applies to learner scoring, which score={score!r} does not "
                         f"do. Received: {name}={value!r}")
  for name, model in (("learner", learner), ("reference", reference)):
    if model is not None and not isinstance(model, keras.Model):
      raise TypeError(f"{name} must be a keras.Model. "
                      f"Received: {name} of type {type(model).__name__}")
  if reference_cache is not None:
    if not isinstance(id_key, str) or not id_key:
      raise ValueError("reference_cache is joined to the stream by example id: pass id_key=<the "
                       f"id feature>. Received: id_key={id_key!r}")
    if reference is not None:
      reference_cache.check_reference(reference)
  elif id_key is not None:
    raise ValueError(f"id_key only serves reference_cache, which was not given. "
                     f"Received: id_key={id_key!r}")
  if scoring_view is not None and not callable(scoring_view):
    raise ValueError(f"scoring_view must be a function of the inputs x. "
                     f"Received: scoring_view={scoring_view!r}")
  if proxy is not None and learner is not None and proxy.model is learner:
    raise ValueError("The proxy must be a separate (smaller) model, not the learner: tfjest "
                     f"trains the proxy itself. Received: proxy.model={proxy.model.name!r}")
  if not _is_int(num_chunks) or num_chunks <= 0:
    raise ValueError(f"num_chunks must be a positive integer. Received: num_chunks={num_chunks!r}")
  if method == "jest" and batch_size % num_chunks:
    raise ValueError(f"num_chunks must divide batch_size={batch_size} (each chunk holds "
                     f"batch_size / num_chunks examples). Received: num_chunks={num_chunks}")
  if (not isinstance(temperature, numbers.Real) or isinstance(temperature, bool) or
      not temperature > 0 or not math.isfinite(temperature)):
    raise ValueError(f"temperature must be a finite number > 0 (use greedy=True for "
                     f"deterministic top-k). Received: temperature={temperature!r}")
  if not _is_int(seed) or seed < 0:
    raise ValueError(f"seed must be an integer >= 0. Received: seed={seed!r}")
  if first_chunk not in selection.FIRST_CHUNK_RULES:
    raise ValueError(f"Expected first_chunk in {selection.FIRST_CHUNK_RULES}. "
                     f"Received: first_chunk={first_chunk!r}")
  if normalization not in selection.GAIN_NORMALIZATIONS:
    raise ValueError(f"Expected normalization in {selection.GAIN_NORMALIZATIONS}. "
                     f"Received: normalization={normalization!r}")
  if not isinstance(greedy, bool):
    raise ValueError(f"greedy must be a bool. Received: greedy={greedy!r}")
  if task not in adapters.TASKS:
    raise ValueError(f"Expected task in {adapters.TASKS}. Received: task={task!r}")
  if (isinstance(embedding_keys, str) or len(tuple(embedding_keys)) != 2 or
      not all(isinstance(k, str) for k in embedding_keys)):
    raise ValueError("embedding_keys must be two strings (image_key, text_key). "
                     f"Received: embedding_keys={embedding_keys!r}")
  if loss_fn is not None and not callable(loss_fn):
    raise ValueError(f"loss_fn must be callable. Received: loss_fn={loss_fn!r}")
  if not isinstance(input_batched, bool):
    raise ValueError(f"input_batched must be a bool. Received: input_batched={input_batched!r}")
  if remainder not in REMAINDERS:
    raise ValueError(f"Expected remainder in {REMAINDERS}. Received: remainder={remainder!r}")
  return super_batch_size
