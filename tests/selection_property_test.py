"""Property-based tests (hypothesis) of the selection functions.

Random sizes, chunk counts, temperatures and scores, including ties, huge values, -inf and NaN.
Each property runs a fixed, bounded number of examples (derandomized, so CI is reproducible).
"""

import unittest

from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np

import tfjest

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

_SPECIAL = st.sampled_from([0.0, 1.0, -1.0, 1e30, -1e30, np.inf, -np.inf, np.nan])


@st.composite
def problems(draw):
  """A score matrix with awkward values, b, K and options."""
  num_chunks = draw(st.integers(1, 4))
  chunk = draw(st.integers(1, 4))
  b = num_chunks * chunk
  n = draw(st.integers(b, b + 12))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  kind = draw(st.sampled_from(["normal", "ties", "huge", "special"]))
  if kind == "normal":
    s = rng.normal(size=(n, n))
  elif kind == "ties":
    s = rng.integers(-1, 2, size=(n, n)).astype(float)
  elif kind == "huge":
    s = rng.normal(size=(n, n)) * 1e30
  else:
    s = rng.normal(size=(n, n))
    for _ in range(draw(st.integers(1, 2 * n))):
      s[rng.integers(n), rng.integers(n)] = draw(_SPECIAL)
  valid = rng.random(n) > draw(st.sampled_from([0.0, 0.3]))
  return dict(s=s.astype(np.float32), b=b, num_chunks=num_chunks, valid=valid,
              temperature=draw(st.sampled_from([0.05, 1.0, 20.0])),
              first_chunk=draw(st.sampled_from(["uniform", "scores"])),
              normalization=draw(st.sampled_from(["none", "set_size"])),
              greedy=draw(st.booleans()), seed=draw(st.integers(0, 1000)),
              step=draw(st.integers(0, 1000)))


def _run(p):
  return tfjest.joint_selection(
      tfjest.DenseScores(p["s"]), p["b"], num_chunks=p["num_chunks"], seed=p["seed"],
      step=p["step"], temperature=p["temperature"], first_chunk=p["first_chunk"],
      normalization=p["normalization"], greedy=p["greedy"], valid=p["valid"]).numpy()


class SelectionPropertyTest(unittest.TestCase):

  @SETTINGS
  @given(problems())
  def test_exact_count_unique_in_range_and_deterministic(self, p):
    picks = _run(p)
    n = p["s"].shape[0]
    self.assertEqual(picks.shape, (p["b"],))
    self.assertEqual(len(set(picks.tolist())), p["b"])
    self.assertTrue(np.all((picks >= 0) & (picks < n)))
    np.testing.assert_array_equal(picks, _run(p))

  @SETTINGS
  @given(problems())
  def test_masked_candidates_only_when_nothing_else_is_left(self, p):
    # With finite scores, masked candidates fill exactly the places usable ones cannot.
    # (Non-finite scores make usable candidates compete for those places: see the last test.)
    assume(np.all(np.isfinite(p["s"])))
    picks = _run(p)
    masked = set(np.flatnonzero(~p["valid"]).tolist())
    usable = p["s"].shape[0] - len(masked)
    taken = len(masked & set(picks.tolist()))
    self.assertEqual(taken, max(0, p["b"] - usable))

  @SETTINGS
  @given(problems())
  def test_independent_and_uniform_properties(self, p):
    n, b = p["s"].shape[0], p["b"]
    values = np.diag(p["s"])
    for picks in (tfjest.independent_selection(values, b, seed=p["seed"], step=p["step"],
                                               temperature=p["temperature"],
                                               greedy=p["greedy"], valid=p["valid"]),
                  tfjest.uniform_selection(n, b, seed=p["seed"], step=p["step"],
                                           valid=p["valid"])):
      picks = picks.numpy()
      self.assertEqual(len(set(picks.tolist())), b)
      self.assertTrue(np.all((picks >= 0) & (picks < n)))
      masked = ~p["valid"]
      if b <= np.sum(~masked):
        self.assertFalse(np.any(masked[picks]))

  @SETTINGS
  @given(st.integers(2, 30), st.integers(0, 1000))
  def test_non_finite_scores_are_taken_last(self, n, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n).astype(np.float32)
    bad = rng.random(n) < 0.5
    values[bad] = rng.choice([np.nan, np.inf, -np.inf], size=int(bad.sum()))
    b = int(rng.integers(1, n + 1))
    picks = tfjest.independent_selection(values, b, seed=seed, step=1).numpy()
    finite = int(np.sum(~bad))
    self.assertEqual(int(np.sum(bad[picks])), max(0, b - finite))


if __name__ == "__main__":
  unittest.main()
