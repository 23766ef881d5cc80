"""CTKD: a learnable distillation temperature trained adversarially by gradient reversal."""

import math

import jax
import jax.numpy as jnp
import optax

from kdjax.losses import validation as v


@jax.custom_vjp
def gradient_reversal(x: jax.typing.ArrayLike, scale: jax.typing.ArrayLike) -> jax.Array:
  r"""Identity forward; multiplies the gradient by :math:`-\lambda` backward.

  .. math:: \mathrm{GRL}_\lambda(x) = x,\qquad
            \frac{\partial L}{\partial x} \leftarrow -\lambda\,\frac{\partial L}{\partial x}

  Whatever sits before it then ascends the loss with step :math:`\lambda` while everything
  after it descends. ``scale`` receives no gradient.

  Args:
    x: any array ``[...]``.
    scale: :math:`\lambda`, a scalar (may be traced, e.g. from a schedule).

  Returns:
    ``x`` unchanged.

  Example:
    >>> jax.grad(lambda x: 3.0 * gradient_reversal(x, 0.5))(1.0)
    Array(-1.5, dtype=float32, weak_type=True)
  """
  del scale
  return jnp.asarray(x)


def _reversal_forward(x, scale):
  return jnp.asarray(x), scale


def _reversal_backward(scale, g):
  return -scale * g, jnp.zeros_like(scale)


gradient_reversal.defvjp(_reversal_forward, _reversal_backward)


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
         reversal: jax.typing.ArrayLike,
         *,
         t_start: float = 1.0,
         t_range: float = 20.0) -> jax.Array:
  r"""Per-example KD at a learnable temperature that ascends the loss (CTKD).

  .. math::
     T = T_0 + \Delta\,\sigma\big(\mathrm{GRL}_\lambda(\theta)\big),\qquad
     L = T^2\,\mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T)\big)

  :math:`\theta` is the raw temperature (one learnable scalar, or one per example from a
  small network: ``kdjax.heads.GlobalTemperature``, ``InstanceTemperature``). The student
  descends :math:`L`; through the gradient-reversal layer the temperature parameters
  *ascend* it with weight :math:`\lambda`, so the task gets harder as :math:`\lambda`
  rises on its curriculum (``kdjax.schedules.cosine(0, 1, N)``, the paper's). The official
  code (zhengli97/CTKD, ``helper/loops.py`` with ``CosineDecay(max_value=0,
  min_value=-1)``) runs :math:`\lambda` from 0 to -1, so its temperature *descends* the
  loss (its issue 24); kdjax follows the paper, and :math:`\lambda_{\max} = -1` reproduces
  the code.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    raw_temperature: :math:`\theta`, broadcastable to ``[...]`` (a scalar for the global
      temperature).
    reversal: :math:`\lambda`, a scalar (a schedule's value).
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
    >>> grad = jax.grad(lambda theta: ctkd(s, t, theta, 1.0).sum())(0.0)
    >>> bool(grad < 0)  # the gradient is reversed: descending it raises the loss
    True
  """
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  v.check_same_shape(s, t)
  check_temperature_range(t_start, t_range)
  t = jax.lax.stop_gradient(t)
  raw = gradient_reversal(jnp.asarray(raw_temperature, s.dtype), reversal)
  temperature = jnp.broadcast_to(t_start + t_range * jax.nn.sigmoid(raw), s.shape[:-1])
  kl = optax.losses.kl_divergence_with_log_targets(
      jax.nn.log_softmax(s / temperature[..., None]),
      jax.nn.log_softmax(t / temperature[..., None]))
  return temperature**2 * kl
