r"""Papers' claims tested on a results table: one row against another, over seeds.

A claim says that a method beats a baseline (``"beats"``: DKP beats KD for a resnet8), or
that two stages train the same networks (``"equals"``: DKP with γ = 0 is KD). Both are
judged on the test accuracy of the last network of each seed, the number that involves no
selection on the test set.

``"beats"`` is Welch's two-sided t-test at level α = 0.05 on the difference of the means,
in points (%):

.. math::
   d = \bar a - \bar b, \qquad
   \mathrm{se} = \sqrt{\frac{s_a^2}{n_a} + \frac{s_b^2}{n_b}}, \qquad
   \nu = \frac{\mathrm{se}^4}{\frac{(s_a^2/n_a)^2}{n_a - 1} + \frac{(s_b^2/n_b)^2}{n_b - 1}},

with :math:`s` the sample standard deviations over :math:`n` seeds. The claim *holds* when
:math:`d > t_\nu(1 - \alpha / 2m) \cdot \mathrm{se}`, is *reversed* when
:math:`d < -t_\nu(1 - \alpha / 2m) \cdot \mathrm{se}`, and is *not resolved* otherwise. A claim
made for a family of :math:`m` rows (a grid of DKP's readings and γ) compares the row with
the highest mean, and the Bonferroni factor :math:`m` pays for that choice; :math:`m = 1`
for a single row. At three seeds a row pair has :math:`\nu \approx 4`, so a difference must
exceed about 2.8 standard errors (3.9 for a family of six): small gaps stay unresolved.

``"equals"`` pairs the seeds (seed :math:`s` of both stages starts from the same
initialization and sees the same batches): it holds when every seed's accuracies differ by
at most a tolerance given in points, :math:`\max_s |a_s - b_s| \le \tau`, and does not hold
otherwise. A failed test of difference is not evidence of equality, so equality is never
inferred from noise.
"""

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

KINDS = ("beats", "equals")
LEVEL = 0.05  # α of the two-sided test behind "beats"


class Comparison(NamedTuple):
  """A claim's candidate row against its baseline, in points (%).

  Attributes:
    candidate: the stage compared (the best of the family, for a family).
    difference: for ``"beats"``, the candidate's mean last accuracy minus the baseline's;
      for ``"equals"``, the largest difference of a seed's two accuracies, in absolute value.
    threshold: the line the difference is judged against: the t quantile times the
      standard error for ``"beats"``, the tolerance for ``"equals"``.
    verdict: ``"holds"``, ``"reversed"`` or ``"not resolved"`` for ``"beats"``;
      ``"holds"`` or ``"does not hold"`` for ``"equals"``.

  Example:
    >>> c = equals("dkp_g0", {0: 0.7950, 1: 0.7962}, {0: 0.7950, 1: 0.7960}, tolerance=0.1)
    >>> c.candidate, round(c.difference, 2), c.verdict
    ('dkp_g0', 0.02, 'holds')
  """
  candidate: str
  difference: float
  threshold: float
  verdict: str


def check_kind(kind: str) -> None:
  """Refuses a claim kind that is not one of :data:`KINDS`, naming it.

  Example:
    >>> check_kind("improves")
    Traceback (most recent call last):
    ...
    ValueError: claim kind='improves' must be one of ('beats', 'equals').
  """
  if kind not in KINDS:
    raise ValueError(f"claim {kind=} must be one of {KINDS}.")


def beats(candidates: Mapping[str, Sequence[float]], baseline: Sequence[float],
          level: float = LEVEL) -> Comparison:
  """Judges "the best of ``candidates`` beats ``baseline``" from last accuracies in [0, 1].

  Args:
    candidates: stage name → its seeds' last accuracies; the highest mean is compared, at
      the level divided by the number of candidates (Bonferroni).
    baseline: the baseline's seeds' last accuracies.
    level: α of the two-sided test.

  Returns:
    The :class:`Comparison`, in points (%).

  Raises:
    ValueError: if there is no candidate, a row has fewer than two seeds, or no row varies
      over its seeds (a standard error of 0 judges nothing).

  Example:
    >>> c = beats({"kd": [0.80, 0.81, 0.82]}, [0.76, 0.77, 0.78])
    >>> c.verdict, round(c.difference, 2), round(c.threshold, 2)  # t_4(0.975) · 0.82
    ('holds', 4.0, 2.27)
    >>> beats({"a": [0.80, 0.72], "b": [0.77, 0.78]}, [0.76, 0.77]).candidate
    'b'
  """
  if not candidates:
    raise ValueError(f"claim: {candidates=} must hold at least one row.")
  for name, accuracies in {**candidates, "the baseline": baseline}.items():
    if len(accuracies) < 2:
      raise ValueError(f"claim: {name} has {len(accuracies)} seed(s); judging a difference "
                       f"needs at least 2 per row.")
  candidate = max(candidates, key=lambda name: np.mean(candidates[name]))
  a = 100 * np.asarray(candidates[candidate], np.float64)
  b = 100 * np.asarray(baseline, np.float64)
  difference = float(a.mean() - b.mean())
  variances = (a.var(ddof=1) / a.size, b.var(ddof=1) / b.size)
  standard_error = float(np.sqrt(sum(variances)))
  if standard_error == 0.0:
    raise ValueError(f"claim: {candidate} and the baseline have the same accuracy on every "
                     f"seed (standard error 0); the difference {difference:+.2f} points "
                     f"cannot be judged.")
  dof = standard_error ** 4 / (variances[0] ** 2 / (a.size - 1) +
                               variances[1] ** 2 / (b.size - 1))
  threshold = float(stats.t.ppf(1 - level / (2 * len(candidates)), dof) * standard_error)
  verdict = ("holds" if difference > threshold else "reversed" if difference < -threshold
             else "not resolved")
  return Comparison(candidate, difference, threshold, verdict)


def equals(candidate: str, accuracies: Mapping[int, float], baseline: Mapping[int, float],
           tolerance: float) -> Comparison:
  """Judges "``candidate`` trains the baseline's networks", seed by seed.

  Args:
    candidate: the stage's name.
    accuracies: seed → last accuracy in [0, 1] of the candidate.
    baseline: seed → last accuracy of the baseline; the same seeds.
    tolerance: the largest per-seed difference, in points, still called equal (> 0).

  Returns:
    The :class:`Comparison`, in points (%).

  Raises:
    ValueError: if the seeds differ or the tolerance is not positive.

  Example:
    >>> equals("x", {0: 0.80, 1: 0.81}, {0: 0.80, 1: 0.78}, tolerance=0.5).verdict
    'does not hold'
  """
  if not tolerance > 0:
    raise ValueError(f"claim: {tolerance=} must be a positive number of points.")
  if set(accuracies) != set(baseline) or not accuracies:
    raise ValueError(f"claim: {candidate} has seeds {sorted(accuracies)} and the baseline "
                     f"{sorted(baseline)}; an equality is judged seed by seed on the same "
                     f"seeds.")
  difference = max(100 * abs(accuracies[s] - baseline[s]) for s in accuracies)
  return Comparison(candidate, float(difference), float(tolerance),
                    "holds" if difference <= tolerance else "does not hold")
