"""The registry of loss terms that objectives are assembled from (``TERMS``).

Each entry (``TermDefinition``) says what a term computes from what it sees at one step
(``TermInputs``: student and teacher outputs, labels, a PRNG key, the batch's mask), which
of its arguments may follow a schedule and within which bounds, which are static options,
and what it needs from the batch, the teachers and the PRNG. ``kdjax.objective.term``
declares a term by its name here, or from a definition of one's own;
``kdjax.objective.Objective`` sums declared terms.

``TERMS`` holds the building blocks that methods and users compose by name: per-example
terms whose meaning does not depend on a method's setup. A method's own term is a
``TermDefinition`` in the method's module (``kdjax.methods``), as DIST's batch relation,
CTKD's temperature read from the method's head and sparse KD's targets fixed by the
method's teacher cache are; a new method starts there, and its term joins ``TERMS`` only
when other objectives come to compose it by name.

Example:
  >>> sorted(TERMS)[:4]
  ['annealing', 'attention', 'ce', 'continuation']
  >>> TERMS["dgkd"].teacher, TERMS["dgkd"].needs_key
  ('many', True)
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, NamedTuple

import jax

from kdjax import losses, networks
from kdjax.losses import multi_teacher, pruning, validation

# A hyperparameter or option without a default: ``term`` refuses to build without it.
REQUIRED = object()
POSITIVE = {"low": 0.0, "low_open": True}
NON_NEGATIVE = {"low": 0.0}
_UNIT = {"low": 0.0, "high": 1.0}
# What a term reads of the teachers: nothing, the first, or all of them stacked.
TEACHERS = ("none", "one", "many")
# The option every softmax term (``TermDefinition.standardizable``) takes.
STANDARDIZATION = "logit_standardization"


class TermInputs(NamedTuple):
  """What a term sees at one step.

  ``Objective.loss`` builds one per term and passes it to the term's ``TermDefinition.fn``;
  build one yourself to call a term function directly.

  Attributes:
    student: the student's outputs: ``"logits"`` ``[B, K]`` and named features.
    teacher: ``"logits"`` ``[n, B, K]`` (the teacher, then its assistants) and the first
      teacher's named features; ``None`` when no teacher is consulted.
    labels: integer labels ``[B]`` or ``None``.
    key: a PRNG key for this term and step.
    mask: boolean ``[B]`` (False marks padding) or ``None``; read by batch losses (DIST's
      intra-class relation), whose value depends on which examples are real.

  Example:
    >>> inputs = TermInputs(student={"logits": jnp.zeros((4, 10))},
    ...                     teacher={"logits": jnp.ones((3, 4, 10))},  # teacher + 2 assistants
    ...                     labels=None, key=jax.random.key(0))
    >>> inputs.student_logits.shape, inputs.teacher_logits.shape, inputs.all_teacher_logits.shape
    ((4, 10), (4, 10), (3, 4, 10))
  """

  student: Mapping[str, jax.Array]
  teacher: Mapping[str, jax.Array] | None
  labels: jax.Array | None
  key: jax.Array
  mask: jax.Array | None = None

  @property
  def student_logits(self) -> jax.Array:
    """The student's logits ``[B, K]``."""
    return self.student[networks.LOGITS]

  @property
  def teacher_logits(self) -> jax.Array:
    """The (first) teacher's logits ``[B, K]``."""
    return self.teacher[networks.LOGITS][0]

  @property
  def all_teacher_logits(self) -> jax.Array:
    """Every teacher's logits ``[n, B, K]``."""
    return self.teacher[networks.LOGITS]


@dataclasses.dataclass(frozen=True)
class TermDefinition:
  """A loss term: an entry of ``TERMS``, or one's own.

  What :func:`term` and :class:`Objective` read: what a term computes, which of its
  arguments may follow a schedule and within which bounds, and what it needs from the
  batch, the teachers and the PRNG.

  Attributes:
    name: the term's name: its metrics' label unless ``term`` is given another.
    fn: ``(inputs: TermInputs, hyperparameters) -> per-example values [B]``; the mapping
      holds the resolved schedulable hyperparameters and the static options. (A batch
      loss spreads its one value over the examples, so that the objective's masked mean
      is that value.)
    hyperparameters: schedulable hyperparameters: name → (default or required, the keyword
      arguments of ``kdjax.schedules.check_range`` that bound it).
    options: static options: name → default (or required).
    teacher: ``"none"``, ``"one"`` (the first teacher) or ``"many"`` (the stacked teachers,
      one or more), the vocabulary of ``Method.teachers``.
    needs_labels: ``options -> bool``.
    needs_key: whether the term is stochastic.
    student_features: ``options -> names`` of student outputs the term reads.
    teacher_features: ``options -> names`` of teacher features the term reads.
    check: ``options -> None``, raising ``ValueError`` on a bad option.
    cache_fixed: the hyperparameters whose value a sparse teacher cache fixes (sparse_kd's
      ``temperature``: its cached targets hold at the cache's temperature only), so that a
      per-student override of them is refused when the teacher logits come from one.
    check_teachers: ``(options, num_teachers) -> None``, raising ``ValueError`` on options
      that do not fit the number of teaching networks (DGKD's dropping); run by
      ``Objective.check_inputs`` once that number is known.
    standardizable: whether the term takes the ``logit_standardization`` option (a softmax
      term): when True, every logit it reads is z-scored first
      (``kdjax.losses.standardize_logits``, Sun et al., CVPR 2024).

  Example:
    >>> kd = TERMS["kd"]
    >>> kd.teacher, kd.hyperparameters["temperature"], kd.options
    ('one', (4.0, {'low': 0.0, 'low_open': True}), {'class_reduction': 'sum'})
    >>> inputs = TermInputs({"logits": jnp.zeros((2, 3))}, {"logits": jnp.zeros((1, 2, 3))},
    ...                     None, jax.random.key(0))
    >>> kd.fn(inputs, {"temperature": 4.0, "class_reduction": "sum"}).tolist()  # [B]
    [0.0, 0.0]
  """

  name: str
  fn: Callable[[TermInputs, Mapping[str, Any]], jax.Array]
  hyperparameters: Mapping[str, tuple[Any, Mapping[str, Any]]]
  options: Mapping[str, Any]
  teacher: str
  needs_labels: Callable[[Mapping[str, Any]], bool] = lambda options: False
  needs_key: bool = False
  student_features: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda options: ()
  teacher_features: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda options: ()
  check: Callable[[Mapping[str, Any]], None] = lambda options: None
  cache_fixed: tuple[str, ...] = ()
  check_teachers: Callable[[Mapping[str, Any], int], None] = (
      lambda options, num_teachers: None)
  standardizable: bool = False

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name or "/" in self.name:
      raise ValueError(f"TermDefinition name={self.name!r} must be a non-empty string "
                       f"without '/' (it labels the term's metrics).")
    if self.teacher not in TEACHERS:
      raise ValueError(f"TermDefinition {self.name!r}: unknown teacher {self.teacher!r}; "
                       f"valid: {', '.join(map(repr, TEACHERS))}.")
    shared = sorted(set(self.hyperparameters) & set(self.options))
    if shared:
      raise ValueError(f"TermDefinition {self.name!r}: {shared} are both hyperparameters and "
                       f"options; each argument is one or the other.")


def _check_class_reduction(options):
  validation.check_choice("class_reduction", options["class_reduction"],
                           validation.CLASS_REDUCTIONS)


def _check_ce(options):
  smoothing = options["label_smoothing"]
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f"label_smoothing={smoothing} must lie in [0, 1).")


def _check_dkp(options):
  pruning.check_arguments(1.0, 0.0, options["variant"], options["top_k"])
  _check_class_reduction(options)


def _check_dgkd(options):
  _check_class_reduction(options)
  # drop_num's upper bound, the number of teaching networks, is checked when it is known.
  multi_teacher.check_drop_arguments(None, options["mode"], options["keep_prob"],
                                     options["drop_num"], options["keep_teacher"])


def _check_dgkd_teachers(options, num_teachers: int) -> None:
  multi_teacher.check_drop_arguments(num_teachers, options["mode"], options["keep_prob"],
                                     options["drop_num"], options["keep_teacher"])


def check_feature_names(what: str, names) -> None:
  """Refuses ``names`` unless it is one non-empty name or a sequence of them.

  Example:
    >>> check_feature_names("teacher_feature", ("stage1", "stage2"))  # None: fine
    >>> check_feature_names("teacher_feature", ())
    Traceback (most recent call last):
    ...
    ValueError: teacher_feature=() must be one or more non-empty feature names.
  """
  if isinstance(names, str):
    names = (names,)
  if not names or not all(isinstance(n, str) and n for n in names):
    raise ValueError(f"{what}={names!r} must be one or more non-empty feature names.")


def _check_hint(options):
  check_feature_names("student_feature", options["student_feature"])
  check_feature_names("teacher_feature", options["teacher_feature"])


def _attention_names(options) -> tuple[tuple[str, ...], tuple[str, ...]]:
  student = tuple(options["student_features"])
  teacher = tuple(options["teacher_features"] or student)
  return student, teacher


def _check_attention(options):
  if isinstance(options["student_features"], str):
    raise ValueError("attention's student_features must be a sequence of stage names, e.g. "
                     "('stage1', 'stage2', 'stage3').")
  student, teacher = _attention_names(options)
  check_feature_names("student_features", student)
  check_feature_names("teacher_features", teacher)
  if len(student) != len(teacher):
    raise ValueError(f"attention pairs stages one to one; got student_features={student} and "
                     f"teacher_features={teacher}.")


def _dkp(x: TermInputs, h) -> jax.Array:
  labels = x.labels if h["variant"] == "tail" else None
  scale = validation.class_reduction_scale(h["class_reduction"], x.student_logits.shape[-1])
  return scale * losses.dkp(x.student_logits, x.teacher_logits, h["temperature"], h["gamma"],
                            h["variant"], labels=labels, top_k=h["top_k"])


def _dgkd(x: TermInputs, h) -> jax.Array:
  return losses.dgkd(x.student_logits, x.all_teacher_logits, x.key, h["temperature"],
                     mode=h["mode"], keep_prob=h["keep_prob"], drop_num=h["drop_num"],
                     keep_teacher=h["keep_teacher"], class_reduction=h["class_reduction"])


def _divergence(name: str) -> Callable[[TermInputs, Mapping[str, Any]], jax.Array]:
  divergence = getattr(losses, name)
  return lambda x, h: divergence(x.student_logits, x.teacher_logits,
                                 temperature=h["temperature"])


def _attention(x: TermInputs, h) -> jax.Array:
  student, teacher = _attention_names(h)
  return losses.attention_transfer([x.student[f] for f in student],
                                   [x.teacher[f] for f in teacher])


def _by_name(definitions: tuple[TermDefinition, ...]) -> dict[str, TermDefinition]:
  """The definitions by name; refuses a name given twice."""
  names = [definition.name for definition in definitions]
  if len(set(names)) != len(names):
    raise ValueError(f"a term name is registered twice: {names}.")
  return dict(zip(names, definitions, strict=True))


TERMS: Mapping[str, TermDefinition] = _by_name((
    TermDefinition(
        "ce",
        fn=lambda x, h: losses.cross_entropy(x.student_logits, x.labels,
                                             label_smoothing=h["label_smoothing"]),
        hyperparameters={}, options={"label_smoothing": 0.0}, teacher="none",
        needs_labels=lambda options: True, check=_check_ce),
    TermDefinition(
        "kd",
        fn=lambda x, h: losses.kd(x.student_logits, x.teacher_logits, h["temperature"],
                                  class_reduction=h["class_reduction"]),
        hyperparameters={"temperature": (4.0, POSITIVE)},
        options={"class_reduction": "sum"}, teacher="one", check=_check_class_reduction,
        standardizable=True),
    TermDefinition(
        "logits_matching",
        fn=lambda x, h: losses.logits_matching(x.student_logits, x.teacher_logits,
                                               centered=h["centered"]),
        hyperparameters={}, options={"centered": False}, teacher="one"),
    TermDefinition(
        "annealing",
        fn=lambda x, h: losses.annealing(x.student_logits, x.teacher_logits, h["phi"]),
        hyperparameters={"phi": (REQUIRED, {"low": 0.0, "low_open": True, "high": 1.0})},
        options={}, teacher="one"),
    TermDefinition(
        "continuation",
        fn=lambda x, h: losses.continuation(x.student_logits, x.teacher_logits, h["phi"],
                                            h["margin"], class_reduction=h["class_reduction"]),
        hyperparameters={"phi": (REQUIRED, {"low": 0.0, "low_open": True, "high": 1.0}),
                         "margin": (0.0, NON_NEGATIVE)},
        options={"class_reduction": "mean"}, teacher="one", check=_check_class_reduction),
    TermDefinition(
        "dkp",
        fn=_dkp,
        hyperparameters={"temperature": (4.0, POSITIVE), "gamma": (REQUIRED, _UNIT)},
        options={"variant": "uniform", "top_k": None, "class_reduction": "sum"},
        teacher="one", needs_labels=lambda options: options["variant"] == "tail",
        check=_check_dkp, standardizable=True),
    TermDefinition(
        "dkd",
        fn=lambda x, h: losses.dkd(x.student_logits, x.teacher_logits, x.labels, h["alpha"],
                                   h["beta"], h["temperature"]),
        hyperparameters={"alpha": (1.0, NON_NEGATIVE), "beta": (8.0, NON_NEGATIVE),
                         "temperature": (4.0, POSITIVE)},
        options={}, teacher="one", needs_labels=lambda options: True, standardizable=True),
    TermDefinition(
        "reverse_kl",
        fn=_divergence("reverse_kl"), hyperparameters={"temperature": (4.0, POSITIVE)},
        options={}, teacher="one", standardizable=True),
    TermDefinition(
        "jensen_shannon",
        fn=lambda x, h: losses.jensen_shannon(x.student_logits, x.teacher_logits, h["beta"],
                                              h["temperature"]),
        hyperparameters={"beta": (0.5, _UNIT), "temperature": (4.0, POSITIVE)}, options={},
        teacher="one", standardizable=True),
    TermDefinition(
        "total_variation",
        fn=_divergence("total_variation"), hyperparameters={"temperature": (4.0, POSITIVE)},
        options={}, teacher="one", standardizable=True),
    TermDefinition(
        "hint",
        fn=lambda x, h: losses.hint(x.student[h["student_feature"]],
                                    x.teacher[h["teacher_feature"]]),
        hyperparameters={}, options={"student_feature": REQUIRED, "teacher_feature": REQUIRED},
        teacher="one", student_features=lambda options: (options["student_feature"],),
        teacher_features=lambda options: (options["teacher_feature"],), check=_check_hint),
    TermDefinition(
        "attention",
        fn=_attention, hyperparameters={},
        options={"student_features": REQUIRED, "teacher_features": None}, teacher="one",
        student_features=lambda options: _attention_names(options)[0],
        teacher_features=lambda options: _attention_names(options)[1], check=_check_attention),
    TermDefinition(
        "dgkd",
        fn=_dgkd, hyperparameters={"temperature": (5.0, POSITIVE)},
        options={"mode": "code", "keep_prob": 0.75, "drop_num": 1, "keep_teacher": False,
                 "class_reduction": "sum"},
        teacher="many", needs_key=True, check=_check_dgkd,
        check_teachers=_check_dgkd_teachers, standardizable=True),
    TermDefinition(
        "ensemble",
        fn=lambda x, h: losses.ensemble_kd(x.student_logits, x.all_teacher_logits,
                                           h["temperature"],
                                           class_reduction=h["class_reduction"]),
        hyperparameters={"temperature": (4.0, POSITIVE)},
        options={"class_reduction": "sum"}, teacher="many", check=_check_class_reduction,
        standardizable=True),
))
