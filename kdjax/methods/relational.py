"""DIST (Huang et al., NeurIPS 2022): CE + inter- and intra-class Pearson relations.

A batch loss: its term (``DIST_TERM``) is declared here, with the method, since its value
couples the examples of a batch.

Example:
  >>> [t.label for t in DIST.build(DIST.defaults(), 100, {}, 10).objective.terms]
  ['ce', 'dist']
"""

from collections.abc import Mapping
from typing import Any

import jax

from kdjax import losses
from kdjax import objective as objective_lib
from kdjax.recipe import CE_FIELDS, Field, Method, Recipe, ce_term, method_fields


def _dist_values(x: objective_lib.TermInputs, h: Mapping[str, Any]) -> jax.Array:
  # The intra-class relation couples the batch: one value, spread over the examples so that
  # the objective's masked batch mean is the DIST loss of the batch.
  intra = losses.dist_intra_class(x.student_logits, x.teacher_logits, h["temperature"],
                                  where=x.mask)
  inter = losses.dist_inter_class(x.student_logits, x.teacher_logits, h["temperature"])
  return h["beta"] * inter + h["gamma"] * intra


DIST_TERM = objective_lib.TermDefinition(
    "dist", _dist_values,
    hyperparameters={"temperature": (4.0, objective_lib.POSITIVE),
                     "beta": (2.0, objective_lib.NON_NEGATIVE),
                     "gamma": (2.0, objective_lib.NON_NEGATIVE)},
    options={}, teacher="one", standardizable=True)
"""DIST's term: β·inter-class + γ·intra-class relation, a batch loss (padding left out through
the batch's mask); ``temperature=4``, ``beta=2``, ``gamma=2``."""


def _dist(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  dist = objective_lib.term(DIST_TERM, loss["kd_weight"], temperature=loss["temperature"],
                            beta=loss["beta"], gamma=loss["gamma"],
                            logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((ce_term(loss), dist), num_steps))


DIST = Method(
    _dist, "one", True, "CE + DIST: inter- and intra-class Pearson relations (a batch loss)",
    method_fields(
        *CE_FIELDS, "kd_weight", "temperature", "logit_standardization",
        beta=Field(2.0, "weight of the inter-class relation"),
        gamma=Field(2.0, "weight of the intra-class relation (couples the batch)")))
