"""Distillation methods by name: what a training stage's ``method`` turns into.

A method maps a stage's ``loss`` config onto the pieces of a train step: an objective
(weighted loss terms), an optional transformation of the output gradients, optional
auxiliary heads, and how many teaching networks it reads. The registry (``METHODS``) is the
one place where method names meet code; a miss lists the valid names.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

import jax
import optax

from kdjax import heads, schedules, transforms
from kdjax import objective as objective_lib

HINT_HEAD = "hint_regressor"


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
    >>> loss = {"ce_weight": 0.1, "label_smoothing": 0.0, "kd_weight": 0.9,
    ...         "logit_standardization": False}
    >>> recipe = get("logits_matching").build(loss, 1000, {}, 100)
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
      >>> recipe = get("ctkd").build({"ce_weight": 0.1, "label_smoothing": 0.0,
      ...     "kd_weight": 0.9, "logit_standardization": False, "ctkd_mode": "global",
      ...     "ctkd_t_start": 1.0, "ctkd_t_range": 20.0, "ctkd_lambda_max": 1.0,
      ...     "ctkd_ramp_fraction": 0.1}, 100, {}, 10)
      >>> params = {"student": jnp.ones(2), "aux": {CTKD_HEAD: jnp.ones(())}}
      >>> tx = recipe.optimizer_for(optax.sgd(1.0))
      >>> state = tx.init(params)
      >>> for _ in range(11):  # λ reaches 1 at step 10
      ...   updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state)
      >>> updates["student"].tolist(), float(updates["aux"][CTKD_HEAD])  # θ ascends
      ([-1.0, -1.0], 1.0)
    """
    return optimizer if self.param_tx is None else optax.chain(self.param_tx, optimizer)

  @property
  def label_users(self) -> tuple[str, ...]:
    """What reads the labels: objective term labels, and ``"output_tx"`` if it does.

    Empty for a method that can train without labels (e.g. on mixed-up images).

    Example:
      >>> loss = {"kd_weight": 0.9, "temperature": 4.0, "class_reduction": "sum",
      ...         "logit_standardization": False}
      >>> get("function_matching").build(loss, 1000, {}, 100).label_users
      ()
    """
    return (*self.objective.terms_needing("labels"),
            *(("output_tx",) if self.output_tx_needs_labels else ()))


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method.

  Look one up with :func:`get`; a training stage calls ``build`` with its ``loss`` config
  and checks the stage's teachers against ``teachers``.

  Attributes:
    build: ``(loss_config, num_steps, teacher_feature_shapes, steps_per_epoch) -> Recipe``,
      where ``teacher_feature_shapes`` maps the first teacher's feature names to their
      shapes (e.g. ``[B, H, W, C]``; only FitNets reads it) and ``steps_per_epoch`` is the
      number of steps in one pass over the training set (only DKD's warm-up reads it).
      It reads the fields of the ``loss`` config it needs (a missing one raises
      ``KeyError``) and raises ``ValueError`` on a bad value (e.g. an unknown
      ``dkp_form``, a ``hint_feature`` with no shape, an annealing stage of fewer than
      ``max_temperature`` steps, or a negative ``dkd_warmup_epochs``).
    teachers: ``"none"``, ``"one"`` or ``"many"`` (one or more) teaching networks.
    cacheable: whether teacher logits may be precomputed when augmentation is off (False
      when the method reads teacher features, or teacher and student must share a view).
    description: one line for docs and errors.
    loss_fields: the fields of the ``loss`` config that ``build`` may read, and so the only
      ones a stage's results depend on: the stage record (``kdjax.trainer.workdir``)
      compares these and no other loss field.

  Example:
    >>> method = get("kd")
    >>> method.teachers, method.cacheable
    ('one', True)
    >>> "temperature" in method.loss_fields, "gamma" in method.loss_fields
    (True, False)
    >>> loss = {"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0,
    ...         "label_smoothing": 0.0, "class_reduction": "sum", "logit_standardization": False}
    >>> objective = method.build(loss, 1000, {}, 100).objective
    >>> {t.label: t.weight for t in objective.terms}
    {'ce': 0.1, 'kd': 0.9}
  """

  build: Callable[[Mapping[str, Any], int, Mapping[str, tuple[int, ...]], int], Recipe]
  teachers: str
  cacheable: bool
  description: str
  loss_fields: tuple[str, ...]


def _ce(loss: Mapping[str, Any], weight: schedules.ScalarOrSchedule | None = None
        ) -> objective_lib.Term:
  return objective_lib.term("ce", loss["ce_weight"] if weight is None else weight,
                            label_smoothing=loss["label_smoothing"])


def _kd(loss: Mapping[str, Any]) -> objective_lib.Term:
  return objective_lib.term("kd", loss["kd_weight"], temperature=loss["temperature"],
                            class_reduction=loss["class_reduction"],
                            logit_standardization=loss["logit_standardization"])


def _without_standardization(loss: Mapping[str, Any], what: str) -> None:
  """Refuses ``loss.logit_standardization`` where no softmax term would read it."""
  if loss["logit_standardization"]:
    raise ValueError(f"loss.logit_standardization=True has no effect on {what}; it applies "
                     f"to the softmax methods (kd, dkd, dgkd, ensemble, function_matching, "
                     f"divergence, dist, dkp with dkp_form='loss').")


def _fraction_of(num_steps: int, name: str, fraction: float) -> int:
  """``fraction`` of the stage's steps, at least one; refuses a fraction outside (0, 1]."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"loss.{name}={fraction} must lie in (0, 1].")
  return max(round(fraction * num_steps), 1)


def _scratch(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  _without_standardization(loss, "cross-entropy alone")
  return Recipe(objective_lib.Objective((_ce(loss, 1.0),), num_steps))


def _hinton(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  return Recipe(objective_lib.Objective((_ce(loss), _kd(loss)), num_steps))


def _dkp(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  variant = loss["dkp_variant"]
  top_k = loss["dkp_top_k"] if variant == "tail" else None
  if loss["dkp_form"] == "loss":
    dkp_term = objective_lib.term("dkp", loss["kd_weight"], temperature=loss["temperature"],
                                  gamma=loss["gamma"], variant=variant, top_k=top_k,
                                  class_reduction=loss["class_reduction"],
                                  logit_standardization=loss["logit_standardization"])
    return Recipe(objective_lib.Objective((_ce(loss), _kd(loss), dkp_term), num_steps))
  if loss["dkp_form"] != "transform":
    raise ValueError(f"unknown loss.dkp_form {loss['dkp_form']!r}; valid: 'transform', 'loss'.")
  _without_standardization(loss, "the DKP transform of raw-logit gradients (dkp_form='transform')")
  # DKP follows the KD term's temperature and weight (schedules and per-student overrides);
  # its gamma is a hyperparameter of the objective, so it is reported as "dkp/gamma" and may
  # be overridden per student (kdjax.sweep).
  tx = transforms.dkp("kd/temperature", "dkp/gamma", variant, top_k=top_k, weight="weight/kd",
                      class_reduction=loss["class_reduction"])
  objective = objective_lib.Objective(
      (_ce(loss), _kd(loss)), num_steps,
      extra_hyperparameters={"dkp/gamma": (loss["gamma"], {"low": 0.0, "high": 1.0})})
  return Recipe(objective, output_tx=tx, log_schedules={"dkp/temperature": "kd/temperature"},
                output_tx_needs_labels=variant == "tail")


def _annealing(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  _without_standardization(loss, "Annealing-KD's logit regression")
  # Each of the T_max levels of Phi holds an equal share of the stage (to within a step) and
  # the stage ends at Phi = 1; a stage shorter than T_max steps is refused (ValueError).
  phi = schedules.annealing_phi(int(loss["max_temperature"]), num_steps=num_steps)
  return Recipe(objective_lib.Objective((objective_lib.term("annealing", 1.0, phi=phi),),
                                        num_steps))


def _continuation(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  _without_standardization(loss, "Continuation-KD's logit regression")
  # Phi climbs its T_max levels over the first continuation_anneal_fraction of the stage;
  # psi moves the weight from the hinge to CE over the first continuation_ramp_fraction.
  anneal_steps = _fraction_of(num_steps, "continuation_anneal_fraction",
                              loss["continuation_anneal_fraction"])
  ramp_steps = _fraction_of(num_steps, "continuation_ramp_fraction",
                            loss["continuation_ramp_fraction"])
  phi = schedules.annealing_phi(int(loss["continuation_max_temperature"]),
                                num_steps=anneal_steps)
  psi = schedules.continuation_psi(ramp_steps)
  hinge = objective_lib.term("continuation", lambda step: 1.0 - psi(step), phi=phi,
                             margin=loss["continuation_margin"])
  return Recipe(objective_lib.Objective((_ce(loss, psi), hinge), num_steps))


def _logits_matching(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  _without_standardization(loss, "logits matching")
  matching = objective_lib.term("logits_matching", loss["kd_weight"])
  return Recipe(objective_lib.Objective((_ce(loss), matching), num_steps),
                output_tx=transforms.zero_mean_logit_gradients())


def _dkd(loss, num_steps, shapes, steps_per_epoch):
  del shapes
  # mdistiller's min(epoch / warmup, 1): epochs counted from 1, each held for a whole epoch.
  warmup = loss["dkd_warmup_epochs"]
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
    raise ValueError(f"loss.dkd_warmup_epochs={warmup!r} must be an integer >= 0 (0: none).")
  weight = schedules.epoch_warmup(warmup, steps_per_epoch) if warmup else 1.0
  dkd = objective_lib.term("dkd", weight, alpha=loss["dkd_alpha"], beta=loss["dkd_beta"],
                           temperature=loss["temperature"],
                           logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((_ce(loss, 1.0), dkd), num_steps))


def _dgkd(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  dgkd = objective_lib.term("dgkd", loss["kd_weight"], temperature=loss["temperature"],
                            mode=loss["dgkd_mode"], keep_prob=loss["dgkd_keep_prob"],
                            drop_num=loss["dgkd_drop_num"],
                            keep_teacher=loss["dgkd_keep_teacher"],
                            class_reduction=loss["class_reduction"],
                            logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((_ce(loss), dgkd), num_steps))


def _ensemble(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  ensemble = objective_lib.term("ensemble", loss["kd_weight"], temperature=loss["temperature"],
                                class_reduction=loss["class_reduction"],
                                logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((_ce(loss), ensemble), num_steps))


DIVERGENCES = ("reverse_kl", "jensen_shannon", "total_variation")


def _divergence(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  name = loss["divergence"]
  if name not in DIVERGENCES:
    raise ValueError(f"unknown loss.divergence {name!r}; valid: "
                     f"{', '.join(map(repr, DIVERGENCES))}.")
  beta = {"beta": loss["jsd_beta"]} if name == "jensen_shannon" else {}
  divergence = objective_lib.term(name, loss["kd_weight"], temperature=loss["temperature"],
                                  logit_standardization=loss["logit_standardization"], **beta)
  return Recipe(objective_lib.Objective((_ce(loss), divergence), num_steps))


def _dist(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  dist = objective_lib.term("dist", loss["kd_weight"], temperature=loss["temperature"],
                            beta=loss["dist_beta"], gamma=loss["dist_gamma"],
                            logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((_ce(loss), dist), num_steps))


CTKD_HEAD = "ctkd_temperature"
CTKD_MODES = ("global", "instance")


def _ctkd(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  _without_standardization(loss, "CTKD")
  mode = loss["ctkd_mode"]
  if mode not in CTKD_MODES:
    raise ValueError(f"unknown loss.ctkd_mode {mode!r}; valid: "
                     f"{', '.join(map(repr, CTKD_MODES))}.")
  lambda_max = loss["ctkd_lambda_max"]
  if not 0.0 <= lambda_max <= 1.0:
    raise ValueError(f"loss.ctkd_lambda_max={lambda_max} must lie in [0.0, 1.0]: the "
                     f"temperature's gradient is reversed with weight λ ∈ [0, λ_max].")
  # λ rises from 0 to ctkd_lambda_max on a cosine over the first ctkd_ramp_fraction of the
  # stage (the paper: 0 -> 1 over 10 epochs; the official code holds each epoch's value).
  ramp_steps = _fraction_of(num_steps, "ctkd_ramp_fraction", loss["ctkd_ramp_fraction"])
  reversal = schedules.cosine(0.0, float(lambda_max), ramp_steps)
  module = heads.GlobalTemperature() if mode == "global" else heads.InstanceTemperature()
  ctkd = objective_lib.term("ctkd", loss["kd_weight"], t_start=loss["ctkd_t_start"],
                            t_range=loss["ctkd_t_range"], temperature_feature=CTKD_HEAD)
  return Recipe(objective_lib.Objective((_ce(loss), ctkd), num_steps),
                aux_heads={CTKD_HEAD: heads.AuxHead(module, source="pooled")},
                log_schedules={"ctkd/reversal": reversal},
                param_tx=transforms.reverse_gradients(reversal, _ctkd_temperature_mask))


def _ctkd_temperature_mask(trainables: Mapping[str, Any]) -> dict[str, Any]:
  """True on the CTKD temperature head's parameters, False on the rest."""
  return {"student": jax.tree.map(lambda _: False, trainables["student"]),
          "aux": {name: jax.tree.map(lambda _, name=name: name == CTKD_HEAD, params)
                  for name, params in trainables["aux"].items()}}


def _sparse_kd(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  top_k = loss["teacher_top_k"]
  if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
    raise ValueError(f"loss.teacher_top_k={top_k!r} must be an integer in [1, K], K the "
                     f"number of classes.")
  # The teacher's targets are its top k classes and a tail bucket, whether its logits come
  # from the step or from a cache that keeps only those (at the term's temperature).
  temperature = loss["temperature"]
  sparse = objective_lib.term("sparse_kd", loss["kd_weight"], temperature=temperature,
                              top_k=top_k)
  return Recipe(objective_lib.Objective((_ce(loss), sparse), num_steps),
                sparse_cache=(top_k, temperature))


def _fitnets(loss, num_steps, shapes, steps_per_epoch):
  del steps_per_epoch
  _without_standardization(loss, "FitNets")
  feature = loss["hint_feature"]
  if feature not in shapes:
    raise ValueError(f"loss.hint_feature={feature!r} is not a teacher feature; available: "
                     f"{sorted(shapes)}.")
  shape = shapes[feature]  # [B, H, W, C] of the teacher's feature
  regressor = heads.AuxHead(heads.ConvRegressor(features=shape[-1], spatial_size=shape[1:3]),
                            source=feature)
  hint = objective_lib.term("hint", loss["hint_weight"], student_feature=HINT_HEAD,
                            teacher_feature=feature)
  return Recipe(objective_lib.Objective((_ce(loss, 1.0), hint), num_steps),
                aux_heads={HINT_HEAD: regressor})


def _attention(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  _without_standardization(loss, "attention transfer")
  attention = objective_lib.term("attention", loss["at_weight"],
                                 student_features=tuple(loss["at_features"]))
  return Recipe(objective_lib.Objective((_ce(loss, 1.0), attention), num_steps))


def _function_matching(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  return Recipe(objective_lib.Objective((_kd(loss),), num_steps))


# The loss fields each build reads (tests/methods_test.py checks them against the builds).
_CE = ("ce_weight", "label_smoothing")
_KD = ("kd_weight", "temperature", "class_reduction", "logit_standardization")
_STANDARDIZATION = ("logit_standardization",)

METHODS: Mapping[str, Method] = {
    "scratch": Method(_scratch, "none", True, "cross-entropy on labels, no teacher",
                      ("label_smoothing", *_STANDARDIZATION)),
    "kd": Method(_hinton, "one", True, "Hinton KD: ce_weight·CE + kd_weight·T²·KL", _CE + _KD),
    "dkp": Method(_dkp, "one", True, "KD + Dark Knowledge Pruning (gamma, dkp_variant)",
                  _CE + _KD + ("gamma", "dkp_variant", "dkp_top_k", "dkp_form")),
    "annealing": Method(_annealing, "one", True,
                        "Annealing-KD stage I: MSE to Φ·teacher logits, no labels",
                        ("max_temperature", *_STANDARDIZATION)),
    "continuation": Method(_continuation, "one", True,
                           "Continuation-KD: ψ·CE + (1 − ψ)·max{0, ‖s − Φ·t‖² − m·Φ}",
                           ("label_smoothing", "continuation_max_temperature",
                            "continuation_anneal_fraction", "continuation_ramp_fraction",
                            "continuation_margin", *_STANDARDIZATION)),
    "logits_matching": Method(_logits_matching, "one", True,
                              "CE + logits matching with zero-mean logit gradients",
                              _CE + ("kd_weight", *_STANDARDIZATION)),
    "dkd": Method(_dkd, "one", True, "decoupled KD: CE + α·TCKD + β·NCKD",
                  ("label_smoothing", "temperature", "dkd_alpha", "dkd_beta",
                   "dkd_warmup_epochs", *_STANDARDIZATION)),
    "dgkd": Method(_dgkd, "many", True, "densely guided KD from the teacher and every assistant",
                   _CE + _KD + ("dgkd_mode", "dgkd_keep_prob", "dgkd_drop_num",
                                "dgkd_keep_teacher")),
    "ensemble": Method(_ensemble, "many", True, "KD toward the teachers' mean probabilities",
                       _CE + _KD),
    "divergence": Method(_divergence, "one", True,
                         "CE + reverse KL, generalized Jensen–Shannon or total variation",
                         _CE + ("kd_weight", "temperature", "divergence", "jsd_beta",
                                *_STANDARDIZATION)),
    "dist": Method(_dist, "one", True,
                   "CE + DIST: inter- and intra-class Pearson relations (a batch loss)",
                   _CE + ("kd_weight", "temperature", "dist_beta", "dist_gamma",
                          *_STANDARDIZATION)),
    "ctkd": Method(_ctkd, "one", True,
                   "CE + KD at a learnable temperature trained adversarially (CTKD)",
                   _CE + ("kd_weight", "ctkd_mode", "ctkd_ramp_fraction", "ctkd_lambda_max",
                          "ctkd_t_start", "ctkd_t_range", *_STANDARDIZATION)),
    "sparse_kd": Method(_sparse_kd, "one", True,
                        "CE + KD toward the teacher's top-k classes and a tail bucket; its "
                        "teacher cache keeps k of K logits",
                        _CE + ("kd_weight", "temperature", "teacher_top_k")),
    "fitnets": Method(_fitnets, "one", False, "CE + FitNets hint with a learned regressor",
                      ("label_smoothing", "hint_feature", "hint_weight", *_STANDARDIZATION)),
    "attention": Method(_attention, "one", False, "CE + attention transfer over stages",
                        ("label_smoothing", "at_features", "at_weight", *_STANDARDIZATION)),
    "function_matching": Method(_function_matching, "one", False,
                                "KD only, teacher and student on the same augmented view", _KD),
}


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
