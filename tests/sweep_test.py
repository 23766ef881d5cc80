"""Tests for kdjax.sweep: N vmapped students in one program, one teacher forward."""

import chex
import jax
import jax.extend.core
import kd_testlib as lib
import numpy as np
import pytest

from kdjax import networks, sweep, transforms
from kdjax import step as step_lib
from kdjax.objective import Objective, term
from kdjax.state import create_train_state

TEACHER = lib.TinyConvNet(width=7)  # kernel shapes no student layer shares
STUDENT = lib.TinyConvNet(width=3)
OBJECTIVE = Objective((term("ce", 0.1), term("kd", 0.9, temperature=4.0),
                       term("dkp", 0.9, temperature=4.0, gamma=0.5)))
# Per student: (seed, temperature of both KD and DKP, DKP gamma).
STUDENTS = ((1, 2.0, 0.0), (2, 4.0, 0.5), (3, 8.0, 1.0))


def _states():
  opt = lib.optimizer()
  return [create_train_state(
      STUDENT, lib.init(STUDENT, seed), opt, jax.random.key(seed),
      hparams=OBJECTIVE.overrides({"kd/temperature": t, "dkp/temperature": t, "dkp/gamma": g}))
          for seed, t, g in STUDENTS]


def test_vmapped_students_equal_separate_runs():
  opt = lib.optimizer()
  teacher_vars = lib.init(TEACHER, 0)
  sweep_step = jax.jit(sweep.make_sweep_train_step(STUDENT, OBJECTIVE, opt, teacher=TEACHER))
  single_step = jax.jit(step_lib.make_train_step(STUDENT, OBJECTIVE, opt, teacher=TEACHER))
  states = sweep.stack_states(_states())
  separate = _states()
  for i in range(3):
    batch = lib.make_batch(i, masked=2)
    states, metrics = sweep_step(states, teacher_vars, batch)
    separate = [single_step(s, teacher_vars, batch)[0] for s in separate]

  for together, alone in zip(sweep.unstack_states(states), separate, strict=True):
    chex.assert_trees_all_close(together.params, alone.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(together.model_state, alone.model_state, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["kd/temperature"], [t for _, t, _ in STUDENTS])
  np.testing.assert_allclose(metrics["dkp/gamma"], [g for _, _, g in STUDENTS])
  assert metrics["loss"].shape == (len(STUDENTS),)
  assert len({float(x) for x in metrics["loss"]}) == len(STUDENTS)


# DKP as an output transform that follows the KD term's temperature and weight and the
# objective's declared DKP gamma, so that per-student overrides reach it.
TX_OBJECTIVE = Objective((term("ce", 0.1), term("kd", 0.9, temperature=4.0)),
                         extra_hyperparameters={"dkp/gamma": (0.5, {"low": 0.0, "high": 1.0})})
DKP_TX = transforms.dkp("kd/temperature", "dkp/gamma", weight="weight/kd")


@pytest.mark.parametrize("vectorize", [True, False])
def test_dkp_transform_students_follow_their_own_overrides(vectorize):
  students = ((1, 2.0, 0.0), (2, 8.0, 1.0))  # (seed, KD and DKP temperature, DKP gamma)
  opt = lib.optimizer()
  teacher_vars = lib.init(TEACHER, 0)

  def states(obj, output_tx, overrides):
    return [create_train_state(STUDENT, lib.init(STUDENT, seed), opt, jax.random.key(seed),
                               output_tx=output_tx, hparams=obj.overrides(overrides(t, g)))
            for seed, t, g in students]

  chex.clear_trace_counter()
  sweep_step = jax.jit(chex.assert_max_traces(sweep.make_sweep_train_step(
      STUDENT, TX_OBJECTIVE, opt, teacher=TEACHER, output_tx=DKP_TX, vectorize=vectorize), n=1))
  single_step = jax.jit(step_lib.make_train_step(STUDENT, TX_OBJECTIVE, opt, teacher=TEACHER,
                                                 output_tx=DKP_TX))
  loss_step = jax.jit(step_lib.make_train_step(STUDENT, OBJECTIVE, opt, teacher=TEACHER))
  tx_overrides = lambda t, g: {"kd/temperature": t, "dkp/gamma": g}
  together = sweep.stack_states(states(TX_OBJECTIVE, DKP_TX, tx_overrides))
  separate = states(TX_OBJECTIVE, DKP_TX, tx_overrides)
  loss_form = states(OBJECTIVE, None,
                     lambda t, g: {"kd/temperature": t, "dkp/temperature": t, "dkp/gamma": g})
  for i in range(3):
    batch = lib.make_batch(i, masked=2)
    together, metrics = sweep_step(together, teacher_vars, batch)
    separate = [single_step(s, teacher_vars, batch)[0] for s in separate]
    loss_form = [loss_step(s, teacher_vars, batch)[0] for s in loss_form]

  unstacked = sweep.unstack_states(together)
  for swept, alone, as_loss in zip(unstacked, separate, loss_form, strict=True):
    chex.assert_trees_all_close(swept.params, alone.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(swept.params, as_loss.params, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["kd/temperature"], [t for _, t, _ in students])
  np.testing.assert_allclose(metrics["dkp/gamma"], [g for _, _, g in students])
  np.testing.assert_allclose(metrics["weight/kd"], [0.9, 0.9])


def _all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _all_eqns(sub)


def test_teacher_forward_appears_once_in_the_sweep_program():
  teacher = networks.from_linen(TEACHER)
  calls = []

  def counting_apply(*args, **kwargs):
    calls.append(kwargs["train"])
    return teacher.apply(*args, **kwargs)

  counted = networks.Network(split=teacher.split, apply=counting_apply, name="teacher")
  sweep_step = sweep.make_sweep_train_step(STUDENT, OBJECTIVE, lib.optimizer(), teacher=counted)
  teacher_vars = lib.init(TEACHER, 0)
  batch = lib.make_batch(0)
  jaxpr = jax.make_jaxpr(sweep_step)(sweep.stack_states(_states()), teacher_vars, batch)
  assert calls == [False]  # traced once, in eval mode

  kernels = {tuple(k.shape) for k in jax.tree.leaves(teacher_vars["params"]) if k.ndim == 4}
  teacher_convs = [e for e in _all_eqns(jaxpr.jaxpr)
                   if e.primitive.name == "conv_general_dilated"
                   and tuple(e.invars[1].aval.shape) in kernels]
  assert len(teacher_convs) == len(kernels) == 2
  for eqn in teacher_convs:  # on the shared batch, not on a batch per student
    assert eqn.invars[0].aval.shape[0] == len(batch["image"])


def test_stack_states_rejects_different_structures():
  states = _states()
  plain = create_train_state(STUDENT, lib.init(STUDENT, 1), lib.optimizer(), jax.random.key(0))
  with pytest.raises(ValueError, match="must share one structure"):
    sweep.stack_states([states[0], plain])
