"""CTKD against a float64 port of the official code, and its temperature trained in a step.

Reference: zhengli97/CTKD — ``GradientReversal`` (backward ``-lambda_ * grads``),
``Global_T`` (one parameter, initialised to 1, returned through the reversal layer),
``helper/loops.py`` (``temp = t_start + t_end * sigmoid(temp)``) and ``DistillKL``
(``KLDivLoss(reduction="batchmean")`` of the tempered distributions times T²).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference_testlib as ref

from configs import base
from kdjax import losses, methods, models, objective, state, step


def _log_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _distill_kl(y_s, y_t, temp):
  """DistillKL.forward: batchmean KL(softmax(y_t/T) ‖ softmax(y_s/T)) · T²."""
  log_p_s, log_p_t = _log_softmax(y_s / temp), _log_softmax(y_t / temp)
  return (np.exp(log_p_t) * (log_p_t - log_p_s)).sum() / y_s.shape[0] * temp * temp


def _official_loss(y_s, y_t, global_t, t_start=1.0, t_end=20.0):
  temp = t_start + t_end * (1.0 / (1.0 + np.exp(-global_t)))
  return _distill_kl(y_s, y_t, temp)


S, T = ref.random_logits(0, (6, 10)), ref.random_logits(1, (6, 10))


@pytest.mark.parametrize("theta", [-2.0, 1.0, 3.0])
def test_loss_and_student_gradient_match_the_official_code(theta):
  ref.assert_matches_reference(lambda x: losses.ctkd(x, T, theta, 1.0).mean(),
                               lambda x: _official_loss(x, T, theta), S)


@pytest.mark.parametrize("reversal", [0.0, 0.3, 1.0, -1.0])
def test_temperature_gradient_is_the_official_reversed_gradient(reversal):
  with jax.enable_x64(True):
    gradient = jax.grad(lambda theta: losses.ctkd(S, T, theta, reversal).mean())(1.0)
  plain = ref.numeric_gradient(lambda th: _official_loss(S, T, float(th)), np.array(1.0))
  np.testing.assert_allclose(gradient, -reversal * plain, rtol=1e-6, atol=1e-12)


def test_gradient_reversal_is_identity_forward_and_negated_backward():
  x = jnp.arange(3.0)
  np.testing.assert_array_equal(losses.gradient_reversal(x, 0.7), x)
  np.testing.assert_allclose(jax.grad(lambda y: losses.gradient_reversal(y, 0.7).sum())(x),
                             -0.7 * np.ones(3))


def _raw_temperature_after(lambda_max: float, mode: str = "global", num_steps: int = 20):
  loss = base.loss(ctkd_mode=mode, ctkd_lambda_max=lambda_max, ctkd_ramp_fraction=0.1,
                   kd_weight=1.0, ce_weight=0.1)
  recipe = methods.get("ctkd").build(loss, num_steps, {}, 10)
  module = models.get("mlp_tiny", 10)
  images = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
  variables = module.init(jax.random.key(1), images, train=False)
  optimizer = optax.sgd(0.5)
  train_state = state.create_train_state(module, variables, optimizer, jax.random.key(2),
                                         aux_heads=recipe.aux_heads, sample_inputs=images)
  train_step = jax.jit(step.make_train_step(module, recipe.objective, optimizer,
                                            aux_heads=recipe.aux_heads))
  batch = {"image": images, "label": jnp.arange(16) % 10,
           "teacher_logits": 5.0 * jax.random.normal(jax.random.key(3), (16, 10))}
  for _ in range(num_steps):
    train_state, metrics = train_step(train_state, None, batch)
  assert np.isfinite(float(metrics["loss"]))
  return train_state.aux_params[methods.CTKD_HEAD]


def test_temperature_moves_against_the_student_and_the_code_direction_reverses_it():
  paper = float(_raw_temperature_after(1.0)["raw_temperature"])
  code = float(_raw_temperature_after(-1.0)["raw_temperature"])
  assert paper != 1.0 and code != 1.0
  assert np.sign(paper - 1.0) == -np.sign(code - 1.0)


def test_instance_temperature_trains():
  params = _raw_temperature_after(1.0, mode="instance", num_steps=3)
  assert set(params) == {"Dense_0", "Dense_1"}


def test_term_reads_the_temperature_head():
  obj = objective.Objective((objective.term("ctkd", reversal=0.5,
                                            temperature_feature="ctkd_temperature"),))
  assert obj.student_features == ("ctkd_temperature",)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.ctkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0, 1.0, t_range=0.0),
     r"t_range=0.0 must be finite and > 0: the temperature range \(1.0, 1.0\) is empty"),
    (lambda: losses.ctkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0, 1.0, t_start=-1.0),
     "t_start=-1.0"),
    (lambda: methods.get("ctkd").build(base.loss(ctkd_t_range=-5.0), 100, {}, 10),
     r"t_range=-5.0 must be finite and > 0"),
    (lambda: methods.get("ctkd").build(base.loss(ctkd_mode="local"), 100, {}, 10),
     "unknown loss.ctkd_mode 'local'; valid: 'global', 'instance'"),
    (lambda: methods.get("ctkd").build(base.loss(ctkd_lambda_max=2.0), 100, {}, 10),
     r"ctkd/reversal must lie in \[-1.0, 1.0\]"),
])
def test_bad_input_is_refused(call, match):
  with pytest.raises(ValueError, match=match):
    call()
