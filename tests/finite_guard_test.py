"""Tests for kdjax.finite_guard: non-finite steps flagged on the device, named on the host."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import checkpoints, models, objective, sweep
from kdjax import state as state_lib
from kdjax.finite_guard import Health, checked_names, describe, guard, no_bad_steps


@pytest.mark.parametrize("skip", [True, False])
def test_guarded_step_flags_a_bad_batch_without_a_host_sync(skip):
  module = models.get("mlp_tiny", 10)
  optimizer = optax.adam(optax.linear_schedule(1e-2, 0.0, 10))  # integer counters inside
  obj = objective.Objective((objective.term("ce", 1.0),))
  variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
  states = sweep.stack_states([state_lib.create_train_state(module, variables, optimizer,
                                                            jax.random.key(1))] * 2)
  checked = ("loss", "loss/ce", "grad_norm")
  step = jax.jit(guard(
      sweep.make_sweep_train_step(module, obj, optimizer, report_teacher_finite=True),
      checked, skip=skip))
  carry = (states, no_bad_steps(2, len(checked_names(checked))))
  images = np.random.default_rng(0).normal(size=(3, 8, 8, 8, 1)).astype(np.float32)
  images[1, 0, 3, 3, 0] = np.nan  # one pixel of one example of the second batch
  params, moments = [], []
  for batch_images in images:
    carry, _ = step(carry, None, {"image": batch_images, "label": np.arange(8) % 10})
    params.append(jax.device_get(carry[0].params))
    moments.append([x for x in jax.device_get(jax.tree.leaves(carry[0].opt_state))
                    if np.issubdtype(x.dtype, np.floating)])
  health = jax.device_get(carry[1])
  np.testing.assert_array_equal(health.count, [2, 2] if not skip else [1, 1])
  np.testing.assert_array_equal(health.first_step, [2, 2])
  flagged = zip(checked_names(checked), health.first_terms[0], strict=True)
  assert [name for name, bad in flagged if bad] == [
      "loss", "loss/ce", "grad_norm", "student_variables"]
  np.testing.assert_array_equal(jax.device_get(carry[0].step), [3, 3])
  # The optimizer's counters advance with the step either way: the learning-rate schedule
  # applied stays the one logged (it is computed from the step).
  counters = [x for x in jax.device_get(jax.tree.leaves(carry[0].opt_state))
              if np.issubdtype(x.dtype, np.integer)]
  assert len(counters) == 2 and all((c == 3).all() for c in counters)
  if skip:  # the bad batch left the students as they were; the next one trained them
    jax.tree.map(np.testing.assert_array_equal, params[1], params[0])
    jax.tree.map(np.testing.assert_array_equal, moments[1], moments[0])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params[2]))
    assert checkpoints.parameter_hash(params[2]) != checkpoints.parameter_hash(params[1])
  else:
    assert not all(np.isfinite(x).all() for x in jax.tree.leaves(params[2]))


def test_describe_names_the_earliest_bad_step_and_every_seed_that_hit_it():
  names = checked_names(("loss", "grad_norm"))
  health = Health(count=np.array([0, 3, 1]), first_step=np.array([0, 7, 7]),
                  first_terms=np.array([[False] * 4, [False, True, True, False],
                                        [True, False, False, False]]))
  assert describe(health, names, seeds=[10, 11, 12]) == "step 7 in loss, grad_norm (seeds 11, 12)"
  health = health._replace(first_step=np.array([0, 7, 9]))
  assert describe(health, names, seeds=[10, 11, 12]) == "step 7 in loss, grad_norm (seed 11)"


def test_describe_refuses_a_clean_record():
  with pytest.raises(ValueError, match="no non-finite step"):
    describe(jax.device_get(no_bad_steps(2, 4)), checked_names(("loss", "grad_norm")), [0, 1])
