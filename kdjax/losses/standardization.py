"""Logit standardization: z-scored logits before the temperature, for any softmax loss."""

import jax
import jax.numpy as jnp

from kdjax.losses import validation as v

EPSILON = 1e-7


def standardize_logits(logits: jax.typing.ArrayLike, *, epsilon: float = EPSILON) -> jax.Array:
  r"""Z-scores logits over the class axis (Sun et al.'s logit standardization).

  .. math::
     \mathcal Z(z)_k = \frac{z_k - \bar z}{\epsilon + \sigma(z)},\qquad
     \sigma(z) = \sqrt{\tfrac{1}{K - 1}\textstyle\sum_k (z_k - \bar z)^2}

  Softmax losses applied to :math:`\mathcal Z(s)` and :math:`\mathcal Z(t)` at a base
  temperature no longer ask the student to match the teacher's logit range and shift, only
  their relations: in effect each side gets its own temperature, proportional to its logit
  spread. Use it through the ``logit_standardization`` option of the softmax terms of
  ``kdjax.objective`` (KD, DKD, DKP, DGKD, ensembles, DIST and the divergences) rather than
  by hand. Like the official code (and torchdistill's ``LogitStdKDLoss``), :math:`\sigma` is
  the unbiased standard deviation and :math:`\epsilon` is added to it, not under the root.
  The one departure is at zero spread (a row of equal logits): torch's ``std`` then has a
  NaN gradient, here :math:`\sigma` has a zero one, so such a row maps to 0 with the finite
  Jacobian :math:`(I - \tfrac1K \mathbf 1 \mathbf 1^\top)/\epsilon`; elsewhere the two agree.

  Args:
    logits: ``[..., K]`` with K >= 2, floating point.
    epsilon: :math:`\epsilon > 0`, keeps constant logits finite (they map to 0).

  Returns:
    Standardized logits ``[..., K]``: mean 0, unbiased standard deviation just under 1.

  Raises:
    ValueError: on non-float logits, fewer than 2 classes (no spread to divide by) or an
      ``epsilon`` that is not finite and > 0.

  References:
    Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024
    (github.com/sunshangquan/logit-standardization-KD, ``mdistiller/distillers/KD.py``).

  Example:
    >>> standardize_logits(jnp.array([[1.0, 2.0, 3.0]])).round(4).tolist()
    [[-1.0, 0.0, 1.0]]
    >>> standardize_logits(jnp.array([[2.0]]))
    Traceback (most recent call last):
    ...
    ValueError: logit standardization needs K >= 2 classes; got logits of shape (1, 1).
  """
  z = jnp.asarray(logits)
  v.check_logits("logits", z)
  if z.shape[-1] < 2:
    raise ValueError(f"logit standardization needs K >= 2 classes; got logits of shape "
                     f"{z.shape}.")
  v.check_positive("epsilon", epsilon)
  centered = z - jnp.mean(z, axis=-1, keepdims=True)
  variance = jnp.sum(centered * centered, axis=-1, keepdims=True) / (z.shape[-1] - 1)
  spread = variance > 0
  std = jnp.where(spread, jnp.sqrt(jnp.where(spread, variance, 1.0)), 0.0)
  return centered / (epsilon + std)
