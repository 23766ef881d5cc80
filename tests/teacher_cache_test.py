"""Tests for kdjax.teacher_cache: cached teacher logits train exactly like the online teacher."""

import chex
import jax
import jax.numpy as jnp
import kd_testlib as lib
import numpy as np
import pytest

from kdjax import step as step_lib
from kdjax import teacher_cache
from kdjax.objective import Objective, term
from kdjax.state import create_train_state

TEACHER = lib.TinyConvNet(width=6)
ASSISTANT = lib.TinyConvNet(width=4)
STUDENT = lib.TinyConvNet(width=3)
NUM_BATCHES, BATCH = 3, 16


def _dataset(masked_last: int = 0):
  """Every example once, in shuffled batch order, the last batch partly padding."""
  batches = [lib.make_batch(i, size=BATCH) for i in range(NUM_BATCHES)][::-1]
  if masked_last:
    padding = lib.make_batch(NUM_BATCHES, size=BATCH, masked=masked_last)
    padding["index"][-masked_last:] = -1
    batches.append(padding)
  return batches


def test_cache_holds_every_examples_teacher_logits():
  teacher_vars = lib.init(TEACHER, 0)
  num_examples = NUM_BATCHES * BATCH + (BATCH - 5)
  cache = teacher_cache.compute_teacher_logits(TEACHER, teacher_vars, _dataset(masked_last=5),
                                               num_examples)
  assert cache.shape == (num_examples, lib.NUM_CLASSES) and cache.dtype == np.float32
  for batch in _dataset(masked_last=5):
    real = batch["index"] >= 0
    expected = jax.jit(lambda x: TEACHER.apply(teacher_vars, x, train=False))(batch["image"])
    np.testing.assert_allclose(cache[batch["index"][real]], np.asarray(expected)[real],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("multi_teacher", [False, True])
def test_cached_training_equals_online_training(multi_teacher):
  if multi_teacher:
    teacher = (TEACHER, ASSISTANT)
    teacher_vars = (lib.init(TEACHER, 0), lib.init(ASSISTANT, 2))
    obj = Objective((term("ce", 0.3), term("dgkd", 0.7, temperature=5.0, drop_num=1)))
  else:
    teacher, teacher_vars, obj = TEACHER, lib.init(TEACHER, 0), lib.hinton_objective()
  cache = teacher_cache.compute_teacher_logits(teacher, teacher_vars, _dataset(),
                                               NUM_BATCHES * BATCH)
  assert cache.shape == (NUM_BATCHES * BATCH,) + ((2,) if multi_teacher else ()) + (5,)
  opt = lib.optimizer()
  online = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=teacher))
  cached = jax.jit(step_lib.make_train_step(STUDENT, obj, opt))
  state_online = state_cached = create_train_state(STUDENT, lib.init(STUDENT, 1), opt,
                                                   jax.random.key(0))
  for batch in _dataset():
    state_online, metrics_online = online(state_online, teacher_vars, batch)
    state_cached, metrics_cached = cached(state_cached, None,
                                          teacher_cache.add_teacher_logits(batch, cache))
  chex.assert_trees_all_close(state_cached.params, state_online.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(metrics_cached, metrics_online, rtol=1e-5, atol=1e-6)


def test_cache_rejects_incomplete_or_unindexed_data():
  teacher_vars = lib.init(TEACHER, 0)
  with pytest.raises(ValueError, match="16 of 64 examples never appeared"):
    teacher_cache.compute_teacher_logits(TEACHER, teacher_vars, _dataset(), 64)
  with pytest.raises(ValueError, match=r"example index 47 is outside \[0, 40\)"):
    teacher_cache.compute_teacher_logits(TEACHER, teacher_vars, _dataset(), 40)
  unindexed = [{k: v for k, v in b.items() if k != "index"} for b in _dataset()]
  with pytest.raises(ValueError, match="needs batch\\['index'\\]"):
    teacher_cache.compute_teacher_logits(TEACHER, teacher_vars, unindexed, 48)
  with pytest.raises(ValueError, match="beyond the cache of 10 examples"):
    teacher_cache.add_teacher_logits(lib.make_batch(0), jnp.zeros((10, 5)))
