"""Logit standardization against float64 ports of the official code.

References: ``normalize``, ``kd_loss`` and ``dkd_loss`` of
github.com/sunshangquan/logit-standardization-KD, ``mdistiller/distillers/KD.py`` and
``mdistiller/distillers/DKD.py`` (torch's ``std`` is unbiased; 1e-7 is added to it), which
torchdistill's ``LogitStdKDLoss.standardize`` repeats.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_testlib as ref

from configs import base
from kdjax import losses, methods, objective


def _normalize(logit):
  """mdistiller/distillers/KD.py: normalize."""
  mean = logit.mean(axis=-1, keepdims=True)
  stdv = logit.std(axis=-1, ddof=1, keepdims=True)
  return (logit - mean) / (1e-7 + stdv)


def _kd_loss(logits_student_in, logits_teacher_in, temperature, logit_stand=True):
  """mdistiller/distillers/KD.py: kd_loss (batch mean of the per-example KL sum)."""
  logits_student = _normalize(logits_student_in) if logit_stand else logits_student_in
  logits_teacher = _normalize(logits_teacher_in) if logit_stand else logits_teacher_in
  log_pred_student = ref.log_softmax(logits_student / temperature)
  log_pred_teacher = ref.log_softmax(logits_teacher / temperature)
  pred_teacher = np.exp(log_pred_teacher)
  loss_kd = (pred_teacher * (log_pred_teacher - log_pred_student)).sum(1).mean()
  return loss_kd * temperature**2


def _dkd_loss(logits_student_in, logits_teacher_in, target, alpha, beta, temperature):
  """mdistiller/distillers/DKD.py: dkd_loss with logit_stand=True."""
  logits_student = _normalize(logits_student_in)
  logits_teacher = _normalize(logits_teacher_in)
  gt_mask = np.eye(logits_student.shape[1], dtype=bool)[target]
  other_mask = ~gt_mask

  def cat_mask(p):
    return np.stack([(p * gt_mask).sum(1), (p * other_mask).sum(1)], axis=1)

  pred_student = cat_mask(np.exp(ref.log_softmax(logits_student / temperature)))
  pred_teacher = cat_mask(np.exp(ref.log_softmax(logits_teacher / temperature)))
  tckd_loss = (pred_teacher * (np.log(pred_teacher) - np.log(pred_student))).sum() * (
      temperature**2) / target.shape[0]
  log_pt2 = ref.log_softmax(logits_teacher / temperature - 1000.0 * gt_mask)
  log_ps2 = ref.log_softmax(logits_student / temperature - 1000.0 * gt_mask)
  nckd_loss = (np.exp(log_pt2) * (log_pt2 - log_ps2)).sum() * (
      temperature**2) / target.shape[0]
  return alpha * tckd_loss + beta * nckd_loss


S, T = ref.random_logits(0, (6, 10)), ref.random_logits(1, (6, 10), scale=6.0)
LABELS = np.array([0, 3, 9, 2, 5, 7])


def test_standardize_matches_the_official_normalize():
  with jax.enable_x64(True):
    np.testing.assert_allclose(losses.standardize_logits(S), _normalize(S), rtol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_equal_logits_have_a_finite_gradient(dtype):
  """At zero spread torch's std gives NaN; here Z(z) = 0 with Jacobian (I - 11ᵀ/K)/ε."""
  with jax.enable_x64(dtype == jnp.float64):
    equal = jnp.full((10,), 2.5, dtype)
    jacobian = np.asarray(jax.jacobian(losses.standardize_logits)(equal), np.float64)
    np.testing.assert_array_equal(losses.standardize_logits(equal), np.zeros(10))
    np.testing.assert_allclose(jacobian, (np.eye(10) - 1 / 10) / 1e-7, rtol=1e-5)


def test_kd_term_gradient_at_equal_student_logits():
  """A student row of equal logits: a finite KD gradient, T·(1/K − p_t)/ε / B in closed form."""
  temperature, student = 2.0, np.zeros_like(S)
  student[1:] = S[1:]
  term = objective.Objective((objective.term("kd", temperature=temperature,
                                             logit_standardization=True),))

  def loss(x):
    total, _ = term.loss({"logits": x}, {"logits": jnp.asarray(T)[None]}, None, None,
                         term.schedule_values(0), jax.random.key(0))
    return total

  with jax.enable_x64(True):
    gradient = np.asarray(jax.grad(loss)(jnp.asarray(student)))
  teacher = np.exp(ref.log_softmax(_normalize(T) / temperature))
  expected = temperature * (1 / S.shape[1] - teacher[0]) / 1e-7 / S.shape[0]
  assert np.all(np.isfinite(gradient))
  np.testing.assert_allclose(gradient[0], expected, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_term_matches_the_official_kd_loss(temperature):
  term = objective.Objective((objective.term("kd", temperature=temperature,
                                             logit_standardization=True),))
  labels = None

  def loss(x):
    total, _ = term.loss({"logits": x}, {"logits": jnp.asarray(T)[None]}, labels, None,
                         term.schedule_values(0), jax.random.key(0))
    return total

  ref.assert_matches_reference(loss, lambda x: _kd_loss(x, T, temperature), S)


def test_dkd_term_matches_the_official_dkd_loss():
  term = objective.Objective((objective.term("dkd", alpha=1.0, beta=8.0, temperature=2.0,
                                             logit_standardization=True),))

  def loss(x):
    total, _ = term.loss({"logits": x}, {"logits": jnp.asarray(T)[None]}, jnp.asarray(LABELS),
                         None, term.schedule_values(0), jax.random.key(0))
    return total

  ref.assert_matches_reference(loss, lambda x: _dkd_loss(x, T, LABELS, 1.0, 8.0, 2.0), S,
                               rtol=1e-5)


def test_standardized_kd_ignores_logit_shift_and_scale():
  shifted = objective.Objective((objective.term("kd", logit_standardization=True),))
  values = shifted.schedule_values(0)
  key, teacher = jax.random.key(0), {"logits": jnp.asarray(T, jnp.float32)[None]}
  a, _ = shifted.loss({"logits": jnp.asarray(S, jnp.float32)}, teacher, None, None, values, key)
  b, _ = shifted.loss({"logits": jnp.asarray(3.0 * S + 7.0, jnp.float32)}, teacher, None, None,
                      values, key)
  np.testing.assert_allclose(a, b, rtol=1e-5)


def test_every_teacher_is_standardized():
  teachers = jnp.stack([jnp.asarray(T), jnp.asarray(2.0 * T - 1.0)]).astype(jnp.float32)
  obj = objective.Objective((objective.term("ensemble", logit_standardization=True),))
  total, _ = obj.loss({"logits": jnp.asarray(S, jnp.float32)}, {"logits": teachers}, None, None,
                      obj.schedule_values(0), jax.random.key(0))
  # Both teachers standardize to the same logits: the ensemble is that one teacher.
  np.testing.assert_allclose(total, _kd_loss(S, T, 4.0), rtol=1e-4)


@pytest.mark.parametrize("method", ["kd", "dkd", "dgkd", "ensemble", "function_matching"])
def test_the_config_field_reaches_every_softmax_method(method):
  recipe = methods.get(method).build(base.loss_config(method, logit_standardization=True), 100,
                                     {}, 10)
  softmax_terms = [t for t in recipe.objective.terms if t.name != "ce"]
  assert softmax_terms and all(t.arguments["logit_standardization"] for t in softmax_terms)


def test_dkp_loss_form_takes_it_and_the_transform_form_refuses_it():
  loss = base.loss_config("dkp", logit_standardization=True, form="loss")
  terms = methods.get("dkp").build(loss, 100, {}, 10).objective.terms
  assert all(t.arguments["logit_standardization"] for t in terms if t.name != "ce")
  with pytest.raises(ValueError, match="logit_standardization=True has no effect on the DKP"):
    methods.get("dkp").build(base.loss_config("dkp", logit_standardization=True), 100, {}, 10)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.standardize_logits(jnp.zeros((2, 1))), r"K >= 2 classes.*\(2, 1\)"),
    (lambda: losses.standardize_logits(jnp.zeros((2, 3)), epsilon=0.0), "epsilon=0.0"),
    (lambda: objective.term("kd", logit_standardization="yes"),
     "logit_standardization='yes' must be True or False"),
    (lambda: objective.term("logits_matching", logit_standardization=True),
     "takes no argument.*logit_standardization"),
])
def test_bad_input_is_refused(call, match):
  with pytest.raises(ValueError, match=match):
    call()
