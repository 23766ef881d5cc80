r"""Schedules for every hyperparameter that moves during distillation.

Each factory returns an ``optax.Schedule`` (a function of the integer step) built on optax's
own schedules, after validating its arguments in Python. Anything that accepts a
hyperparameter accepts a scalar or a schedule; ``resolve`` turns either into its value at a
step, and ``check_range`` validates a schedule's values once, when an objective is built.
"""

from collections.abc import Mapping, Sequence
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kdjax.losses import validation

ScalarOrSchedule = float | int | jax.Array | optax.Schedule


def _check_finite(name: str, value) -> None:
  if not math.isfinite(float(value)):
    raise ValueError(f"{name}={value} must be finite.")


def _check_steps(name: str, steps, minimum: int = 1) -> None:
  if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < minimum:
    raise ValueError(f"{name}={steps!r} must be an integer >= {minimum}.")


def annealing_phi(max_temperature: int, steps_per_level: int | None = None, *,
                  num_steps: int | None = None) -> optax.Schedule:
  r"""Annealing-KD's stage-I factor :math:`\Phi` as a staircase schedule.

  :math:`\Phi` climbs through :math:`T_{\max}` levels, :math:`1/T_{\max}, 2/T_{\max},
  \dots, 1` (the temperature :math:`T` steps down from :math:`T_{\max}` to 1), and stays at 1
  afterwards. Give the length of the levels in one of two ways:

  - ``num_steps`` (what Annealing-KD stage I uses): the :math:`N` steps of the stage are
    shared out among the levels as equally as integers allow,

    .. math::
       \ell(n) = \min\big(\lfloor n\,T_{\max} / N \rfloor,\ T_{\max} - 1\big),

    so level :math:`\ell` holds the steps :math:`\lceil \ell N / T_{\max} \rceil \le n <
    \lceil (\ell + 1) N / T_{\max} \rceil`: :math:`\lfloor N / T_{\max} \rfloor` or
    :math:`\lceil N / T_{\max} \rceil` of them, and :math:`\Phi = 1` over the last
    :math:`\lfloor N / T_{\max} \rfloor \ge 1` steps of the stage. Every level needs a
    step, so :math:`N \ge T_{\max}` is required.
  - ``steps_per_level`` :math:`s`: each level holds exactly :math:`s` steps,
    :math:`\ell(n) = \min(\lfloor n / s \rfloor,\ T_{\max} - 1)`, so :math:`\Phi` first
    reaches 1 at step :math:`(T_{\max} - 1)\,s`.

  Either way

  .. math::
     T(n) = T_{\max} - \ell(n),\qquad
     \Phi(n) = 1 - \frac{T(n) - 1}{T_{\max}} = \frac{\ell(n) + 1}{T_{\max}}

  (the official code's counter can overshoot 1 when the epochs are not a multiple of
  :math:`T_{\max}`; here it is clamped).

  Args:
    max_temperature: :math:`T_{\max}`, an integer >= 1 (10 in the paper).
    steps_per_level: :math:`s`, steps spent at each level, an integer >= 1; stage I then
      lasts ``max_temperature * steps_per_level`` steps. Give it or ``num_steps``.
    num_steps: :math:`N`, the length of stage I, an integer >= ``max_temperature``
      (and with :math:`N\,T_{\max} < 2^{31}`, so the step arithmetic fits int32).

  Returns:
    An ``optax.Schedule`` with values in ``(0, 1]``.

  Raises:
    ValueError: if an argument is not a positive integer, if both or neither of
      ``steps_per_level`` and ``num_steps`` are given, or if ``num_steps <
      max_temperature`` (some level would get no step; the message names both values).

  References:
    Jafari et al., "Annealing Knowledge Distillation", EACL 2021.

  Example:
    >>> phi = annealing_phi(max_temperature=4, steps_per_level=10)
    >>> [float(phi(n)) for n in (0, 9, 10, 35, 1000)]
    [0.25, 0.25, 0.5, 1.0, 1.0]
    >>> phi = annealing_phi(max_temperature=4, num_steps=10)  # levels of 3, 2, 3, 2 steps
    >>> [float(phi(n)) for n in range(10)]
    [0.25, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 1.0, 1.0]
    >>> annealing_phi(max_temperature=10, num_steps=5)
    Traceback (most recent call last):
    ...
    ValueError: num_steps=5 is less than max_temperature=10: each of the 10 levels of Phi ...
  """
  _check_steps("max_temperature", max_temperature)
  if (steps_per_level is None) == (num_steps is None):
    raise ValueError(f"give exactly one of steps_per_level and num_steps; got "
                     f"steps_per_level={steps_per_level!r}, num_steps={num_steps!r}.")
  if steps_per_level is not None:
    _check_steps("steps_per_level", steps_per_level)

    def schedule(step):
      level = jnp.minimum(jnp.asarray(step) // steps_per_level, max_temperature - 1)
      return (level + 1).astype(jnp.float32) / max_temperature

    return schedule

  _check_steps("num_steps", num_steps)
  if num_steps < max_temperature:
    raise ValueError(
        f"num_steps={num_steps} is less than max_temperature={max_temperature}: each of the "
        f"{max_temperature} levels of Phi needs at least one step; train for >= "
        f"{max_temperature} steps or lower max_temperature.")
  if num_steps * max_temperature >= 2**31:
    raise ValueError(f"num_steps={num_steps} times max_temperature={max_temperature} must be "
                     f"< 2**31 (the step arithmetic is int32).")

  def schedule_over_stage(step):
    step = jnp.minimum(jnp.asarray(step), num_steps)  # past the stage, Phi stays 1
    level = jnp.minimum(step * max_temperature // num_steps, max_temperature - 1)
    return (level + 1).astype(jnp.float32) / max_temperature

  return schedule_over_stage


def continuation_psi(ramp_steps: int) -> optax.Schedule:
  r"""Continuation-KD's ramp :math:`\psi` from distillation to cross-entropy.

  Continuation-KD trains on :math:`\psi\,\mathrm{CE} + (1 - \psi)\,L_{\text{hinge}}`
  (``kdjax.losses.continuation``), its :math:`\Phi` following ``annealing_phi``; the ramp
  moves the weight from the teacher to the labels and then holds it there:

  .. math:: \psi(n) = \min(n / N,\ 1)

  The paper ramps over epochs (:math:`\psi(i) = i/150`); here :math:`N` counts steps.
  The hinge's weight :math:`1 - \psi` is ``lambda n: 1 - psi(n)``.

  Args:
    ramp_steps: :math:`N`, the steps until the objective is cross-entropy alone, an integer
      >= 1.

  Returns:
    An ``optax.Schedule`` with values in ``[0, 1]``.

  Raises:
    ValueError: if ``ramp_steps`` is not an integer >= 1.

  References:
    Jafari et al., "Continuation KD", Findings of EMNLP 2022 (arXiv 2212.05998).

  Example:
    >>> psi = continuation_psi(ramp_steps=150)
    >>> [round(float(psi(n)), 4) for n in (0, 75, 150, 300)]
    [0.0, 0.5, 1.0, 1.0]
    >>> continuation_psi(0)
    Traceback (most recent call last):
    ...
    ValueError: ramp_steps=0 must be an integer >= 1.
  """
  _check_steps("ramp_steps", ramp_steps)

  def schedule(step):
    return jnp.minimum(jnp.asarray(step, jnp.float32) / ramp_steps, 1.0)

  return schedule


def constant(value: float) -> optax.Schedule:
  r"""A constant schedule (``optax.constant_schedule``) with a finite value.

  Use it where a schedule is required but the value does not move; anything that accepts a
  scalar-or-schedule also takes the plain scalar.

  .. math:: v(n) = v

  Args:
    value: the value :math:`v`, finite.

  Returns:
    An ``optax.Schedule`` returning ``value`` (a scalar) at every step.

  Raises:
    ValueError: if ``value`` is not finite.

  Example:
    >>> float(constant(4.0)(1000))
    4.0
  """
  _check_finite("value", value)
  return optax.constant_schedule(value)


def linear(init_value: float, end_value: float, transition_steps: int,
           transition_begin: int = 0) -> optax.Schedule:
  r"""Linear ramp from ``init_value`` to ``end_value`` (``optax.linear_schedule``).

  .. math:: v(n) = v_0 + (v_1 - v_0)\,\mathrm{clip}\big((n - n_0)/N,\ 0,\ 1\big)

  DKD's loss warm-up ``min(epoch / 20, 1)`` is not this ramp but ``epoch_warmup``: the
  official code holds each epoch's value for the whole epoch and starts at 1/20.

  Args:
    init_value: :math:`v_0`, the value up to ``transition_begin``, finite.
    end_value: :math:`v_1`, the value from ``transition_begin + transition_steps`` on,
      finite.
    transition_steps: :math:`N`, the length of the ramp, an integer >= 1.
    transition_begin: :math:`n_0`, the step at which the ramp starts, an integer >= 0.

  Returns:
    An ``optax.Schedule`` returning a scalar.

  Raises:
    ValueError: on non-finite values, ``transition_steps < 1`` or ``transition_begin < 0``.

  Example:
    >>> warmup = linear(0.0, 1.0, transition_steps=20)
    >>> [float(warmup(n)) for n in (0, 5, 20, 100)]
    [0.0, 0.25, 1.0, 1.0]
  """
  _check_finite("init_value", init_value)
  _check_finite("end_value", end_value)
  _check_steps("transition_steps", transition_steps)
  _check_steps("transition_begin", transition_begin, minimum=0)
  return optax.linear_schedule(init_value, end_value, transition_steps, transition_begin)


def epoch_warmup(warmup_epochs: int, steps_per_epoch: int) -> optax.Schedule:
  r"""A loss-weight warm-up by whole epochs, counted from 1: ``min(epoch / warmup_epochs, 1)``.

  This is how mdistiller warms up DKD's loss (``min(kwargs["epoch"] / self.warmup, 1.0)``,
  with ``epoch`` 1 in the first epoch): 1/20 throughout the first of 20 warm-up epochs, 2/20
  throughout the second, and 1 from epoch 20 on. A per-step linear ramp from 0 differs
  from it by up to 1/20 and starts at 0.

  .. math:: v(n) = \min\Big(\frac{\lfloor n / S \rfloor + 1}{E},\ 1\Big)

  for step :math:`n` (from 0), :math:`S` steps per epoch and :math:`E` warm-up epochs.

  Args:
    warmup_epochs: :math:`E`, an integer >= 1.
    steps_per_epoch: :math:`S`, an integer >= 1.

  Returns:
    An ``optax.Schedule`` returning a float32 scalar.

  Raises:
    ValueError: if ``warmup_epochs`` or ``steps_per_epoch`` is not an integer >= 1.

  References:
    Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022 (mdistiller,
    ``mdistiller/distillers/DKD.py`` and ``engine/trainer.py``).

  Example:
    >>> warmup = epoch_warmup(warmup_epochs=20, steps_per_epoch=10)
    >>> [round(float(warmup(n)), 2) for n in (0, 9, 10, 189, 190, 1000)]
    [0.05, 0.05, 0.1, 0.95, 1.0, 1.0]
  """
  _check_steps("warmup_epochs", warmup_epochs)
  _check_steps("steps_per_epoch", steps_per_epoch)

  def schedule(step):
    epoch = jnp.asarray(step) // steps_per_epoch + 1
    return jnp.minimum(epoch.astype(jnp.float32) / warmup_epochs, 1.0)

  return schedule


def cosine(init_value: float, end_value: float, decay_steps: int) -> optax.Schedule:
  r"""Cosine interpolation from ``init_value`` to ``end_value`` over ``decay_steps``.

  .. math:: v(n) = v_1 + \tfrac12 (v_0 - v_1)\big(1 + \cos(\pi \min(n, N)/N)\big)

  Works for rising as well as falling values (e.g. a temperature annealed downwards).

  Args:
    init_value: :math:`v_0`, the value at step 0, finite.
    end_value: :math:`v_1`, the value from ``decay_steps`` on, finite.
    decay_steps: :math:`N`, the length of the transition, an integer >= 1.

  Returns:
    An ``optax.Schedule`` returning a float32 scalar.

  Raises:
    ValueError: on non-finite values or ``decay_steps < 1``.

  Example:
    >>> temperature = cosine(init_value=8.0, end_value=1.0, decay_steps=100)
    >>> [float(temperature(n)) for n in (0, 50, 100, 200)]
    [8.0, 4.5, 1.0, 1.0]
  """
  _check_finite("init_value", init_value)
  _check_finite("end_value", end_value)
  _check_steps("decay_steps", decay_steps)

  def schedule(step):
    fraction = jnp.minimum(jnp.asarray(step, jnp.float32), decay_steps) / decay_steps
    return end_value + 0.5 * (init_value - end_value) * (1.0 + jnp.cos(jnp.pi * fraction))

  return schedule


def piecewise_constant(init_value: float, boundaries_and_values: Mapping[int, float]
                       ) -> optax.Schedule:
  r"""A staircase with absolute values: ``init_value`` until the first boundary, and so on.

  Unlike ``optax.piecewise_constant_schedule`` (which multiplies by scales), the mapping
  gives the value taken *from* each boundary step on, e.g. ``{100: 2.0, 200: 1.0}``. Use it
  for a temperature or loss weight that changes at fixed milestones.

  .. math::
     v(n) = v_j \quad\text{with}\quad j = \#\{i : n \ge b_i\},\qquad
     v_0 = \mathtt{init\_value}

  for the sorted boundaries :math:`b_1 < b_2 < \dots` and their values :math:`v_1, v_2, \dots`.

  Args:
    init_value: :math:`v_0`, the value before the first boundary, finite.
    boundaries_and_values: boundary step (an integer >= 0) → the finite value taken from
      that step on; any order.

  Returns:
    An ``optax.Schedule`` returning a float32 scalar.

  Raises:
    ValueError: on non-finite values or boundaries that are not non-negative integers.

  Example:
    >>> temperature = piecewise_constant(4.0, {100: 2.0, 200: 1.0})
    >>> [float(temperature(n)) for n in (0, 99, 100, 250)]
    [4.0, 4.0, 2.0, 1.0]
  """
  _check_finite("init_value", init_value)
  boundaries = sorted(boundaries_and_values)
  values = [init_value] + [boundaries_and_values[b] for b in boundaries]
  for b in boundaries:
    _check_steps("boundary", b, minimum=0)
  for i, value in enumerate(values):
    _check_finite(f"values[{i}]", value)
  boundaries_arr = jnp.asarray(boundaries, jnp.int32)
  values_arr = jnp.asarray(values, jnp.float32)

  def schedule(step):
    return values_arr[jnp.sum(jnp.asarray(step) >= boundaries_arr)]

  return schedule


def join(schedules: Sequence[optax.Schedule], boundaries: Sequence[int]) -> optax.Schedule:
  r"""Runs ``schedules[i]`` from ``boundaries[i-1]`` on, each restarted at step 0.

  A thin, validated ``optax.join_schedules``: use it to chain phases, e.g. a warm-up ramp and
  then a constant.

  .. math::
     v(n) = v_i(n - b_i)\quad\text{for}\quad b_i \le n < b_{i+1},\qquad
     b_0 = 0,\ b_{m} = \infty

  Args:
    schedules: the :math:`m` schedules :math:`v_0, \dots, v_{m-1}`, in order.
    boundaries: the :math:`m - 1` steps :math:`b_1 < \dots < b_{m-1}` at which the next
      schedule takes over.

  Returns:
    An ``optax.Schedule``.

  Raises:
    ValueError: unless ``len(boundaries) == len(schedules) - 1`` and the boundaries are
      strictly increasing positive integers.

  Example:
    >>> lr = join([linear(0.0, 0.1, 10), constant(0.1)], boundaries=[10])
    >>> [round(float(lr(n)), 3) for n in (0, 5, 10, 50)]
    [0.0, 0.05, 0.1, 0.1]
  """
  if len(boundaries) != len(schedules) - 1:
    raise ValueError(
        f"join needs len(boundaries) == len(schedules) - 1; got {len(boundaries)} boundaries "
        f"for {len(schedules)} schedules.")
  for b in boundaries:
    _check_steps("boundary", b)
  if list(boundaries) != sorted(set(boundaries)):
    raise ValueError(f"boundaries={list(boundaries)} must be strictly increasing.")
  return optax.join_schedules(list(schedules), list(boundaries))


def resolve(value: ScalarOrSchedule, step: jax.typing.ArrayLike) -> jax.Array:
  """The value of a scalar-or-schedule at ``step``, as a float32 ``jax.Array``.

  Use it wherever a hyperparameter may be either a constant or a schedule: inside a jitted
  step ``step`` is traced, and so is the result.

  Args:
    value: a scalar (or array) or an ``optax.Schedule`` (any callable of the step).
    step: the step, an integer scalar (possibly traced).

  Returns:
    ``value(step)`` if ``value`` is callable, else ``value``; float32, of the value's shape
    (a scalar ``[]`` for scalars and kdjax's schedules).

  Example:
    >>> resolve(2, step=0)
    Array(2., dtype=float32)
    >>> float(resolve(linear(0.0, 1.0, transition_steps=10), step=5))
    0.5
  """
  if callable(value):
    return jnp.asarray(value(step), jnp.float32)
  return jnp.asarray(value, jnp.float32)


def check_range(name: str, value: ScalarOrSchedule, *, low: float = -math.inf,
                high: float = math.inf, low_open: bool = False, num_steps: int | None = None,
                samples: int = 1001) -> None:
  """Checks that a scalar or schedule stays within ``[low, high]`` over ``num_steps`` steps.

  A schedule is evaluated at ``samples`` evenly spaced steps from 0 to ``num_steps - 1``
  (both ends included), in one vectorised call; piecewise-linear and staircase schedules
  reach their extremes at their knots, which the sampling catches to within
  ``num_steps / samples`` steps. Objectives and transforms call it when they are built,
  since inside a jitted step the values are traced and cannot be checked.

  Args:
    name: the hyperparameter's name, for the error message.
    value: a scalar or an ``optax.Schedule`` returning a scalar.
    low: the lower bound (default: none).
    high: the upper bound, always included (default: none).
    low_open: exclude ``low`` itself (e.g. a temperature must be > 0).
    num_steps: the length of training: steps ``[0, num_steps)`` are checked. Required
      for a schedule (a schedule checked at step 0 only could leave its range later, e.g.
      a temperature crossing 0, and train to NaN); unused for a scalar.
    samples: the number of evenly spaced steps evaluated.

  Raises:
    ValueError: naming ``name``, the offending value and the (first) step where it occurs,
      when a value is outside the interval or not finite; for a schedule without
      ``num_steps``.

  Example:
    >>> check_range("gamma", linear(0.0, 1.0, 10), low=0.0, high=1.0, num_steps=20)
    >>> check_range("gamma", linear(0.0, 2.0, 10), low=0.0, high=1.0, num_steps=20)
    Traceback (most recent call last):
    ...
    ValueError: gamma must lie in [0.0, 1.0]; it is 1.2... at step 6.
    >>> check_range("temperature", 0.0, low=0.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: temperature must lie in (0.0, inf); it is 0.0 at step 0.
    >>> check_range("temperature", math.inf, low=0.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: temperature must lie in (0.0, inf); it is inf at step 0.
    >>> check_range("temperature", linear(4.0, -1.0, 10), low=0.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: temperature is a schedule: pass num_steps, the number of training steps, ...
  """
  if callable(value):
    if num_steps is None:
      raise ValueError(f"{name} is a schedule: pass num_steps, the number of training steps, "
                       f"so that its values are checked over the whole of training (a "
                       f"schedule leaving its range later, e.g. a temperature crossing 0, "
                       f"would train to NaN).")
    steps = np.unique(np.linspace(0, max(num_steps - 1, 0), samples).astype(np.int64))
    values = np.asarray(jax.vmap(value)(jnp.asarray(steps)), np.float64).reshape(-1)
  else:
    steps, values = np.zeros(1, np.int64), np.asarray([float(value)])
  bad_low = values <= low if low_open else values < low
  bad = ~np.isfinite(values) | bad_low | (values > high)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"{name} must lie in {validation.interval(low, high, low_open)}; "
                     f"it is {values[i]} at step {steps[i]}.")

