"""Methods that learn from several teaching networks: DGKD and the teachers' ensemble.

DGKD (Son et al., ICCV 2021) is densely guided by the teacher and every assistant; the
ensemble method distils toward the teachers' mean probabilities.

Example:
  >>> DGKD.teachers, DGKD.defaults()["mode"]
  ('many', 'code')
"""

from kdjax import objective as objective_lib
from kdjax.recipe import CE_FIELDS, KD_FIELDS, Field, Method, Recipe, ce_term, method_fields


def _dgkd(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  dgkd = objective_lib.term("dgkd", loss["kd_weight"], temperature=loss["temperature"],
                            mode=loss["mode"], keep_prob=loss["keep_prob"],
                            drop_num=loss["drop_num"], keep_teacher=loss["keep_teacher"],
                            class_reduction=loss["class_reduction"],
                            logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((ce_term(loss), dgkd), num_steps))


def _ensemble(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  ensemble = objective_lib.term("ensemble", loss["kd_weight"], temperature=loss["temperature"],
                                class_reduction=loss["class_reduction"],
                                logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((ce_term(loss), ensemble), num_steps))


DGKD = Method(
    _dgkd, "many", True, "densely guided KD from the teacher and every assistant",
    method_fields(
        *CE_FIELDS, *KD_FIELDS,
        mode=Field("code", "code (drop drop_num terms) | paper (Bernoulli) | none"),
        keep_prob=Field(0.75, "paper mode: keep probability of each teaching network"),
        drop_num=Field(1, "code mode: terms removed per batch"),
        keep_teacher=Field(False, "paper mode: keep the teacher (the first teaching network) "
                           "in every batch, drop assistants only")))
ENSEMBLE = Method(_ensemble, "many", True, "KD toward the teachers' mean probabilities",
                  method_fields(*CE_FIELDS, *KD_FIELDS))
