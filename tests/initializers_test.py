"""Tests of kdjax.initializers."""

import flax.linen as nn
import jax
import numpy as np

from kdjax import initializers


def test_zero_mean_centres_the_class_axis_and_keeps_the_spread():
  base = nn.initializers.lecun_normal()
  w = initializers.zero_mean(base)(jax.random.key(0), (64, 10))
  np.testing.assert_allclose(np.asarray(w).mean(axis=-1), 0.0, atol=1e-6)
  raw = base(jax.random.key(0), (64, 10))
  np.testing.assert_allclose(w, raw - raw.mean(axis=-1, keepdims=True), rtol=1e-6)


def test_zero_mean_head_gives_zero_mean_logits():
  head = nn.Dense(7, kernel_init=initializers.zero_mean())
  x = jax.random.normal(jax.random.key(1), (5, 3))
  logits = head.apply(head.init(jax.random.key(2), x), x)
  np.testing.assert_allclose(np.asarray(logits).mean(axis=-1), 0.0, atol=1e-6)
