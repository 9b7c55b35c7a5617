"""Scenes of coloured shapes on a 3x3 grid: their attributes, how to draw them, how to render.

A scene holds one to three objects, each with a colour, a shape, a size and a grid cell, on a
plain, gradient or lightly textured background. The first object is the main one: its colour
and shape make the class label (`len(COLOURS) * len(SHAPES)` = 40 classes). Scenes are kept as
a structure of arrays so that thousands render at once with NumPy broadcasting.
"""

import dataclasses
import functools

import numpy as np

COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
SHAPES = ("square", "circle", "triangle", "bar", "cross")
SIZES = ("small", "large")
POSITIONS = ("top left", "top middle", "top right", "middle left", "center", "middle right",
             "bottom left", "bottom middle", "bottom right")
MAX_OBJECTS = 3
NUM_CLASSES = len(COLOURS) * len(SHAPES)

# Saturated object colours; backgrounds stay low-saturation greys (see `sample_scenes`), so a
# colour name is never ambiguous against its background.
_RGB = np.array([[220, 40, 40], [245, 140, 30], [240, 220, 50], [40, 170, 70], [40, 200, 220],
                 [40, 80, 220], [150, 60, 190], [250, 250, 250]], np.float32)
_OBJECT_COUNT_PROBS = (0.5, 0.3, 0.2)
_RADIUS = (0.27, 0.42)  # half-extent of a small / large object, as a share of a grid cell
_MAX_OFFSET = 0.07  # largest centre jitter, share of a cell (see `_mask_bank`)
_PLAIN, _GRADIENT, _TEXTURE = 0, 1, 2
_NUM_TEXTURES = 16
_TEXTURE_AMPLITUDE = 14.0


def label_of(colour, shape):
  """Class label of a (colour, shape) concept; works on ints and integer arrays."""
  return colour * len(SHAPES) + shape


def class_names() -> list:
  """Names of the `NUM_CLASSES` labels in label order, e.g. "red square", "red circle"."""
  return [f"{c} {s}" for c in COLOURS for s in SHAPES]


@dataclasses.dataclass(frozen=True)
class Scenes:
  """Parameters of `n` scenes. Object slots past `count` exist but are neither drawn nor named.

  Attributes:
    colour, shape, size, position: int arrays `[n, MAX_OBJECTS]`, indices into `COLOURS`,
      `SHAPES`, `SIZES` and `POSITIONS`. Positions within a scene are distinct.
    count: int array `[n]`, the number of objects, 1 to `MAX_OBJECTS`.
    offset: float array `[n, MAX_OBJECTS, 2]`, centre jitter (x, y) in [-1, 1], a share of
      the largest jitter (rendering rounds it to whole pixels).
    tint: float array `[n, MAX_OBJECTS, 3]`, per-object RGB jitter.
    background: int array `[n]`: 0 plain, 1 gradient, 2 texture.
    background_rgb: float array `[n, 2, 3]`: the plain colour, or a gradient's two ends.
    direction: int array `[n]`: gradient direction (horizontal, vertical, two diagonals).
    texture: int array `[n]`: which of a fixed bank of textures.
  """

  colour: np.ndarray
  shape: np.ndarray
  size: np.ndarray
  position: np.ndarray
  count: np.ndarray
  offset: np.ndarray
  tint: np.ndarray
  background: np.ndarray
  background_rgb: np.ndarray
  direction: np.ndarray
  texture: np.ndarray

  def __len__(self):
    return len(self.count)

  @property
  def label(self) -> np.ndarray:
    """The class label of each scene's main (first) object, `[n]`."""
    return label_of(self.colour[:, 0], self.shape[:, 0])

  def take(self, index) -> "Scenes":
    """The scenes at `index` (an int array), in that order; repeats allowed."""
    return Scenes(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

  def replace(self, **changes) -> "Scenes":
    return dataclasses.replace(self, **changes)


def sample_scenes(rng: np.random.Generator, labels: np.ndarray, *,
                  class_probs=None) -> Scenes:
  """Draws one scene per label; the label fixes the main object's colour and shape.

  Args:
    rng: the random source.
    labels: int array `[n]` of class labels in `[0, NUM_CLASSES)`.
    class_probs: optional `[NUM_CLASSES]` probabilities for the other objects' concepts;
      uniform when omitted.

  Returns:
    A `Scenes` of length `n`.
  """
  labels = np.asarray(labels, np.int64)
  n = len(labels)
  others = rng.choice(NUM_CLASSES, size=(n, MAX_OBJECTS - 1), p=class_probs)
  concepts = np.concatenate([labels[:, None], others], axis=1)
  grey = rng.uniform(50, 180, size=(n, 2, 1))
  return Scenes(
      colour=concepts // len(SHAPES),
      shape=concepts % len(SHAPES),
      size=rng.integers(0, len(SIZES), size=(n, MAX_OBJECTS)),
      position=np.argsort(rng.random((n, len(POSITIONS))), axis=1)[:, :MAX_OBJECTS],
      count=rng.choice(np.arange(1, MAX_OBJECTS + 1), size=n, p=_OBJECT_COUNT_PROBS),
      offset=rng.uniform(-1, 1, size=(n, MAX_OBJECTS, 2)),
      tint=rng.uniform(-15, 15, size=(n, MAX_OBJECTS, 3)),
      background=rng.integers(0, 3, size=n),
      background_rgb=grey + rng.uniform(-20, 20, size=(n, 2, 3)),
      direction=rng.integers(0, 4, size=n),
      texture=rng.integers(0, _NUM_TEXTURES, size=n))


def _interpolation_matrix(coarse: int, fine: int) -> np.ndarray:
  """`[fine, coarse]` weights of bilinear upsampling along one axis."""
  pos = np.clip((np.arange(fine) + 0.5) / fine * coarse - 0.5, 0, coarse - 1)
  low = np.floor(pos).astype(int)
  high = np.minimum(low + 1, coarse - 1)
  weights = np.zeros((fine, coarse), np.float32)
  np.add.at(weights, (np.arange(fine), low), 1 - (pos - low))
  np.add.at(weights, (np.arange(fine), high), pos - low)
  return weights


def _upsample(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear upsampling of `[n, m, m]` or `[n, m, m, c]` arrays to `size` x `size`."""
  matrix = _interpolation_matrix(images.shape[1], size)
  channels_first = np.moveaxis(images.astype(np.float32), (1, 2), (-2, -1))
  upsampled = matrix @ channels_first @ matrix.T
  return np.moveaxis(upsampled, (-2, -1), (1, 2))


@functools.lru_cache(maxsize=None)
def _texture_bank(image_size: int) -> np.ndarray:
  """A fixed bank of light textures `[_NUM_TEXTURES, size, size]`, zero mean, about +-1."""
  rng = np.random.default_rng(20240601)
  smooth = _upsample(rng.normal(size=(_NUM_TEXTURES, 8, 8)), image_size)
  grain = rng.normal(scale=0.5, size=(_NUM_TEXTURES, image_size, image_size))
  return (smooth + grain).astype(np.float32)


def _shape_masks(dx, dy, radius):
  """Boolean masks of each shape in `SHAPES` order, centred at (0, 0); any broadcast shape."""
  ax, ay = np.abs(dx), np.abs(dy)
  return [
      np.maximum(ax, ay) <= radius,  # square
      dx * dx + dy * dy <= radius * radius,  # circle
      (ay <= radius) & (ax <= (dy + radius) / 2),  # triangle, apex up
      (ax <= radius) & (ay <= 0.4 * radius),  # horizontal bar
      ((ax <= radius) & (ay <= 0.35 * radius)) | ((ay <= radius) & (ax <= 0.35 * radius)),
  ]


def _draw_masks(image_size: int, max_shift: int) -> np.ndarray:
  """Object masks `[shape, size, position, shift_x, shift_y, pixel_y, pixel_x]` (booleans)."""
  cell = image_size / 3
  shift = np.arange(-max_shift, max_shift + 1)
  row, col = np.divmod(np.arange(len(POSITIONS)), 3)
  centre_x = (col[:, None] + 0.5) * cell + shift[None, :]  # [position, shift]
  centre_y = (row[:, None] + 0.5) * cell + shift[None, :]
  coords = np.arange(image_size) + 0.5
  # Axes: [size, position, shift_x, shift_y, pixel_y, pixel_x].
  dx = (coords[None, None, None, None, :] - centre_x[:, :, None, None, None])[None]
  dy = (coords[None, None, None, :, None] - centre_y[:, None, :, None, None])[None]
  radius = (np.asarray(_RADIUS) * cell).reshape(-1, 1, 1, 1, 1, 1)
  return np.stack(_shape_masks(dx, dy, radius))


def _cells_overlap(masks: np.ndarray) -> bool:
  """Whether objects in two different cells can share a pixel."""
  reach = masks.any(axis=(0, 1, 3, 4)).astype(np.int32)  # [position, pixel_y, pixel_x]
  return bool((reach.sum(axis=0) > 1).any())


@functools.lru_cache(maxsize=None)
def _mask_bank(image_size: int) -> np.ndarray:
  """Every object mask, `[shape, size, position, shift_x, shift_y, pixel_y, pixel_x]`.

  Centres move by whole pixels, so the few hundred possible masks are drawn once and
  rendering only gathers them. The jitter is the largest (up to `_MAX_OFFSET` of a cell, at
  least one pixel when possible) for which objects in different cells never overlap.
  """
  for max_shift in range(max(1, int(_MAX_OFFSET * image_size / 3)), 0, -1):
    masks = _draw_masks(image_size, max_shift)
    if not _cells_overlap(masks):
      return masks
  return _draw_masks(image_size, 0)


def render(scenes: Scenes, image_size: int) -> np.ndarray:
  """Draws scenes as `np.uint8` images `[n, image_size, image_size, 3]`, deterministically."""
  coords = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
  x, y = coords[None, :], coords[:, None]
  ramps = np.stack(np.broadcast_arrays(x, y, (x + y) / 2, (1 - x + y) / 2))
  start = scenes.background_rgb[:, 0].astype(np.float32)
  end = np.where((scenes.background == _GRADIENT)[:, None], scenes.background_rgb[:, 1], start)
  ramp = ramps[scenes.direction]
  texture = _texture_bank(image_size)[scenes.texture] * _TEXTURE_AMPLITUDE
  ramp_and_texture = np.where((scenes.background == _TEXTURE)[:, None, None], texture, 0)
  images = (start[:, None, None] + (end - start).astype(np.float32)[:, None, None] *
            ramp[..., None] + ramp_and_texture[..., None])
  images = np.clip(np.rint(images), 0, 255).astype(np.uint8)

  masks = _mask_bank(image_size)
  max_shift = masks.shape[3] // 2
  shift = np.rint(scenes.offset * max_shift).astype(int) + max_shift
  colours = np.clip(np.rint(_RGB[scenes.colour] + scenes.tint), 0, 255).astype(np.uint8)
  for k in range(MAX_OBJECTS):
    mask = masks[scenes.shape[:, k], scenes.size[:, k], scenes.position[:, k],
                 shift[:, k, 0], shift[:, k, 1]]
    mask &= (k < scenes.count)[:, None, None]
    images = np.where(mask[..., None], colours[:, k, None, None], images)
  return images


def render_clutter(rng: np.random.Generator, n: int, image_size: int) -> np.ndarray:
  """Draws `n` images of random colour blobs and pixel noise, with no drawn object in them."""
  coarse = _upsample(rng.uniform(0, 255, size=(n, 4, 4, 3)), image_size)
  blobs = _upsample(rng.uniform(-70, 70, size=(n, 8, 8, 3)), image_size)
  grain = rng.normal(scale=12, size=(n, image_size, image_size, 3))
  return np.clip(np.rint(coarse + blobs + grain), 0, 255).astype(np.uint8)


def jitter(rng: np.random.Generator, images: np.ndarray, amplitude: int = 3) -> np.ndarray:
  """Adds integer noise in `[-amplitude, amplitude]` to every pixel: a near-duplicate."""
  noise = rng.integers(-amplitude, amplitude + 1, size=images.shape)
  return np.clip(images.astype(np.int16) + noise, 0, 255).astype(np.uint8)
