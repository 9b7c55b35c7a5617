"""PNG encoding of uint8 images with the standard library alone.

TFDS encodes a NumPy image by running a TensorFlow op per example (about 1.5 ms for a 32x32
image on a 2-core CPU); this encoder does the same job in tens of microseconds, which is what
lets the 106k-example benchmark build in well under two minutes. `tfds.features.Image` stores
encoded bytes as they are, so the decoded images are the same either way.
"""

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type for each channel count: grey, grey + alpha, RGB, RGBA.
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}


def _chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data +
          struct.pack(">I", zlib.crc32(kind + data)))


def encode_png(image: np.ndarray, *, compression: int = 6) -> bytes:
  """Encodes one image as PNG bytes (8 bits per channel, no interlacing).

  Args:
    image: `np.uint8` array of shape `[height, width, channels]` with 1 to 4 channels.
    compression: zlib level, 0 (none) to 9 (smallest). The output is deterministic for a
      given level and zlib version.

  Returns:
    The PNG file content, decodable by `tf.io.decode_png`.

  Raises:
    ValueError: if `image` is not a uint8 `[height, width, channels]` array with 1 to 4
      channels, or `compression` is not in [0, 9].
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in _COLOUR_TYPES:
    raise ValueError(
        "`image` must be a uint8 array of shape [height, width, channels] with 1 to 4 "
        f"channels. Received: image.dtype={image.dtype}, image.shape={image.shape}")
  if not 0 <= compression <= 9:
    raise ValueError(f"`compression` must be in [0, 9]. Received: compression={compression}")
  height, width, channels = image.shape
  header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
  # Each scanline starts with its filter type; 0 means "none".
  rows = np.concatenate(
      [np.zeros((height, 1), np.uint8), image.reshape(height, width * channels)], axis=1)
  return (_SIGNATURE + _chunk(b"IHDR", header) +
          _chunk(b"IDAT", zlib.compress(rows.tobytes(), compression)) + _chunk(b"IEND", b""))
