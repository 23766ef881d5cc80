r"""Papers' claims tested on a results table: one row against another, over seeds.

A claim says that a method beats a baseline (``"beats"``: DKP beats KD for a resnet8), or
that two stages train the same network (``"equals"``: DKP with γ = 0 is KD). It is judged
on the test accuracy of the last network of each seed, the selection-free number, by the
difference of the means and its standard error (Welch's, without pooling the variances):

.. math::
   d = \bar a - \bar b, \qquad
   \mathrm{se} = \sqrt{\frac{s_a^2}{n_a} + \frac{s_b^2}{n_b}},

with :math:`s` the sample standard deviations over :math:`n` seeds. A ``"beats"`` claim
*holds* when :math:`d > 2\,\mathrm{se}`, is *reversed* when :math:`d < -2\,\mathrm{se}` and is
*not resolved* otherwise (at three seeds, two standard errors is the usual line of a
difference that is not noise; the table gives the numbers, so a reader can draw another).
An ``"equals"`` claim holds when :math:`|d| \le 2\,\mathrm{se}`. A claim made for a family of
rows (a grid of DKP's readings and γ) takes the row with the highest mean last accuracy,
which is a selection on the test set, and says so.
"""

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

KINDS = ("beats", "equals")
# A difference further than this many standard errors from zero is not called noise.
STANDARD_ERRORS = 2.0


class Comparison(NamedTuple):
  """A claim's candidate row against its baseline.

  Attributes:
    candidate: the stage compared (the best of the family, for a family).
    difference: mean last accuracy of ``candidate`` minus the baseline's, in points (%).
    standard_error: of ``difference``, in points.
    verdict: ``"holds"``, ``"reversed"`` or ``"not resolved"`` for ``"beats"``;
      ``"holds"`` or ``"does not hold"`` for ``"equals"``.

  Example:
    >>> c = compare("equals", {"dkp_g0": [0.794, 0.796]}, [0.795, 0.797])
    >>> c.candidate, round(c.difference, 2), c.verdict
    ('dkp_g0', -0.1, 'holds')
  """
  candidate: str
  difference: float
  standard_error: float
  verdict: str


def check_claim(kind: str, candidates: Sequence[str], baseline: str) -> None:
  """Checks a claim's definition.

  Raises:
    ValueError: naming the bad value: an unknown kind, no candidates, or the baseline among
      the candidates.

  Example:
    >>> check_claim("beats", ["dkp"], "kd")
    >>> check_claim("improves", ["dkp"], "kd")
    Traceback (most recent call last):
    ...
    ValueError: claim kind='improves' must be one of ('beats', 'equals').
  """
  if kind not in KINDS:
    raise ValueError(f"claim {kind=} must be one of {KINDS}.")
  if isinstance(candidates, str) or not isinstance(candidates, Sequence) or not candidates:
    raise ValueError(f"claim: {candidates=} must list at least one stage.")
  if baseline in candidates:
    raise ValueError(f"claim: {baseline=} is also a candidate; a stage is not compared "
                     f"with itself.")


def compare(kind: str, candidates: Mapping[str, Sequence[float]],
            baseline: Sequence[float]) -> Comparison:
  """Judges a claim from the last accuracies (fractions in [0, 1]) of each seed.

  Args:
    kind: ``"beats"`` or ``"equals"``.
    candidates: stage name → its seeds' last accuracies; the highest mean is compared.
    baseline: the baseline's seeds' last accuracies.

  Returns:
    The :class:`Comparison`, in points (%).

  Raises:
    ValueError: if a row has fewer than two seeds (no standard deviation to judge by).

  Example:
    >>> c = compare("beats", {"kd": [0.80, 0.81, 0.82]}, [0.76, 0.77, 0.78])
    >>> c.verdict, round(c.difference, 2), round(c.standard_error, 2)
    ('holds', 4.0, 0.82)
    >>> compare("beats", {"a": [0.80, 0.72], "b": [0.77, 0.78]}, [0.76, 0.77]).candidate
    'b'
  """
  check_claim(kind, list(candidates), "")
  for name, accuracies in {**candidates, "the baseline": baseline}.items():
    if len(accuracies) < 2:
      raise ValueError(f"claim: {name} has {len(accuracies)} seed(s); judging a difference "
                       f"needs at least 2 per row.")
  candidate = max(candidates, key=lambda name: np.mean(candidates[name]))
  a = 100 * np.asarray(candidates[candidate], np.float64)
  b = 100 * np.asarray(baseline, np.float64)
  difference = float(a.mean() - b.mean())
  standard_error = float(np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
  margin = STANDARD_ERRORS * standard_error
  if kind == "equals":
    verdict = "holds" if abs(difference) <= margin else "does not hold"
  else:
    verdict = ("holds" if difference > margin else "reversed" if difference < -margin else
               "not resolved")
  return Comparison(candidate, difference, standard_error, verdict)
