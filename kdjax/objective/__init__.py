r"""Distillation objectives: weighted sums of loss terms, registered by name or one's own.

.. math::
   L(n) = \sum_j w_j(n)\ \frac{\sum_i m_i\,\ell_j(s_i, t_i;\ \theta_j(n))}{\sum_i m_i}

where each term :math:`\ell_j` is a per-example loss of ``kdjax.losses``, its weight
:math:`w_j` and its moving hyperparameters :math:`\theta_j` (temperature, :math:`\Phi`,
:math:`\gamma`, ...) are scalars or ``optax.Schedule`` s of the step :math:`n`, and
:math:`m` is the batch's ``"mask"``. Reduction happens in one place,
``kdjax.losses.reduce_mean``.

Terms are named through an explicit registry (``TERMS``), whose miss lists the valid names,
or given as a ``TermDefinition`` (a loss of one's own, or a method's own term). Each
term's value, weight and hyperparameters at every step are reported as metrics named
``"loss/<label>"``, ``"weight/<label>"`` and ``"<label>/<hyperparameter>"``, where the label
is the term's name unless given. An objective may also declare hyperparameters that no term
reads, for the output transformation of the step (e.g. DKP's ``"dkp/gamma"`` for
``kdjax.transforms.dkp``); they are scheduled, overridden and reported the same way.

Example:
  >>> hinton = Objective((term("ce", 0.1), term("kd", 0.9, temperature=4.0)))
  >>> sorted(hinton.schedule_values(0))
  ['kd/temperature', 'weight/ce', 'weight/kd']

One concept per module: ``registry`` (what a term computes and takes: ``TermInputs``,
``TermDefinition``, ``TERMS``; ``REQUIRED``, the default of an argument a term cannot do
without; ``POSITIVE`` and ``NON_NEGATIVE``, the bounds of most hyperparameters) and
``assembly`` (``term``, ``Term``, ``Objective``).
"""

from kdjax.objective.assembly import Objective, Term, term
from kdjax.objective.registry import (
    NON_NEGATIVE,
    POSITIVE,
    REQUIRED,
    TERMS,
    TermDefinition,
    TermInputs,
    check_feature_names,
)

__all__ = ["NON_NEGATIVE", "POSITIVE", "REQUIRED", "TERMS", "Objective", "Term", "TermDefinition",
           "TermInputs", "check_feature_names", "term"]
