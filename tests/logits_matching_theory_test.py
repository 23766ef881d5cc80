"""Chen et al. (2021): KD at infinite temperature is logits matching plus a mean-logit term.

Tests of the theorem's three consequences that kdjax relies on: the O(1/T) limit, the
zero-sum logit gradients of softmax losses, and the invariance of the classifier's
class-mean under plain SGD (which equal-mean initialization turns into exact logits
matching for a whole run).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import initializers, losses


def test_kd_tends_to_centered_logits_matching_at_rate_one_over_t():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    s, t = jnp.asarray(rng.normal(size=(32, 10))), jnp.asarray(rng.normal(size=(32, 10)))
    limit = losses.logits_matching(s, t, centered=True)
    errors = [float(jnp.max(jnp.abs(losses.kd(s, t, temperature) - limit)))
              for temperature in (10.0, 100.0, 1000.0)]
    # The limit is the *centered* form: raw matching differs from it by ½(s̄ − t̄)².
    raw_gap = losses.logits_matching(s, t) - limit
    np.testing.assert_allclose(raw_gap, 0.5 * (jnp.mean(s, -1) - jnp.mean(t, -1))**2,
                               rtol=1e-10)
  # O(1/T): each 10× in T cuts the error about 10×.
  for coarse, fine in zip(errors, errors[1:], strict=False):
    assert 7.0 < coarse / fine < 14.0, errors


class _Net(nn.Module):
  """A small MLP whose head starts with zero class-mean when asked."""
  zero_mean_head: bool = False

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(16)(x))
    kernel_init = (initializers.zero_mean() if self.zero_mean_head
                   else nn.initializers.lecun_normal())
    return nn.Dense(5, kernel_init=kernel_init, bias_init=nn.initializers.normal(0.1))(x)


def _head_class_means(params):
  head = params["params"]["Dense_1"]
  return np.concatenate([np.asarray(head["kernel"]).mean(-1), [np.asarray(head["bias"]).mean()]])


def _train(optimizer, loss_fn, zero_mean_head=False, steps=40):
  net = _Net(zero_mean_head)
  x = jax.random.normal(jax.random.key(0), (32, 8))
  teacher = _Net(zero_mean_head).init(jax.random.key(1), x)
  params = net.init(jax.random.key(2), x)
  if zero_mean_head:  # the bias starts at zero class-mean too
    for p in (params, teacher):
      b = p["params"]["Dense_1"]["bias"]
      p["params"]["Dense_1"]["bias"] = b - b.mean()
  t_logits = net.apply(teacher, x)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state):
    grads = jax.grad(lambda p: jnp.mean(loss_fn(net.apply(p, x), t_logits)))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  history = [params]
  for _ in range(steps):
    params, opt_state = step(params, opt_state)
    history.append(params)
  return net, x, t_logits, history


@pytest.mark.parametrize("optimizer", [optax.sgd(0.5), optax.sgd(0.5, momentum=0.9)],
                         ids=["sgd", "sgd_momentum"])
def test_sgd_keeps_the_head_class_mean_constant(optimizer):
  _, _, _, history = _train(optimizer, lambda s, t: losses.kd(s, t, 4.0))
  first = _head_class_means(history[0])
  assert np.abs(_head_class_means(history[-1]) - first).max() < 1e-6
  # ... while the head itself did train.
  moved = np.abs(np.asarray(history[-1]["params"]["Dense_1"]["kernel"]) -
                 np.asarray(history[0]["params"]["Dense_1"]["kernel"])).max()
  assert moved > 1e-2


def test_adam_moves_the_head_class_mean():
  _, _, _, history = _train(optax.adam(0.05), lambda s, t: losses.kd(s, t, 4.0))
  drift = np.abs(_head_class_means(history[-1]) - _head_class_means(history[0])).max()
  assert drift > 1e-3


def test_equal_mean_init_makes_raw_logits_matching_exact_for_the_whole_run():
  net, x, t_logits, history = _train(optax.sgd(0.5, momentum=0.9), losses.logits_matching,
                                     zero_mean_head=True)
  for params in history[::8]:
    s_logits = net.apply(params, x)
    np.testing.assert_allclose(jnp.mean(s_logits, -1), 0.0, atol=1e-5)
    np.testing.assert_allclose(losses.logits_matching(s_logits, t_logits),
                               losses.logits_matching(s_logits, t_logits, centered=True),
                               rtol=1e-4, atol=1e-7)
