"""Distillation methods by name: what a training stage's ``method`` turns into.

A method maps a stage's ``loss`` config onto the pieces of a train step: an objective
(weighted loss terms), an optional transformation of the output gradients, optional
auxiliary heads, and how many teaching networks it reads. The registry (``METHODS``) is the
one place where method names meet code; a miss lists the valid names.

A method is written in one module of this package, named after the module of
``kdjax.losses`` that holds its math (DIST: ``losses/relational.py`` and
``methods/relational.py``): its build, its entry (:class:`Method`) and a term of its own
(``objective.TermDefinition``, e.g. DIST's, CTKD's, sparse KD's) where the registered
building blocks (``objective.TERMS``) do not already compute it. Adding a method is its loss
(and the line exporting it from ``kdjax.losses``), its module here (imported below, one line
in ``METHODS``), its tests and a config.

Each entry also declares its loss fields (``Method.fields``: default and meaning of each),
the only place they are written: a stage's ``loss`` holds its method's fields and no
other (``kdjax.config.stage``). The shared fields (``SHARED_FIELDS``: ``temperature``,
``ce_weight``, ``kd_weight``, ``class_reduction``, ``label_smoothing``,
``logit_standardization``) mean the same in every method that reads them; the others are
the method's own, without a prefix (DKD's ``alpha``, DGKD's ``mode``). :func:`describe`
lists a method's fields. An entry's ``check`` refuses what only the dataset reveals (a
``top_k`` above the number of classes).

Example:
  >>> print(describe("dkd"))
  dkd: decoupled KD: CE + α·TCKD + β·NCKD
    label_smoothing=0.0  label smoothing of the cross-entropy term, in [0, 1)
    temperature=4.0  softmax temperature T of the distillation term
    logit_standardization=False  z-score logits before T (Sun et al., CVPR 2024)
    alpha=1.0  weight of the target-class term TCKD
    beta=8.0  weight of the non-target-class term NCKD
    warmup_epochs=0  distillation weight min(epoch / warmup_epochs, 1), epochs from 1 (0: none)
"""

from collections.abc import Mapping

from kdjax.methods import (
    continuation,
    curriculum_temperature,
    decoupled,
    divergences,
    features,
    hinton,
    matching,
    multi_teacher,
    pruning,
    relational,
    sparse,
)
from kdjax.methods.curriculum_temperature import CTKD_HEAD, CTKD_TERM
from kdjax.methods.divergences import DIVERGENCES
from kdjax.methods.features import HINT_HEAD
from kdjax.methods.relational import DIST_TERM
from kdjax.methods.sparse import SPARSE_KD_TERM
from kdjax.recipe import SHARED_FIELDS, Field, Method, Recipe

__all__ = ["CTKD_HEAD", "CTKD_TERM", "DIST_TERM", "DIVERGENCES", "HINT_HEAD", "METHODS",
           "SHARED_FIELDS", "SPARSE_KD_TERM", "Field", "Method", "Recipe", "describe", "get"]

METHODS: Mapping[str, Method] = {
    "scratch": hinton.SCRATCH,
    "kd": hinton.KD,
    "dkp": pruning.DKP,
    "annealing": matching.ANNEALING,
    "continuation": continuation.CONTINUATION,
    "logits_matching": matching.LOGITS_MATCHING,
    "dkd": decoupled.DKD,
    "dgkd": multi_teacher.DGKD,
    "ensemble": multi_teacher.ENSEMBLE,
    "divergence": divergences.DIVERGENCE,
    "dist": relational.DIST,
    "ctkd": curriculum_temperature.CTKD,
    "sparse_kd": sparse.SPARSE_KD,
    "fitnets": features.FITNETS,
    "attention": features.ATTENTION,
    "function_matching": hinton.FUNCTION_MATCHING,
}


def describe(name: str) -> str:
  """The method ``name``, one line, then each loss field with its default and meaning.

  Example:
    >>> print(describe("sparse_kd").splitlines()[-1])
      top_k=10  the teacher classes kept per example, in [1, K]; the rest share one tail bucket
  """
  method = get(name)
  return "\n".join([f"{name}: {method.description}",
                    *(f"  {field}={spec.default!r}  {spec.meaning}"
                      for field, spec in method.fields.items())])


def get(name: str) -> Method:
  """Returns the registered method ``name``.

  Use it to turn a stage's ``method`` config field into code; the error lists every valid
  name, so a typo in a config is caught with its fix.

  Args:
    name: a key of ``METHODS``, e.g. ``"kd"``, ``"dkp"`` or ``"fitnets"``.

  Returns:
    The :class:`Method`.

  Raises:
    ValueError: if ``name`` is not registered, listing the valid names.

  Example:
    >>> get("dgkd").teachers
    'many'
    >>> get("hinton")
    Traceback (most recent call last):
    ...
    ValueError: unknown method 'hinton'; valid: scratch, kd, dkp, annealing, ...
  """
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}.")
  return METHODS[name]
