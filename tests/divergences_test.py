"""Reverse KL, generalized Jensen–Shannon and total variation against float64 references.

Reverse KL and the generalized JSD are checked against a port of TRL's
``GKDTrainer.generalized_jsd_loss`` (``trl/trainer/gkd_trainer.py``, reduction "none" summed
over classes), whose ends β = 0 and β = 1 are forward and reverse KL; kdjax multiplies every
divergence by T², as ``kd``. Total variation against its closed form.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_testlib as ref

from configs import base
from kdjax import losses, methods


def _kl_div(input_log, target_log):
  """torch F.kl_div(input, target, reduction="none", log_target=True)."""
  return np.exp(target_log) * (target_log - input_log)


def _generalized_jsd_loss(student_logits, teacher_logits, beta=0.5, temperature=1.0):
  """trl/trainer/gkd_trainer.py: generalized_jsd_loss, per position (summed over classes)."""
  student_log_probs = ref.log_softmax(student_logits / temperature)
  teacher_log_probs = ref.log_softmax(teacher_logits / temperature)
  if beta == 0:
    jsd = _kl_div(student_log_probs, teacher_log_probs)
  elif beta == 1:
    jsd = _kl_div(teacher_log_probs, student_log_probs)
  else:
    mixture_log_probs = np.logaddexp(student_log_probs + math.log1p(-beta),
                                     teacher_log_probs + math.log(beta))
    kl_teacher = _kl_div(mixture_log_probs, teacher_log_probs)
    kl_student = _kl_div(mixture_log_probs, student_log_probs)
    jsd = beta * kl_teacher + (1 - beta) * kl_student
  return jsd.sum(-1)


S, T = ref.random_logits(0, (5, 8)), ref.random_logits(1, (5, 8))


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_jensen_shannon_matches_trl(beta, temperature):
  ref.assert_matches_reference(
      lambda x: losses.jensen_shannon(x, T, beta, temperature).sum(),
      lambda x: temperature**2 * _generalized_jsd_loss(x, T, beta, temperature).sum(), S)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_reverse_kl_matches_trl_at_beta_one(temperature):
  ref.assert_matches_reference(
      lambda x: losses.reverse_kl(x, T, temperature).sum(),
      lambda x: temperature**2 * _generalized_jsd_loss(x, T, 1.0, temperature).sum(), S)


def test_jensen_shannon_ends_are_forward_and_reverse_kl_and_their_limits():
  with jax.enable_x64(True):
    np.testing.assert_allclose(losses.jensen_shannon(S, T, 0.0, 2.0), losses.kd(S, T, 2.0),
                               rtol=1e-12)
    np.testing.assert_allclose(losses.jensen_shannon(S, T, 1.0, 2.0),
                               losses.reverse_kl(S, T, 2.0), rtol=1e-12)
    # Inside (0, 1) the ends are reached up to scale: L/β → KL(p_t‖p_s), L/(1-β) → KL(p_s‖p_t).
    small = 1e-6
    np.testing.assert_allclose(losses.jensen_shannon(S, T, small, 2.0) / small,
                               losses.kd(S, T, 2.0), rtol=1e-4)
    np.testing.assert_allclose(losses.jensen_shannon(S, T, 1 - small, 2.0) / small,
                               losses.reverse_kl(S, T, 2.0), rtol=1e-4)


def test_jensen_shannon_is_symmetric_and_bounded_at_one_half():
  with jax.enable_x64(True):
    np.testing.assert_allclose(losses.jensen_shannon(S, T, 0.5, 1.0),
                               losses.jensen_shannon(T, S, 0.5, 1.0), rtol=1e-12)
    assert np.all(losses.jensen_shannon(100 * S, 100 * T, 0.5, 1.0) <= math.log(2) + 1e-12)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_total_variation_matches_its_closed_form(temperature):
  def reference(x):
    p, q = np.exp(ref.log_softmax(T / temperature)), np.exp(ref.log_softmax(x / temperature))
    return temperature**2 * 0.5 * np.abs(p - q).sum()

  ref.assert_matches_reference(lambda x: losses.total_variation(x, T, temperature).sum(),
                               reference, S)


@pytest.mark.parametrize("name", ["reverse_kl", "jensen_shannon", "total_variation"])
def test_zero_on_itself_nonnegative_and_no_teacher_gradient(name):
  loss = getattr(losses, name)
  s, t = jnp.asarray(S, jnp.float32), jnp.asarray(T, jnp.float32)
  np.testing.assert_allclose(loss(s, s), 0.0, atol=1e-6)
  assert np.all(loss(s, t) >= 0)
  assert not np.any(jax.grad(lambda x: loss(s, x).sum())(t))
  assert np.all(np.isfinite(jax.grad(lambda x: loss(x, t).sum())(1e4 * s)))


def test_traced_beta_picks_the_same_branches():
  s, t = jnp.asarray(S, jnp.float32), jnp.asarray(T, jnp.float32)
  jitted = jax.jit(losses.jensen_shannon)
  for beta in (0.0, 0.3, 1.0):
    np.testing.assert_allclose(jitted(s, t, beta, 4.0), losses.jensen_shannon(s, t, beta, 4.0),
                               rtol=1e-5)
    assert np.all(np.isfinite(jax.grad(lambda x, b=beta: jitted(x, t, b, 4.0).sum())(s)))


@pytest.mark.parametrize("name", ["reverse_kl", "jensen_shannon", "total_variation"])
def test_the_divergence_method_builds_each(name):
  loss = base.loss_config("divergence", divergence=name, beta=0.25, temperature=2.0)
  objective = methods.get("divergence").build(loss, 10, {}, 1).objective
  assert [t.name for t in objective.terms] == ["ce", name]
  values = objective.schedule_values(0)
  assert float(values[f"{name}/temperature"]) == 2.0
  if name == "jensen_shannon":
    assert float(values["jensen_shannon/beta"]) == 0.25


@pytest.mark.parametrize("call, match", [
    (lambda: losses.jensen_shannon(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 1.5),
     r"beta=1.5 must lie in \[0.0, 1.0\]"),
    (lambda: losses.jensen_shannon(jnp.zeros((2, 3)), jnp.zeros((2, 3)), -0.1), "beta=-0.1"),
    (lambda: losses.reverse_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0), "temperature=0.0"),
    (lambda: losses.total_variation(jnp.zeros((2, 3)), jnp.zeros((2, 4))),
     r"\(2, 3\) and \(2, 4\)"),
    (lambda: methods.get("divergence").build(
        base.loss_config("divergence", divergence="hellinger"), 10, {}, 1),
     "unknown loss.divergence 'hellinger'; valid: 'reverse_kl'"),
    (lambda: methods.get("divergence").build(
        base.loss_config("divergence", divergence="jensen_shannon", beta=2.0), 10, {}, 1),
     r"jensen_shannon/beta must lie in \[0.0, 1.0\]; it is 2.0"),
])
def test_bad_input_is_refused(call, match):
  with pytest.raises(ValueError, match=match):
    call()
