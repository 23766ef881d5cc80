"""Argument checks shared by the loss functions, objectives and transforms.

Shapes, ranks and dtypes are static under ``jax.jit``, so they are checked on every call.
Values (temperature, gamma, phi) are checked only when concrete: inside a traced step they
come from schedules, whose ranges are validated when the objective is built.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def concrete_value(x) -> np.ndarray | None:
  """Returns ``x`` as a numpy array when it is known at trace time, else ``None``."""
  if isinstance(x, jax.core.Tracer):
    return None
  return np.asarray(x)


def check_logits(name: str, logits: jax.Array) -> None:
  if logits.ndim < 1:
    raise ValueError(f"{name} must have a class axis; got a scalar.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point; got dtype {logits.dtype}.")


def check_same_shape(student: jax.Array, teacher: jax.Array, what: str = "logits") -> None:
  check_logits(f"student_{what}", student)
  check_logits(f"teacher_{what}", teacher)
  if student.shape != teacher.shape:
    raise ValueError(
        f"student_{what} and teacher_{what} must have the same shape; got "
        f"{student.shape} and {teacher.shape}.")


def check_labels(labels: jax.Array, logits: jax.Array) -> None:
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
  v = concrete_value(value)
  if v is not None and not (np.all(np.isfinite(v)) and np.all(v > 0)):
    raise ValueError(f"{name}={value} must be finite and > 0.")


def check_in_range(name: str, value, low: float, high: float, low_open: bool = False) -> None:
  v = concrete_value(value)
  if v is None:
    return
  ok_low = np.all(v > low) if low_open else np.all(v >= low)
  if not (np.all(np.isfinite(v)) and ok_low and np.all(v <= high)):
    bracket = "(" if low_open else "["
    raise ValueError(f"{name}={value} must lie in {bracket}{low}, {high}].")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(repr, choices))}.")


CLASS_REDUCTIONS = ("sum", "mean")


def class_reduction_scale(class_reduction: str, num_classes: int) -> float:
  """Factor that turns a sum over classes into the requested class reduction.

  ``"sum"`` is the mathematical KL (and, averaged over the batch, PyTorch's
  ``reduction="batchmean"``); ``"mean"`` divides by K, which is what PyTorch's default
  ``KLDivLoss()`` computes and what the TAKD, DGKD and Annealing-KD code bases train with.
  """
  check_choice("class_reduction", class_reduction, CLASS_REDUCTIONS)
  return 1.0 if class_reduction == "sum" else 1.0 / num_classes
