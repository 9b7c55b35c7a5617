"""Tests of tfjest.checks: what each check accepts, what it refuses, and its message."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tfjest import checks


class PredicatesTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("int", 3, True), ("np_int64", np.int64(3), True), ("np_int32", np.int32(-1), True),
      ("np_uint8", np.uint8(2), True), ("bool", True, False), ("np_bool", np.bool_(True), False),
      ("float", 3.0, False), ("np_float", np.float32(3), False), ("str", "3", False),
      ("none", None, False))
  def test_is_int(self, value, expected):
    self.assertIs(checks.is_int(value), expected)

  @parameterized.named_parameters(
      ("int", 3, True), ("float", 0.5, True), ("np_float32", np.float32(0.5), True),
      ("np_float64", np.float64(0.5), True), ("np_int64", np.int64(2), True),
      ("nan", float("nan"), True), ("bool", False, False), ("np_bool", np.bool_(False), False),
      ("str", "0.5", False), ("none", None, False), ("complex", 1j, False))
  def test_is_real(self, value, expected):
    self.assertIs(checks.is_real(value), expected)


class IntegerTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("int", 8), ("np_int64", np.int64(8)), ("np_int32", np.int32(8)), ("np_uint16", np.uint16(8)))
  def test_accepts_and_returns_a_python_int(self, value):
    got = checks.integer(value, "n", minimum=0)
    self.assertEqual(got, 8)
    self.assertIs(type(got), int)
    got = checks.positive_int(value, "n")
    self.assertIs(type(got), int)

  @parameterized.named_parameters(
      ("bool", True), ("np_bool", np.bool_(True)), ("float", 8.0), ("np_float", np.float32(8)),
      ("str", "8"), ("none", None), ("nan", float("nan")))
  def test_refuses_non_integers(self, value):
    with self.assertRaisesRegex(ValueError,
                                r"^n must be an integer\. Received: n=" + _escaped(value)):
      checks.integer(value, "n")

  def test_minimum(self):
    self.assertEqual(checks.integer(-5, "n"), -5)
    self.assertEqual(checks.integer(2, "n", minimum=2), 2)
    with self.assertRaisesRegex(ValueError, r"^n must be an integer >= 2\. Received: n=1$"):
      checks.integer(1, "n", minimum=2)
    with self.assertRaisesRegex(ValueError,
                                r"^n must be an even count\. Received: n=np\.int64\(1\)$|"
                                r"^n must be an even count\. Received: n=1$"):
      checks.integer(np.int64(1), "n", minimum=2, what="an even count")

  @parameterized.named_parameters(("zero", 0), ("negative", -3), ("bool", True),
                                  ("float", 1.0))
  def test_positive_int_refuses(self, value):
    with self.assertRaisesRegex(ValueError, r"^batch_size must be a positive integer\. "
                                r"Received: batch_size="):
      checks.positive_int(value, "batch_size")


class RealTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("float", 0.75), ("np_float32", np.float32(0.75)), ("np_float64", np.float64(0.75)))
  def test_accepts_and_returns_a_python_float(self, value):
    got = checks.real(value, "f", low=0.0, high=1.0)
    self.assertEqual(got, 0.75)
    self.assertIs(type(got), float)

  def test_accepts_integers_as_floats(self):
    got = checks.real(np.int64(2), "t")
    self.assertEqual(got, 2.0)
    self.assertIs(type(got), float)

  @parameterized.named_parameters(
      ("nan", float("nan")), ("np_nan", np.float32("nan")), ("bool", True), ("str", "0.5"),
      ("none", None))
  def test_refuses_nan_and_non_numbers(self, value):
    with self.assertRaisesRegex(ValueError, r"^t must be a number in \[-inf, inf\)\. Received: t="):
      checks.real(value, "t")

  @parameterized.named_parameters(
      ("default_half_open", {}, 0.0, True, 1.0, False, "[0.0, 1.0)"),
      ("low_open", {"low_open": True}, 0.0, False, 1.0, False, "(0.0, 1.0)"),
      ("high_closed", {"high_open": False}, 0.0, True, 1.0, True, "[0.0, 1.0]"))
  def test_interval_ends(self, options, low, low_in, high, high_in, shown):
    if low_in:
      self.assertEqual(checks.real(low, "f", low=0.0, high=1.0, **options), low)
    else:
      with self.assertRaisesRegex(ValueError, "must be a number in " + _escaped(shown)):
        checks.real(low, "f", low=0.0, high=1.0, **options)
    if high_in:
      self.assertEqual(checks.real(high, "f", low=0.0, high=1.0, **options), high)
    else:
      with self.assertRaisesRegex(ValueError, r"^f must be a number in " + _escaped(shown) +
                                  r"\. Received: f=1\.0$"):
        checks.real(high, "f", low=0.0, high=1.0, **options)

  def test_one_sided_and_custom_wording(self):
    self.assertEqual(checks.real(1e9, "t", low=0.0, low_open=True), 1e9)
    with self.assertRaisesRegex(ValueError, r"^t must be a number in \(0\.0, inf\)\. "
                                r"Received: t=0\.0$"):
      checks.real(0.0, "t", low=0.0, low_open=True)
    with self.assertRaisesRegex(ValueError, r"^t must be > 0\. Received: t=-1$"):
      checks.real(-1, "t", low=0.0, low_open=True, what="> 0")
    with self.assertRaisesRegex(ValueError, r"^t must be > 0\. Received: t=nan$"):
      checks.real(float("nan"), "t", low=0.0, low_open=True, what="> 0")


class BooleanTest(parameterized.TestCase):

  @parameterized.named_parameters(("true", True), ("false", False), ("np_true", np.bool_(True)),
                                  ("np_false", np.bool_(False)))
  def test_accepts_and_returns_a_python_bool(self, value):
    got = checks.boolean(value, "greedy")
    self.assertIs(type(got), bool)
    self.assertEqual(got, bool(value))

  @parameterized.named_parameters(("int", 1), ("zero", 0), ("str", "True"), ("none", None),
                                  ("np_int", np.int64(1)))
  def test_refuses(self, value):
    with self.assertRaisesRegex(ValueError, r"^greedy must be a bool\. Received: greedy="):
      checks.boolean(value, "greedy")


class OneOfTest(parameterized.TestCase):

  def test_accepts(self):
    self.assertEqual(checks.one_of("drop", "remainder", ("drop", "keep")), "drop")

  @parameterized.named_parameters(("other", "all"), ("none", None), ("list", ["drop"]),
                                  ("dict", {"drop": 1}), ("set", {"drop"}))
  def test_refuses(self, value):
    with self.assertRaisesRegex(ValueError, r"^Expected remainder in \('drop', 'keep'\)\. "
                                r"Received: remainder="):
      checks.one_of(value, "remainder", ("drop", "keep"))


def _escaped(value):
  import re  # pylint: disable=g-import-not-at-top
  return re.escape(str(value) if isinstance(value, str) and value.startswith("[") else
                   repr(value) if not isinstance(value, str) or not value[:1] in "([" else value)


if __name__ == "__main__":
  absltest.main()
