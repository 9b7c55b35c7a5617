"""Captions of scenes: clean descriptions in several templates, and the ways they go wrong.

A clean caption names every object of a scene, main object first, with one template per
caption. Templates vary the word order ("a small red circle in the top left", "top left: one
red circle, small", "red circle (small) at top left", ...) and objects are joined with "and"
or ",". The corruptions used by the web split live here too: captions with wrong attributes
and uninformative, file-name-like captions.
"""

import numpy as np

from tfjest.datasets import scenes as scenes_lib

# (prefix, phrase per object, joiners between phrases)
TEMPLATES = (
    ("", "a {size} {colour} {shape} in the {position}", (" and ", ", ")),
    ("", "{position}: one {colour} {shape}, {size}", (" and ",)),
    ("", "{colour} {shape} ({size}) at {position}", (", ", " and ")),
    ("there is ", "a {size} {colour} {shape} at the {position}", (" and ", ", ")),
    ("", "the {position} has a {size} {colour} {shape}", (" and ", ", ")),
    ("photo of ", "{size} {shape}, {colour}, {position}", (" and ",)),
)
ATTRIBUTES = ("colour", "shape", "size", "position")
# What a scraper finds when the alt text says nothing: file names, camera defaults, filler.
_UNINFORMATIVE = (
    "IMG_{:04d}.jpg", "DSC{:05d}.JPG", "photo", "untitled image", "image", "untitled",
    "pic_{}.png", "download ({}).jpeg", "Screenshot_{:04d}.png", "image {}",
    "no description available", "click to enlarge", "thumbnail", "stock photo {}",
)


def describe(scenes: scenes_lib.Scenes, template: np.ndarray, joiner: np.ndarray) -> list:
  """Clean captions naming every object of each scene, main object first.

  Args:
    scenes: the scenes to describe, length `n`.
    template: int array `[n]`, index into `TEMPLATES`.
    joiner: int array `[n]`, which of the template's joiners links the objects (taken
      modulo their number).

  Returns:
    A list of `n` strings.
  """
  names = {
      "colour": np.asarray(scenes_lib.COLOURS)[scenes.colour],
      "shape": np.asarray(scenes_lib.SHAPES)[scenes.shape],
      "size": np.asarray(scenes_lib.SIZES)[scenes.size],
      "position": np.asarray(scenes_lib.POSITIONS)[scenes.position],
  }
  rows = zip(names["colour"].tolist(), names["shape"].tolist(), names["size"].tolist(),
             names["position"].tolist(), scenes.count.tolist(), template.tolist(),
             joiner.tolist())
  captions = []
  for colours, shapes, sizes, positions, count, t, j in rows:
    prefix, phrase, joiners = TEMPLATES[t]
    parts = [phrase.format(colour=colours[k], shape=shapes[k], size=sizes[k],
                           position=positions[k]) for k in range(count)]
    captions.append(prefix + joiners[j % len(joiners)].join(parts))
  return captions


def with_wrong_attributes(rng: np.random.Generator, scenes: scenes_lib.Scenes,
                          num_wrong: np.ndarray) -> scenes_lib.Scenes:
  """Scenes whose main object differs in `num_wrong` of its `ATTRIBUTES` (each a new value).

  Describing the result gives a caption that is right about everything but one or two
  attributes of the main object. A changed colour or shape also changes the label.

  Args:
    rng: the random source.
    scenes: the true scenes, length `n`.
    num_wrong: int array `[n]`, how many attributes to change, 1 to `len(ATTRIBUTES)`.

  Returns:
    A `Scenes` of length `n` with changed main-object attributes.
  """
  n = len(scenes)
  order = np.argsort(rng.random((n, len(ATTRIBUTES))), axis=1)
  chosen = {name: np.argmax(order == a, axis=1) < num_wrong for a, name in enumerate(ATTRIBUTES)}
  changes = {}
  for name, values in (("colour", scenes_lib.COLOURS), ("shape", scenes_lib.SHAPES),
                       ("size", scenes_lib.SIZES)):
    column = getattr(scenes, name).copy()
    step = rng.integers(1, len(values), size=n)  # never 0: the value always changes
    column[:, 0] = np.where(chosen[name], (column[:, 0] + step) % len(values), column[:, 0])
    changes[name] = column
  # A wrong position is a free cell, so the caption never puts two objects in one place.
  position = scenes.position.copy()
  preference = rng.random((n, len(scenes_lib.POSITIONS)))
  np.put_along_axis(preference, position, -1.0, axis=1)
  position[:, 0] = np.where(chosen["position"], np.argmax(preference, axis=1), position[:, 0])
  changes["position"] = position
  return scenes.replace(**changes)


def uninformative(rng: np.random.Generator, n: int) -> list:
  """`n` captions that say nothing about the image ("IMG_0412.jpg", "photo", ...)."""
  kinds = rng.integers(0, len(_UNINFORMATIVE), size=n)
  numbers = rng.integers(1, 10000, size=n)
  return [_UNINFORMATIVE[k].format(x) for k, x in zip(kinds.tolist(), numbers.tolist())]
