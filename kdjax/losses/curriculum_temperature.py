"""CTKD: KD at a learnable temperature (trained adversarially by ``reverse_gradients``)."""

import math

import jax
import jax.numpy as jnp

from kdjax.losses import tempered
from kdjax.losses import validation as v


def check_temperature_range(t_start, t_range) -> None:
  """Refuses a CTKD temperature range ``(t_start, t_start + t_range)`` that is empty or <= 0.

  Args:
    t_start: the lowest temperature, finite and > 0.
    t_range: the width of the range, finite and > 0.

  Raises:
    ValueError: naming the bad value.

  Example:
    >>> check_temperature_range(1.0, 20.0)  # valid: returns None
    >>> check_temperature_range(1.0, 0.0)
    Traceback (most recent call last):
    ...
    ValueError: t_range=0.0 must be finite and > 0: the temperature range (1.0, 1.0) is empty.
  """
  v.check_positive("t_start", t_start)
  if not (math.isfinite(t_range) and t_range > 0):
    raise ValueError(f"t_range={t_range} must be finite and > 0: the temperature range "
                     f"({t_start}, {t_start + t_range}) is empty.")


def ctkd(student_logits: jax.typing.ArrayLike,
         teacher_logits: jax.typing.ArrayLike,
         raw_temperature: jax.typing.ArrayLike,
         *,
         t_start: float = 1.0,
         t_range: float = 20.0) -> jax.Array:
  r"""Per-example KD at a learnable temperature (CTKD).

  .. math::
     T = T_0 + \Delta\,\sigma(\theta),\qquad
     L = T^2\,\mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T)\big)

  :math:`\theta` is the raw temperature (one learnable scalar, or one per example from a
  small network: ``kdjax.heads.GlobalTemperature``, ``InstanceTemperature``), differentiable
  here like the student. What makes CTKD adversarial is its update, not this loss: the
  ``"ctkd"`` method chains ``kdjax.transforms.reverse_gradients`` in front of the optimizer,
  which multiplies :math:`\theta`'s gradient by :math:`-\lambda(n)`, :math:`\lambda` rising
  from 0 to 1 on a cosine (the paper's curriculum), so the temperature ascends :math:`L`
  while the student descends it. The official code (zhengli97/CTKD) does the same with a
  reversal layer in the network whose backward is ``lambda_ * grads`` and
  ``CosineDecay(max_value=0, min_value=-1)``, i.e. its :math:`\lambda` is minus the paper's
  (its issue 24 reads the two as opposite directions; they are one).

  The KL is ``tempered.kl_of_logit_shift``'s, exact in float32 at any T.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    raw_temperature: :math:`\theta`, broadcastable to ``[...]`` (a scalar for the global
      temperature).
    t_start: :math:`T_0 > 0` (1 in the paper).
    t_range: :math:`\Delta > 0` (20 in the paper): T lies in :math:`(T_0, T_0 + \Delta)`.

  Returns:
    Per-example losses ``[...]``.

  Raises:
    ValueError: on mismatched shapes, non-float logits or an empty temperature range.

  References:
    Li et al., "Curriculum Temperature for Knowledge Distillation", AAAI 2023.

  Example:
    >>> s, t = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[3.0, 2.0, 1.0]])
    >>> grad = jax.grad(lambda theta: ctkd(s, t, theta).sum())(0.0)
    >>> bool(grad > 0)  # a higher temperature raises this loss: reversed, θ ascends it
    True
  """
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  v.check_same_shape(s, t)
  check_temperature_range(t_start, t_range)
  t = jax.lax.stop_gradient(t)
  raw = jnp.asarray(raw_temperature, s.dtype)
  temperature = jnp.broadcast_to(t_start + t_range * jax.nn.sigmoid(raw), s.shape[:-1])
  tempered_t, shift = t / temperature[..., None], (t - s) / temperature[..., None]
  return temperature**2 * tempered.kl_of_logit_shift(tempered_t, shift)
