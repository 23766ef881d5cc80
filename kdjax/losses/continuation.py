"""Continuation-KD: a hinge on the annealed logit-matching loss of Annealing-KD."""

import math

import jax
import jax.numpy as jnp

from kdjax.losses import validation as v


def continuation(student_logits: jax.typing.ArrayLike,
                 teacher_logits: jax.typing.ArrayLike,
                 phi: jax.typing.ArrayLike,
                 margin: jax.typing.ArrayLike = 0.0,
                 *,
                 class_reduction: str = "mean") -> jax.Array:
  r"""Per-example Continuation-KD distillation loss: a hinge on annealed logit matching.

  .. math::
     L = \max\big\{0,\ c\,\|s - \Phi\,t\|^2 - m\,\Phi\big\},\qquad
     c = \begin{cases} 1/K & \texttt{"mean"} \\ 1 & \texttt{"sum"} \end{cases}

  with :math:`\Phi` rising from :math:`1/T_{\max}` to 1 as in Annealing-KD
  (``kdjax.schedules.annealing_phi``) and a margin :math:`m \ge 0`. Early on, when the
  target :math:`\Phi\,t` is soft, the margin :math:`m\Phi` is small and the student fits the
  teacher closely; as :math:`\Phi` grows the student may stay up to :math:`m\Phi` away from
  the sharper, noisier target without penalty. The training objective mixes it with
  cross-entropy by a ramp :math:`\psi` (``kdjax.schedules.continuation_psi``):
  :math:`\psi\,\mathrm{CE} + (1 - \psi)\,L`. With :math:`m = 0` the loss is
  ``annealing(s, t, phi)`` (``"mean"``). Gradient, where the hinge is active:
  :math:`\partial L / \partial s = 2c\,(s - \Phi t)`, and 0 elsewhere.

  No official code of Continuation-KD is public; this follows the paper's equation. The
  squared error's normalisation is not fixed by it: ``"mean"`` (the default) is the
  ``F.mse_loss`` of the Annealing-KD code it extends, ``"sum"`` the plain squared norm; the
  margin is on the same scale.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    phi: annealing factor :math:`\Phi \in (0, 1]`, a scalar.
    margin: :math:`m`, finite and >= 0.
    class_reduction: ``"mean"`` or ``"sum"`` over the K squared differences.

  Returns:
    Per-example losses ``[...]``, >= 0.

  Raises:
    ValueError: on mismatched shapes, non-float logits, ``phi`` outside ``(0, 1]``, a
      negative or non-finite ``margin`` or an unknown ``class_reduction`` (values are
      checked when concrete).

  References:
    Jafari et al., "Continuation KD: Improved Knowledge Distillation through the Lens of
    Continuation Optimization", Findings of EMNLP 2022 (arXiv 2212.05998).

  Example:
    >>> s, t = jnp.array([[1.0, 1.0]]), jnp.array([[4.0, 2.0]])
    >>> continuation(s, t, phi=0.5).tolist()  # mean((1 - 2)², (1 - 1)²)
    [0.5]
    >>> continuation(s, t, phi=0.5, margin=0.5).tolist()  # 0.5 - 0.5 * 0.5
    [0.25]
    >>> continuation(s, t, phi=0.5, margin=2.0).tolist()  # 0.5 < 2 * 0.5: inside the margin
    [0.0]
    >>> continuation(s, t, phi=0.5, margin=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: margin=-1.0 must lie in [0.0, inf).
  """
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  v.check_same_shape(s, t)
  v.check_in_range("phi", phi, 0.0, 1.0, low_open=True)
  v.check_in_range("margin", margin, 0.0, math.inf)
  scale = v.class_reduction_scale(class_reduction, s.shape[-1])
  t = jax.lax.stop_gradient(t)
  squared_error = scale * jnp.sum((s - phi * t)**2, axis=-1)
  return jnp.maximum(squared_error - margin * phi, 0.0)
