"""Tests for kdjax.mixup: a seeded convex blend of images that the teacher sees too."""

import chex
import jax
import jax.numpy as jnp
import kd_testlib as lib
import numpy as np
import pytest

from kdjax import mixup, objective, parallel
from kdjax import step as step_lib
from kdjax.state import create_train_state


def _one_hot_images(batch_size: int) -> jnp.ndarray:
  """Image i is the i-th basis vector, so a mixed image reads off its blend weights."""
  return jnp.eye(batch_size, dtype=jnp.float32)


@pytest.mark.parametrize("num_mixed", [2, 3])
def test_each_image_is_a_convex_blend_of_itself_and_its_predecessors(num_mixed):
  size = 6
  mixed = mixup.mix_batch(jax.random.key(1), {"image": _one_hot_images(size)},
                          num_mixed=num_mixed)["image"]
  weights = np.asarray(mixed)  # weights[i, k]: the share of image k in mixed image i
  ratios = weights[0, [(0 - j) % size for j in range(num_mixed)]]
  assert np.all(ratios >= 0) and np.isclose(ratios.sum(), 1.0, atol=1e-6)
  expected = np.zeros((size, size), np.float32)
  for i in range(size):
    for j in range(num_mixed):
      expected[i, (i - j) % size] += ratios[j]
  np.testing.assert_allclose(weights, expected, atol=1e-6)


def test_same_key_same_view_other_key_other_view():
  batch = {"image": jax.random.normal(jax.random.key(0), (8, 4, 4, 3))}
  a = mixup.mix_batch(jax.random.key(5), batch)["image"]
  b = mixup.mix_batch(jax.random.key(5), batch)["image"]
  c = mixup.mix_batch(jax.random.key(6), batch)["image"]
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_concentration_controls_how_much_images_are_blended():
  """Dirichlet(α, α): α = 1 gives a uniform ratio (E|λ − ½| = ¼); small α gives λ near 0 or 1."""
  images = {"image": _one_hot_images(2)}

  def mean_distance_from_half(concentration):
    lam = [float(mixup.mix_batch(jax.random.key(k), images,
                                 concentration=concentration)["image"][0, 0])
           for k in range(300)]
    return np.mean(np.abs(np.asarray(lam) - 0.5))

  assert abs(mean_distance_from_half(1.0) - 0.25) < 0.03
  assert mean_distance_from_half(0.05) > 0.4
  assert mean_distance_from_half(50.0) < 0.06


def test_labels_dropped_mask_combined_index_and_dtype_kept():
  batch = {"image": np.ones((4, 2, 2, 1), np.float32).astype(jnp.bfloat16),
           "label": np.arange(4), "index": np.arange(4) + 10,
           "mask": np.array([True, True, True, False])}
  mixed = mixup.mix_batch(jax.random.key(0), batch)
  assert "label" not in mixed
  assert mixed["image"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(mixed["index"], batch["index"])
  # Example 3 is padding: it is masked, and so is example 0, which blends example 3 in.
  np.testing.assert_array_equal(mixed["mask"], [False, True, True, False])


def test_jit_equals_eager_and_sharded_equals_single_device():
  batch = lib.make_batch(0, size=16)
  key = jax.random.key(3)
  eager = mixup.mix_batch(key, batch)
  jitted = jax.jit(mixup.mix_batch)(key, batch)
  mesh = parallel.data_mesh()
  sharded = jax.jit(mixup.mix_batch)(key, parallel.shard_batch(batch, mesh))
  chex.assert_trees_all_close(jitted, eager, rtol=1e-6, atol=1e-7)  # fused multiply-adds
  chex.assert_trees_all_close(sharded, eager, rtol=1e-6, atol=1e-7)


def test_an_objective_that_needs_labels_fails_loudly_on_a_mixed_batch():
  student = lib.TinyConvNet(width=3)
  opt = lib.optimizer()
  state = create_train_state(student, lib.init(student, 1), opt, jax.random.key(0))
  step = step_lib.make_train_step(student, objective.Objective((objective.term("ce"),)), opt)
  with pytest.raises(ValueError, match="label"):
    step(state, None, mixup.mix_batch(jax.random.key(0), lib.make_batch(0)))


@pytest.mark.parametrize("kwargs, match", [
    ({"concentration": 0.0}, "concentration=0.0"),
    ({"concentration": -1.0}, "concentration=-1.0"),
    ({"concentration": float("nan")}, "concentration=nan"),
    ({"concentration": float("inf")}, "concentration=inf"),
    ({"concentration": True}, "concentration=True"),
    ({"num_mixed": 1}, "num_mixed=1"),
    ({"num_mixed": 2.0}, "num_mixed=2.0"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mixup.mix_batch(jax.random.key(0), lib.make_batch(0), **kwargs)


def test_integer_images_are_refused_naming_the_dtype():
  with pytest.raises(ValueError, match="dtype uint8"):
    mixup.mix_batch(jax.random.key(0), {"image": np.zeros((4, 2, 2, 1), np.uint8)})


def test_cached_teacher_logits_and_missing_images_are_refused():
  batch = lib.make_batch(0)
  with pytest.raises(ValueError, match="teacher_logits"):
    mixup.mix_batch(jax.random.key(0), {**batch, "teacher_logits": np.zeros((16, 5))})
  with pytest.raises(ValueError, match="'image'"):
    mixup.mix_batch(jax.random.key(0), {"label": batch["label"]})
