"""Divergences beyond forward KL as per-example distillation losses: reverse KL, generalized
Jensen–Shannon and total variation, on the same footing as ``kd``."""

import jax
import jax.numpy as jnp

from kdjax.losses import tempered
from kdjax.losses import validation as v

# Below this |λ| the Jensen–Shannon summand comes from its series in r = e^λ - 1 (|r| <
# 0.106; the first omitted term is below 1e-8 of the leading one); above it, its two terms
# cancel by at most a factor 2/|r| <= 20.
_SERIES_BOUND = 0.1
_SERIES_ORDER = 9


def _tempered_log_ratio(s: jax.Array, t: jax.Array,
                        temperature) -> tuple[jax.Array, jax.Array]:
  """``(log p_t, λ = log p_s - log p_t)`` at temperature T, λ without cancellation."""
  target = t / temperature
  log_ratio = tempered.log_ratio_of_logit_shift(target, (t - s) / temperature)
  return jax.nn.log_softmax(target), log_ratio


def _jensen_shannon_summands(log_p: jax.Array, log_ratio: jax.Array,
                             beta: jax.Array) -> jax.Array:
  r"""Per-class :math:`p_k f(\rho_k)` of the generalized JSD, :math:`\rho = e^{\lambda}`.

  With :math:`M = \beta + (1 - \beta)\rho` (the mixture over :math:`p`) the divergence is
  :math:`\sum_k p_k f(\rho_k)`, :math:`f(\rho) = (1-\beta)\rho\log\rho - M\log M \ge 0`.
  Near :math:`\rho = 1` both terms are :math:`O(r)` and :math:`f` is :math:`O(r^2)`, so
  :math:`f` comes from its series, whose coefficients are positive multiples of
  :math:`\beta(1-\beta)` and cancel nothing:

  .. math::
     f(1 + r) = \sum_{n \ge 2} (-1)^n\,
       \frac{(1-\beta)\,(1 - (1-\beta)^{n-1})}{n(n-1)}\, r^n
  """
  near = jnp.abs(log_ratio) < _SERIES_BOUND
  r = jnp.expm1(jnp.where(near, log_ratio, 0.0))
  log_keep = jnp.log1p(-beta)
  series = jnp.zeros_like(r)
  for n in range(_SERIES_ORDER, 1, -1):
    coefficient = (1 - beta) * -jnp.expm1((n - 1) * log_keep) / (n * (n - 1))
    series = (-1)**n * coefficient + r * series
  series = r * r * series
  far_ratio = jnp.where(near, 1.0, log_ratio)
  log_mixture = jnp.logaddexp(jnp.log(beta), log_keep + far_ratio)  # log M
  far = (-beta * jnp.exp(log_p) * log_mixture
         + (1 - beta) * jnp.exp(log_p + far_ratio) * (far_ratio - log_mixture))
  return jnp.where(near, jnp.exp(log_p) * series, far)


def reverse_kl(student_logits: jax.typing.ArrayLike,
               teacher_logits: jax.typing.ArrayLike,
               temperature: jax.typing.ArrayLike = 4.0) -> jax.Array:
  r"""Per-example reverse KL, the student's distribution against the teacher's.

  .. math::
     L = T^2\,\mathrm{KL}\big(p_s^T \,\|\, p_t^T\big)
       = T^2 \textstyle\sum_k p^T_{s,k}\,(\log p^T_{s,k} - \log p^T_{t,k})

  Mode-seeking: the student is penalised for mass where the teacher has little, not for
  missing some of the teacher's modes (forward KL, ``kd``, is mass-covering). Scaled by
  :math:`T^2` like ``kd``.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    temperature: T > 0.

  Returns:
    Per-example losses ``[...]``, >= 0.

  Raises:
    ValueError: on mismatched shapes, non-float logits or ``temperature <= 0``.

  References:
    Gu et al., "MiniLLM: Knowledge Distillation of Large Language Models", ICLR 2024.

  Example:
    >>> s = jnp.array([[1.0, 2.0, 3.0]])
    >>> reverse_kl(s, s).tolist()
    [0.0]
    >>> from kdjax.losses import kd
    >>> t = jnp.array([[3.0, 2.0, 1.0]])
    >>> bool(jnp.allclose(reverse_kl(s, t, 2.0), kd(t, s, 2.0)))  # the arguments swapped
    True
  """
  s, t = v.checked_pair(student_logits, teacher_logits, temperature)
  # Forward KL with the roles swapped, through the primitive that stays exact at any T.
  return tempered.tempered_kl(t, s, temperature)


def jensen_shannon(student_logits: jax.typing.ArrayLike,
                   teacher_logits: jax.typing.ArrayLike,
                   beta: jax.typing.ArrayLike = 0.5,
                   temperature: jax.typing.ArrayLike = 4.0) -> jax.Array:
  r"""Per-example generalized Jensen–Shannon divergence with interpolation :math:`\beta`.

  .. math::
     m = \beta\,p_t^T + (1 - \beta)\,p_s^T,\qquad
     L = T^2\big(\beta\,\mathrm{KL}(p_t^T \| m) + (1 - \beta)\,\mathrm{KL}(p_s^T \| m)\big)

  for :math:`0 < \beta < 1` (:math:`\beta = 1/2` is the symmetric JSD), and at the ends
  forward KL, :math:`T^2\,\mathrm{KL}(p_t^T \| p_s^T)` (``kd``), at :math:`\beta = 0` and
  reverse KL, :math:`T^2\,\mathrm{KL}(p_s^T \| p_t^T)` (``reverse_kl``), at
  :math:`\beta = 1`. The ends follow TRL's ``GKDTrainer.generalized_jsd_loss`` (Agarwal et
  al.'s GKD), which the formula only reaches up to scale: :math:`L/\beta \to` forward KL as
  :math:`\beta \to 0` and :math:`L/(1-\beta) \to` reverse KL as :math:`\beta \to 1`, while
  :math:`L` itself tends to 0. Bounded by :math:`T^2 \log 2` at :math:`\beta = 1/2`.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    beta: :math:`\beta \in [0, 1]`, a scalar (traced values are allowed).
    temperature: T > 0.

  Returns:
    Per-example losses ``[...]``, >= 0.

  Raises:
    ValueError: on mismatched shapes, non-float logits, ``beta`` outside ``[0, 1]`` or
      ``temperature <= 0`` (values checked when concrete).

  References:
    Agarwal et al., "On-Policy Distillation of Language Models: Learning from Self-Generated
    Mistakes" (GKD), ICLR 2024, eq. (1); TRL ``trl/trainer/gkd_trainer.py``.

  Example:
    >>> from kdjax.losses import kd
    >>> s, t = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[3.0, 2.0, 1.0]])
    >>> bool(jnp.allclose(jensen_shannon(s, t, beta=0.0), kd(s, t)))
    True
    >>> bool(jnp.allclose(jensen_shannon(s, t, beta=1.0), reverse_kl(s, t)))
    True
    >>> jensen_shannon(s, t, beta=1.5)
    Traceback (most recent call last):
    ...
    ValueError: beta=1.5 must lie in [0.0, 1.0].
  """
  v.check_in_range("beta", beta, 0.0, 1.0)
  s, t = v.checked_pair(student_logits, teacher_logits, temperature)
  beta = jnp.asarray(beta, s.dtype)
  log_p, log_ratio = _tempered_log_ratio(s, t, temperature)
  mixture = jnp.sum(_jensen_shannon_summands(log_p, log_ratio, beta), axis=-1)
  forward, reverse = tempered.tempered_kl(s, t, temperature), tempered.tempered_kl(
      t, s, temperature)
  return jnp.where(beta == 0.0, forward,
                   jnp.where(beta == 1.0, reverse, temperature**2 * mixture))


def total_variation(student_logits: jax.typing.ArrayLike,
                    teacher_logits: jax.typing.ArrayLike,
                    temperature: jax.typing.ArrayLike = 4.0) -> jax.Array:
  r"""Per-example total variation distance between the tempered distributions.

  .. math::
     L = T^2 \cdot \tfrac12 \textstyle\sum_k \big|p^T_{t,k} - p^T_{s,k}\big|

  A bounded metric (at most :math:`T^2`); its gradient does not grow with the teacher's
  confidence as KL's does. Scaled by :math:`T^2` like ``kd`` so that the divergences are
  interchangeable in a config; at T = 1 it is the distance itself.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    temperature: T > 0.

  Returns:
    Per-example losses ``[...]``, in ``[0, T²]``.

  Raises:
    ValueError: on mismatched shapes, non-float logits or ``temperature <= 0``.

  References:
    Wen et al., "f-Divergence Minimization for Sequence-Level Knowledge Distillation",
    ACL 2023.

  Example:
    >>> s, t = jnp.array([[0.0, 0.0]]), jnp.array([[100.0, 0.0]])
    >>> total_variation(s, t, temperature=1.0).round(4).tolist()  # ½(|1 - ½| + |0 - ½|)
    [0.5]
  """
  s, t = v.checked_pair(student_logits, teacher_logits, temperature)
  log_p, log_ratio = _tempered_log_ratio(s, t, temperature)
  # |p_s - p_t| = max(p_s, p_t) (1 - e^{-|λ|}): relative precision, no overflow.
  difference = -jnp.exp(log_p + jnp.maximum(log_ratio, 0.0)) * jnp.expm1(-jnp.abs(log_ratio))
  return temperature**2 * 0.5 * jnp.sum(difference, axis=-1)
