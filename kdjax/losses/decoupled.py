"""Decoupled knowledge distillation (DKD): KD split into target and non-target parts."""

import math

import jax
import jax.numpy as jnp

from kdjax.losses import tempered
from kdjax.losses import validation as v


def dkd(student_logits: jax.typing.ArrayLike,
        teacher_logits: jax.typing.ArrayLike,
        labels: jax.typing.ArrayLike,
        alpha: jax.typing.ArrayLike = 1.0,
        beta: jax.typing.ArrayLike = 8.0,
        temperature: jax.typing.ArrayLike = 4.0) -> jax.Array:
  r"""Per-example decoupled KD, :math:`\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}`.

  With :math:`b = [p_y, 1 - p_y]` the binary target/non-target probabilities at temperature
  T and :math:`\hat p` the softmax over the non-target classes:

  .. math::
     \mathrm{TCKD} = T^2\,\mathrm{KL}(b_t \| b_s),\qquad
     \mathrm{NCKD} = T^2\,\mathrm{KL}(\hat p_t \| \hat p_s),\qquad
     \mathrm{KD} = \mathrm{TCKD} + (1 - p_{t,y})\,\mathrm{NCKD}.

  DKD frees NCKD from the :math:`(1 - p_{t,y})` factor that suppresses it when the teacher
  is confident. The paper's warm-up ``min(epoch / 20, 1)`` is a loss-weight schedule (see
  ``kdjax.schedules``), not part of this function.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    labels: integer labels ``[...]``.
    alpha: TCKD weight, finite and >= 0 (1 by default).
    beta: NCKD weight, finite and >= 0 (8 by default; 2 for resnet56→20 and resnet110→32, 6
      for WRN and VGG pairs in the paper).
    temperature: T > 0.

  Returns:
    Per-example losses ``[...]``.

  Raises:
    ValueError: naming the bad value: mismatched shapes, missing (``None``), non-integer or
      out-of-range labels, a negative or non-finite ``alpha`` or ``beta``, or a
      ``temperature`` that is not finite and > 0. Values are checked when concrete, not
      when traced (e.g. inside ``jax.jit``).

  References:
    Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022.

  Example:
    >>> s = jnp.array([[1.0, 2.0, 3.0]])
    >>> dkd(s, s, jnp.array([0])).tolist()
    [0.0]
    >>> dkd(s, s, jnp.array([0]), beta=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: beta=-1.0 must lie in [0.0, inf).
  """
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  labels = jnp.asarray(labels) if labels is not None else None
  v.check_same_shape(s, t)
  v.check_labels(labels, s)
  v.check_in_range("alpha", alpha, 0.0, math.inf)
  v.check_in_range("beta", beta, 0.0, math.inf)
  v.check_positive("temperature", temperature)
  t = jax.lax.stop_gradient(t)
  tckd, nckd = decoupled_terms(s, t, labels, temperature)
  return alpha * tckd + beta * nckd


def decoupled_terms(s: jax.Array, t: jax.Array, labels: jax.Array,
                    temperature) -> tuple[jax.Array, jax.Array]:
  r"""Returns per-example ``(TCKD, NCKD)``, both already multiplied by :math:`T^2`.

  Use it to log or reweight DKD's two parts separately; ``dkd`` validates its inputs, stops
  the teacher's gradient and returns :math:`\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}`.
  This function does neither check nor ``stop_gradient``.

  .. math::
     b = [p_y,\ 1 - p_y],\qquad
     \hat p_k = \frac{e^{z_k/T}}{\sum_{j \ne y} e^{z_j/T}}\ \ (k \ne y),\qquad
     \mathrm{TCKD} = T^2\,\mathrm{KL}(b_t \| b_s),\qquad
     \mathrm{NCKD} = T^2\,\mathrm{KL}(\hat p_t \| \hat p_s)

  with :math:`p = \mathrm{softmax}(z/T)` for the student's (:math:`z = s`) and the
  teacher's (:math:`z = t`) logits; :math:`\mathrm{TCKD} + (1 - p_{t,y})\,\mathrm{NCKD}`
  equals ``kd(s, t, T)``.

  Args:
    s: student logits ``[..., K]``, floating point.
    t: teacher logits ``[..., K]``, same shape.
    labels: integer labels ``[...]`` in ``[0, K)``.
    temperature: T > 0 (a scalar, possibly traced).

  Returns:
    ``(tckd, nckd)``, each of shape ``[...]``.

  Example:
    >>> from kdjax.losses.hinton import kd
    >>> s, t = jnp.array([[1.0, 2.0, 3.0, 0.5]]), jnp.array([[2.0, 0.0, 1.0, -1.0]])
    >>> tckd, nckd = decoupled_terms(s, t, jnp.array([0]), 4.0)
    >>> tckd.shape, nckd.shape
    ((1,), (1,))
    >>> p_ty = jax.nn.softmax(t / 4.0)[:, 0]  # the teacher's target probability
    >>> bool(jnp.allclose(tckd + (1 - p_ty) * nckd, kd(s, t, 4.0)))
    True
  """
  target = jax.nn.one_hot(labels, s.shape[-1], dtype=bool)
  nontarget = ~target
  a, shift = t / temperature, (t - s) / temperature
  kl_nontarget = tempered.kl_of_logit_shift(a, shift, where=nontarget)
  # Binary logits [z_y, logsumexp_{k != y} z_k]: the teacher's, and their shift to the
  # student's. The non-target log-normalisers differ by E_{p_t|R}[shift] - KL_R, which
  # keeps the shift exact at any T (a difference of two logsumexps would not be).
  p_nontarget = jnp.where(nontarget, jax.nn.softmax(a, where=nontarget), 0.0)
  normaliser_gap = jnp.sum(p_nontarget * jnp.where(nontarget, shift, 0.0), axis=-1)
  normaliser_gap = normaliser_gap - kl_nontarget
  neg = jnp.finfo(a.dtype).min
  binary_a = jnp.stack([jnp.sum(jnp.where(target, a, 0.0), axis=-1),
                        jax.nn.logsumexp(jnp.where(target, neg, a), axis=-1)], axis=-1)
  binary_shift = jnp.stack([jnp.sum(jnp.where(target, shift, 0.0), axis=-1), normaliser_gap],
                           axis=-1)
  kl_binary = tempered.kl_of_logit_shift(binary_a, binary_shift)
  return temperature**2 * kl_binary, temperature**2 * kl_nontarget
