"""Tests for kdjax/losses/tempered.py: every tempered loss is accurate at any temperature.

References are the textbook formulas (and the official code's, ported in
``official_ports``) evaluated in np.longdouble: their cancellation costs T² · 1e-19, far
below float32's precision even at T = 1e6, where float64 itself would lose 1e-4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import official_ports as ports
import pytest

from kdjax import losses
from kdjax.losses import tempered

LD = np.longdouble
TEMPERATURES = [1.0, 4.0, 100.0, 1e3, 1e4, 1e5, 1e6]


def _logits(seed, scale, shape=(8, 10)):
  rng = np.random.default_rng(seed)
  return (scale * rng.normal(size=shape)).astype(np.float32)


def _ref_kd(s, t, temperature):
  s, t, temperature = s.astype(LD), t.astype(LD), LD(temperature)
  log_p, log_q = ports.log_softmax(t / temperature, -1), ports.log_softmax(s / temperature, -1)
  return temperature**2 * np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def _ref_kd_grad(s, t, temperature):
  s, t, temperature = s.astype(LD), t.astype(LD), LD(temperature)
  return temperature * (ports.softmax(s / temperature, -1) - ports.softmax(t / temperature, -1))


def _textbook_float32(s, t, temperature):
  """KD as kdjax computed it before this module: T² · KL of two log-softmaxes."""
  log_p, log_q = jax.nn.log_softmax(t / temperature), jax.nn.log_softmax(s / temperature)
  return temperature**2 * jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def _assert_close(actual, expected, rtol):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0)


@pytest.mark.parametrize("scale", [0.1, 2.0, 20.0])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_kd_value_and_gradient_match_extended_precision(temperature, scale):
  s, t = _logits(0, scale), _logits(1, scale)
  _assert_close(losses.kd(s, t, temperature), _ref_kd(s, t, temperature), rtol=1e-3)
  grad = jax.grad(lambda x: jnp.sum(losses.kd(x, t, temperature)))(s)
  ref = _ref_kd_grad(s, t, temperature)
  error = np.max(np.abs(np.asarray(grad, LD) - ref)) / np.max(np.abs(ref))
  assert error < 1e-4


def test_the_textbook_form_fails_where_this_holds():
  """The reason for the module: at T = 1e4 the float32 textbook value is off by far more."""
  s, t = _logits(0, 2.0), _logits(1, 2.0)
  ref = _ref_kd(s, t, 1e4)
  assert np.max(np.abs(np.asarray(_textbook_float32(s, t, 1e4)) - ref) / ref) > 0.1


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_unchanged_at_ordinary_temperatures(temperature):
  s, t = _logits(2, 3.0, (64, 100)), _logits(3, 3.0, (64, 100))
  np.testing.assert_allclose(losses.kd(s, t, temperature), _textbook_float32(s, t, temperature),
                             rtol=2e-5, atol=1e-6)
  grad = jax.grad(lambda x: jnp.sum(losses.kd(x, t, temperature)))(s)
  old = jax.grad(lambda x: jnp.sum(_textbook_float32(x, t, temperature)))(s)
  np.testing.assert_allclose(grad, old, rtol=1e-4, atol=1e-7)


def test_kd_tends_to_centered_logits_matching():
  s, t = _logits(4, 2.0), _logits(5, 2.0)
  limit = np.asarray(losses.logits_matching(s, t, centered=True))
  errors = [np.max(np.abs(np.asarray(losses.kd(s, t, temperature)) - limit) / limit)
            for temperature in (1e2, 1e3, 1e4, 1e5, 1e6)]
  # O(1/T) until float32's floor.
  assert all(b < a for a, b in zip(errors[:3], errors[1:4], strict=True))
  assert errors[-1] < 1e-5


def test_kd_is_finite_far_from_the_teacher():
  s = np.array([[1e4, -1e4, 0.0], [-3e3, 5e3, 1.0]], np.float32)
  value = losses.kd(s, -s, 1.0)
  grad = jax.grad(lambda x: jnp.sum(losses.kd(x, -s, 1.0)))(s)
  _assert_close(value, _ref_kd(s, -s, 1.0), rtol=1e-5)
  assert np.all(np.isfinite(grad))


def test_kl_of_logit_shift_restricted_classes():
  a, shift = _logits(6, 1.0), _logits(7, 1e-3)
  where = np.arange(10) % 3 != 0
  value = tempered.kl_of_logit_shift(a, shift, where=np.broadcast_to(where, a.shape))
  a_r, b_r = a[:, where].astype(LD), (a - shift)[:, where].astype(LD)
  log_p, log_q = ports.log_softmax(a_r, -1), ports.log_softmax(b_r, -1)
  _assert_close(value, np.sum(np.exp(log_p) * (log_p - log_q), -1), rtol=1e-3)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_dkd_matches_mdistiller(temperature):
  """mdistiller's dkd_loss (the batch mean), in extended precision; values and gradients."""
  s, t = _logits(8, 2.0), _logits(9, 2.0)
  labels = np.arange(8) % 10
  alpha, beta = 1.0, 8.0
  value = jnp.mean(losses.dkd(s, t, labels, alpha, beta, temperature))
  ref = ports.dkd_loss(s.astype(LD), t.astype(LD), labels, alpha, beta, LD(temperature))
  _assert_close(value, ref, rtol=1e-3)
  grad = np.asarray(jax.grad(
      lambda x: jnp.mean(losses.dkd(x, t, labels, alpha, beta, temperature)))(s), LD)
  h = LD(1e-4) * temperature  # central differences: O(h²/T²) truncation, far below 1e-3
  ref_grad = np.zeros_like(grad)
  for index in np.ndindex(*s.shape):
    up, down = s.astype(LD), s.astype(LD)
    up[index] += h
    down[index] -= h
    ref_grad[index] = (ports.dkd_loss(up, t.astype(LD), labels, alpha, beta, LD(temperature))
                       - ports.dkd_loss(down, t.astype(LD), labels, alpha, beta,
                                        LD(temperature))) / (2 * h)
  assert np.max(np.abs(grad - ref_grad)) / np.max(np.abs(ref_grad)) < 1e-3


@pytest.mark.parametrize("temperature", [1.0, 5.0, 1e3, 1e6])
def test_dgkd_matches_the_official_loss(temperature):
  """DGKD's train.py loss at its defaults (λ = 1: no CE; drop_num = 1), the same drop."""
  s = _logits(10, 2.0)
  teachers = np.stack([_logits(11, 2.0), _logits(12, 2.0), _logits(13, 2.0)])
  labels = np.arange(8) % 10
  key = jax.random.key(0)
  keep = np.asarray(losses.teacher_keep_mask(key, 3, mode="code", drop_num=1))
  official = ports.dgkd_loss(s.astype(LD), teachers[0].astype(LD),
                             [teachers[1].astype(LD), teachers[2].astype(LD)], labels,
                             lambda_=1.0, T=LD(temperature), dropped=np.flatnonzero(~keep))
  ours = losses.dgkd(s, teachers, key, temperature, mode="code", drop_num=1,
                     class_reduction="mean")
  _assert_close(jnp.mean(ours), official, rtol=1e-3)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 1e3, 1e6])
def test_ensemble_matches_extended_precision(temperature):
  s = _logits(14, 2.0)
  teachers = np.stack([_logits(15, 2.0), _logits(16, 2.0)])
  mixture = np.mean(ports.softmax(teachers.astype(LD) / LD(temperature), -1), axis=0)
  log_q = ports.log_softmax(s.astype(LD) / LD(temperature), -1)
  ref = LD(temperature)**2 * np.sum(mixture * (np.log(mixture) - log_q), axis=-1)
  _assert_close(losses.ensemble_kd(s, teachers, temperature), ref, rtol=1e-3)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 1e3, 1e6])
def test_dkp_tail_matches_extended_precision(temperature):
  s, t = _logits(17, 2.0), _logits(18, 2.0)
  labels = np.arange(8) % 10
  top_k = 3
  ref = []
  for i in range(8):
    ranked = np.argsort(-np.where(np.arange(10) == labels[i], -np.inf, t[i]))
    rest = np.sort(ranked[top_k:9])  # all but the target and the top_k
    zt, zs = t[i].astype(LD) / LD(temperature), s[i].astype(LD) / LD(temperature)
    p_t = ports.softmax(zt[None], -1)[0]
    log_pr, log_qr = ports.log_softmax(zt[rest][None], -1)[0], ports.log_softmax(
        zs[rest][None], -1)[0]
    kl_rest = np.sum(np.exp(log_pr) * (log_pr - log_qr))
    ref.append(-LD(temperature)**2 * p_t[rest].sum() * kl_rest)
  value = losses.dkp(s, t, temperature, 1.0, "tail", labels=labels, top_k=top_k)
  _assert_close(value, np.array(ref), rtol=1e-3)


def test_log_mean_exp_near_zero_keeps_absolute_precision():
  x = (1e-6 * np.random.default_rng(19).normal(size=(5, 3))).astype(np.float32)
  ref = np.log(np.mean(np.exp(x.astype(LD)), axis=0, keepdims=True))
  np.testing.assert_allclose(tempered.log_mean_exp(x, axis=0), ref.astype(np.float64),
                             rtol=0, atol=1e-12)


def _ref_jensen_shannon(s, t, beta, temperature):
  """T²·(β KL(p_t‖m) + (1 − β) KL(p_s‖m)), m = β p_t + (1 − β) p_s; KL at the ends."""
  s, t, temperature = s.astype(LD), t.astype(LD), LD(temperature)
  log_pt, log_ps = ports.log_softmax(t / temperature, -1), ports.log_softmax(s / temperature, -1)
  if beta == 0.0:
    value = np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=-1)
  elif beta == 1.0:
    value = np.sum(np.exp(log_ps) * (log_ps - log_pt), axis=-1)
  else:
    beta = LD(beta)
    log_m = np.log(beta * np.exp(log_pt) + (1 - beta) * np.exp(log_ps))
    value = (beta * np.sum(np.exp(log_pt) * (log_pt - log_m), axis=-1)
             + (1 - beta) * np.sum(np.exp(log_ps) * (log_ps - log_m), axis=-1))
  return temperature**2 * value


def _ref_total_variation(s, t, temperature):
  s, t, temperature = s.astype(LD), t.astype(LD), LD(temperature)
  p, q = ports.softmax(t / temperature, -1), ports.softmax(s / temperature, -1)
  return temperature**2 * np.sum(np.abs(p - q), axis=-1) / 2


def _ref_sparse_kd(s, t, k, temperature):
  """T²·KL over the outcomes (each of the teacher's top k classes, any other class)."""
  s, t, temperature = s.astype(LD), t.astype(LD), LD(temperature)
  p, q = ports.softmax(t / temperature, -1), ports.softmax(s / temperature, -1)
  top = np.argsort(-t, axis=-1, kind="stable")[:, :k]
  p_top, q_top = np.take_along_axis(p, top, -1), np.take_along_axis(q, top, -1)
  tail = ~np.any(np.arange(t.shape[-1])[:, None] == top[..., None, :], axis=-1)
  p_tail, q_tail = np.sum(np.where(tail, p, 0), -1), np.sum(np.where(tail, q, 0), -1)
  value = np.sum(p_top * np.log(p_top / q_top), axis=-1)
  if k < t.shape[-1]:
    value += p_tail * np.log(p_tail / q_tail)
  return temperature**2 * value


def _ref_gradient(reference, s, step):
  """Central differences of ``sum(reference(s))`` in extended precision."""
  h = LD(step)
  s = s.astype(LD)
  gradient = np.zeros_like(s)
  for index in np.ndindex(*s.shape):
    up, down = s.copy(), s.copy()
    up[index] += h
    down[index] -= h
    gradient[index] = (np.sum(reference(up)) - np.sum(reference(down))) / (2 * h)
  return gradient


def _assert_loss_and_gradient(loss, reference, s, step):
  """Value and gradient within 1e-3 of ``reference``'s, its gradient by central differences.

  A smooth loss takes ``step = 1e-4·T``: truncation is O(step²/T²), and rounding (the
  reference's T²·1e-19) is divided by a step that grows with T. Total variation has kinks
  where p_s,k = p_t,k, which lie O(1) apart in the logits at any T: it takes 1e-4.
  """
  _assert_close(loss(s), reference(s), rtol=1e-3)
  grad = np.asarray(jax.grad(lambda x: jnp.sum(loss(x)))(s), LD)
  ref = _ref_gradient(reference, s, step)
  assert np.max(np.abs(grad - ref)) / np.max(np.abs(ref)) < 1e-3


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_jensen_shannon_matches_extended_precision(temperature, beta):
  s, t = _logits(20, 2.0), _logits(21, 2.0)
  _assert_loss_and_gradient(lambda x: losses.jensen_shannon(x, t, beta, temperature),
                            lambda x: _ref_jensen_shannon(x, t, beta, temperature), s,
                            1e-4 * temperature)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_total_variation_matches_extended_precision(temperature):
  s, t = _logits(22, 2.0), _logits(23, 2.0)
  _assert_loss_and_gradient(lambda x: losses.total_variation(x, t, temperature),
                            lambda x: _ref_total_variation(x, t, temperature), s, 1e-4)


@pytest.mark.parametrize("k", [1, 4, 10])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_sparse_kd_matches_extended_precision(temperature, k):
  s, t = _logits(24, 2.0), _logits(25, 2.0)
  targets = losses.sparse_targets(t, k, temperature)
  _assert_loss_and_gradient(lambda x: losses.sparse_kd(x, targets, temperature),
                            lambda x: _ref_sparse_kd(x, t, k, temperature), s,
                            1e-4 * temperature)


@pytest.mark.parametrize("temperature", [1e-2, 0.1])
def test_divergences_at_small_temperatures(temperature):
  """Far from the teacher the divergences leave their near-0 forms: still exact."""
  s, t = _logits(26, 2.0), _logits(27, 2.0)
  for beta in (0.0, 0.5, 1.0):
    _assert_close(losses.jensen_shannon(s, t, beta, temperature),
                  _ref_jensen_shannon(s, t, beta, temperature), rtol=1e-4)
  _assert_close(losses.total_variation(s, t, temperature),
                _ref_total_variation(s, t, temperature), rtol=1e-4)
  targets = losses.sparse_targets(t, 4, temperature)
  _assert_close(losses.sparse_kd(s, targets, temperature), _ref_sparse_kd(s, t, 4, temperature),
                rtol=1e-4)
