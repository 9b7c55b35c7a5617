"""Argument checks every public factory uses: one place, one message form (Keras').

A Python number and a NumPy scalar are the same argument to a user (`np.int64(8)` from an array,
`np.float32(0.8)` from a config), so the checks accept any `numbers.Integral` / `numbers.Real`
(never a bool) and return a plain Python `int` / `float`: what the frozen configuration values
keep, so that no NumPy dtype reaches a TensorFlow op later (an `np.int64` batch size once met an
int32 tensor deep inside the selection and failed there, far from the argument).

Messages say what was expected and end with `Received: name=value`.
"""

import numbers
from typing import Any, Optional, Sequence

import numpy as np


def is_int(value: Any) -> bool:
  """True for a Python or NumPy integer, False for a bool (a bool is not a count)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
  """True for a Python or NumPy real number (ints included), False for a bool."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(value: Any, name: str, *, minimum: Optional[int] = None,
            what: Optional[str] = None) -> int:
  """`value` as a Python int, if it is an integer >= `minimum`.

  Args:
    value: the argument received.
    name: its name, as the user wrote it.
    minimum: the smallest value allowed (None: any).
    what: the expectation in words (default: "an integer >= minimum").

  Raises:
    ValueError: `{name} must be {what}. Received: {name}={value!r}`.
  """
  if not is_int(value) or (minimum is not None and value < minimum):
    if what is None:
      what = "an integer" if minimum is None else f"an integer >= {minimum}"
    raise ValueError(f"{name} must be {what}. Received: {name}={value!r}")
  return int(value)


def positive_int(value: Any, name: str) -> int:
  """`value` as a Python int, if it is an integer >= 1 ("must be a positive integer")."""
  return integer(value, name, minimum=1, what="a positive integer")


def real(value: Any, name: str, *, low: Optional[float] = None, high: Optional[float] = None,
         low_open: bool = False, high_open: bool = True, what: Optional[str] = None) -> float:
  """`value` as a Python float, if it is a real number in the interval given.

  The interval is `[low, high)` by default; `low_open` / `high_open` exclude an end. NaN is
  never in it.

  Raises:
    ValueError: `{name} must be {what}. Received: {name}={value!r}`.
  """
  ok = is_real(value) and value == value  # pylint: disable=comparison-with-itself
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if not ok:
    if what is None:
      left = "(" if low_open else "["
      right = ")" if high_open else "]"
      what = (f"a number in {left}{'-inf' if low is None else low}, "
              f"{'inf' if high is None else high}{right}")
    raise ValueError(f"{name} must be {what}. Received: {name}={value!r}")
  return float(value)


def boolean(value: Any, name: str) -> bool:
  """`value`, if it is a bool (or a NumPy bool).

  Raises:
    ValueError: `{name} must be a bool. Received: {name}={value!r}`.
  """
  if not isinstance(value, (bool, np.bool_)):  # NumPy 2's bool type is named "bool", not "bool_"
    raise ValueError(f"{name} must be a bool. Received: {name}={value!r}")
  return bool(value)


def one_of(value: Any, name: str, choices: Sequence[Any]) -> Any:
  """`value`, if it is one of `choices`.

  Raises:
    ValueError: `Expected {name} in {choices}. Received: {name}={value!r}`.
  """
  if isinstance(value, (list, dict, set)) or value not in tuple(choices):
    raise ValueError(f"Expected {name} in {tuple(choices)}. Received: {name}={value!r}")
  return value
