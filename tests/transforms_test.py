"""Tests of kdjax.transforms: DKP in gradient form, and zero-mean logit gradients."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import losses, schedules, transforms


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(6)(nn.tanh(nn.Dense(12)(x)))


_X = jax.random.normal(jax.random.key(0), (10, 4))
_TEACHER_LOGITS = 3.0 * jax.random.normal(jax.random.key(1), (10, 6))
_LABELS = jnp.arange(10) % 6
_MASK = jnp.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 1], bool)


def _parameter_gradients(objective, output_tx=None, tx_state=None):
  """Parameter gradients via vjp, optionally transforming the logit gradient in between."""
  net = _Net()
  params = net.init(jax.random.key(2), _X)
  logits, pullback = jax.vjp(lambda p: net.apply(p, _X), params)
  g_out = jax.grad(objective)(logits)
  if output_tx is not None:
    g_out, _ = output_tx.update(g_out, tx_state or output_tx.init(logits), logits,
                                teacher_logits=_TEACHER_LOGITS, labels=_LABELS, mask=_MASK)
  (g_params,) = pullback(g_out)
  return g_params


@pytest.mark.parametrize("variant, top_k", [("uniform", None), ("mean", None), ("tail", 2)])
@pytest.mark.parametrize("class_reduction", ["sum", "mean"])
def test_loss_form_and_transform_form_give_equal_parameter_gradients(variant, top_k,
                                                                     class_reduction):
  temperature, gamma, weight = 4.0, 0.7, 0.9
  scale = 1.0 if class_reduction == "sum" else 1.0 / 6

  def loss_form(s):
    per_example = losses.kd(s, _TEACHER_LOGITS, temperature, class_reduction=class_reduction)
    per_example += scale * losses.dkp(s, _TEACHER_LOGITS, temperature, gamma, variant,
                                      labels=_LABELS, top_k=top_k)
    return weight * losses.reduce_mean(per_example, mask=_MASK)

  def kd_only(s):
    per_example = losses.kd(s, _TEACHER_LOGITS, temperature, class_reduction=class_reduction)
    return weight * losses.reduce_mean(per_example, mask=_MASK)

  tx = transforms.dkp(temperature, gamma, variant, top_k=top_k, weight=weight,
                      class_reduction=class_reduction)
  expected = _parameter_gradients(loss_form)
  got = _parameter_gradients(kd_only, tx)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got,
               expected)
  # The DKP term really changed the gradients (the comparison is not vacuous).
  plain = _parameter_gradients(kd_only)
  assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), got,
                                          plain))) > 1e-4


def test_schedules_follow_the_transform_step_count():
  gamma = schedules.piecewise_constant(0.0, {2: 1.0})
  tx = transforms.dkp(4.0, gamma, num_steps=4)
  s = jax.random.normal(jax.random.key(6), (10, 6))
  state = tx.init(s)
  g0 = jnp.ones_like(s)
  for step in range(4):
    g, state = tx.update(g0, state, s, teacher_logits=_TEACHER_LOGITS)
    changed = not np.allclose(g, g0)
    assert changed == (step >= 2), step
  assert int(state.count) == 4


def test_acts_on_the_logits_of_an_output_dict():
  tx = transforms.dkp(2.0, 1.0, "mean")
  outputs = {"logits": jnp.ones((10, 6)), "stage2": jnp.ones((10, 3))}
  grads = jax.tree.map(jnp.zeros_like, outputs)
  new, _ = tx.update(grads, tx.init(outputs), outputs, teacher_logits=_TEACHER_LOGITS)
  np.testing.assert_array_equal(new["stage2"], grads["stage2"])
  assert float(jnp.abs(new["logits"]).max()) > 0


def test_zero_mean_projection_and_chain():
  tx = optax.chain(transforms.dkp(4.0, 0.5, "mean"), transforms.zero_mean_logit_gradients())
  s = jax.random.normal(jax.random.key(3), (10, 6))
  g, _ = tx.update(jax.random.normal(jax.random.key(4), (10, 6)), tx.init(s), s,
                   teacher_logits=_TEACHER_LOGITS)
  np.testing.assert_allclose(jnp.sum(g, axis=-1), 0.0, atol=1e-6)


def test_jit_compiles_and_matches_eager():
  tx = transforms.dkp(schedules.linear(4.0, 1.0, 10), 0.5, "tail", top_k=2, num_steps=10)
  s = jax.random.normal(jax.random.key(5), (10, 6))
  state = tx.init(s)
  update = jax.jit(lambda g, st, p: tx.update(g, st, p, teacher_logits=_TEACHER_LOGITS,
                                              labels=_LABELS))
  eager, _ = tx.update(jnp.zeros_like(s), state, s, teacher_logits=_TEACHER_LOGITS,
                       labels=_LABELS)
  jitted, _ = update(jnp.zeros_like(s), state, s)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-7)


def test_forgetting_the_teacher_fails_loudly():
  tx = transforms.dkp(4.0, 0.5)
  s = jnp.zeros((2, 3))
  with pytest.raises(TypeError, match="teacher_logits"):
    tx.update(s, tx.init(s), s)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0, gamma=0.5), "temperature must lie in"),
    (dict(temperature=4.0, gamma=1.5), "gamma must lie in"),
    (dict(temperature=4.0, gamma=schedules.linear(0.0, 2.0, 10), num_steps=20),
     "gamma must lie in .* at step"),
    (dict(temperature=schedules.linear(4.0, -1.0, 10), gamma=0.5),
     "temperature is a schedule: pass num_steps"),
    (dict(temperature=4.0, gamma=0.5, variant="pruned"), "'pruned'"),
    (dict(temperature=4.0, gamma=0.5, variant="tail"), "top_k=None"),
    (dict(temperature=4.0, gamma=0.5, class_reduction="batchmean"), "'batchmean'"),
])
def test_rejects_bad_arguments_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    transforms.dkp(**kwargs)


_NAMED = {"temperature": "kd/temperature", "gamma": "dkp/gamma", "weight": "weight/kd"}


def _logit_gradient(tx, hyperparameters=None, s_seed=7):
  s = jax.random.normal(jax.random.key(s_seed), (10, 6))
  extra = {} if hyperparameters is None else {"hyperparameters": hyperparameters}
  g, _ = tx.update(jnp.zeros_like(s), tx.init(s), s, teacher_logits=_TEACHER_LOGITS,
                   labels=_LABELS, mask=_MASK, **extra)
  return g


@pytest.mark.parametrize("variant, top_k", [("uniform", None), ("tail", 2)])
def test_named_hyperparameters_replace_the_transform_schedules(variant, top_k):
  named = transforms.dkp(**_NAMED, variant=variant, top_k=top_k)
  hyperparameters = {"kd/temperature": jnp.float32(8.0), "dkp/gamma": jnp.float32(0.3),
                     "weight/kd": jnp.float32(0.6), "weight/ce": jnp.float32(0.4)}
  got = _logit_gradient(named, hyperparameters)
  expected = _logit_gradient(transforms.dkp(8.0, 0.3, variant, top_k=top_k, weight=0.6))
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  # Each named value matters: another temperature or gamma gives another gradient.
  for name, value in (("kd/temperature", 4.0), ("dkp/gamma", 0.9)):
    other = _logit_gradient(named, {**hyperparameters, name: jnp.float32(value)})
    assert float(jnp.abs(other - got).max()) > 1e-4, name


def test_named_and_own_values_mix_and_own_schedules_ignore_hyperparameters():
  tx = transforms.dkp("kd/temperature", schedules.piecewise_constant(0.2, {1: 0.8}), weight=0.5,
                      num_steps=2)
  got = _logit_gradient(tx, {"kd/temperature": 3.0, "dkp/gamma": 1.0})  # gamma is its own
  np.testing.assert_allclose(got, _logit_gradient(transforms.dkp(3.0, 0.2, weight=0.5)),
                             rtol=1e-6, atol=1e-7)


def test_a_missing_named_hyperparameter_is_refused_naming_it():
  tx = transforms.dkp(**_NAMED)
  with pytest.raises(ValueError, match=r"reads temperature from hyperparameter "
                     r"'kd/temperature'.*none were passed"):
    _logit_gradient(tx)
  with pytest.raises(ValueError, match=r"reads gamma from hyperparameter 'dkp/gamma'.*"
                     r"available: \['kd/temperature', 'weight/kd'\]"):
    _logit_gradient(tx, {"kd/temperature": 4.0, "weight/kd": 1.0})
  with pytest.raises(ValueError, match="gamma='' must be a scalar, a schedule or a hyperparam"):
    transforms.dkp(4.0, "")


def test_hyperparameters_pass_through_a_chain_with_plain_transformations():
  hyperparameters = {"kd/temperature": 6.0, "dkp/gamma": 0.7, "weight/kd": 1.0}
  chained = optax.chain(optax.scale(2.0), transforms.dkp(**_NAMED),
                        transforms.zero_mean_logit_gradients())
  got = _logit_gradient(chained, hyperparameters)
  own = _logit_gradient(transforms.dkp(6.0, 0.7))
  np.testing.assert_allclose(got, own - jnp.mean(own, axis=-1, keepdims=True), rtol=1e-5,
                             atol=1e-6)
  assert float(jnp.abs(got).max()) > 1e-3


def test_named_hyperparameters_are_traced_values_one_compilation():
  tx = transforms.dkp(**_NAMED)
  s = jax.random.normal(jax.random.key(8), (10, 6))

  def update(hyperparameters):
    return tx.update(jnp.zeros_like(s), tx.init(s), s, teacher_logits=_TEACHER_LOGITS,
                     hyperparameters=hyperparameters)[0]

  chex.clear_trace_counter()
  jitted = jax.jit(chex.assert_max_traces(update, n=1))
  for temperature, gamma in ((2.0, 0.1), (8.0, 0.9)):
    values = {"kd/temperature": jnp.float32(temperature), "dkp/gamma": jnp.float32(gamma),
              "weight/kd": jnp.float32(1.0)}
    expected = transforms.dkp(temperature, gamma).update(
        jnp.zeros_like(s), tx.init(s), s, teacher_logits=_TEACHER_LOGITS)[0]
    np.testing.assert_allclose(jitted(values), expected, rtol=1e-5, atol=1e-7)
