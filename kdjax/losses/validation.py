"""Argument checks shared by the loss functions, objectives and transforms.

Shapes, ranks and dtypes are static under ``jax.jit``, so they are checked on every call.
Values (temperature, gamma, phi) are checked only when concrete: inside a traced step they
come from schedules, whose ranges are validated when the objective is built.
"""

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp
import numpy as np


def concrete_value(x) -> np.ndarray | None:
  """Returns ``x`` as a numpy array when it is known at trace time, else ``None``.

  Use it to check a hyperparameter's value in Python when it is concrete and to skip the
  check when it is traced (e.g. a schedule's value inside a jitted step).

  Args:
    x: a Python scalar, array or ``jax.Array`` of any shape ``[...]``, or a tracer.

  Returns:
    ``np.asarray(x)`` (same shape ``[...]``), or ``None`` when ``x`` is a tracer.

  Example:
    >>> concrete_value(jnp.float32(2.0))
    array(2., dtype=float32)
    >>> seen = []
    >>> _ = jax.jit(lambda x: seen.append(concrete_value(x)) or x)(1.0)
    >>> seen  # traced inside jit: unknown
    [None]
  """
  if isinstance(x, jax.core.Tracer):
    return None
  return np.asarray(x)


def check_logits(name: str, logits: jax.Array) -> None:
  """Checks that ``logits`` has a class axis and a floating-point dtype.

  Shapes and dtypes are static, so this runs (and can fail) even under ``jax.jit``.

  Args:
    name: the argument's name, for the error message.
    logits: ``[..., K]``, at least one axis.

  Raises:
    ValueError: naming ``name`` if ``logits`` is a scalar or not floating point.

  Example:
    >>> check_logits("logits", jnp.zeros((2, 3)))  # valid: returns None
    >>> check_logits("logits", jnp.zeros((2, 3), jnp.int32))
    Traceback (most recent call last):
    ...
    ValueError: logits must be floating point; got dtype int32.
  """
  if logits.ndim < 1:
    raise ValueError(f"{name} must have a class axis; got a scalar.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point; got dtype {logits.dtype}.")


def check_same_shape(student: jax.Array, teacher: jax.Array, what: str = "logits") -> None:
  """Checks student and teacher outputs with ``check_logits``, then that their shapes match.

  Args:
    student: the student's ``[..., K]`` (logits or features).
    teacher: the teacher's, same shape.
    what: the kind of output, for the error messages (``"logits"``, ``"features"``).

  Raises:
    ValueError: if either is a scalar or not floating point, or their shapes differ.

  Example:
    >>> check_same_shape(jnp.zeros((2, 3)), jnp.zeros((2, 3)))  # valid: returns None
    >>> check_same_shape(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    Traceback (most recent call last):
    ...
    ValueError: student_logits and teacher_logits must have the same shape; got (2, 3) and (2, 4).
  """
  check_logits(f"student_{what}", student)
  check_logits(f"teacher_{what}", teacher)
  if student.shape != teacher.shape:
    raise ValueError(
        f"student_{what} and teacher_{what} must have the same shape; got "
        f"{student.shape} and {teacher.shape}.")


def checked_pair(student_logits: jax.typing.ArrayLike, teacher_logits: jax.typing.ArrayLike,
                 temperature) -> tuple[jax.Array, jax.Array]:
  """Checks a student–teacher pair of logits and their temperature, for a tempered loss.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, the same shape.
    temperature: T > 0 (checked when concrete, see ``check_positive``).

  Returns:
    ``(student, teacher)`` as arrays ``[..., K]``, the teacher's under ``stop_gradient``: it
    is a constant of every distillation loss.

  Raises:
    ValueError: as ``check_same_shape`` and ``check_positive``.

  Example:
    >>> s, t = checked_pair(jnp.zeros((2, 3)), jnp.ones((2, 3)), 4.0)
    >>> checked_pair(s, t, -1.0)
    Traceback (most recent call last):
    ...
    ValueError: temperature=-1.0 must be finite and > 0.
  """
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  check_same_shape(s, t)
  check_positive("temperature", temperature)
  return s, jax.lax.stop_gradient(t)


def check_labels(labels: jax.Array, logits: jax.Array) -> None:
  """Checks integer class labels against the logits they index.

  The dtype and shape are always checked; the range ``[0, K)`` only when ``labels`` is
  concrete (not traced).

  Args:
    labels: integer class indices ``[...]``, or ``None`` (always an error).
    logits: ``[..., K]``.

  Raises:
    ValueError: if ``labels`` is ``None``, not integer, not of the logits' batch shape
      ``[...]``, or (when concrete) outside ``[0, K)``.

  Example:
    >>> check_labels(jnp.array([0, 2]), jnp.zeros((2, 3)))  # valid: returns None
    >>> check_labels(jnp.array([0, 3]), jnp.zeros((2, 3)))
    Traceback (most recent call last):
    ...
    ValueError: labels must lie in [0, 3); got values in [0, 3].
  """
  if labels is None:
    raise ValueError("this loss needs integer `labels`; got labels=None.")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integers (class indices); got dtype {labels.dtype}.")
  if labels.shape != logits.shape[:-1]:
    raise ValueError(
        f"labels shape {labels.shape} must equal the logits' batch shape "
        f"{logits.shape[:-1]} (logits shape {logits.shape}).")
  values = concrete_value(labels)
  num_classes = logits.shape[-1]
  if values is not None and values.size and (values.min() < 0 or values.max() >= num_classes):
    raise ValueError(
        f"labels must lie in [0, {num_classes}); got values in [{values.min()}, {values.max()}].")


def check_positive(name: str, value) -> None:
  """Checks that a concrete ``value`` is finite and strictly positive (e.g. a temperature).

  Traced values are not checked (see ``concrete_value``).

  Args:
    name: the argument's name, for the error message.
    value: a scalar or array ``[...]``; every element is checked.

  Raises:
    ValueError: naming ``name`` and ``value`` if some element is ``<= 0``, infinite or NaN.

  Example:
    >>> check_positive("temperature", 4.0)  # valid: returns None
    >>> check_positive("temperature", 0.0)
    Traceback (most recent call last):
    ...
    ValueError: temperature=0.0 must be finite and > 0.
  """
  v = concrete_value(value)
  if v is not None and not (np.all(np.isfinite(v)) and np.all(v > 0)):
    raise ValueError(f"{name}={value} must be finite and > 0.")


def check_in_range(name: str, value, low: float, high: float, low_open: bool = False) -> None:
  """Checks that a concrete ``value`` lies in ``[low, high]`` (or ``(low, high]``).

  Traced values are not checked (see ``concrete_value``).

  Args:
    name: the argument's name, for the error message.
    value: a scalar or array ``[...]``; every element is checked.
    low: the lower bound.
    high: the upper bound (always included).
    low_open: exclude ``low`` itself.

  Raises:
    ValueError: naming ``name``, ``value`` and the interval if some element is outside it or
      not finite.

  Example:
    >>> check_in_range("gamma", 0.5, 0.0, 1.0)  # valid: returns None
    >>> check_in_range("keep_prob", 0.0, 0.0, 1.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: keep_prob=0.0 must lie in (0.0, 1.0].
  """
  v = concrete_value(value)
  if v is None:
    return
  ok_low = np.all(v > low) if low_open else np.all(v >= low)
  if not (np.all(np.isfinite(v)) and ok_low and np.all(v <= high)):
    raise ValueError(f"{name}={value} must lie in {interval(low, high, low_open)}.")


def interval(low: float, high: float, low_open: bool = False) -> str:
  """The interval of finite values from ``low`` to ``high``, written as in error messages.

  Infinite bounds are open: a hyperparameter must be finite.

  Args:
    low: the lower bound (may be ``-inf``).
    high: the upper bound, included when finite (may be ``inf``).
    low_open: exclude ``low`` itself.

  Returns:
    e.g. ``"[0.0, 1.0]"`` or ``"(0.0, inf)"``.

  Example:
    >>> interval(0.0, 1.0), interval(0.0, math.inf, low_open=True)
    ('[0.0, 1.0]', '(0.0, inf)')
  """
  left = "(" if low_open or math.isinf(low) else "["
  right = ")" if math.isinf(high) else "]"
  return f"{left}{low}, {high}{right}"


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  """Checks that a string option is one of ``choices``.

  Args:
    name: what the option is, for the error message (e.g. ``"DKP variant"``).
    value: the given option.
    choices: the valid options.

  Raises:
    ValueError: naming the unknown ``value`` and listing ``choices``.

  Example:
    >>> check_choice("class_reduction", "sum", CLASS_REDUCTIONS)  # valid: returns None
    >>> check_choice("class_reduction", "max", CLASS_REDUCTIONS)
    Traceback (most recent call last):
    ...
    ValueError: unknown class_reduction 'max'; valid: 'sum', 'mean'.
  """
  if value not in choices:
    raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(repr, choices))}.")


CLASS_REDUCTIONS = ("sum", "mean")


def class_reduction_scale(class_reduction: str, num_classes: int) -> float:
  r"""Factor that turns a sum over classes into the requested class reduction.

  ``"sum"`` is the mathematical KL (and, averaged over the batch, PyTorch's
  ``reduction="batchmean"``); ``"mean"`` divides by K, which is what PyTorch's default
  ``KLDivLoss()`` computes and what the TAKD, DGKD and Annealing-KD code bases train with.
  Losses multiply their per-example sum over classes by it.

  .. math::
     c = \begin{cases} 1 & \texttt{"sum"} \\ 1/K & \texttt{"mean"} \end{cases}

  Args:
    class_reduction: ``"sum"`` or ``"mean"``.
    num_classes: K.

  Returns:
    The Python ``float`` :math:`c`.

  Raises:
    ValueError: on an unknown ``class_reduction``.

  Example:
    >>> class_reduction_scale("sum", 4), class_reduction_scale("mean", 4)
    (1.0, 0.25)
    >>> class_reduction_scale("batchmean", 4)
    Traceback (most recent call last):
    ...
    ValueError: unknown class_reduction 'batchmean'; valid: 'sum', 'mean'.
  """
  check_choice("class_reduction", class_reduction, CLASS_REDUCTIONS)
  return 1.0 if class_reduction == "sum" else 1.0 / num_classes
