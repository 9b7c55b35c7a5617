"""Writes what `tfjest.summaries` recorded as TensorBoard summaries (host side, eager).

`SelectionStatsCallback` calls `SummaryWriter.write` after a training batch when the step
recorded a new sampled super-batch (every `every_n_steps` steps), so writing is off the step's
path and costs a few variable reads per batch otherwise. Tags (with the callback's prefix,
"selection_" by default):

- `<prefix>highest`, `<prefix>lowest` (images): the `summaries.NUM_SHOWN` candidates of the
  sampled super-batch with the highest and the lowest scores, framed green when selected and
  red when rejected. Image features are found by shape and dtype (`[H, W, C]`, C in 1, 3, 4,
  float in [0, 1] or uint8) unless named.
- `<prefix>candidates` (text): a table of the same candidates: score, selected or rejected,
  the `id` feature if there is one, caption (decoded with `vocabulary` or `decode_fn`, else the ids; strings as they are) or
  label.
- `<prefix><score>/selected|rejected` (histograms), `<score>` among `learnability` (or the
  score variant used), `learner_loss`, `proxy_loss`, `reference_loss`, and with a fidelity
  check `learner_loss_full_resolution` and `learner_<score>_full_resolution`.
- `<prefix>group_rate/<value>` (scalars): the selection rate per value of `group_key`.
- `<prefix>fidelity_overlap`, `<prefix>fidelity_rank_correlation` (scalars).
"""

from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from tfjest import summaries as summaries_lib

_CAPTION_NAMES = ("caption", "captions", "text", "tokens", "label", "labels")


class SummaryWriter:
  """Turns a `SelectionSummaries`' last sample into TensorBoard summaries.

  Args:
    summaries: the selector's `SelectionSummaries`.
    score: the selector's score variant (names the score histograms).
    images: path(s) of image features ("/"-joined, as `summaries.flatten_with_paths` names
      them: e.g. "image", or "0/image" in an `(x, y)` element); default: found by shape.
    captions: path of the caption or label feature; default: a string feature, else one named
      caption/text/label, else the labels `y`.
    vocabulary: a sequence of words: caption token ids are shown as these words.
    decode_fn: a function from a caption's ids (a NumPy array) to a string.
    prefix: prepended to every tag.
  """

  def __init__(self, summaries, *, score: str = "learnability",
               images: Optional[Sequence[str]] = None, captions: Optional[str] = None,
               vocabulary: Optional[Sequence[str]] = None,
               decode_fn: Optional[Callable] = None, prefix: str = "selection_"):
    self.summaries = summaries
    self.score = score
    self.images = [images] if isinstance(images, str) else images
    self.captions = captions
    self.vocabulary = None if vocabulary is None else list(vocabulary)
    self.decode_fn = decode_fn
    self.prefix = prefix
    self._written = 0
    self.warned = False

  def write_if_new(self, writer, step: int) -> bool:
    """Writes the last sample if it was not written yet; returns whether it wrote."""
    samples = int(self.summaries.samples.numpy())
    if samples == self._written:
      return False
    self._written = samples
    sample = self.summaries.sample()
    if sample is None:
      return False
    with writer.as_default(step=step):
      self._write_sample(sample)
      self.write_scalars()
    return True

  def write_scalars(self):
    """Per-group rates and fidelity, under the default writer and step."""
    result = self.summaries.result()
    for key, value in result.items():
      if key.startswith(("group_rate/", "fidelity_")):
        tf.summary.scalar(self.prefix + key, value)
    # The rank correlation is the signal: its ceiling is 1 for every rule, while the overlap
    # of a joint (JEST) selection stays well below 1 even for the learner's own picks.
    corr = result.get("fidelity_rank_correlation")
    if corr is not None and corr < summaries_lib.FIDELITY_THRESHOLD and not self.warned:
      self.warned = True
      logging.warning(
          "tfjest: the proxy's scores rank the candidates unlike the learner's own: rank "
          "correlation %.2f (below %.2f; %.2f of its picks are among the learner's top). Try "
          "a larger proxy, a finer scoring view, or scoring with the learner.", corr,
          summaries_lib.FIDELITY_THRESHOLD, result.get("fidelity_overlap", np.nan))

  def _write_sample(self, sample):
    buffers, shown = sample["buffers"], sample["shown"]
    chosen, usable = buffers["chosen"], buffers["usable"]
    for name, values in buffers.items():
      if name in ("chosen", "usable"):
        continue
      tag = self.prefix + self._histogram_name(name)
      for part, mask in (("selected", chosen & usable), ("rejected", ~chosen & usable)):
        if mask.any():
          tf.summary.histogram(f"{tag}/{part}", values[mask])
    k = summaries_lib.NUM_SHOWN
    elements = dict(sample["elements"])
    marks = shown["chosen"]
    for path in self._image_paths(elements):
      pictures = framed(elements[path], marks, shown["usable"])
      suffix = "" if len(self._image_paths(elements)) == 1 else f"/{path}"
      tf.summary.image(f"{self.prefix}highest{suffix}", pictures[:k], max_outputs=k)
      tf.summary.image(f"{self.prefix}lowest{suffix}", pictures[k:], max_outputs=k)
    rows = ["| rank | score | | id | caption |", "|---|---|---|---|---|"]
    for c in self.candidates(sample):
      state = "**selected**" if c["selected"] else "rejected"
      rows.append(f"| {c['rank']} | {c['score']:.3f} | {state} | {c['id']} | {c['caption']} |")
    tf.summary.text(f"{self.prefix}candidates", "\n".join(rows))

  def candidates(self, sample) -> list:
    """The shown candidates of `sample` (`SelectionSummaries.sample()`), highest first.

    Returns:
      A list of dicts: `rank` ("highest 1", ..., "lowest 1", ...), `score`, `selected`,
      `id` (the `id` feature as text, or ""), `caption` (as text, or "") and `image` (the
      first image feature, or None).
    """
    k = summaries_lib.NUM_SHOWN
    shown, elements = sample["shown"], dict(sample["elements"])
    captions = self._caption_texts(elements)
    ids = next((v for p, v in elements.items() if p.split("/")[-1] == "id"), None)
    paths = self._image_paths(elements)
    out = []
    for i in range(len(shown["chosen"])):
      if not shown["usable"][i]:
        continue
      out.append({"rank": f"highest {i + 1}" if i < k else f"lowest {i - k + 1}",
                  "score": float(shown["score"][i]), "selected": bool(shown["chosen"][i]),
                  "id": "" if ids is None else self._decode(ids[i], words=False),
                  "caption": captions[i] if captions is not None else "",
                  "image": elements[paths[0]][i] if paths else None})
    return out

  def _histogram_name(self, name: str) -> str:
    if name == "score":
      return self.score
    if name == "learner_score":
      return f"learner_{self.score}_full_resolution"
    if name == "learner_full_loss":
      return "learner_loss_full_resolution"
    return name

  def _image_paths(self, elements):
    if self.images is not None:
      return [p for p in self.images if p in elements]
    return [p for p, v in elements.items()
            if v.ndim == 4 and v.shape[-1] in (1, 3, 4) and
            (v.dtype == np.uint8 or np.issubdtype(v.dtype, np.floating))]

  def _caption_texts(self, elements):
    path = self.captions
    if path is None:
      strings = [p for p, v in elements.items() if v.dtype.kind in ("S", "O")]
      named = sorted((p for p in elements if p.split("/")[-1] in _CAPTION_NAMES),
                     key=lambda p: _CAPTION_NAMES.index(p.split("/")[-1]))
      labels = [p for p in elements if p == "1"]  # y of an (x, y) element
      found = strings or named or labels
      path = found[0] if found else None
    if path is None or path not in elements:
      return None
    return [self._decode(v) for v in elements[path]]

  def _decode(self, value, words: bool = True) -> str:
    value = np.asarray(value)
    if value.dtype.kind in ("S", "O"):
      return " ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                      for v in value.reshape(-1))
    if self.decode_fn is not None and words:
      return str(self.decode_fn(value))
    ids = value.reshape(-1)
    if words and self.vocabulary is not None and np.issubdtype(ids.dtype, np.integer):
      words = [self.vocabulary[i] if 0 <= i < len(self.vocabulary) else f"<{i}>" for i in ids]
      return " ".join(w for w in words if w)
    return " ".join(str(v) for v in ids) if ids.size > 1 else str(ids[0])


def framed(images: np.ndarray, chosen: np.ndarray, usable: np.ndarray) -> np.ndarray:
  """`[n, H, W, 3]` float images in [0, 1], framed green (selected) or red (rejected)."""
  pictures = images.astype(np.float32)
  if images.dtype == np.uint8:
    pictures = pictures / 255.0
  pictures = np.clip(pictures, 0.0, 1.0)
  if pictures.shape[-1] == 1:
    pictures = np.repeat(pictures, 3, axis=-1)
  pictures = pictures[..., :3].copy()
  width = max(1, min(pictures.shape[1:3]) // 16)
  for i, (picked, valid) in enumerate(zip(chosen, usable)):
    color = (np.array([0.1, 0.9, 0.1]) if picked else np.array([0.9, 0.1, 0.1])) if valid \
        else np.array([0.5, 0.5, 0.5])
    for border in (np.s_[:width, :], np.s_[-width:, :], np.s_[:, :width], np.s_[:, -width:]):
      pictures[i][border] = color
  return pictures
