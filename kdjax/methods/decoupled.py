"""DKD, decoupled KD (Zhao et al., CVPR 2022): CE + α·TCKD + β·NCKD, with mdistiller's warm-up.

Example:
  >>> recipe = DKD.build(DKD.defaults() | {"warmup_epochs": 2}, 1000, {}, 100)
  >>> dkd = recipe.objective.terms[1]
  >>> [float(dkd.weight(step)) for step in (0, 99, 100, 200)]
  [0.5, 0.5, 1.0, 1.0]
"""

from kdjax import objective as objective_lib
from kdjax import schedules
from kdjax.recipe import Field, Method, Recipe, ce_term, method_fields


def _dkd(loss, num_steps, shapes, steps_per_epoch):
  del shapes
  # mdistiller's min(epoch / warmup, 1): epochs counted from 1, each held for a whole epoch.
  warmup = loss["warmup_epochs"]
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
    raise ValueError(f"loss.warmup_epochs={warmup!r} must be an integer >= 0 (0: none).")
  weight = schedules.epoch_warmup(warmup, steps_per_epoch) if warmup else 1.0
  dkd = objective_lib.term("dkd", weight, alpha=loss["alpha"], beta=loss["beta"],
                           temperature=loss["temperature"],
                           logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((ce_term(loss, 1.0), dkd), num_steps))


DKD = Method(
    _dkd, "one", True, "decoupled KD: CE + α·TCKD + β·NCKD",
    method_fields(
        "label_smoothing", "temperature", "logit_standardization",
        alpha=Field(1.0, "weight of the target-class term TCKD"),
        beta=Field(8.0, "weight of the non-target-class term NCKD"),
        warmup_epochs=Field(0, "distillation weight min(epoch / warmup_epochs, 1), epochs "
                            "from 1 (0: none)")))
