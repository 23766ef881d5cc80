"""Tests for kdjax.networks: Linen, NNX and plain-function models behind one interface."""

from flax import nnx
import jax
import jax.numpy as jnp
import kd_testlib as lib
import numpy as np
import optax
import pytest

from kdjax import networks
from kdjax import step as step_lib
from kdjax.objective import Objective, term
from kdjax.state import create_train_state


class NNXConvNet(nnx.Module):
  """conv → BatchNorm → ReLU → mean pool → linear; sows "stage1"."""

  def __init__(self, width: int, rngs: nnx.Rngs):
    self.conv = nnx.Conv(3, width, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
    self.head = nnx.Linear(width, lib.NUM_CLASSES, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x)))
    self.sow(nnx.Intermediate, "stage1", x)
    return self.head(jnp.mean(x, axis=(1, 2)))


def test_linen_features_train_mode_and_eval_mode():
  module = lib.TinyConvNet(width=3)
  net = networks.from_linen(module)
  params, model_state = net.split(lib.init(module, 0))
  assert set(model_state) == {"batch_stats"}
  images = lib.make_batch(0)["image"]
  apply = jax.jit(net.apply, static_argnames=("train", "features"))

  outputs, new_state = apply(params, model_state, images, train=True, features=("stage2",))
  assert set(outputs) == {"logits", "stage2"}
  assert outputs["stage2"].shape == (16, 4, 4, 6)
  np.testing.assert_allclose(outputs["logits"],
                             module.apply({"params": params, **model_state}, images, train=True,
                                          mutable=["batch_stats"])[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(new_state["batch_stats"]["BatchNorm_0"]["mean"],
                         model_state["batch_stats"]["BatchNorm_0"]["mean"])

  outputs, same_state = apply(params, model_state, images, train=False)
  assert set(outputs) == {"logits"}
  assert same_state is model_state or jax.tree.all(
      jax.tree.map(np.array_equal, same_state, model_state))

  with pytest.raises(ValueError, match="no feature 'stage3'; sown features: 'stage1', 'stage2'"):
    net.apply(params, model_state, images, train=False, features=("stage3",))

  captured = networks.from_linen(module, capture_intermediates=True)
  outputs, _ = captured.apply(params, model_state, images, train=False, features=("Conv_1",))
  assert outputs["Conv_1"].shape == (16, 4, 4, 6)


def test_nnx_model_trains_in_a_step():
  model = NNXConvNet(width=4, rngs=nnx.Rngs(0))
  graphdef, variables = nnx.split(model)
  net = networks.as_network(graphdef)
  params, model_state = net.split(variables)
  images = lib.make_batch(0)["image"]

  outputs, new_state = net.apply(params, model_state, images, train=True, features=("stage1",))
  assert outputs["stage1"].shape == (16, 8, 8, 4)
  assert not np.allclose(new_state["bn"]["mean"][...], model_state["bn"]["mean"][...])
  _, eval_state = net.apply(params, model_state, images, train=False)
  np.testing.assert_array_equal(eval_state["bn"]["mean"][...], model_state["bn"]["mean"][...])
  _, train_state = net.apply(params, model_state, images, train=True)  # no features asked
  assert jax.tree.structure(train_state) == jax.tree.structure(model_state)

  teacher = lib.TinyConvNet(width=6)
  obj = Objective((term("ce", 0.1), term("kd", 0.9),
                   term("attention", 10.0, student_features=("stage1",))))
  opt = optax.sgd(0.05)
  state = create_train_state(net, variables, opt, jax.random.key(0))
  step = jax.jit(step_lib.make_train_step(net, obj, opt, teacher=teacher))
  teacher_vars = lib.init(teacher, 0)
  batch = lib.make_batch(0)
  losses = []
  for _ in range(5):
    state, metrics = step(state, teacher_vars, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  assert not np.allclose(state.model_state["bn"]["var"][...], model_state["bn"]["var"][...])
  trained = nnx.merge(graphdef, state.params, state.model_state)  # exports as an NNX model
  assert nnx.capture(trained, nnx.Intermediate)(images)[0].shape == (16, lib.NUM_CLASSES)


def test_function_network_outputs_and_features():
  def apply_fn(params, x):
    hidden = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"])
    return {"logits": hidden @ params["w2"], "hidden": hidden}

  net = networks.from_function(apply_fn)
  params = {"w1": jnp.ones((192, 4)) * 0.01, "w2": jnp.ones((4, lib.NUM_CLASSES))}
  p, model_state = net.split(params)
  outputs, _ = net.apply(p, model_state, lib.make_batch(0)["image"], train=True,
                         features=("hidden",))
  assert outputs["logits"].shape == (16, lib.NUM_CLASSES) and outputs["hidden"].shape == (16, 4)
  with pytest.raises(ValueError, match="no feature 'stage1'; sown features: 'hidden'"):
    net.apply(p, model_state, lib.make_batch(0)["image"], train=True, features=("stage1",))


def test_as_network_rejects_other_objects():
  with pytest.raises(TypeError, match="wrap a plain apply function with networks.from_function"):
    networks.as_network(lambda params, x: x)
