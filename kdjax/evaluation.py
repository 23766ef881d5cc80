"""Test-set metrics over every example: an eval step's batch means, weighted and averaged.

The one host-side loop around ``kdjax.step.make_eval_step``: the training binary, the
notebook and user loops evaluate through it, so a padded last batch (its ``"mask"``) weighs
by its real examples everywhere.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

EvalStep = Callable[[Any, Any, Mapping[str, Any]], Mapping[str, jax.Array]]


def evaluate(eval_step: EvalStep, state: Any, teacher_vars: Any,
             batches: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  r"""Means of an eval step's metrics over every real example of ``batches``.

  Each batch's metrics are means over its real examples, which it counts in ``"count"``;
  the result weighs batch :math:`b` by its count :math:`c_b`:

  .. math::
     \bar m = \frac{\sum_b c_b\, m_b}{\max(1, \sum_b c_b)}

  Args:
    eval_step: ``(state, teacher_vars, batch) -> metrics`` with ``"count"``, e.g.
      ``jax.jit(make_eval_step(student, teacher=teacher))``, or over stacked students
      (``kdjax.sweep.over_students``), whose metrics are then ``[num_students]``.
    state: the student's ``TrainState`` (or stacked states).
    teacher_vars: the teacher's variables as the eval step takes them (``None`` without).
    batches: the evaluation batches, e.g. ``kdjax.data.eval_batches(...)`` (padded last
      batch masked).

  Returns:
    ``{name: mean}`` for every metric but ``"count"``, as NumPy arrays (scalars, or
    ``[num_students]`` for stacked states).

  Raises:
    ValueError: if the eval step's metrics have no ``"count"``.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from kdjax import models, state as state_lib, step
    >>> student = models.get("mlp_tiny", 10)
    >>> images = jnp.zeros((4, 8, 8, 1))
    >>> state = state_lib.create_train_state(
    ...     student, student.init(jax.random.key(0), images, train=False), optax.sgd(0.1),
    ...     jax.random.key(1))
    >>> batches = [{"image": images, "label": jnp.array([0, 1, 2, 3])},
    ...            {"image": images, "label": jnp.zeros(4, jnp.int32),
    ...             "mask": jnp.array([True, False, False, False])}]  # 1 real example
    >>> metrics = evaluate(jax.jit(step.make_eval_step(student)), state, None, batches)
    >>> sorted(metrics)
    ['accuracy', 'loss/ce']
  """
  totals: dict[str, np.ndarray] = {}
  count = 0.0
  for batch in batches:
    metrics = dict(jax.device_get(eval_step(state, teacher_vars, batch)))
    if "count" not in metrics:
      raise ValueError(f"the eval step's metrics {sorted(metrics)} have no 'count' to weigh "
                       f"batches by; build it with kdjax.step.make_eval_step.")
    weight = np.asarray(metrics.pop("count"))
    for k, v in metrics.items():
      totals[k] = totals.get(k, 0.0) + np.asarray(v) * weight
    count = weight + count
  return {k: v / np.maximum(count, 1.0) for k, v in totals.items()}
