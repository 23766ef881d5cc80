"""The one place where per-example losses become a scalar."""

import jax
import jax.numpy as jnp


def reduce_mean(values: jax.typing.ArrayLike,
                mask: jax.typing.ArrayLike | None = None,
                weights: jax.typing.ArrayLike | None = None) -> jax.Array:
  r"""Weighted mean of per-example values over every axis.

  .. math::
     \bar L = \frac{\sum_i w_i m_i L_i}{\max(\sum_i w_i m_i,\ \epsilon)}

  Padding examples (``mask`` False) contribute nothing, so a padded batch gives the same
  value as the batch sliced to its real examples. An all-masked batch gives 0.

  Args:
    values: per-example losses, shape ``[...]``.
    mask: optional boolean ``[...]``; False marks padding.
    weights: optional non-negative per-example weights ``[...]``.

  Returns:
    A scalar ``jax.Array``.

  Raises:
    ValueError: if ``mask`` or ``weights`` do not have the shape of ``values``.

  Example:
    >>> float(reduce_mean(jnp.array([1.0, 3.0, 100.0]), mask=jnp.array([True, True, False])))
    2.0
  """
  values = jnp.asarray(values)
  w = jnp.ones(values.shape, values.dtype)
  for name, extra in (("mask", mask), ("weights", weights)):
    if extra is None:
      continue
    extra = jnp.asarray(extra)
    if extra.shape != values.shape:
      raise ValueError(f"{name} shape {extra.shape} must equal the values' shape {values.shape}.")
    w = w * extra.astype(values.dtype)
  total = jnp.sum(w)
  # `where` keeps a NaN in a padded example from leaking into the mean.
  numerator = jnp.sum(jnp.where(w > 0, values * w, 0.0))
  return numerator / jnp.maximum(total, jnp.finfo(values.dtype).tiny)
