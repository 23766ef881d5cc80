"""Hinton's KD and its neighbours: training from scratch, KD, and KD alone (function matching).

Example:
  >>> recipe = KD.build(KD.defaults(), 1000, {}, 100)
  >>> {t.label: t.weight for t in recipe.objective.terms}
  {'ce': 0.1, 'kd': 0.9}
"""

from kdjax import objective as objective_lib
from kdjax.recipe import (
    CE_FIELDS,
    KD_FIELDS,
    Method,
    Recipe,
    ce_term,
    kd_term,
    method_fields,
    refuse_standardization,
)


def _scratch(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  refuse_standardization(loss, "cross-entropy alone")
  return Recipe(objective_lib.Objective((ce_term(loss, 1.0),), num_steps))


def _hinton(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  return Recipe(objective_lib.Objective((ce_term(loss), kd_term(loss)),
                                        num_steps))


def _function_matching(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  return Recipe(objective_lib.Objective((kd_term(loss),), num_steps))


SCRATCH = Method(_scratch, "none", True, "cross-entropy on labels, no teacher",
                 method_fields("label_smoothing", "logit_standardization"))
KD = Method(_hinton, "one", True, "Hinton KD: ce_weight·CE + kd_weight·T²·KL",
            method_fields(*CE_FIELDS, *KD_FIELDS))
FUNCTION_MATCHING = Method(_function_matching, "one", False,
                           "KD only, teacher and student on the same augmented view",
                           method_fields(*KD_FIELDS))
