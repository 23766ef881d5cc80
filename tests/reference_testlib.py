"""Helpers for reference tests: official implementations ported to float64 NumPy.

A port gives values; its gradients come from central differences in float64, so a JAX loss
is checked against the official code on both, with no autodiff shared between the two.
"""

from collections.abc import Callable

import jax
import numpy as np


def numeric_gradient(f: Callable[[np.ndarray], float], x: np.ndarray,
                     step: float = 1e-6) -> np.ndarray:
  """Central-difference gradient of a scalar float64 function ``f`` at ``x``."""
  x = np.asarray(x, np.float64)
  gradient = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    up, down = x.copy(), x.copy()
    up[index] += step
    down[index] -= step
    gradient[index] = (f(up) - f(down)) / (2 * step)
  return gradient


def jax_value_and_gradient(f: Callable[[jax.Array], jax.Array], x: np.ndarray
                           ) -> tuple[float, np.ndarray]:
  """``f``'s value and gradient at ``x``, computed by JAX in float64."""
  with jax.enable_x64(True):
    value, gradient = jax.value_and_grad(f)(jax.numpy.asarray(x, jax.numpy.float64))
    return float(value), np.asarray(gradient)


def assert_matches_reference(f: Callable[[jax.Array], jax.Array],
                             reference: Callable[[np.ndarray], float], x: np.ndarray,
                             rtol: float = 1e-6, atol: float = 1e-8) -> None:
  """Checks ``f`` against ``reference`` at ``x``: values and gradients, in float64."""
  value, gradient = jax_value_and_gradient(f, x)
  np.testing.assert_allclose(value, reference(np.asarray(x, np.float64)), rtol=rtol, atol=atol)
  np.testing.assert_allclose(gradient, numeric_gradient(reference, x), rtol=1e-5, atol=1e-7)


def log_softmax(z: np.ndarray) -> np.ndarray:
  """``log softmax(z)`` over the last axis, stably (the ports' ``F.log_softmax``)."""
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def random_logits(seed: int, shape, scale: float = 3.0) -> np.ndarray:
  """Seeded float64 logits."""
  return np.random.default_rng(seed).normal(scale=scale, size=shape)
