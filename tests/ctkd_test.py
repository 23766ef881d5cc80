"""CTKD against a float64 port of the official code, and its temperature trained in a step.

Reference: zhengli97/CTKD — ``models/temp_global.py`` (``GradientReversalFunction``: identity
forward, backward ``lambda_ * grads``; ``Global_T``: one parameter initialised to 1, returned
through the reversal layer), ``train_student.py`` (``CosineDecay(max_value=0, min_value=-1,
num_loops=10)``, its value taken once per epoch, epochs counted from 1), ``helper/loops.py``
(``temp = t_start + t_end * sigmoid(temp)``) and ``DistillKL`` (``KLDivLoss(reduction=
"batchmean")`` of the tempered distributions times T²).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import kd_testlib
import numpy as np
import pytest
import reference_testlib as ref

from configs import base
from kdjax import losses, methods, objective, schedules, transforms


def _distill_kl(y_s, y_t, temp):
  """DistillKL.forward: batchmean KL(softmax(y_t/T) ‖ softmax(y_s/T)) · T²."""
  log_p_s, log_p_t = ref.log_softmax(y_s / temp), ref.log_softmax(y_t / temp)
  return (np.exp(log_p_t) * (log_p_t - log_p_s)).sum() / y_s.shape[0] * temp * temp


def _official_loss(y_s, y_t, global_t, t_start=1.0, t_end=20.0):
  temp = t_start + t_end * (1.0 / (1.0 + np.exp(-global_t)))
  return _distill_kl(y_s, y_t, temp)


def _cosine_decay(epoch, max_value=0.0, min_value=-1.0, num_loops=10):
  """train_student.py: CosineDecay.get_value."""
  epoch = min(max(epoch, 0), num_loops)
  value = (math.cos(epoch * math.pi / num_loops) + 1.0) * 0.5
  return value * (max_value - min_value) + min_value


def _official_temperature_gradient(grads, epoch):
  """GradientReversalFunction.backward at the epoch's lambda_: ``lambda_ * grads``."""
  return _cosine_decay(epoch) * grads


S, T = ref.random_logits(0, (6, 10)), ref.random_logits(1, (6, 10))


@pytest.mark.parametrize("theta", [-2.0, 1.0, 3.0])
def test_loss_and_student_gradient_match_the_official_code(theta):
  ref.assert_matches_reference(lambda x: losses.ctkd(x, T, theta).mean(),
                               lambda x: _official_loss(x, T, theta), S)


@pytest.mark.parametrize("theta", [-2.0, 1.0, 3.0])
def test_temperature_gradient_matches_the_official_code(theta):
  with jax.enable_x64(True):
    gradient = jax.grad(lambda th: losses.ctkd(S, T, th).mean())(theta)
  # A step of 1e-4: the loss rounds at 1e-14, which a step of 1e-6 would turn into 1e-8.
  plain = ref.numeric_gradient(lambda th: _official_loss(S, T, float(th)), np.array(theta),
                               step=1e-4)
  np.testing.assert_allclose(gradient, plain, rtol=1e-6, atol=1e-12)


def test_the_official_reversal_is_the_papers_ascent():
  """The official λ runs 0 → -1 and multiplies; kdjax's runs 0 → 1 and multiplies by -λ.

  They agree wherever the official epoch value is defined: epoch e's value is kdjax's at
  step e·S (the official holds it over epoch e, which kdjax ramps into step by step).
  """
  steps_per_epoch = 7
  reversal = schedules.cosine(0.0, 1.0, 10 * steps_per_epoch)  # the "ctkd" method's
  tx = transforms.reverse_gradients(reversal, True)
  tx_state = tx.init(jnp.zeros(()))
  gradient = 0.37
  for n in range(13 * steps_per_epoch):
    update, tx_state = tx.update(jnp.asarray(gradient), tx_state)
    if n % steps_per_epoch == 0 and n:
      epoch = n // steps_per_epoch
      np.testing.assert_allclose(float(update),
                                 _official_temperature_gradient(gradient, epoch), atol=1e-7)
      assert float(update) <= 0.0  # the temperature's gradient is reversed: it ascends


def test_reverse_gradients_touches_only_the_masked_parameters():
  params = {"student": {"w": jnp.ones(3)}, "aux": {"ctkd_temperature": {"raw": jnp.ones(())},
                                                   "other": {"b": jnp.ones(2)}}}
  tx = transforms.reverse_gradients(0.25, {"student": False, "aux": {
      "ctkd_temperature": True, "other": False}})
  grads = jax.tree.map(lambda x: 2.0 * x, params)
  updates, _ = tx.update(grads, tx.init(params))
  np.testing.assert_array_equal(updates["student"]["w"], grads["student"]["w"])
  np.testing.assert_array_equal(updates["aux"]["other"]["b"], grads["aux"]["other"]["b"])
  assert float(updates["aux"]["ctkd_temperature"]["raw"]) == -0.5


def _raw_temperature_after(lambda_max: float, mode: str = "global", num_steps: int = 20,
                           reversed_update: bool = True):
  loss = base.loss_config("ctkd", mode=mode, lambda_max=lambda_max, ramp_fraction=0.1,
                   kd_weight=1.0, ce_weight=0.1)
  recipe = methods.get("ctkd").build(loss, num_steps, {}, 10)
  if not reversed_update:
    recipe = dataclasses.replace(recipe, param_tx=None)
  train_state, metrics = kd_testlib.train_recipe(recipe, num_steps, learning_rate=0.5,
                                                 teacher_scale=5.0)
  assert np.isfinite(float(metrics["loss"]))
  assert float(metrics["ctkd/reversal"]) == lambda_max  # logged; the ramp is over
  return train_state.aux_params[methods.CTKD_HEAD]


def test_the_temperature_ascends_where_a_plain_update_would_descend():
  """A method that trained its temperature as KD does (descending), or not at all, fails."""
  paper = float(_raw_temperature_after(1.0)["raw_temperature"])
  descent = float(_raw_temperature_after(1.0, reversed_update=False)["raw_temperature"])
  frozen = float(_raw_temperature_after(0.0)["raw_temperature"])
  assert frozen == 1.0  # λ = 0: no gradient reaches the temperature (and no weight decay)
  assert paper != 1.0 and descent != 1.0
  assert np.sign(paper - 1.0) == -np.sign(descent - 1.0)


def test_instance_temperature_trains():
  params = _raw_temperature_after(1.0, mode="instance", num_steps=3)
  assert set(params) == {"Dense_0", "Dense_1"}


def test_term_reads_the_temperature_head():
  obj = objective.Objective((objective.term(methods.CTKD_TERM),))
  assert obj.student_features == ("ctkd_temperature",)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.ctkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0, t_range=0.0),
     r"t_range=0.0 must be finite and > 0: the temperature range \(1.0, 1.0\) is empty"),
    (lambda: losses.ctkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0, t_start=-1.0),
     "t_start=-1.0"),
    (lambda: methods.get("ctkd").build(base.loss_config("ctkd", t_range=-5.0), 100, {}, 10),
     r"t_range=-5.0 must be finite and > 0"),
    (lambda: methods.get("ctkd").build(base.loss_config("ctkd", mode="local"), 100, {}, 10),
     "unknown loss.mode 'local'; valid: 'global', 'instance'"),
    (lambda: methods.get("ctkd").build(base.loss_config("ctkd", lambda_max=2.0), 100, {}, 10),
     r"loss.lambda_max=2.0 must lie in \[0.0, 1.0\]"),
    (lambda: methods.get("ctkd").build(base.loss_config("ctkd", lambda_max=-1.0), 100, {}, 10),
     r"loss.lambda_max=-1.0 must lie in \[0.0, 1.0\]"),
])
def test_bad_input_is_refused(call, match):
  with pytest.raises(ValueError, match=match):
    call()
