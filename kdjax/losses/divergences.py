"""Divergences beyond forward KL as per-example distillation losses: reverse KL, generalized
Jensen–Shannon and total variation, on the same footing as ``kd``."""

import jax
import jax.numpy as jnp
import optax

from kdjax.losses import tempered
from kdjax.losses import validation as v


def _log_probs(s: jax.typing.ArrayLike, t: jax.typing.ArrayLike,
               temperature) -> tuple[jax.Array, jax.Array]:
  """Checks shapes and temperature; returns tempered log-probabilities (teacher constant)."""
  s, t = jnp.asarray(s), jnp.asarray(t)
  v.check_same_shape(s, t)
  v.check_positive("temperature", temperature)
  t = jax.lax.stop_gradient(t)
  return jax.nn.log_softmax(s / temperature), jax.nn.log_softmax(t / temperature)


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
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  v.check_same_shape(s, t)
  v.check_positive("temperature", temperature)
  # Forward KL with the roles swapped, through the primitive that stays exact at any T.
  return tempered.tempered_kl(jax.lax.stop_gradient(t), s, temperature)


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
  log_ps, log_pt = _log_probs(student_logits, teacher_logits, temperature)
  beta = jnp.asarray(beta, log_ps.dtype)
  # log m; at beta = 0 or 1 one log weight is -inf and logaddexp keeps the other side.
  log_m = jnp.logaddexp(log_ps + jnp.log1p(-beta), log_pt + jnp.log(beta))
  kl = optax.losses.kl_divergence_with_log_targets
  mixture = beta * kl(log_m, log_pt) + (1.0 - beta) * kl(log_m, log_ps)
  value = jnp.where(beta == 0.0, kl(log_ps, log_pt),
                    jnp.where(beta == 1.0, kl(log_pt, log_ps), mixture))
  return temperature**2 * value


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
  log_ps, log_pt = _log_probs(student_logits, teacher_logits, temperature)
  return temperature**2 * 0.5 * jnp.sum(jnp.abs(jnp.exp(log_pt) - jnp.exp(log_ps)), axis=-1)
