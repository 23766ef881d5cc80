"""Tests for kdjax.state: the student-only train state."""

import jax
import kd_testlib as lib
import numpy as np
import optax
import pytest

from kdjax import heads
from kdjax import step as step_lib
from kdjax.state import create_train_state

STUDENT = lib.TinyConvNet(width=3)


def test_state_owns_copies_and_separates_aux_trainables():
  variables = lib.init(STUDENT, 0)
  aux = {"regressed": heads.AuxHead(heads.ConvRegressor(features=12), source="stage2")}
  opt = optax.adam(1e-3)
  state = create_train_state(STUDENT, variables, opt, jax.random.key(0), aux_heads=aux,
                             sample_inputs=np.zeros((2, *lib.IMAGE_SHAPE), np.float32),
                             hparams={"kd/temperature": 2.0})
  assert int(state.step) == 0
  for ours, theirs in zip(jax.tree.leaves(state.params), jax.tree.leaves(variables["params"]),
                          strict=True):
    assert ours is not theirs
    np.testing.assert_array_equal(ours, theirs)
  assert set(state.model_state) == {"batch_stats"}
  # The regressor maps stage2 [.., 6 channels] to the teacher's 12; it is no student param.
  assert state.aux_params["regressed"]["conv"]["kernel"].shape == (1, 1, 6, 12)
  assert set(state.aux_state["regressed"]) == {"batch_stats"}
  assert "regressed" not in state.params
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(opt.init(state.trainables))
  assert state.hparams["kd/temperature"].dtype == np.float32


def test_aux_heads_need_sample_inputs():
  aux = {"regressed": heads.AuxHead(heads.ConvRegressor(features=12), source="stage2")}
  with pytest.raises(ValueError, match=r"aux heads \['regressed'\] need sample_inputs"):
    create_train_state(STUDENT, lib.init(STUDENT, 0), optax.sgd(0.1), jax.random.key(0),
                       aux_heads=aux)
  with pytest.raises(ValueError, match="cannot be named 'logits'"):
    create_train_state(STUDENT, lib.init(STUDENT, 0), optax.sgd(0.1), jax.random.key(0),
                       aux_heads={"logits": aux["regressed"]})


def _kernels(params):
  return jax.tree.map(lambda x: x.ndim > 1, params)


def test_a_weight_decay_mask_over_the_params_is_refused_saying_what_to_pass():
  variables = lib.init(STUDENT, 0)
  decay_kernels = optax.masked(optax.add_decayed_weights(0.5), _kernels(variables["params"]))
  with pytest.raises(ValueError, match=r"written for the student's params.*"
                     r"\{'student': mask, 'aux': False\}"):
    create_train_state(STUDENT, variables, optax.chain(decay_kernels, optax.sgd(0.1)),
                       jax.random.key(0))


def test_the_wrapped_mask_decays_exactly_the_kernels():
  variables = lib.init(STUDENT, 0)
  mask = {"student": _kernels(variables["params"]), "aux": False}
  opt = optax.chain(optax.masked(optax.add_decayed_weights(0.5), mask), optax.sgd(0.1))
  state = create_train_state(STUDENT, variables, opt, jax.random.key(0))
  zero_grads = jax.tree.map(np.zeros_like, state.trainables)
  updates, _ = opt.update(zero_grads, state.opt_state, state.trainables)
  # With zero gradients, SGD's update is -lr * 0.5 * p on kernels and 0 elsewhere.
  for path, p in jax.tree_util.tree_flatten_with_path(variables["params"])[0]:
    update = updates["student"]
    for key in path:
      update = update[key.key]
    expected = -0.1 * 0.5 * np.asarray(p) if np.ndim(p) > 1 else np.zeros(np.shape(p))
    np.testing.assert_allclose(update, expected, rtol=1e-6, atol=0)


def test_variables_let_a_trained_student_teach():
  variables = lib.init(STUDENT, 0)
  state = create_train_state(STUDENT, variables, optax.sgd(0.1), jax.random.key(0))
  assert set(state.variables) == {"params", "batch_stats"}
  images = lib.make_batch(0)["image"]
  teach = step_lib.make_teacher_forward(STUDENT)
  np.testing.assert_array_equal(teach(state.variables, {"image": images})["logits"][0],
                                STUDENT.apply(variables, images, train=False))
