"""A per-step check for NaN and Inf in a train step, kept on the device.

The trainer wraps its step with :func:`guard`: each step sets a flag per
student (are the teacher outputs, the losses, the gradient norm and the updated student
variables all finite?) and accumulates a :class:`Health` record on the device. The host
reads it only where it synchronises anyway (logging, evaluation, checkpoints) and stops, or
counts skipped steps, naming the first bad step and what went wrong at it
(:func:`describe`).

Example: a NaN image poisons the teacher's outputs and the student's loss; with
``skip=True`` the student keeps its parameters.

  >>> from kdjax import models, objective, sweep
  >>> from kdjax.state import create_train_state
  >>> teacher, student = models.get("mlp_tiny", 10), models.get("mlp_tiny", 10)
  >>> images = jnp.ones((4, 8, 8, 1))
  >>> obj = objective.Objective((objective.term("kd"),))
  >>> states = sweep.stack_states([create_train_state(
  ...     student, student.init(jax.random.key(0), images, train=False), optax.sgd(0.1),
  ...     jax.random.key(1))])
  >>> sweep_step = sweep.make_sweep_train_step(student, obj, optax.sgd(0.1), teacher=teacher,
  ...                                          report_teacher_finite=True)
  >>> checked = ("loss", "grad_norm")
  >>> step = jax.jit(guard(sweep_step, checked, skip=True))
  >>> teacher_vars = teacher.init(jax.random.key(2), images, train=False)
  >>> bad = {"image": images.at[0, 0, 0, 0].set(jnp.nan)}
  >>> (new_states, health), _ = step((states, no_bad_steps(1, 4)), teacher_vars, bad)
  >>> describe(jax.device_get(health), checked_names(checked), seeds=[0])
  'step 1 in teacher_logits, loss, grad_norm, student_variables (seed 0)'
  >>> jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), new_states.params,
  ...                           states.params))
  True
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import objective as objective_lib
from kdjax import step as step_lib

TEACHER_OUTPUTS = "teacher_logits"
STUDENT_VARIABLES = "student_variables"


class Health(NamedTuple):
  """Non-finite steps since the host last looked, recorded on the device, per student.

  Attributes:
    count: int32 ``[S]``, steps whose checked values were not all finite.
    first_step: int32 ``[S]``, the first such step (its 1-based number); 0 if none.
    first_terms: bool ``[S, C]``, which of the C checked values (``checked_names``) were
      non-finite at it.

  Example:
    >>> h = no_bad_steps(num_students=2, num_checked=4)
    >>> h.count.tolist(), h.first_step.tolist()
    ([0, 0], [0, 0])
  """

  count: jax.Array
  first_step: jax.Array
  first_terms: jax.Array


def no_bad_steps(num_students: int, num_checked: int) -> Health:
  """A record of no bad step, for ``num_students`` students and ``num_checked`` values.

  Example:
    >>> no_bad_steps(2, 3).first_terms.shape
    (2, 3)
  """
  return Health(jnp.zeros(num_students, jnp.int32), jnp.zeros(num_students, jnp.int32),
                 jnp.zeros((num_students, num_checked), bool))


def checked_metrics(objective: objective_lib.Objective) -> tuple[str, ...]:
  """The metrics of a step on ``objective`` that ``guard`` should check: losses, grad norm.

  Example:
    >>> from kdjax import objective
    >>> checked_metrics(objective.Objective((objective.term("ce"), objective.term("kd"))))
    ('loss', 'loss/ce', 'loss/kd', 'grad_norm')
  """
  return ("loss", *(f"loss/{term.label}" for term in objective.terms), "grad_norm")


def checked_names(checked: Sequence[str]) -> tuple[str, ...]:
  """The values ``guard`` checks, in the order of ``Health.first_terms``.

  Example:
    >>> checked_names(("loss", "grad_norm"))
    ('teacher_logits', 'loss', 'grad_norm', 'student_variables')
  """
  return (TEACHER_OUTPUTS, *checked, STUDENT_VARIABLES)


# What a skipped step leaves as it was: every floating-point value the update writes. Integer
# leaves (the step, optax's and the DKP transform's counters) advance, so every schedule
# stays aligned with the data stream.
_SKIPPED_FIELDS = ("params", "model_state", "opt_state", "output_tx_state", "aux_params",
                   "aux_state")


def guard(train_step: step_lib.TrainStep, checked: Sequence[str], *,
          skip: bool) -> Callable[..., Any]:
  """Wraps any train step with a per-step finiteness check that needs no host sync.

  ``train_step`` is ``(states, teacher_vars, batch) -> (states, metrics)`` for stacked
  students (``kdjax.sweep.make_sweep_train_step``, perhaps wrapped, e.g. by
  ``kdjax.mixup.with_mixup``). The guarded step is ``((states, health), teacher_vars,
  batch) -> ((states, health), metrics)``: after the step, a flag per student says whether
  the teacher outputs (the step's ``"teacher_finite"`` metric, reported by
  ``make_sweep_train_step(..., report_teacher_finite=True)``; taken out of the metrics), the
  ``checked`` metrics (the losses and ``grad_norm``, whose non-finiteness is that of the
  gradients) and the updated student variables (an update can overflow from finite
  gradients) are all finite. ``health`` (a ``Health``) accumulates the count of bad steps
  and what went wrong at the first one. With ``skip``, a bad step leaves every
  floating-point value of the student's parameters, model, optimizer and
  output-transform states as it was (``jnp.where`` on the flag: no branch, no sync);
  integer counters (the step, optax's schedule counts, the DKP transform's count) still
  advance, so the learning rate and every other schedule stay aligned with the data stream
  and with the logged values.

  Trade-off: reading the flag on the host after every step would stop training at the
  exact bad step, but forces a device-to-host sync per step, which serialises dispatch and
  costs throughput on accelerators. Here the flags stay on the device and the host reads
  ``health`` only where it synchronises anyway (log, eval, checkpoint, preemption): a bad
  step is still named exactly, the host learns of it up to ``log_every_steps`` steps late,
  and nothing derived from it (a checkpoint, an export, an evaluation) is ever written,
  since the host checks before each of those. In "stop" mode the steps between the bad one
  and its discovery are wasted work, at most one logging interval.

  Args:
    train_step: the step to guard; its metrics have a leading student axis.
    checked: the metric names whose finiteness is checked, e.g. ``("loss", "loss/kd",
      "grad_norm")``; ``health.first_terms`` follows ``checked_names(checked)``.
    skip: whether to skip (rather than apply) updates with non-finite values.

  Returns:
    The guarded step, to jit with the carry ``(states, health)`` donated.

  Example: see the module docstring (a NaN image, skipped).
  """

  def guarded_step(carry, teacher_vars, batch):
    states, health = carry
    new_states, metrics = train_step(states, teacher_vars, batch)
    metrics = dict(metrics)
    teacher_finite = metrics.pop(step_lib.TEACHER_FINITE, True)
    student_axes = new_states.step.ndim

    def leaf_bad(x):
      return ~jnp.all(jnp.isfinite(x), axis=tuple(range(student_axes, x.ndim)))

    variables_bad = jnp.any(jnp.stack(
        [leaf_bad(x) for x in jax.tree.leaves((new_states.params, new_states.model_state))
         if jnp.issubdtype(x.dtype, jnp.inexact)]), axis=0)
    flags = jnp.stack([jnp.broadcast_to(~jnp.asarray(teacher_finite), new_states.step.shape)]
                      + [~jnp.isfinite(metrics[name]) for name in checked] + [variables_bad],
                      axis=-1)
    bad = jnp.any(flags, axis=-1)
    if skip:
      def keep(new, old):
        if not jnp.issubdtype(new.dtype, jnp.inexact):  # a counter: it advances
          return new
        return jnp.where(bad.reshape(bad.shape + (1,) * (new.ndim - bad.ndim)), old, new)
      new_states = new_states.replace(**{
          field: jax.tree.map(keep, getattr(new_states, field), getattr(states, field))
          for field in _SKIPPED_FIELDS})
    first = bad & (health.first_step == 0)
    health = Health(count=health.count + bad.astype(jnp.int32),
                     first_step=jnp.where(first, new_states.step, health.first_step),
                     first_terms=jnp.where(first[..., None], flags, health.first_terms))
    return (new_states, health), metrics

  return guarded_step


def describe(health: Health, names: Sequence[str], seeds: Sequence[int]) -> str:
  """Names the first bad step of a host copy of ``health``: step, values and seeds.

  Args:
    health: a ``Health`` fetched to the host (``jax.device_get``) with a non-zero count.
    names: ``checked_names(checked)``, the order of ``health.first_terms``.
    seeds: the students' seeds, for the message.

  Returns:
    E.g. ``"step 7 in loss, grad_norm (seeds 0, 2)"``: the earliest bad step, the seeds
    that went bad at it, and the values that were non-finite for the first of those seeds.

  Raises:
    ValueError: if ``health`` records no bad step.

  Example:
    >>> health = Health(count=np.array([0, 2]), first_step=np.array([0, 7]),
    ...                 first_terms=np.array([[False] * 4, [False, True, False, False]]))
    >>> describe(health, checked_names(("loss", "grad_norm")), seeds=[0, 1])
    'step 7 in loss (seed 1)'
  """
  count = np.asarray(health.count)
  if not count.any():
    raise ValueError("health records no non-finite step; nothing to describe.")
  first_step = np.asarray(health.first_step)
  first = int(first_step[count > 0].min())
  culprits = [i for i in range(len(count)) if count[i] and first_step[i] == first]
  terms = ", ".join(n for n, bad in zip(names, np.asarray(health.first_terms)[culprits[0]],
                                        strict=True) if bad)
  return (f"step {first} in {terms} (seed{'s' if len(culprits) > 1 else ''} "
          f"{', '.join(str(seeds[i]) for i in culprits)})")
