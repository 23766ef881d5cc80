"""Tests of kdjax.claims: the verdicts of a difference over seeds, against hand arithmetic."""

import re

import pytest

from kdjax import claims


def test_difference_and_standard_error_are_welchs():
  # (0.70, 0.74) against (0.60, 0.62, 0.64): means 72 and 62 points, sample variances
  # 8 and 4, standard error sqrt(8 / 2 + 4 / 3) = 2.3094.
  c = claims.compare("beats", {"a": [0.70, 0.74]}, [0.60, 0.62, 0.64])
  assert c.candidate == "a"
  assert c.difference == pytest.approx(10.0)
  assert c.standard_error == pytest.approx(2.3094011, rel=1e-6)
  assert c.verdict == "holds"


@pytest.mark.parametrize("candidate, verdict", [
    ([0.82, 0.84], "holds"),  # +3.0 > 2 × 1.41
    ([0.816, 0.836], "not resolved"),  # +2.6
    ([0.76, 0.78], "reversed"),  # -3.0
    ([0.764, 0.784], "not resolved"),  # -2.6
])
def test_beats_is_decided_at_two_standard_errors(candidate, verdict):
  # The baseline (0.79, 0.81) has mean 80 points and sample variance 2; each candidate is
  # spread ±1 point too: standard error sqrt(2 / 2 + 2 / 2) = 1.41, the line at 2.83.
  c = claims.compare("beats", {"x": candidate}, [0.79, 0.81])
  assert c.standard_error == pytest.approx(2 ** 0.5, rel=1e-6)
  margin = claims.STANDARD_ERRORS * c.standard_error
  assert c.verdict == verdict
  assert (abs(c.difference) > margin) == (verdict != "not resolved")


def test_equals_holds_within_two_standard_errors_only():
  assert claims.compare("equals", {"x": [0.80, 0.82]}, [0.79, 0.81]).verdict == "holds"
  assert claims.compare("equals", {"x": [0.85, 0.87]}, [0.79, 0.81]).verdict == "does not hold"


def test_a_family_is_compared_through_its_best_mean():
  c = claims.compare("beats", {"low": [0.70, 0.71], "high": [0.75, 0.74], "mid": [0.73, 0.72]},
                     [0.70, 0.72])
  assert c.candidate == "high"
  assert c.difference == pytest.approx(3.5)


@pytest.mark.parametrize("candidates, baseline, message", [
    ({"x": [0.8]}, [0.7, 0.71], "claim: x has 1 seed(s)"),
    ({"x": [0.8, 0.81]}, [0.7], "claim: the baseline has 1 seed(s)"),
    ({}, [0.7, 0.71], "claim: candidates=[] must list at least one stage"),
])
def test_rows_that_cannot_be_judged_are_refused(candidates, baseline, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    claims.compare("beats", candidates, baseline)
