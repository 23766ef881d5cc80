r"""Objectives assembled from loss terms: ``term`` declares one, ``Objective`` sums them.

.. math::
   L(n) = \sum_j w_j(n)\ \frac{\sum_i m_i\,\ell_j(s_i, t_i;\ \theta_j(n))}{\sum_i m_i}

A ``Term`` is a term definition (``kdjax.objective.registry.TermDefinition``: a registered
name of ``TERMS``, or a definition of one's own) with its weight and arguments, checked and
completed with the definition's defaults; an ``Objective`` range-checks
every weight and hyperparameter over the training length, reports them as metrics, and
computes the weighted, masked batch mean of its terms.

Example:
  >>> obj = Objective((term("ce", 0.1), term("kd", 0.9, temperature=4.0)))
  >>> [t.label for t in obj.terms], obj.hyperparameter_names
  (['ce', 'kd'], ('weight/ce', 'weight/kd', 'kd/temperature'))
"""

from collections.abc import Mapping
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import losses, networks, schedules
from kdjax.objective.registry import (
    NON_NEGATIVE,
    REQUIRED,
    STANDARDIZATION,
    TERMS,
    TermDefinition,
    TermInputs,
)


@dataclasses.dataclass(frozen=True)
class Term:
  """One weighted term of an objective; build it with ``term``.

  Constructing it directly skips :func:`term`'s checks: that validates the name and the
  arguments and fills in the defaults.

  Attributes:
    definition: what the term computes and takes (an entry of ``TERMS``, or one's own).
    weight: a scalar or schedule, >= 0.
    arguments: its hyperparameters (scalars or schedules) and static options, defaults
      filled in.
    label: the name used in metrics; the term's name by default.

  Example:
    >>> t = term("kd", 0.9, temperature=2.0)
    >>> t.name, t.weight, t.label
    ('kd', 0.9, 'kd')
    >>> t.arguments
    {'temperature': 2.0, 'class_reduction': 'sum', 'logit_standardization': False}
  """

  definition: TermDefinition
  weight: schedules.ScalarOrSchedule
  arguments: Mapping[str, Any]
  label: str

  @property
  def name(self) -> str:
    """The definition's name."""
    return self.definition.name


def term(name: str | TermDefinition, weight: schedules.ScalarOrSchedule = 1.0, *,
         label: str | None = None, **arguments: Any) -> Term:
  """Declares a loss term of an objective.

  Use it to list the terms of an :class:`Objective`; any weight or schedulable
  hyperparameter may be an ``optax.Schedule`` of the step (``kdjax.schedules``). A term is
  named from the registry (``TERMS``) or given as a ``TermDefinition`` of one's own: a new
  loss joins an objective without a registry entry, and a method whose term only works
  inside it (CTKD's learned temperature, sparse KD's cached targets, DIST's batch
  relation) declares that term in its ``kdjax.methods`` module (``DIST_TERM``,
  ``CTKD_TERM``, ``SPARSE_KD_TERM``). Registered terms, their hyperparameters (schedulable)
  and options (static):

  - ``"ce"``: cross-entropy with labels; ``label_smoothing=0``.
  - ``"kd"``: Hinton KD; ``temperature=4``; ``class_reduction="sum"``.
  - ``"logits_matching"``: ``centered=False``.
  - ``"annealing"``: Annealing-KD stage I; ``phi`` (required, e.g.
    ``kdjax.schedules.annealing_phi``).
  - ``"continuation"``: Continuation-KD's hinge; ``phi`` (required), ``margin=0``;
    ``class_reduction="mean"``.
  - ``"dkp"``: the DKP term, added to a ``"kd"`` term of the same weight and temperature;
    ``temperature=4``, ``gamma`` (required); ``variant="uniform"``, ``top_k=None``,
    ``class_reduction="sum"``; ``"tail"`` needs labels.
  - ``"dkd"``: decoupled KD with labels; ``alpha=1``, ``beta=8``, ``temperature=4``.
  - ``"reverse_kl"``, ``"total_variation"``: ``temperature=4``; ``"jensen_shannon"``:
    ``beta=0.5`` (0: forward KL, 1: reverse KL), ``temperature=4``.
  - ``"hint"``: FitNets; ``student_feature`` (usually an aux head's output) and
    ``teacher_feature`` (both required).
  - ``"attention"``: attention transfer; ``student_features`` (required),
    ``teacher_features`` (default: the same names).
  - ``"dgkd"``: densely guided KD over every teacher; ``temperature=5``; ``mode="code"``,
    ``keep_prob=0.75``, ``drop_num=1``, ``keep_teacher=False``, ``class_reduction="sum"``.
  - ``"ensemble"``: KD toward the teachers' mean probabilities; ``temperature=4``;
    ``class_reduction="sum"``.

  The softmax terms (``"kd"``, ``"dkp"``, ``"dkd"``, ``"dgkd"``, ``"ensemble"`` and the
  divergences) also take
  ``logit_standardization=False``: True z-scores the student's and teachers' logits before
  the temperature (``kdjax.losses.standardize_logits``).

  Args:
    name: a registered term's name, or a ``TermDefinition``.
    weight: its weight, a scalar or schedule (>= 0).
    label: its name in metrics and hyperparameter overrides (default ``name``); give one to
      use a term twice.
    **arguments: hyperparameters and options, as listed above.

  Returns:
    A ``Term``.

  Raises:
    ValueError: on an unknown name (listing the valid ones), an unknown or missing argument,
      a bad static option, or a label that is not a non-empty string without ``/``.
      (Weights and hyperparameters are range-checked by :class:`Objective`.)

  Example:
    >>> term("kd", 0.5, label="kd_t8", temperature=8.0).label  # a second KD term
    'kd_t8'
    >>> term("annealing")
    Traceback (most recent call last):
    ...
    ValueError: loss term 'annealing' needs argument(s) ['phi'].
    >>> term("kd", tau=2.0)
    Traceback (most recent call last):
    ...
    ValueError: loss term 'kd' takes no argument(s) ['tau']; valid: ['class_reduction', ...].
    >>> l1 = TermDefinition(  # a loss of one's own: mean absolute logit difference
    ...     "l1", lambda x, h: jnp.abs(x.student_logits - x.teacher_logits).mean(-1),
    ...     hyperparameters={}, options={}, teacher="one")
    >>> term(l1, 0.5).name
    'l1'
  """
  if isinstance(name, TermDefinition):
    definition = name
  elif name in TERMS:
    definition = TERMS[name]
  else:
    raise ValueError(f"unknown loss term {name!r}; valid: {', '.join(map(repr, TERMS))} (a "
                     f"method's own term is a TermDefinition of its kdjax.methods module, "
                     f"e.g. kdjax.methods.DIST_TERM).")
  name = definition.name
  options = dict(definition.options)
  if definition.standardizable:
    options[STANDARDIZATION] = False
  known = {**definition.hyperparameters, **options}
  unknown = sorted(set(arguments) - set(known))
  if unknown:
    raise ValueError(f"loss term {name!r} takes no argument(s) {unknown}; valid: "
                     f"{sorted(known) or 'none'}.")
  resolved = {k: v[0] for k, v in definition.hyperparameters.items()}
  resolved |= options
  resolved |= arguments
  missing = sorted(k for k, v in resolved.items() if v is REQUIRED)
  if missing:
    raise ValueError(f"loss term {name!r} needs argument(s) {missing}.")
  if definition.standardizable and not isinstance(resolved[STANDARDIZATION], bool | np.bool_):
    raise ValueError(f"{STANDARDIZATION}={resolved[STANDARDIZATION]!r} must be True or "
                     f"False.")
  definition.check(resolved)
  label = name if label is None else label
  if not isinstance(label, str) or not label or "/" in label:
    raise ValueError(f"label={label!r} must be a non-empty string without '/'.")
  return Term(definition=definition, weight=weight, arguments=resolved, label=label)


@dataclasses.dataclass(frozen=True)
class Objective:
  r"""A weighted sum of loss terms, validated when built.

  .. math::
     L(n) = \sum_j w_j(n)\ \frac{\sum_i m_i\,\ell_j(s_i, t_i;\ \theta_j(n))}{\sum_i m_i}

  Give it to ``kdjax.step.make_train_step``; building it checks every weight (>= 0) and
  hyperparameter (e.g. temperature > 0) over the ``num_steps`` of the stage, so a bad
  schedule fails before training starts.

  Attributes:
    terms: the terms, with distinct labels.
    num_steps: the training length over which schedules are range-checked; required
      when a weight or hyperparameter is a schedule (``None``: constants only).
    extra_hyperparameters: hyperparameters no term reads, for the step's output
      transformation (which names them, e.g. ``kdjax.transforms.dkp(gamma="dkp/gamma")``):
      name ``"<label>/<hyperparameter>"`` → ``(scalar or schedule, bounds)``, where
      ``bounds`` holds keyword arguments of ``kdjax.schedules.check_range`` (``low``,
      ``high``, ``low_open``). Like the terms' hyperparameters, they are range-checked,
      reported every step, and may be overridden per student (:meth:`overrides`).

  Raises:
    ValueError: on no terms (or something else than ``Term`` s), shared labels, a
      ``num_steps`` that is neither ``None`` nor an integer >= 1, a schedule without
      ``num_steps``, a weight or hyperparameter leaving its range within ``num_steps``, or
      an extra hyperparameter whose name is not ``"<label>/<hyperparameter>"``, clashes
      with a weight, a loss or a term's hyperparameter, or whose declaration is not
      ``(value, bounds)``.

  Example:
    >>> from kdjax import schedules
    >>> warm_kd = term("kd", schedules.linear(0.0, 1.0, 100), temperature=4.0)
    >>> obj = Objective((term("ce"), warm_kd), num_steps=1000)
    >>> {k: float(v) for k, v in obj.schedule_values(50).items()}
    {'weight/ce': 1.0, 'weight/kd': 0.5, 'kd/temperature': 4.0}
    >>> Objective((term("kd"), term("kd", temperature=8.0)))
    Traceback (most recent call last):
    ...
    ValueError: terms share the label(s) ['kd']; pass label= to tell them apart.
    >>> Objective((term("kd", temperature=schedules.linear(4.0, -1.0, 10)),), num_steps=10)
    Traceback (most recent call last):
    ...
    ValueError: kd/temperature must lie in (0.0, inf); it is ... at step ...
    >>> Objective((term("kd", temperature=schedules.linear(4.0, -1.0, 10)),))
    Traceback (most recent call last):
    ...
    ValueError: kd/temperature is a schedule: pass num_steps, the number of training steps, ...

    DKP as an output transformation, with its gamma declared here so that it is reported
    and can be overridden per student:

    >>> obj = Objective((term("ce", 0.1), term("kd", 0.9)),
    ...                 extra_hyperparameters={"dkp/gamma": (0.5, {"low": 0.0, "high": 1.0})})
    >>> obj.hyperparameter_names
    ('weight/ce', 'weight/kd', 'kd/temperature', 'dkp/gamma')
    >>> obj.overrides({"dkp/gamma": 2.0})
    Traceback (most recent call last):
    ...
    ValueError: dkp/gamma must lie in [0.0, 1.0]; it is 2.0...
  """

  terms: tuple[Term, ...]
  num_steps: int | None = None
  extra_hyperparameters: Mapping[str, tuple[schedules.ScalarOrSchedule, Mapping[str, Any]]] = (
      dataclasses.field(default_factory=dict))

  def __post_init__(self):
    object.__setattr__(self, "terms", tuple(self.terms))
    if not self.terms or not all(isinstance(t, Term) for t in self.terms):
      raise ValueError(f"an Objective needs one or more Terms (from objective.term); got "
                       f"{self.terms!r}.")
    labels = [t.label for t in self.terms]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
      raise ValueError(f"terms share the label(s) {duplicates}; pass label= to tell them apart.")
    if self.num_steps is not None and (
        isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int)
        or self.num_steps < 1):
      raise ValueError(f"num_steps={self.num_steps!r} must be None or an integer >= 1.")
    object.__setattr__(self, "extra_hyperparameters",
                       _check_extra_hyperparameters(self.extra_hyperparameters,
                                                    self._term_schedules()))
    for name, (value, bounds) in self._bounded_schedules().items():
      schedules.check_range(name, value, num_steps=self.num_steps, **bounds)

  def _term_schedules(self) -> dict[str, tuple[schedules.ScalarOrSchedule, Mapping]]:
    """The terms' weights and hyperparameters by metric name, with their bounds."""
    out = {}
    for t in self.terms:
      out[f"weight/{t.label}"] = (t.weight, NON_NEGATIVE)
      for h, (_, bounds) in t.definition.hyperparameters.items():
        out[f"{t.label}/{h}"] = (t.arguments[h], bounds)
    return out

  def _bounded_schedules(self) -> dict[str, tuple[schedules.ScalarOrSchedule, Mapping]]:
    """Every scalar-or-schedule by metric name, with the bounds it must respect."""
    return {**self._term_schedules(), **self.extra_hyperparameters}

  @property
  def hyperparameter_names(self) -> tuple[str, ...]:
    """Names of the weights and schedulable hyperparameters, e.g. ``"kd/temperature"``.

    The names :meth:`schedule_values` reports and :meth:`overrides` accepts: the terms'
    weights and hyperparameters, then the ``extra_hyperparameters``.

    Example:
      >>> Objective((term("ce"), term("kd"))).hyperparameter_names
      ('weight/ce', 'weight/kd', 'kd/temperature')
    """
    return tuple(self._bounded_schedules())

  def terms_needing(self, what: str) -> tuple[str, ...]:
    """Labels of the terms that need ``"labels"``, ``"teacher"`` or ``"key"``.

    Use it to check, before training, that the data and the teachers give what the terms
    read (e.g. no labels on mixed-up images, no teacher for a scratch stage).

    Args:
      what: ``"labels"``, ``"teacher"`` or ``"key"`` (a stochastic term).

    Returns:
      The labels of those terms, in order.

    Raises:
      ValueError: if ``what`` is none of these.

    Example:
      >>> obj = Objective((term("ce"), term("kd"), term("dgkd")))
      >>> obj.terms_needing("labels"), obj.terms_needing("teacher"), obj.terms_needing("key")
      (('ce',), ('kd', 'dgkd'), ('dgkd',))
    """
    if what not in ("labels", "teacher", "key"):
      raise ValueError(f"unknown requirement {what!r}; valid: 'labels', 'teacher', 'key'.")
    needs = {
        "labels": lambda definition, arguments: definition.needs_labels(arguments),
        "teacher": lambda definition, arguments: definition.teacher != "none",
        "key": lambda definition, arguments: definition.needs_key,
    }[what]
    return tuple(t.label for t in self.terms if needs(t.definition, t.arguments))

  @property
  def student_features(self) -> tuple[str, ...]:
    """Names of the student outputs (besides logits) the terms read.

    Example:
      >>> obj = Objective((term("attention", student_features=("stage1", "stage2")),))
      >>> obj.student_features
      ('stage1', 'stage2')
    """
    return _unique(f for t in self.terms for f in t.definition.student_features(t.arguments))

  @property
  def teacher_features(self) -> tuple[str, ...]:
    """Names of the (first) teacher's features the terms read.

    A teacher-output cache holds logits only: objectives with teacher features need the
    teacher itself in the step.

    Example:
      >>> hint = term("hint", 10.0, student_feature="hint_regressor", teacher_feature="stage2")
      >>> Objective((term("ce"), hint)).teacher_features
      ('stage2',)
    """
    return _unique(f for t in self.terms for f in t.definition.teacher_features(t.arguments))

  def overrides(self, values: Mapping[str, float]) -> dict[str, jax.Array]:
    """Validates per-student hyperparameter overrides, for ``TrainState.hparams``.

    An override replaces a weight's or hyperparameter's schedule by a constant; stacked
    over students (``kdjax.sweep``), it is how one compiled program trains students with
    different temperatures, gammas or weights. Every name the objective reports may be
    overridden, ``extra_hyperparameters`` included; the step passes the resulting values
    to the output transformation, which follows those it reads by name (e.g.
    ``kdjax.transforms.dkp(temperature="kd/temperature", gamma="dkp/gamma")``).

    Args:
      values: metric name → value, e.g. ``{"kd/temperature": 8.0, "weight/kd": 0.5}``.

    Returns:
      The same mapping with float32 scalar arrays.

    Raises:
      ValueError: on an unknown name (listing the valid ones), a value that is not a scalar,
        or an out-of-range value.

    Example:
      >>> obj = Objective((term("ce", 0.1), term("kd", 0.9)))
      >>> obj.overrides({"kd/temperature": 8})
      {'kd/temperature': Array(8., dtype=float32)}
      >>> obj.overrides({"kd/temperature": 0.0})
      Traceback (most recent call last):
      ...
      ValueError: kd/temperature must lie in (0.0, inf); it is 0.0...
    """
    bounded = self._bounded_schedules()
    out = {}
    for name, value in values.items():
      if name not in bounded:
        raise ValueError(f"unknown hyperparameter {name!r}; valid: "
                         f"{', '.join(map(repr, bounded))}.")
      if callable(value) or np.ndim(value) != 0:
        raise ValueError(f"override {name}={value!r} must be a scalar (schedules belong in the "
                         f"term).")
      schedules.check_range(name, float(value), **bounded[name][1])
      out[name] = jnp.asarray(value, jnp.float32)
    return out

  def check_cache_overrides(self, overridden) -> None:
    """Refuses overrides of what a sparse teacher cache fixes (``TermDefinition.cache_fixed``).

    A sparse cache (``kdjax.teacher_cache.SparseCache``) keeps targets that hold at the
    temperature it was built at, so a term that reads them (``sparse_kd``) cannot train
    one student at another. The train step calls it when its batch comes from such a cache.

    Args:
      overridden: the names of the per-student overrides (``TrainState.hparams``).

    Raises:
      ValueError: naming the override and the cache's temperature field.

    Example:
      >>> cached = TermDefinition(  # e.g. kdjax.methods.SPARSE_KD_TERM
      ...     "cached", lambda x, h: jnp.zeros(x.student_logits.shape[:1]),
      ...     hyperparameters={"temperature": (4.0, {"low": 0.0})}, options={},
      ...     teacher="one", cache_fixed=("temperature",))
      >>> obj = Objective((term("ce", 0.1), term(cached, 0.9)))
      >>> obj.check_cache_overrides(["weight/cached"])  # a weight: allowed
      >>> obj.check_cache_overrides(["cached/temperature"])
      Traceback (most recent call last):
      ...
      ValueError: the hyperparameter override 'cached/temperature' is refused: ...
    """
    fixed = {f"{t.label}/{name}" for t in self.terms for name in t.definition.cache_fixed}
    for name in overridden:
      if name in fixed:
        raise ValueError(f"the hyperparameter override {name!r} is refused: the teacher's "
                         f"targets come from a sparse cache kept at one temperature "
                         f"(SparseCache.temperature, the batch's 'teacher_temperature'), "
                         f"which every student trains at; train the other temperatures "
                         f"from a cache of their own, or from the teacher.")

  def schedule_values(self, step: jax.typing.ArrayLike,
                      overrides: Mapping[str, jax.Array] | None = None
                      ) -> dict[str, jax.Array]:
    """Every weight and hyperparameter at ``step``, by metric name.

    Args:
      step: the step counter.
      overrides: per-student constants that replace schedules (``TrainState.hparams``).

    Returns:
      ``{"weight/<label>": w, "<label>/<hyperparameter>": value, ...}`` of float32 scalars.

    Raises:
      ValueError: on an override name that is not a hyperparameter of this objective.

    Example:
      >>> obj = Objective((term("ce", 0.1), term("kd", 0.9)))
      >>> values = obj.schedule_values(0, overrides={"kd/temperature": jnp.float32(8.0)})
      >>> {name: round(float(value), 4) for name, value in values.items()}
      {'weight/ce': 0.1, 'weight/kd': 0.9, 'kd/temperature': 8.0}
    """
    overrides = dict(overrides or {})
    bounded = self._bounded_schedules()
    unknown = sorted(set(overrides) - set(bounded))
    if unknown:
      raise ValueError(f"hyperparameter overrides {unknown} match no term of the objective; "
                       f"valid: {', '.join(map(repr, bounded))}.")
    return {name: (jnp.asarray(overrides[name], jnp.float32) if name in overrides
                   else schedules.resolve(value, step))
            for name, (value, _) in bounded.items()}

  def check_inputs(self, labels: jax.Array | None,
                   teacher: Mapping[str, jax.Array] | None) -> None:
    """Checks, at trace time, that the terms get what they need.

    :meth:`loss` calls it; call it to fail early with a message that names the terms.

    Args:
      labels: integer labels ``[B]`` or ``None``.
      teacher: ``"logits"`` ``[n, B, K]`` and features, or ``None``.

    Raises:
      ValueError: when labels or teacher outputs are missing, or a term's options do not fit
        the number of teachers (``TermDefinition.check_teachers``: DGKD's dropping).

    Example:
      >>> Objective((term("ce"), term("kd"))).check_inputs(labels=None, teacher=None)
      Traceback (most recent call last):
      ...
      ValueError: loss term(s) ['ce'] need labels, but the batch has no 'label' entry.
    """
    need_labels = self.terms_needing("labels")
    if need_labels and labels is None:
      raise ValueError(f"loss term(s) {list(need_labels)} need labels, but the batch has no "
                       f"'label' entry.")
    need_teacher = self.terms_needing("teacher")
    if need_teacher and teacher is None:
      raise ValueError(f"loss term(s) {list(need_teacher)} need teacher outputs: pass a teacher "
                       f"to the step builder or 'teacher_logits' in the batch.")
    if teacher is not None:
      for t in self.terms:
        t.definition.check_teachers(t.arguments, teacher[networks.LOGITS].shape[0])

  def loss(self, student: Mapping[str, jax.Array], teacher: Mapping[str, jax.Array] | None,
           labels: jax.Array | None, mask: jax.Array | None, values: Mapping[str, jax.Array],
           key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""The objective's value and each term's (unweighted) batch mean.

    .. math::
       L = \sum_j w_j\ \frac{\sum_i m_i\,\ell_j(s_i, t_i)}{\sum_i m_i}

    Differentiate it with respect to ``student`` (the train step does); use it directly to
    evaluate an objective on given outputs.

    Args:
      student: student outputs, ``"logits"`` ``[B, K]`` and features.
      teacher: ``"logits"`` ``[n, B, K]`` and the first teacher's features, or ``None``.
      labels: integer labels ``[B]`` or ``None``.
      mask: boolean ``[B]`` (False marks padding) or ``None``.
      values: ``schedule_values`` at this step.
      key: a PRNG key for stochastic terms (one key per term is folded from it).

    Returns:
      ``(total, {"loss/<label>": mean})``, float32 scalars.

    Raises:
      ValueError: as :meth:`check_inputs`, or from a term on inputs it cannot take (e.g.
        mismatched logit shapes).

    Example:
      >>> obj = Objective((term("ce", 0.5), term("kd", 0.5, temperature=1.0)))
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0]])  # [B, K]
      >>> total, per_term = obj.loss({"logits": logits}, {"logits": logits[None]},
      ...                            jnp.array([0, 1]), None, obj.schedule_values(0),
      ...                            jax.random.key(0))
      >>> round(float(total), 4), {k: round(float(v), 4) for k, v in per_term.items()}
      (0.0635, {'loss/ce': 0.1269, 'loss/kd': 0.0})
    """
    self.check_inputs(labels, teacher)
    total = jnp.zeros([], jnp.float32)
    per_term = {}
    for i, t in enumerate(self.terms):
      definition = t.definition
      arguments = dict(t.arguments)
      for h in definition.hyperparameters:
        arguments[h] = values[f"{t.label}/{h}"]
      inputs = TermInputs(student, teacher, labels, jax.random.fold_in(key, i), mask)
      if arguments.get(STANDARDIZATION, False):
        inputs = _standardized(inputs)
      value = losses.reduce_mean(definition.fn(inputs, arguments), mask=mask)
      per_term[f"loss/{t.label}"] = value
      total = total + values[f"weight/{t.label}"] * value
    return total, per_term


def _standardized(inputs: TermInputs) -> TermInputs:
  """``inputs`` with the student's and every teacher's logits z-scored over classes."""
  student = {**inputs.student, networks.LOGITS: losses.standardize_logits(inputs.student_logits)}
  teacher = {**inputs.teacher,
             networks.LOGITS: losses.standardize_logits(inputs.all_teacher_logits)}
  return inputs._replace(student=student, teacher=teacher)


def _unique(names) -> tuple[str, ...]:
  return tuple(dict.fromkeys(names))


_BOUND_KEYS = ("low", "high", "low_open")


def _check_extra_hyperparameters(extra, term_schedules: Mapping[str, Any]
                                 ) -> dict[str, tuple[Any, dict[str, Any]]]:
  """Validates ``Objective.extra_hyperparameters``; returns a copy with dict bounds."""
  if not isinstance(extra, Mapping):
    raise ValueError(f"extra_hyperparameters must be a mapping name -> (value, bounds); got "
                     f"{extra!r}.")
  out = {}
  for name, declaration in extra.items():
    label, _, hyperparameter = name.partition("/") if isinstance(name, str) else ("", "", "")
    if not label or not hyperparameter or "/" in hyperparameter:
      raise ValueError(f"extra hyperparameter name {name!r} must read '<label>/<name>', e.g. "
                       f"'dkp/gamma'.")
    if label in ("weight", "loss") or name in term_schedules:
      raise ValueError(f"extra hyperparameter {name!r} clashes with the terms' weights, "
                       f"losses or hyperparameters.")
    if not (isinstance(declaration, tuple) and len(declaration) == 2
            and isinstance(declaration[1], Mapping)):
      raise ValueError(f"extra hyperparameter {name!r} must be declared as (scalar or "
                       f"schedule, bounds), e.g. (0.5, {{'low': 0.0, 'high': 1.0}}); got "
                       f"{declaration!r}.")
    value, bounds = declaration
    unknown = sorted(set(bounds) - set(_BOUND_KEYS))
    if unknown:
      raise ValueError(f"extra hyperparameter {name!r} has unknown bounds {unknown}; valid: "
                       f"{list(_BOUND_KEYS)}.")
    out[name] = (value, dict(bounds))
  return out

