"""Sparse KD: KD toward the teacher's top-k classes and one tail bucket.

Its teacher cache keeps k of K logits. Its term (``SPARSE_KD_TERM``) is declared here, with
the method: its temperature is fixed by the method's cache.

Example:
  >>> SPARSE_KD.build(SPARSE_KD.defaults(), 100, {}, 10).sparse_cache
  (10, 4.0)
"""

from collections.abc import Mapping
from typing import Any

import jax

from kdjax import losses
from kdjax import objective as objective_lib
from kdjax.recipe import CE_FIELDS, Field, Method, Recipe, ce_term, method_fields


def _sparse_kd_values(x: objective_lib.TermInputs, h: Mapping[str, Any]) -> jax.Array:
  targets = losses.sparse_targets(x.teacher_logits, h["top_k"], h["temperature"])
  return losses.sparse_kd(x.student_logits, targets, h["temperature"])


SPARSE_KD_TERM = objective_lib.TermDefinition(
    "sparse_kd", _sparse_kd_values,
    hyperparameters={"temperature": (4.0, objective_lib.POSITIVE)},
    options={"top_k": objective_lib.REQUIRED}, teacher="one",
    check=lambda options: losses.sparse.check_k(options["top_k"], None),
    cache_fixed=("temperature",))
"""Sparse KD's term: KD toward the teacher's ``top_k`` (required) classes and one tail bucket
(``kdjax.losses.sparse_kd``), from the teacher logits it is given; ``temperature=4``. Its
temperature is the one the method's teacher cache was built at."""


def _sparse_kd(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  # The teacher's targets are its top k classes and a tail bucket, whether its logits come
  # from the step or from a cache that keeps only those (at the term's temperature).
  sparse_kd = objective_lib.term(SPARSE_KD_TERM, loss["kd_weight"],
                                 temperature=loss["temperature"], top_k=loss["top_k"])
  return Recipe(objective_lib.Objective((ce_term(loss), sparse_kd), num_steps),
                sparse_cache=(loss["top_k"], loss["temperature"]))


def _check_sparse_kd(loss: Mapping[str, Any], num_classes: int) -> None:
  """Refuses a ``top_k`` outside [1, K]."""
  losses.sparse.check_k(loss["top_k"], num_classes)


SPARSE_KD = Method(
    _sparse_kd, "one", True,
    "CE + KD toward the teacher's top-k classes and a tail bucket; its teacher cache keeps "
    "k of K logits",
    method_fields(
        *CE_FIELDS, "kd_weight", "temperature",
        top_k=Field(10, "the teacher classes kept per example, in [1, K]; the rest share one "
                    "tail bucket")),
    check=_check_sparse_kd)
