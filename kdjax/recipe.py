"""What a distillation method is made of: the registry's types (``kdjax.methods``).

A :class:`Method` is an entry of ``kdjax.methods.METHODS``: how it builds a
:class:`Recipe` (the pieces of a train step) from a stage's ``loss`` config, how many
teachers it reads, its loss fields (:class:`Field`: default and meaning; the shared ones in
``SHARED_FIELDS``) and its checks against the dataset. The helpers the builds share are
here too: :func:`method_fields`, :func:`ce_term`, :func:`kd_term`, :func:`refuse_standardization`
and :func:`fraction_of_steps`.

Example:
  >>> from kdjax import methods
  >>> methods.get("dkd").fields["alpha"]
  Field(default=1.0, meaning='weight of the target-class term TCKD')
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

import optax

from kdjax import heads, schedules
from kdjax import objective as objective_lib


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The step ingredients of a method.

  What ``Method.build`` returns: pass its fields on to ``kdjax.state.create_train_state``
  (``output_tx``, ``aux_heads``) and ``kdjax.step.make_train_step`` (``objective``,
  ``output_tx``, ``aux_heads``, ``log_schedules``); the optimizer goes through
  :meth:`optimizer_for`, a teacher cache through ``sparse_cache``.

  Attributes:
    objective: the loss terms.
    output_tx: transformation of the gradient with respect to the student's outputs, or
      ``None`` for none.
    aux_heads: trainable heads on student features (FitNets' regressor), by output name.
    log_schedules: hyperparameters outside the objective (those of ``output_tx``), reported
      in the step's metrics under these names; a string value names an objective
      hyperparameter to report under this name as well.
    output_tx_needs_labels: whether ``output_tx`` reads the batch's labels.
    param_tx: transformation of the parameter gradients (over ``{"student": params, "aux":
      aux_params}``), chained in front of the optimizer by :meth:`optimizer_for`, or
      ``None`` for none (CTKD's gradient reversal of its temperature).
    sparse_cache: ``(k, T)``: a teacher cache, when there is one, keeps each example's top
      k logits and its tail logit at T (``kdjax.teacher_cache.sparsify``, k/K of the
      memory; batches read it through ``kdjax.teacher_cache.SparseCache``); ``None``: every
      logit.

  Example:
    >>> from kdjax import methods
    >>> loss = {"ce_weight": 0.1, "label_smoothing": 0.0, "kd_weight": 0.9,
    ...         "logit_standardization": False}
    >>> recipe = methods.get("logits_matching").build(loss, 1000, {}, 100)
    >>> [t.label for t in recipe.objective.terms], recipe.output_tx is not None
    (['ce', 'logits_matching'], True)
    >>> dict(recipe.aux_heads), dict(recipe.log_schedules), recipe.label_users
    ({}, {}, ('ce',))
  """

  objective: objective_lib.Objective
  output_tx: optax.GradientTransformationExtraArgs | None = None
  aux_heads: Mapping[str, heads.AuxHead] = dataclasses.field(default_factory=dict)
  log_schedules: Mapping[str, schedules.ScalarOrSchedule | str] = dataclasses.field(
      default_factory=dict)
  output_tx_needs_labels: bool = False
  param_tx: optax.GradientTransformation | None = None
  sparse_cache: tuple[int, float] | None = None

  def optimizer_for(self, optimizer: optax.GradientTransformation
                    ) -> optax.GradientTransformation:
    """The stage's optimizer with ``param_tx`` (if any) in front of it.

    Example:
      >>> from kdjax import methods
      >>> ctkd = methods.get("ctkd")
      >>> recipe = ctkd.build(ctkd.defaults() | {"ramp_fraction": 0.1}, 100, {}, 10)
      >>> params = {"student": jnp.ones(2), "aux": {methods.CTKD_HEAD: jnp.ones(())}}
      >>> tx = recipe.optimizer_for(optax.sgd(1.0))
      >>> state = tx.init(params)
      >>> for _ in range(11):  # λ reaches 1 at step 10
      ...   updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state)
      >>> updates["student"].tolist(), float(updates["aux"][methods.CTKD_HEAD])  # θ ascends
      ([-1.0, -1.0], 1.0)
    """
    return optimizer if self.param_tx is None else optax.chain(self.param_tx, optimizer)

  @property
  def label_users(self) -> tuple[str, ...]:
    """What reads the labels: objective term labels, and ``"output_tx"`` if it does.

    Empty for a method that can train without labels (e.g. on mixed-up images).

    Example:
      >>> from kdjax import methods
      >>> loss = {"kd_weight": 0.9, "temperature": 4.0, "class_reduction": "sum",
      ...         "logit_standardization": False}
      >>> methods.get("function_matching").build(loss, 1000, {}, 100).label_users
      ()
    """
    return (*self.objective.terms_needing("labels"),
            *(("output_tx",) if self.output_tx_needs_labels else ()))


@dataclasses.dataclass(frozen=True)
class Field:
  """A loss field of a method: its default and what it means (one line, for docs and errors).

  Example:
    >>> from kdjax import methods
    >>> methods.get("sparse_kd").fields["top_k"].default
    10
  """

  default: Any
  meaning: str


SHARED_FIELDS: Mapping[str, Field] = {
    "temperature": Field(4.0, "softmax temperature T of the distillation term"),
    "ce_weight": Field(0.1, "weight of the cross-entropy with the labels"),
    "kd_weight": Field(0.9, "weight of the distillation term"),
    "class_reduction": Field("sum", "sum (batchmean KL) | mean (PyTorch KLDivLoss() default)"),
    "label_smoothing": Field(0.0, "label smoothing of the cross-entropy term, in [0, 1)"),
    "logit_standardization": Field(
        False, "z-score logits before T (Sun et al., CVPR 2024)"),
}


# The shared fields that ce_term and kd_term read.
CE_FIELDS = ("ce_weight", "label_smoothing")
KD_FIELDS = ("kd_weight", "temperature", "class_reduction", "logit_standardization")


def method_fields(*shared: str, **own: Field) -> dict[str, Field]:
  """A method's loss fields: the shared fields named (from ``SHARED_FIELDS``), then its own.

  Example:
    >>> list(method_fields("temperature", alpha=Field(1.0, "weight of TCKD")))
    ['temperature', 'alpha']
  """
  return {**{name: SHARED_FIELDS[name] for name in shared}, **own}


def ce_term(loss: Mapping[str, Any], weight: schedules.ScalarOrSchedule | None = None
            ) -> objective_lib.Term:
  """The cross-entropy term of a ``loss`` config: ``weight`` or ``loss["ce_weight"]``.

  Example:
    >>> ce_term({"ce_weight": 0.1, "label_smoothing": 0.0}).weight
    0.1
  """
  return objective_lib.term("ce", loss["ce_weight"] if weight is None else weight,
                            label_smoothing=loss["label_smoothing"])


def kd_term(loss: Mapping[str, Any]) -> objective_lib.Term:
  """Hinton's KD term of a ``loss`` config (weight, temperature, class reduction, z-scoring).

  Example:
    >>> kd_term({"kd_weight": 0.9, "temperature": 4.0, "class_reduction": "sum",
    ...          "logit_standardization": False}).arguments["temperature"]
    4.0
  """
  return objective_lib.term("kd", loss["kd_weight"], temperature=loss["temperature"],
                            class_reduction=loss["class_reduction"],
                            logit_standardization=loss["logit_standardization"])


def refuse_standardization(loss: Mapping[str, Any], what: str) -> None:
  """Refuses ``loss.logit_standardization`` where no softmax term would read it.

  Raises:
    ValueError: naming ``what`` and the methods it applies to.

  Example:
    >>> refuse_standardization({"logit_standardization": False}, "FitNets")  # None: fine
    >>> refuse_standardization({"logit_standardization": True}, "FitNets")
    Traceback (most recent call last):
    ...
    ValueError: loss.logit_standardization=True has no effect on FitNets; it applies to ...
  """
  if loss["logit_standardization"]:
    raise ValueError(f"loss.logit_standardization=True has no effect on {what}; it applies "
                     f"to the softmax methods (kd, dkd, dgkd, ensemble, function_matching, "
                     f"divergence, dist, dkp with form='loss').")


def fraction_of_steps(num_steps: int, name: str, fraction: float) -> int:
  """``fraction`` of a stage's ``num_steps``, at least one step.

  Raises:
    ValueError: on a fraction outside (0, 1], naming the loss field ``name``.

  Example:
    >>> fraction_of_steps(1000, "ramp_fraction", 0.75)
    750
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"loss.{name}={fraction} must lie in (0, 1].")
  return max(round(fraction * num_steps), 1)


def _no_check(loss: Mapping[str, Any], num_classes: int) -> None:
  del loss, num_classes


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method.

  Look one up with :func:`get`; a training stage calls ``build`` with its ``loss`` config
  and checks the stage's teachers against ``teachers``.

  Attributes:
    build: ``(loss_config, num_steps, teacher_feature_shapes, steps_per_epoch) -> Recipe``,
      where ``teacher_feature_shapes`` maps the first teacher's feature names to their
      shapes (e.g. ``[B, H, W, C]``; only FitNets reads it), or is ``None`` before the
      teachers are loaded (validation: a head sized from them is built at a stand-in
      size), and ``steps_per_epoch`` is the number of steps in one pass over the training
      set (only DKD's warm-up reads it). It reads the ``loss`` fields in ``fields`` (a
      missing one raises ``KeyError``) and raises ``ValueError`` on a bad value (e.g. an
      unknown DKP ``form``, a FitNets ``feature`` the teacher lacks, an annealing stage of
      fewer than ``max_temperature`` steps, or a negative DKD ``warmup_epochs``).
    teachers: ``"none"``, ``"one"`` or ``"many"`` (one or more) teaching networks.
    cacheable: whether teacher logits may be precomputed when augmentation is off (False
      when the method reads teacher features, or teacher and student must share a view).
    description: one line for docs and errors.
    fields: the ``loss`` fields ``build`` reads, with their defaults and meanings: the
      only fields a stage's ``loss`` may hold, and so the only ones its results depend
      on (the stage record, ``kdjax.trainer.workdir``, compares these and no other).
    check: ``(loss_config, num_classes) -> None``, raising ``ValueError`` on a field that
      does not fit the dataset's number of classes (e.g. DKP's tail ``top_k``); run by
      ``kdjax.trainer.validate``.

  Example:
    >>> from kdjax import methods
    >>> method = methods.get("kd")
    >>> method.teachers, method.cacheable
    ('one', True)
    >>> "temperature" in method.loss_fields, "gamma" in method.loss_fields
    (True, False)
    >>> objective = method.build(method.defaults(), 1000, {}, 100).objective
    >>> {t.label: t.weight for t in objective.terms}
    {'ce': 0.1, 'kd': 0.9}
  """

  build: Callable[[Mapping[str, Any], int, Mapping[str, tuple[int, ...]] | None, int], Recipe]
  teachers: str
  cacheable: bool
  description: str
  fields: Mapping[str, Field]
  check: Callable[[Mapping[str, Any], int], None] = _no_check

  @property
  def loss_fields(self) -> tuple[str, ...]:
    """The names of ``fields``, in their order."""
    return tuple(self.fields)

  def defaults(self) -> dict[str, Any]:
    """Each loss field at its default: a stage's ``loss`` before its overrides.

    Example:
      >>> from kdjax import methods
      >>> methods.get("sparse_kd").defaults()["top_k"]
      10
    """
    return {name: field.default for name, field in self.fields.items()}

  def unknown(self, names) -> list[str]:
    """Those of ``names`` that are not fields of this method, in their order.

    Example:
      >>> from kdjax import methods
      >>> methods.get("dkd").unknown(["alpha", "dkd_alpha", "kd_weight"])
      ['dkd_alpha', 'kd_weight']
    """
    return [name for name in names if name not in self.fields]
