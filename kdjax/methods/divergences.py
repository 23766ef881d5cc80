"""KD through another divergence: reverse KL, generalized Jensen–Shannon or total variation.

The ``loss.divergence`` field picks the registered term.

Example:
  >>> loss = DIVERGENCE.defaults() | {"divergence": "jensen_shannon"}
  >>> DIVERGENCE.build(loss, 100, {}, 10).objective.terms[1].arguments["beta"]
  0.5
"""

from kdjax import losses
from kdjax import objective as objective_lib
from kdjax.recipe import CE_FIELDS, Field, Method, Recipe, ce_term, method_fields

DIVERGENCES = ("reverse_kl", "jensen_shannon", "total_variation")


def _divergence(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  name = loss["divergence"]
  losses.validation.check_choice("loss.divergence", name, DIVERGENCES)
  beta = {"beta": loss["beta"]} if name == "jensen_shannon" else {}
  divergence = objective_lib.term(name, loss["kd_weight"], temperature=loss["temperature"],
                                  logit_standardization=loss["logit_standardization"], **beta)
  return Recipe(objective_lib.Objective((ce_term(loss), divergence), num_steps))


DIVERGENCE = Method(
    _divergence, "one", True, "CE + reverse KL, generalized Jensen–Shannon or total variation",
    method_fields(
        *CE_FIELDS, "kd_weight", "temperature", "logit_standardization",
        divergence=Field("reverse_kl", "reverse_kl | jensen_shannon | total_variation"),
        beta=Field(0.5, "jensen_shannon: interpolation in [0, 1] (0: forward KL, 1: reverse "
                   "KL)")))
