"""Logit regression: logits matching and Annealing-KD's stage I.

KD as logits matching (Chen et al., 2021) with zero-mean logit gradients; Annealing-KD's
stage I (Jafari et al., EACL 2021), MSE to the teacher's logits scaled by an annealed Φ.

Example:
  >>> recipe = ANNEALING.build(ANNEALING.defaults(), 1000, {}, 100)
  >>> [t.label for t in recipe.objective.terms], recipe.label_users
  (['annealing'], ())
"""

from kdjax import objective as objective_lib
from kdjax import schedules, transforms
from kdjax.recipe import (
    CE_FIELDS,
    Field,
    Method,
    Recipe,
    ce_term,
    method_fields,
    refuse_standardization,
)


def _logits_matching(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  refuse_standardization(loss, "logits matching")
  matching = objective_lib.term("logits_matching", loss["kd_weight"])
  return Recipe(objective_lib.Objective((ce_term(loss), matching), num_steps),
                output_tx=transforms.zero_mean_logit_gradients())


def _annealing(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  refuse_standardization(loss, "Annealing-KD's logit regression")
  # Each of the T_max levels of Phi holds an equal share of the stage (to within a step) and
  # the stage ends at Phi = 1; a stage shorter than T_max steps is refused (ValueError).
  phi = schedules.annealing_phi(int(loss["max_temperature"]), num_steps=num_steps)
  return Recipe(objective_lib.Objective((objective_lib.term("annealing", 1.0, phi=phi),),
                                        num_steps))


LOGITS_MATCHING = Method(
    _logits_matching, "one", True, "CE + logits matching with zero-mean logit gradients",
    method_fields(*CE_FIELDS, "kd_weight", "logit_standardization"))
ANNEALING = Method(
    _annealing, "one", True, "Annealing-KD stage I: MSE to Φ·teacher logits, no labels",
    method_fields("logit_standardization", max_temperature=Field(
        10, "T_max: Φ steps 1/T_max, ..., 1, an equal share of the stage each (the stage "
        "needs num_steps >= max_temperature)")))
