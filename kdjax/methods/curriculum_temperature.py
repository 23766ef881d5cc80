"""CTKD, curriculum temperature (Li et al., AAAI 2023): KD at a temperature learned adversarially.

The temperature comes from a head on the student, trained through a gradient reversal whose
weight rises over the stage. Its term (``CTKD_TERM``) is declared here, with the method: it
reads the method's head.

Example:
  >>> recipe = CTKD.build(CTKD.defaults(), 240, {}, 10)
  >>> sorted(recipe.aux_heads), sorted(recipe.log_schedules)
  (['ctkd_temperature'], ['ctkd/reversal'])
"""

from collections.abc import Mapping
from typing import Any

from kdjax import heads, losses, schedules, transforms
from kdjax import objective as objective_lib
from kdjax.recipe import (
    CE_FIELDS,
    Field,
    Method,
    Recipe,
    ce_term,
    fraction_of_steps,
    method_fields,
    refuse_standardization,
)

CTKD_HEAD = "ctkd_temperature"
CTKD_MODES = ("global", "instance")


def _check_ctkd_term(options: Mapping[str, Any]) -> None:
  losses.curriculum_temperature.check_temperature_range(options["t_start"], options["t_range"])
  objective_lib.check_feature_names("temperature_feature", options["temperature_feature"])


CTKD_TERM = objective_lib.TermDefinition(
    "ctkd", lambda x, h: losses.ctkd(x.student_logits, x.teacher_logits,
                                     x.student[h["temperature_feature"]],
                                     t_start=h["t_start"], t_range=h["t_range"]),
    hyperparameters={}, options={"t_start": 1.0, "t_range": 20.0,
                                 "temperature_feature": CTKD_HEAD},
    teacher="one", student_features=lambda options: (options["temperature_feature"],),
    check=_check_ctkd_term)
"""CTKD's term: KD at the temperature T_0 + t_range·σ(θ) read from the student output
``temperature_feature`` (the method's head); ``t_start=1``, ``t_range=20``."""


def _ctkd(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  refuse_standardization(loss, "CTKD")
  losses.validation.check_choice("loss.mode", loss["mode"], CTKD_MODES)
  lambda_max = loss["lambda_max"]
  if not 0.0 <= lambda_max <= 1.0:
    raise ValueError(f"loss.lambda_max={lambda_max} must lie in [0.0, 1.0]: the "
                     f"temperature's gradient is reversed with weight λ ∈ [0, λ_max].")
  # λ rises from 0 to lambda_max on a cosine over the first ramp_fraction of the
  # stage (the paper: 0 -> 1 over 10 epochs; the official code holds each epoch's value).
  ramp_steps = fraction_of_steps(num_steps, "ramp_fraction", loss["ramp_fraction"])
  reversal = schedules.cosine(0.0, float(lambda_max), ramp_steps)
  module = heads.GlobalTemperature() if loss["mode"] == "global" else heads.InstanceTemperature()
  ctkd = objective_lib.term(CTKD_TERM, loss["kd_weight"], t_start=loss["t_start"],
                            t_range=loss["t_range"])
  return Recipe(objective_lib.Objective((ce_term(loss), ctkd), num_steps),
                aux_heads={CTKD_HEAD: heads.AuxHead(module, source="pooled")},
                log_schedules={"ctkd/reversal": reversal},
                param_tx=transforms.reverse_gradients(reversal, _temperature_mask))


def _temperature_mask(trainables: Mapping[str, Any]) -> dict[str, Any]:
  """True on the CTKD temperature head's parameters, False on the rest (a prefix mask)."""
  return {"student": False, "aux": {name: name == CTKD_HEAD for name in trainables["aux"]}}


CTKD = Method(
    _ctkd, "one", True, "CE + KD at a learnable temperature trained adversarially (CTKD)",
    method_fields(
        *CE_FIELDS, "kd_weight", "logit_standardization",
        mode=Field("global", "global (one learnable temperature) | instance (an MLP)"),
        t_start=Field(1.0, "the lowest temperature T_0"),
        t_range=Field(20.0, "T lies in (T_0, T_0 + t_range)"),
        lambda_max=Field(1.0, "the temperature's gradient-reversal weight rises 0 -> "
                         "lambda_max in [0, 1] (1: the paper's and the code's)"),
        ramp_fraction=Field(10 / 240, "...on a cosine over this fraction of the stage")))
