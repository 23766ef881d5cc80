"""Tests of kdjax.transforms: DKP in gradient form, and zero-mean logit gradients."""

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
  tx = transforms.dkp(4.0, gamma)
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
  tx = transforms.dkp(schedules.linear(4.0, 1.0, 10), 0.5, "tail", top_k=2)
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
    (dict(temperature=4.0, gamma=0.5, variant="pruned"), "'pruned'"),
    (dict(temperature=4.0, gamma=0.5, variant="tail"), "top_k=None"),
    (dict(temperature=4.0, gamma=0.5, class_reduction="batchmean"), "'batchmean'"),
])
def test_rejects_bad_arguments_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    transforms.dkp(**kwargs)
