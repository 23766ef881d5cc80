"""Continuation-KD (Jafari et al., 2022): a hinge on annealed logits, handing over to CE.

Its weight moves from the hinge on the annealed logit regression to cross-entropy over the
stage.

Example:
  >>> recipe = CONTINUATION.build(CONTINUATION.defaults(), 100, {}, 10)
  >>> [(t.label, float(t.weight(0)), float(t.weight(100))) for t in recipe.objective.terms]
  [('ce', 0.0, 1.0), ('continuation', 1.0, 0.0)]
"""

from kdjax import objective as objective_lib
from kdjax import schedules
from kdjax.recipe import (
    Field,
    Method,
    Recipe,
    ce_term,
    fraction_of_steps,
    method_fields,
    refuse_standardization,
)


def _continuation(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  refuse_standardization(loss, "Continuation-KD's logit regression")
  # Phi climbs its T_max levels over the first anneal_fraction of the stage;
  # psi moves the weight from the hinge to CE over the first ramp_fraction.
  anneal_steps = fraction_of_steps(num_steps, "anneal_fraction", loss["anneal_fraction"])
  ramp_steps = fraction_of_steps(num_steps, "ramp_fraction", loss["ramp_fraction"])
  phi = schedules.annealing_phi(int(loss["max_temperature"]), num_steps=anneal_steps)
  psi = schedules.continuation_psi(ramp_steps)
  hinge = objective_lib.term("continuation", lambda step: 1.0 - psi(step), phi=phi,
                             margin=loss["margin"])
  return Recipe(objective_lib.Objective((ce_term(loss, psi), hinge), num_steps))


CONTINUATION = Method(
    _continuation, "one", True, "Continuation-KD: ψ·CE + (1 − ψ)·max{0, ‖s − Φ·t‖² − m·Φ}",
    method_fields(
        "label_smoothing", "logit_standardization",
        max_temperature=Field(20, "Φ's T_max"),
        anneal_fraction=Field(0.5, "Φ climbs 1/T_max, ..., 1 over this fraction of the stage"),
        ramp_fraction=Field(0.75, "ψ ramps CE's weight 0 -> 1 (the hinge's 1 -> 0) over this "
                            "fraction of the stage"),
        margin=Field(1.0, "hinge margin m (on the mean squared error)")))
