"""DIST against a float64 port of the official code, the batch coupling, and the method.

Reference: ``DIST`` and its helpers in hunto/image_classification_sota,
``lib/models/losses/dist_kd.py`` (the same code as mmrazor's ``DISTLoss``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_testlib as ref

from configs import base
from kdjax import losses, methods, objective


def _softmax(z):
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def _cosine_similarity(a, b, eps=1e-8):
  return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)


def _pearson_correlation(a, b, eps=1e-8):
  return _cosine_similarity(a - a.mean(1)[:, None], b - b.mean(1)[:, None], eps)


def _inter_class_relation(y_s, y_t):
  return 1 - _pearson_correlation(y_s, y_t).mean()


def _intra_class_relation(y_s, y_t):
  return _inter_class_relation(y_s.T, y_t.T)


def _dist(z_s, z_t, beta=1.0, gamma=1.0, tau=1.0):
  """DIST.forward."""
  y_s, y_t = _softmax(z_s / tau), _softmax(z_t / tau)
  inter_loss = tau**2 * _inter_class_relation(y_s, y_t)
  intra_loss = tau**2 * _intra_class_relation(y_s, y_t)
  return beta * inter_loss + gamma * intra_loss


S, T = ref.random_logits(0, (8, 10)), ref.random_logits(1, (8, 10))


@pytest.mark.parametrize("beta, gamma, tau", [(1.0, 1.0, 1.0), (2.0, 2.0, 4.0),
                                              (1.0, 0.0, 2.0), (0.0, 1.0, 2.0)])
def test_dist_matches_the_official_code(beta, gamma, tau):
  ref.assert_matches_reference(lambda x: losses.dist(x, T, tau, beta, gamma),
                               lambda x: _dist(x, T, beta, gamma, tau), S)


def test_objective_term_is_the_batch_loss_with_padding_left_out():
  dist = objective.term(methods.DIST_TERM, temperature=4.0, beta=2.0, gamma=2.0)
  obj = objective.Objective((dist,))
  padded_s = np.concatenate([S, ref.random_logits(5, (3, 10))])
  padded_t = np.concatenate([T, ref.random_logits(6, (3, 10))])
  mask = jnp.arange(11) < 8

  def loss(x):
    total, _ = obj.loss({"logits": x}, {"logits": jnp.asarray(padded_t)[None]}, None, mask,
                        obj.schedule_values(0), jax.random.key(0))
    return total

  with jax.enable_x64(True):
    value, gradient = jax.value_and_grad(loss)(jnp.asarray(padded_s))
    nan_padding = loss(jnp.asarray(padded_s).at[8:].set(jnp.nan))
  np.testing.assert_allclose(value, _dist(S, T, 2.0, 2.0, 4.0), rtol=1e-6)
  np.testing.assert_allclose(nan_padding, value, rtol=1e-12)
  np.testing.assert_allclose(gradient[:8], ref.numeric_gradient(
      lambda x: _dist(x, T, 2.0, 2.0, 4.0), S), rtol=1e-5, atol=1e-7)
  assert not np.any(gradient[8:])


def test_intra_class_couples_the_batch_and_inter_class_does_not():
  s, t = jnp.asarray(S), jnp.asarray(T)
  with jax.enable_x64(True):
    inter_jacobian = jax.jacobian(lambda x: losses.dist_inter_class(x, t, 4.0))(s)
    intra_gradient = jax.grad(lambda x: losses.dist_intra_class(x, t, 4.0))(s)
  off_diagonal = inter_jacobian.sum(-1) * (1 - np.eye(8))  # d L_i / d s_j, i != j
  assert not np.any(off_diagonal)
  # Changing one example changes the intra-class relation the others are scored by.
  changed = s.at[0].set(-s[0])
  assert float(losses.dist_intra_class(changed, t)) != float(losses.dist_intra_class(s, t))
  assert np.all(np.abs(intra_gradient).sum(-1) > 0)


def test_invariances_and_zero_on_itself():
  s = jnp.asarray(S, jnp.float32)
  np.testing.assert_allclose(losses.dist(s, s, 4.0), 0.0, atol=1e-4)  # 16 · float32 eps
  perm = np.random.default_rng(2).permutation(8)
  np.testing.assert_allclose(losses.dist(s[perm], jnp.asarray(T)[perm], 4.0),
                             losses.dist(s, jnp.asarray(T), 4.0), rtol=1e-5)
  assert not np.any(jax.grad(lambda x: losses.dist(s, x, 4.0))(jnp.asarray(T, jnp.float32)))


def test_batch_of_one_is_finite():
  value, gradient = jax.value_and_grad(lambda x: losses.dist(x, jnp.ones((1, 4)), 2.0))(
      jnp.zeros((1, 4)))
  assert np.isfinite(value) and np.all(np.isfinite(gradient))


def test_the_method_reads_its_fields():
  loss = base.loss_config("dist", beta=1.0, gamma=3.0, temperature=4.0, ce_weight=1.0,
                   kd_weight=1.0)
  obj = methods.get("dist").build(loss, 10, {}, 1).objective
  values = obj.schedule_values(0)
  assert [t.name for t in obj.terms] == ["ce", "dist"]
  assert (float(values["dist/beta"]), float(values["dist/gamma"])) == (1.0, 3.0)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.dist(jnp.zeros((2, 3)), jnp.zeros((2, 3)), beta=-1.0),
     r"beta=-1.0 must lie in \[0.0, inf\)"),
    (lambda: losses.dist(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0), "temperature=0.0"),
    (lambda: losses.dist_intra_class(jnp.zeros((2, 3)), jnp.zeros((2, 3)), where=jnp.ones(3)),
     r"where shape \(3,\)"),
    (lambda: methods.get("dist").build(base.loss_config("dist", gamma=-2.0), 10, {}, 1),
     r"dist/gamma must lie in \[0.0, inf\); it is -2.0"),
])
def test_bad_input_is_refused(call, match):
  with pytest.raises(ValueError, match=match):
    call()
