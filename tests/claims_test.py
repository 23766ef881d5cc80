"""Tests of kdjax.claims: verdicts against hand arithmetic and scipy's Welch t-test."""

import re

import numpy as np
import pytest
from scipy import stats

from kdjax import claims


def test_beats_is_welchs_two_sided_t_test():
  # (0.70, 0.74) against (0.60, 0.62, 0.64): means 72 and 62 points, sample variances
  # 8 and 4, standard error sqrt(8 / 2 + 4 / 3) = 2.3094.
  a, b = [0.70, 0.74], [0.60, 0.62, 0.64]
  c = claims.beats({"a": a}, b)
  assert c.candidate == "a"
  assert c.difference == pytest.approx(10.0)
  # The verdict agrees with scipy's Welch test at 5 %, and the threshold is the t quantile
  # at which its p-value is exactly 5 %.
  p = stats.ttest_ind(np.multiply(a, 100), np.multiply(b, 100), equal_var=False).pvalue
  assert (p < 0.05) == (c.verdict == "holds")
  t = c.threshold / 2.3094011
  dof = 2.3094011 ** 4 / ((8 / 2) ** 2 / 1 + (4 / 3) ** 2 / 2)
  assert 2 * stats.t.sf(t, dof) == pytest.approx(0.05, rel=1e-6)


@pytest.mark.parametrize("candidate, verdict", [
    ([0.82, 0.84], "not resolved"),  # +3.0: beyond 2 standard errors, within t_2 = 4.30
    ([0.868, 0.888], "holds"),  # +7.8 > 4.303 × 1.414 = 6.09
    ([0.712, 0.732], "reversed"),  # -7.8
    ([0.76, 0.78], "not resolved"),  # -3.0
])
def test_beats_holds_only_beyond_the_t_quantile(candidate, verdict):
  # Baseline (0.79, 0.81) and each candidate spread ±1 point: standard error sqrt(2),
  # Welch's degrees of freedom 2, t_2(0.975) = 4.303.
  c = claims.beats({"x": candidate}, [0.79, 0.81])
  assert c.threshold == pytest.approx(4.302653 * 2 ** 0.5, rel=1e-5)
  assert c.verdict == verdict


def test_a_family_is_compared_through_its_best_mean_at_a_corrected_level():
  rows = {"low": [0.70, 0.71], "high": [0.75, 0.74], "mid": [0.73, 0.72]}
  c = claims.beats(rows, [0.70, 0.72])
  assert c.candidate == "high"
  assert c.difference == pytest.approx(3.5)
  alone = claims.beats({"high": rows["high"]}, [0.70, 0.72])
  # Bonferroni over 3 rows: the quantile at 1 - 0.05 / 6 instead of 1 - 0.05 / 2, at
  # Welch's degrees of freedom (0.5 / 2 + 2 / 2)² / ((0.5 / 2)² + (2 / 2)²) = 1.4706.
  dof = 1.25 ** 2 / (0.25 ** 2 + 1.0)
  assert c.threshold / alone.threshold == pytest.approx(
      stats.t.ppf(1 - 0.05 / 6, dof) / stats.t.ppf(0.975, dof), rel=1e-6)


def test_equals_compares_seed_by_seed_within_the_tolerance():
  kd = {0: 0.7950, 1: 0.7960, 2: 0.7930}
  assert claims.equals("dkp", {0: 0.7950, 1: 0.7965, 2: 0.7930}, kd, 0.1).verdict == "holds"
  # Noisy rows are not evidence of equality: one seed 0.2 points off fails 0.1.
  c = claims.equals("dkp", {0: 0.7950, 1: 0.7980, 2: 0.7930}, kd, 0.1)
  assert (c.verdict, round(c.difference, 6)) == ("does not hold", 0.2)


@pytest.mark.parametrize("call, message", [
    (lambda: claims.beats({"x": [0.8]}, [0.7, 0.71]), "claim: x has 1 seed(s)"),
    (lambda: claims.beats({"x": [0.8, 0.81]}, [0.7]), "claim: the baseline has 1 seed(s)"),
    (lambda: claims.beats({}, [0.7, 0.71]), "claim: candidates={} must hold at least one row"),
    (lambda: claims.beats({"x": [0.7001, 0.7001]}, [0.7, 0.7]),
     "claim: x and the baseline have the same accuracy on every seed (standard error 0)"),
    (lambda: claims.equals("x", {0: 0.8}, {1: 0.8}, 0.1),
     "claim: x has seeds [0] and the baseline [1]"),
    (lambda: claims.equals("x", {0: 0.8}, {0: 0.8}, 0.0), "claim: tolerance=0.0 must be"),
    (lambda: claims.check_kind("improves"),
     "claim kind='improves' must be one of ('beats', 'equals')"),
])
def test_what_cannot_be_judged_is_refused_naming_the_value(call, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    call()
