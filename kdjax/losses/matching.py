"""Squared-error losses on logits: logits matching (Chen et al.) and Annealing-KD stage I."""

import jax
import jax.numpy as jnp

from kdjax.losses import validation as v


def logits_matching(student_logits: jax.typing.ArrayLike,
                    teacher_logits: jax.typing.ArrayLike,
                    centered: bool = False) -> jax.Array:
  r"""Per-example logits matching, the infinite-temperature limit of KD.

  .. math::
     L = \frac{1}{2K}\,\lVert s - t \rVert^2 \quad\text{or, centered,}\quad
     L = \frac{1}{2K}\,\lVert (s - \bar s) - (t - \bar t) \rVert^2
       = \frac{1}{2K}\lVert s - t\rVert^2 - \tfrac12(\bar s - \bar t)^2

  Chen et al. (2021) show :math:`T^2\,\mathrm{KL}(p_t^T \| p_s^T)` tends to the *centered*
  form as :math:`T\to\infty`: KD is logits matching plus the extra regularizer
  :math:`-\tfrac12(\bar s - \bar t)^2`, which vanishes when the mean logits agree (see
  ``kdjax.initializers.zero_mean``).

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    centered: subtract each side's mean logit first.

  Returns:
    Per-example losses ``[...]``.

  Raises:
    ValueError: on mismatched shapes or non-float logits.

  References:
    Chen et al., "Exploring the Connection between Knowledge Distillation and Logits
    Matching" (arXiv 2109.06458), 2021.

  Example:
    >>> logits_matching(jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 0.0]])).tolist()
    [2.5]
    >>> logits_matching(jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 0.0]]), centered=True).tolist()
    [0.5]
  """
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  v.check_same_shape(s, t)
  t = jax.lax.stop_gradient(t)
  diff = s - t
  if centered:
    diff = diff - jnp.mean(diff, axis=-1, keepdims=True)
  return 0.5 * jnp.mean(diff**2, axis=-1)


def annealing(student_logits: jax.typing.ArrayLike,
              teacher_logits: jax.typing.ArrayLike,
              phi: jax.typing.ArrayLike) -> jax.Array:
  r"""Per-example Annealing-KD stage-I loss: regression onto the annealed teacher logits.

  .. math::
     L = \frac{1}{K}\sum_k (s_k - \Phi\, t_k)^2,\qquad \Phi = 1 - \frac{T-1}{T_{\max}}

  with :math:`\Phi` from ``kdjax.schedules.annealing_phi``. This equals twice
  ``logits_matching(s, Φ·t)``: logits matching with Chen et al.'s mean-logit regularizer
  cancelled. Stage II is cross-entropy on the labels (the ``scratch`` method): as in the
  official code, neither stage has a KL term.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    phi: annealing factor :math:`\Phi \in (0, 1]`, a scalar.

  Returns:
    Per-example losses ``[...]``.

  Raises:
    ValueError: on mismatched shapes, non-float logits or ``phi`` outside ``(0, 1]``.

  References:
    Jafari et al., "Annealing Knowledge Distillation", EACL 2021.

  Example:
    >>> annealing(jnp.array([[1.0, 1.0]]), jnp.array([[4.0, 2.0]]), phi=0.5).tolist()
    [0.5]
  """
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  v.check_same_shape(s, t)
  v.check_in_range("phi", phi, 0.0, 1.0, low_open=True)
  t = jax.lax.stop_gradient(t)
  return jnp.mean((s - phi * t)**2, axis=-1)
