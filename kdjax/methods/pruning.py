"""DKP, Dark Knowledge Pruning (Mohammed & Gizachew, 2023): KD with less of its regularizer.

KD plus a term that lowers the regularization entangled with dark knowledge, as an optax
output transform of the logit gradients or as a loss term.

Example:
  >>> recipe = DKP.build(DKP.defaults(), 1000, {}, 100)
  >>> [t.label for t in recipe.objective.terms], sorted(recipe.log_schedules)
  (['ce', 'kd'], ['dkp/temperature'])
"""

from collections.abc import Mapping
from typing import Any

from kdjax import losses, transforms
from kdjax import objective as objective_lib
from kdjax.recipe import (
    CE_FIELDS,
    KD_FIELDS,
    Field,
    Method,
    Recipe,
    ce_term,
    kd_term,
    method_fields,
    refuse_standardization,
)


def _dkp(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  variant = loss["variant"]
  top_k = loss["top_k"] if variant == "tail" else None
  if loss["form"] == "loss":
    dkp_term = objective_lib.term("dkp", loss["kd_weight"], temperature=loss["temperature"],
                                  gamma=loss["gamma"], variant=variant, top_k=top_k,
                                  class_reduction=loss["class_reduction"],
                                  logit_standardization=loss["logit_standardization"])
    return Recipe(objective_lib.Objective(
        (ce_term(loss), kd_term(loss), dkp_term), num_steps))
  losses.validation.check_choice("loss.form", loss["form"], ("transform", "loss"))
  refuse_standardization(
      loss, "the DKP transform of raw-logit gradients (form='transform')")
  # DKP follows the KD term's temperature and weight (schedules and per-student overrides);
  # its gamma is a hyperparameter of the objective, so it is reported as "dkp/gamma" and may
  # be overridden per student (kdjax.sweep).
  tx = transforms.dkp("kd/temperature", "dkp/gamma", variant, top_k=top_k, weight="weight/kd",
                      class_reduction=loss["class_reduction"])
  objective = objective_lib.Objective(
      (ce_term(loss), kd_term(loss)), num_steps,
      extra_hyperparameters={"dkp/gamma": (loss["gamma"], {"low": 0.0, "high": 1.0})})
  return Recipe(objective, output_tx=tx, log_schedules={"dkp/temperature": "kd/temperature"},
                output_tx_needs_labels=variant == "tail")


def _check_dkp(loss: Mapping[str, Any], num_classes: int) -> None:
  """Refuses a tail ``top_k`` that leaves DKP no non-target tail among K classes."""
  if loss["variant"] == "tail":
    losses.pruning.check_arguments(loss["temperature"], loss["gamma"], "tail",
                                   top_k=loss["top_k"], num_classes=num_classes)


DKP = Method(
    _dkp, "one", True, "KD + Dark Knowledge Pruning (gamma, variant)",
    method_fields(
        *CE_FIELDS, *KD_FIELDS,
        gamma=Field(0.5, "strength of Dark Knowledge Pruning, in [0, 1]"),
        variant=Field("uniform", "uniform | mean | tail"),
        top_k=Field(2, "tail: the teacher's leading non-target classes kept whole"),
        form=Field("transform", "transform (optax output transform) | loss (loss term)")),
    check=_check_dkp)
