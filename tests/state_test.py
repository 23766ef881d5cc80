"""Tests for kdjax.state: the student-only train state."""

import jax
import kd_testlib as lib
import numpy as np
import optax
import pytest

from kdjax import heads
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
