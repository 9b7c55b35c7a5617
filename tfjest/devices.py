"""Where a model's variables live: on the host CPU or on an accelerator (a GPU or TPU).

tf.data runs on the host CPU. A model called in a `tf.data` map reads its variables wherever
they live, so with a learner on a GPU the pipeline placement would score `N` examples per step
on the host and copy the weights across the device boundary, silently. The rule, in one place:
when a model the selection reads (`tfjest.models_read`: the learner or the online proxy scoring
for it, and the reference; a cached reference reads no model) has a variable on a GPU or TPU,
selection belongs in the train step: `tfjest.attach(..., placement="auto")` puts it there and
applying the selector itself to a dataset refuses.

`variable_devices` is the only function that reads devices; the rest is pure string work, so
the rule is tested on CPU by giving it GPU or TPU device strings.
"""

from typing import Iterable, Tuple

import keras
import tensorflow as tf

HOST, ACCELERATOR = "host", "accelerator"
ACCELERATOR_TYPES = ("GPU", "TPU")


def variable_devices(model: keras.Model) -> Tuple[str, ...]:
  """The device strings of `model`'s variables, each once, in the order of its weights.

  A model without variables yet (not built) reports where a variable created now would live,
  which is where Keras will create its weights.
  """
  found = []
  for weight in model.weights:
    variable = getattr(weight, "value", weight) if isinstance(weight, keras.Variable) else weight
    device = getattr(variable, "device", "") or ""
    if device not in found:
      found.append(device)
  if found:
    return tuple(found)
  with tf.init_scope():
    return (tf.Variable(0.0, trainable=False, name="tfjest_device_probe").device,)


def kind(device: str) -> str:
  """"accelerator" for a GPU or TPU device string, else "host" (a CPU, or "" for unplaced)."""
  device_type = tf.DeviceSpec.from_string(device or "").device_type or ""
  return ACCELERATOR if device_type.upper() in ACCELERATOR_TYPES else HOST


def location(models: Iterable[keras.Model]) -> str:
  """"accelerator" if any of `models` has a variable on a GPU or TPU, else "host"."""
  for model in models:
    if any(kind(d) == ACCELERATOR for d in variable_devices(model)):
      return ACCELERATOR
  return HOST


def model_device(model: keras.Model) -> str:
  """The device of `model`'s variables (its first accelerator device, else its first device).

  A train step compiled whole with XLA runs there; state it updates must live there too.
  """
  found = variable_devices(model)
  return next((d for d in found if kind(d) == ACCELERATOR), found[0])


def same_device(first: str, second: str) -> bool:
  """Whether two device strings name the same device (type and index; job/task as given)."""
  a, b = tf.DeviceSpec.from_string(first or ""), tf.DeviceSpec.from_string(second or "")
  return ((a.device_type or "CPU").upper(), a.device_index or 0) == (
      (b.device_type or "CPU").upper(), b.device_index or 0)
