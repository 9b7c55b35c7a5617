"""Captions as fixed-length token ids: a WordPiece vocabulary learnt from the captions
themselves, and a tokenizer that runs inside tf.data.

Both sides normalise text the same way (lower case, NFD, accents stripped, split on
whitespace and punctuation), as BERT does, so every caption word the vocabulary was learnt
from maps to its own id. Everything runs offline.

Example:

```python
curated = tfjest.datasets.load("curated", config=config)
vocab = build_vocab(curated.map(lambda ex: ex["caption"]))
tokenizer = CaptionTokenizer(vocab, max_length=32)
pairs = web.map(lambda ex: (ex["image"], tokenizer(ex["caption"]))).batch(256)
```
"""

from typing import Sequence

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bert_vocab

PAD_TOKEN = "[PAD]"
UNKNOWN_TOKEN = "[UNK]"
RESERVED_TOKENS = (PAD_TOKEN, UNKNOWN_TOKEN)
_BATCH = 1024


def build_vocab(captions: tf.data.Dataset, *, vocab_size: int = 1000,
                reserved_tokens: Sequence[str] = RESERVED_TOKENS) -> list:
  """Learns a WordPiece vocabulary from a dataset of captions.

  Args:
    captions: a `tf.data.Dataset` of `tf.string` scalars or vectors, e.g.
      `dataset.map(lambda ex: ex["caption"])`.
    vocab_size: the largest vocabulary size; a small caption language uses far fewer.
    reserved_tokens: tokens placed first, in this order; must hold `PAD_TOKEN` and
      `UNKNOWN_TOKEN`. With the default, `[PAD]` has id 0 and `[UNK]` id 1.

  Returns:
    The vocabulary, a list of strings: reserved tokens, then characters, words and `##`
    suffixes.

  Raises:
    TypeError: if `captions` is not a dataset of string scalars or vectors.
    ValueError: if `reserved_tokens` lacks `[PAD]` or `[UNK]`, or `vocab_size` cannot hold
      them.
  """
  if not isinstance(captions, tf.data.Dataset):
    raise TypeError("`captions` must be a `tf.data.Dataset` of strings. "
                    f"Received: captions={captions!r}")
  spec = captions.element_spec
  if (not isinstance(spec, tf.TensorSpec) or spec.dtype != tf.string or
      spec.shape.rank not in (0, 1)):
    raise TypeError("`captions` must yield string scalars or vectors; map a dict dataset "
                    "with `lambda ex: ex['caption']` first. "
                    f"Received: captions.element_spec={spec}")
  reserved_tokens = list(reserved_tokens)
  missing = [t for t in (PAD_TOKEN, UNKNOWN_TOKEN) if t not in reserved_tokens]
  if missing:
    raise ValueError(f"`reserved_tokens` must include {list(RESERVED_TOKENS)}; missing "
                     f"{missing}. Received: reserved_tokens={reserved_tokens}")
  if vocab_size <= len(reserved_tokens):
    raise ValueError("`vocab_size` must be larger than the number of reserved tokens "
                     f"({len(reserved_tokens)}). Received: vocab_size={vocab_size}")
  if spec.shape.rank == 0:
    captions = captions.batch(_BATCH)
  return bert_vocab.bert_vocab_from_dataset(
      captions, vocab_size=vocab_size, reserved_tokens=reserved_tokens,
      bert_tokenizer_params={"lower_case": True})


def save_vocab(vocab: Sequence[str], path: str) -> None:
  """Writes a vocabulary as a text file, one token per line (the BERT `vocab.txt` format).

  Raises:
    ValueError: if a token is empty or contains a line break.
  """
  bad = [t for t in vocab if not t or "\n" in t or "\r" in t]
  if bad:
    raise ValueError(f"Tokens must be non-empty and on one line. Received: tokens={bad[:5]}")
  with tf.io.gfile.GFile(path, "w") as f:
    f.write("".join(f"{token}\n" for token in vocab))


def load_vocab(path: str) -> list:
  """Reads a vocabulary written by `save_vocab` (or any BERT `vocab.txt`).

  Raises:
    FileNotFoundError: if `path` does not exist.
  """
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"No vocabulary file. Received: path={path!r}")
  with tf.io.gfile.GFile(path, "r") as f:
    return f.read().splitlines()


class CaptionTokenizer:
  """Turns captions into fixed-length int32 token ids: WordPiece, then truncate or pad.

  Call it eagerly, in a `tf.function` or in a `tf.data` map; the results are the same. Padding
  uses the id of `[PAD]`, so `ids != tokenizer.pad_id` is the mask of real tokens.

  Args:
    vocab: the vocabulary, e.g. from `build_vocab` or `load_vocab`; must contain `[PAD]` and
      `[UNK]`.
    max_length: number of ids per caption. The default, 32, fits every caption of the
      synthetic captions benchmark (three objects take at most 28 tokens).

  Raises:
    ValueError: if `vocab` lacks `[PAD]` or `[UNK]`, or `max_length` is not positive.
  """

  def __init__(self, vocab: Sequence[str], *, max_length: int = 32):
    vocab = list(vocab)
    missing = [t for t in (PAD_TOKEN, UNKNOWN_TOKEN) if t not in vocab]
    if missing:
      raise ValueError(f"`vocab` must contain {list(RESERVED_TOKENS)}; missing {missing}. "
                       f"Received: vocab of {len(vocab)} tokens starting {vocab[:5]}")
    if not isinstance(max_length, int) or max_length < 1:
      raise ValueError("`max_length` must be a positive integer. "
                       f"Received: max_length={max_length!r}")
    self._vocab = tuple(vocab)
    self._max_length = max_length
    self._pad_id = vocab.index(PAD_TOKEN)
    self._tokenizer = tf_text.FastBertTokenizer(
        vocab=vocab, token_out_type=tf.int32, unknown_token=UNKNOWN_TOKEN,
        lower_case_nfd_strip_accents=True)

  @property
  def vocab(self) -> tuple:
    return self._vocab

  @property
  def vocab_size(self) -> int:
    return len(self._vocab)

  @property
  def max_length(self) -> int:
    return self._max_length

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @tf.autograph.experimental.do_not_convert
  def __call__(self, captions) -> tf.Tensor:
    """Token ids of `captions`.

    Args:
      captions: a `tf.string` tensor of any shape `[...]` (or something convertible to one).

    Returns:
      An int32 tensor `[..., max_length]`: each caption's WordPiece ids, cut after
      `max_length` tokens or padded with `pad_id`.
    """
    captions = tf.convert_to_tensor(captions, dtype=tf.string)
    ragged = self._tokenizer.tokenize(tf.reshape(captions, [-1]))
    ids = ragged.to_tensor(default_value=self._pad_id, shape=[None, self._max_length])
    ids = tf.reshape(ids, tf.concat([tf.shape(captions), [self._max_length]], axis=0))
    return tf.ensure_shape(ids, captions.shape.concatenate([self._max_length]))
