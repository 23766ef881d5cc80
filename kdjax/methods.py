"""Distillation methods by name: what a training stage's ``method`` turns into.

A method maps a stage's ``loss`` config onto the pieces of a train step: an objective
(weighted loss terms), an optional transformation of the output gradients, optional
auxiliary heads, and how many teaching networks it reads. The registry (``METHODS``) is the
one place where method names meet code; a miss lists the valid names.

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
from typing import Any

import jax

from kdjax import heads, schedules, transforms
from kdjax import objective as objective_lib
from kdjax.losses import pruning, sparse
from kdjax.recipe import SHARED_FIELDS, Field, Method, Recipe

__all__ = ["CTKD_HEAD", "DIVERGENCES", "HINT_HEAD", "METHODS", "SHARED_FIELDS", "Field",
           "Method", "Recipe", "describe", "get"]

HINT_HEAD = "hint_regressor"


def _fields(*shared: str, **own: Field) -> dict[str, Field]:
  """The shared fields named (from ``SHARED_FIELDS``), then the method's own."""
  return {**{name: SHARED_FIELDS[name] for name in shared}, **own}


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
                     f"divergence, dist, dkp with form='loss').")


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
  variant = loss["variant"]
  top_k = loss["top_k"] if variant == "tail" else None
  if loss["form"] == "loss":
    dkp_term = objective_lib.term("dkp", loss["kd_weight"], temperature=loss["temperature"],
                                  gamma=loss["gamma"], variant=variant, top_k=top_k,
                                  class_reduction=loss["class_reduction"],
                                  logit_standardization=loss["logit_standardization"])
    return Recipe(objective_lib.Objective((_ce(loss), _kd(loss), dkp_term), num_steps))
  if loss["form"] != "transform":
    raise ValueError(f"unknown loss.form {loss['form']!r}; valid: 'transform', 'loss'.")
  _without_standardization(loss, "the DKP transform of raw-logit gradients (form='transform')")
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
  # Phi climbs its T_max levels over the first anneal_fraction of the stage;
  # psi moves the weight from the hinge to CE over the first ramp_fraction.
  anneal_steps = _fraction_of(num_steps, "anneal_fraction", loss["anneal_fraction"])
  ramp_steps = _fraction_of(num_steps, "ramp_fraction", loss["ramp_fraction"])
  phi = schedules.annealing_phi(int(loss["max_temperature"]),
                                num_steps=anneal_steps)
  psi = schedules.continuation_psi(ramp_steps)
  hinge = objective_lib.term("continuation", lambda step: 1.0 - psi(step), phi=phi,
                             margin=loss["margin"])
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
  warmup = loss["warmup_epochs"]
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
    raise ValueError(f"loss.warmup_epochs={warmup!r} must be an integer >= 0 (0: none).")
  weight = schedules.epoch_warmup(warmup, steps_per_epoch) if warmup else 1.0
  dkd = objective_lib.term("dkd", weight, alpha=loss["alpha"], beta=loss["beta"],
                           temperature=loss["temperature"],
                           logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((_ce(loss, 1.0), dkd), num_steps))


def _dgkd(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  dgkd = objective_lib.term("dgkd", loss["kd_weight"], temperature=loss["temperature"],
                            mode=loss["mode"], keep_prob=loss["keep_prob"],
                            drop_num=loss["drop_num"],
                            keep_teacher=loss["keep_teacher"],
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
  beta = {"beta": loss["beta"]} if name == "jensen_shannon" else {}
  divergence = objective_lib.term(name, loss["kd_weight"], temperature=loss["temperature"],
                                  logit_standardization=loss["logit_standardization"], **beta)
  return Recipe(objective_lib.Objective((_ce(loss), divergence), num_steps))


def _dist(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  dist = objective_lib.term("dist", loss["kd_weight"], temperature=loss["temperature"],
                            beta=loss["beta"], gamma=loss["gamma"],
                            logit_standardization=loss["logit_standardization"])
  return Recipe(objective_lib.Objective((_ce(loss), dist), num_steps))


CTKD_HEAD = "ctkd_temperature"
CTKD_MODES = ("global", "instance")


def _ctkd(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  _without_standardization(loss, "CTKD")
  mode = loss["mode"]
  if mode not in CTKD_MODES:
    raise ValueError(f"unknown loss.mode {mode!r}; valid: "
                     f"{', '.join(map(repr, CTKD_MODES))}.")
  lambda_max = loss["lambda_max"]
  if not 0.0 <= lambda_max <= 1.0:
    raise ValueError(f"loss.lambda_max={lambda_max} must lie in [0.0, 1.0]: the "
                     f"temperature's gradient is reversed with weight λ ∈ [0, λ_max].")
  # λ rises from 0 to lambda_max on a cosine over the first ramp_fraction of the
  # stage (the paper: 0 -> 1 over 10 epochs; the official code holds each epoch's value).
  ramp_steps = _fraction_of(num_steps, "ramp_fraction", loss["ramp_fraction"])
  reversal = schedules.cosine(0.0, float(lambda_max), ramp_steps)
  module = heads.GlobalTemperature() if mode == "global" else heads.InstanceTemperature()
  ctkd = objective_lib.term("ctkd", loss["kd_weight"], t_start=loss["t_start"],
                            t_range=loss["t_range"], temperature_feature=CTKD_HEAD)
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
  top_k = loss["top_k"]  # checked by the term (sparse.check_k), against K by the entry
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
  return Recipe(objective_lib.Objective((_ce(loss, 1.0), hint), num_steps),
                aux_heads={HINT_HEAD: regressor})


def _attention(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  _without_standardization(loss, "attention transfer")
  attention = objective_lib.term("attention", loss["weight"],
                                 student_features=tuple(loss["features"]))
  return Recipe(objective_lib.Objective((_ce(loss, 1.0), attention), num_steps))


def _function_matching(loss, num_steps, shapes, steps_per_epoch):
  del shapes, steps_per_epoch
  return Recipe(objective_lib.Objective((_kd(loss),), num_steps))


def _check_dkp(loss: Mapping[str, Any], num_classes: int) -> None:
  """Refuses a tail ``top_k`` that leaves DKP no non-target tail among K classes."""
  if loss["variant"] == "tail":
    pruning.check_arguments(loss["temperature"], loss["gamma"], "tail", top_k=loss["top_k"],
                            num_classes=num_classes)


def _check_sparse_kd(loss: Mapping[str, Any], num_classes: int) -> None:
  """Refuses a ``top_k`` outside [1, K]."""
  sparse.check_k(loss["top_k"], num_classes)


# The loss fields each build reads (tests/methods_test.py checks them against the builds).
_CE = ("ce_weight", "label_smoothing")
_KD = ("kd_weight", "temperature", "class_reduction", "logit_standardization")
_STANDARDIZATION = ("logit_standardization",)

METHODS: Mapping[str, Method] = {
    "scratch": Method(_scratch, "none", True, "cross-entropy on labels, no teacher",
                      _fields("label_smoothing", *_STANDARDIZATION)),
    "kd": Method(_hinton, "one", True, "Hinton KD: ce_weight·CE + kd_weight·T²·KL",
                 _fields(*_CE, *_KD)),
    "dkp": Method(
        _dkp, "one", True, "KD + Dark Knowledge Pruning (gamma, variant)",
        _fields(*_CE, *_KD,
                gamma=Field(0.5, "strength of Dark Knowledge Pruning, in [0, 1]"),
                variant=Field("uniform", "uniform | mean | tail"),
                top_k=Field(2, "tail: the teacher's leading non-target classes kept whole"),
                form=Field("transform",
                           "transform (optax output transform) | loss (loss term)")),
        check=_check_dkp),
    "annealing": Method(
        _annealing, "one", True, "Annealing-KD stage I: MSE to Φ·teacher logits, no labels",
        _fields(*_STANDARDIZATION, max_temperature=Field(
            10, "T_max: Φ steps 1/T_max, ..., 1, an equal share of the stage each (the "
            "stage needs num_steps >= max_temperature)"))),
    "continuation": Method(
        _continuation, "one", True, "Continuation-KD: ψ·CE + (1 − ψ)·max{0, ‖s − Φ·t‖² − m·Φ}",
        _fields("label_smoothing", *_STANDARDIZATION,
                max_temperature=Field(20, "Φ's T_max"),
                anneal_fraction=Field(0.5, "Φ climbs 1/T_max, ..., 1 over this fraction of "
                                      "the stage"),
                ramp_fraction=Field(0.75, "ψ ramps CE's weight 0 -> 1 (the hinge's 1 -> 0) "
                                    "over this fraction of the stage"),
                margin=Field(1.0, "hinge margin m (on the mean squared error)"))),
    "logits_matching": Method(_logits_matching, "one", True,
                              "CE + logits matching with zero-mean logit gradients",
                              _fields(*_CE, "kd_weight", *_STANDARDIZATION)),
    "dkd": Method(
        _dkd, "one", True, "decoupled KD: CE + α·TCKD + β·NCKD",
        _fields("label_smoothing", "temperature", *_STANDARDIZATION,
                alpha=Field(1.0, "weight of the target-class term TCKD"),
                beta=Field(8.0, "weight of the non-target-class term NCKD"),
                warmup_epochs=Field(0, "distillation weight min(epoch / warmup_epochs, 1), "
                                    "epochs from 1 (0: none)"))),
    "dgkd": Method(
        _dgkd, "many", True, "densely guided KD from the teacher and every assistant",
        _fields(*_CE, *_KD,
                mode=Field("code", "code (drop drop_num terms) | paper (Bernoulli) | none"),
                keep_prob=Field(0.75, "paper mode: keep probability of each teaching network"),
                drop_num=Field(1, "code mode: terms removed per batch"),
                keep_teacher=Field(False, "paper mode: keep the teacher (the first teaching "
                                   "network) in every batch, drop assistants only"))),
    "ensemble": Method(_ensemble, "many", True, "KD toward the teachers' mean probabilities",
                       _fields(*_CE, *_KD)),
    "divergence": Method(
        _divergence, "one", True,
        "CE + reverse KL, generalized Jensen–Shannon or total variation",
        _fields(*_CE, "kd_weight", "temperature", *_STANDARDIZATION,
                divergence=Field("reverse_kl",
                                 "reverse_kl | jensen_shannon | total_variation"),
                beta=Field(0.5, "jensen_shannon: interpolation in [0, 1] (0: forward KL, 1: "
                           "reverse KL)"))),
    "dist": Method(
        _dist, "one", True, "CE + DIST: inter- and intra-class Pearson relations (a batch loss)",
        _fields(*_CE, "kd_weight", "temperature", *_STANDARDIZATION,
                beta=Field(2.0, "weight of the inter-class relation"),
                gamma=Field(2.0, "weight of the intra-class relation (couples the batch)"))),
    "ctkd": Method(
        _ctkd, "one", True, "CE + KD at a learnable temperature trained adversarially (CTKD)",
        _fields(*_CE, "kd_weight", *_STANDARDIZATION,
                mode=Field("global", "global (one learnable temperature) | instance (an MLP)"),
                t_start=Field(1.0, "the lowest temperature T_0"),
                t_range=Field(20.0, "T lies in (T_0, T_0 + t_range)"),
                lambda_max=Field(1.0, "the temperature's gradient-reversal weight rises 0 -> "
                                 "lambda_max in [0, 1] (1: the paper's and the code's)"),
                ramp_fraction=Field(10 / 240, "...on a cosine over this fraction of the "
                                    "stage"))),
    "sparse_kd": Method(
        _sparse_kd, "one", True,
        "CE + KD toward the teacher's top-k classes and a tail bucket; its teacher cache "
        "keeps k of K logits",
        _fields(*_CE, "kd_weight", "temperature",
                top_k=Field(10, "the teacher classes kept per example, in [1, K]; the rest "
                            "share one tail bucket")),
        check=_check_sparse_kd),
    "fitnets": Method(
        _fitnets, "one", False, "CE + FitNets hint with a learned regressor",
        _fields("label_smoothing", *_STANDARDIZATION,
                weight=Field(100.0, "weight of the hint loss"),
                feature=Field("stage2", "the guided student / hint teacher feature"))),
    "attention": Method(
        _attention, "one", False, "CE + attention transfer over stages",
        _fields("label_smoothing", *_STANDARDIZATION,
                weight=Field(1000.0, "weight of the attention-transfer loss"),
                features=Field(("stage1", "stage2", "stage3"), "the stages compared"))),
    "function_matching": Method(_function_matching, "one", False,
                                "KD only, teacher and student on the same augmented view",
                                _fields(*_KD)),
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
