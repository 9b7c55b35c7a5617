"""Multi-resolution training (Flexi-JEST): batches at a mix of image sizes.

When the learner scores candidates at a lower resolution (a `scoring_view`), its low-resolution
outputs are only as good as it is at that resolution. Flexi-JEST therefore trains on a mix of
resolutions, so that the cheap scores stay close to the full-resolution ones, and the low-
resolution batches cost less to train on too (docs/SPEC.md §10). `multi_resolution` is that
mix as a `tf.data` transformation of a *batched* stream, e.g. of what `select` emits:

    selected = train_ds.apply(tfjest.select(..., scoring_view=half_size))
    model.fit(selected.apply(tfjest.multi_resolution([32, 16])))

Batch `i` has its images resized (area averaging, which is exact average pooling for integer
factors) to `sizes[i % len(sizes)]`: a fixed rotation, so the mix is exact and reproducible, and
every element of a batch has one size. The model must accept every size (e.g. convolutions with
global or adaptive pooling); the stream's image spec then has unknown height and width.
"""

from typing import Callable, Sequence

import tensorflow as tf

from tfjest import checks


def multi_resolution(sizes: Sequence[int], *, key: str = "image"
                     ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
  """A transformation that resizes the images of batch `i` to `sizes[i % len(sizes)]`.

  Args:
    sizes: image sides (square images), e.g. `[32, 16]`: half of the batches at 32 x 32, half
      at 16 x 16. A size equal to the images' own leaves those batches unchanged.
    key: the image feature in the element's `x` (a dict, or the first item of a tuple whose
      first item is a dict).

  Returns:
    A function for `dataset.apply`, for a stream of batches whose `key` feature is a float
    `[b, h, w, c]` tensor.

  Raises:
    ValueError: for empty or non-positive `sizes`, or (when applied) a stream without a
      `[b, h, w, c]` float `key` feature, or a size larger than the images.
  """
  sizes = list(sizes) if not isinstance(sizes, (str, bytes)) else sizes
  if (isinstance(sizes, (str, bytes)) or not sizes or
      not all(checks.is_int(s) and s > 0 for s in sizes)):
    raise ValueError(f"Expected sizes to be a non-empty sequence of positive ints. "
                     f"Received: sizes={sizes!r}")

  def images_of(element):
    x = element[0] if isinstance(element, tuple) else element
    if not isinstance(x, dict) or key not in x:
      raise ValueError(f"multi_resolution reads the image feature {key!r} of each batch's x. "
                       f"Received: an element without it (key={key!r})")
    return x[key]

  def with_images(element, images):
    if isinstance(element, tuple):
      return ({**element[0], key: images},) + tuple(element[1:])
    return {**element, key: images}

  def apply(dataset: tf.data.Dataset) -> tf.data.Dataset:
    spec = images_of(dataset.element_spec)
    if (spec.shape.rank != 4 or not spec.dtype.is_floating or
        spec.shape[1] is None or spec.shape[1] != spec.shape[2]):
      raise ValueError(f"multi_resolution resizes batches of square float images "
                       f"[b, h, h, c]. Received: {key!r} of spec {spec}")
    full = int(spec.shape[1])
    if max(sizes) > full:
      raise ValueError(f"multi_resolution only lowers the resolution: every size must be at "
                       f"most the images' side {full}. Received: sizes={sizes!r}")

    def resize(index, element):
      images = images_of(element)
      branches = [
          (lambda s=s: images if s == full else
           tf.cast(tf.image.resize(images, (s, s), method="area"), images.dtype))
          for s in sizes]
      chosen = tf.switch_case(tf.cast(index % len(sizes), tf.int32), branches)
      return with_images(element, chosen)

    return dataset.enumerate().map(resize)

  return apply
