"""Feature distillation: FitNets' hint and attention transfer.

FitNets (Romero et al., ICLR 2015) guides a student feature through a learned regressor;
attention transfer (Zagoruyko & Komodakis, ICLR 2017) matches attention maps over stages.

Example:
  >>> recipe = FITNETS.build(FITNETS.defaults(), 100, {"stage2": (2, 16, 16, 32)}, 10)
  >>> sorted(recipe.aux_heads), FITNETS.cacheable
  (['hint_regressor'], False)
"""

from kdjax import heads
from kdjax import objective as objective_lib
from kdjax.recipe import Field, Method, Recipe, ce_term, method_fields, refuse_standardization

HINT_HEAD = "hint_regressor"


def _fitnets(loss, num_steps, shapes, steps_per_epoch):
  del steps_per_epoch
  refuse_standardization(loss, "FitNets")
  feature = loss["feature"]
  if shapes is None:  # the teacher is not loaded yet: a stand-in size checks the rest
    shapes = {feature: (1, 1, 1, 1)}
  if feature not in shapes:
    raise ValueError(f"loss.feature={feature!r} is not a teacher feature; available: "
                     f"{sorted(shapes)}.")
  shape = shapes[feature]  # [B, H, W, C] of the teacher's feature
  regressor = heads.AuxHead(heads.ConvRegressor(features=shape[-1], spatial_size=shape[1:3]),
                            source=feature)
  hint = objective_lib.term("hint", loss["weight"], student_feature=HINT_HEAD,
                            teacher_feature=feature)
  return Recipe(objective_lib.Objective((ce_term(loss, 1.0), hint), num_steps),
                aux_heads={HINT_HEAD: regressor})


def _attention(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  refuse_standardization(loss, "attention transfer")
  attention = objective_lib.term("attention", loss["weight"],
                                 student_features=tuple(loss["features"]))
  return Recipe(objective_lib.Objective((ce_term(loss, 1.0), attention), num_steps))


FITNETS = Method(
    _fitnets, "one", False, "CE + FitNets hint with a learned regressor",
    method_fields("label_smoothing", "logit_standardization",
                  weight=Field(100.0, "weight of the hint loss"),
                  feature=Field("stage2", "the guided student / hint teacher feature")))
ATTENTION = Method(
    _attention, "one", False, "CE + attention transfer over stages",
    method_fields("label_smoothing", "logit_standardization",
                  weight=Field(1000.0, "weight of the attention-transfer loss"),
                  features=Field(("stage1", "stage2", "stage3"), "the stages compared")))
