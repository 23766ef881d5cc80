"""Sparse teacher targets (top-k plus a tail bucket) against float64 references.

The reference writes the loss from its definition, the KL over the k + 1 outcomes "class
j in the teacher's top k" and "any other class", with the student's probabilities taken over
all K classes (the point of MaxText's top-k distillation fix, PR 4056); a second, independent
check is the chain rule of KL: dense KD = sparse KD + T²·p_tail·KL(teacher's tail shape ‖
student's tail shape).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference_testlib as ref

from kdjax import losses, methods, models, objective, sweep, teacher_cache
from kdjax import state as state_lib


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _reference_sparse_kd(s, t, k, temperature):
  """Σ over examples of T²·KL over (top-k classes, tail), student over all K classes."""
  total = 0.0
  for s_row, t_row in zip(s, t, strict=True):
    p, q = _softmax(t_row / temperature), _softmax(s_row / temperature)
    top = np.argsort(-p, kind="stable")[:k]
    p_b, q_b = p[top], q[top]
    if k < len(p):  # the tail bucket; with k = K there is none
      p_b, q_b = np.append(p_b, 1.0 - p_b.sum()), np.append(q_b, 1.0 - q_b.sum())
    total += temperature**2 * np.sum(p_b * np.log(p_b / q_b))
  return total


S, T = ref.random_logits(0, (5, 12)), ref.random_logits(1, (5, 12))


@pytest.mark.parametrize("k", [1, 3, 11, 12])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_matches_the_reference(k, temperature):
  with jax.enable_x64(True):
    targets = losses.sparse_targets(jnp.asarray(T), k, temperature)
  ref.assert_matches_reference(lambda x: losses.sparse_kd(x, targets, temperature).sum(),
                               lambda x: _reference_sparse_kd(x, T, k, temperature), S)


def _targets(indices):
  """Hand-made targets over 5 classes with the given ``[2, k]`` indices."""
  indices = np.asarray(indices)
  return losses.SparseTargets(indices, np.full(indices.shape, -2.0, np.float32),
                              np.full(indices.shape[:-1], -1.0, np.float32))


def test_k_equal_to_the_class_count_is_dense_kd_to_rounding():
  s, t = jnp.asarray(S, jnp.float32), jnp.asarray(T, jnp.float32)
  targets = losses.sparse_targets(t, 12, 2.0)
  np.testing.assert_allclose(losses.sparse_kd(s, targets, 2.0), losses.kd(s, t, 2.0),
                             rtol=1e-5)
  with jax.enable_x64(True):
    s, t = jnp.asarray(S), jnp.asarray(T)
    targets = losses.sparse_targets(t, 12, 2.0)
    np.testing.assert_allclose(losses.sparse_kd(s, targets, 2.0), losses.kd(s, t, 2.0),
                               rtol=1e-12)
    np.testing.assert_allclose(jax.grad(lambda x: losses.sparse_kd(x, targets, 2.0).sum())(s),
                               jax.grad(lambda x: losses.kd(x, t, 2.0).sum())(s), atol=1e-12)


@pytest.mark.parametrize("k", [1, 4, 8])
def test_chain_rule_dense_kd_is_sparse_kd_plus_the_tail_shape_term(k):
  temperature = 3.0
  with jax.enable_x64(True):
    sparse = np.asarray(losses.sparse_kd(S, losses.sparse_targets(T, k, temperature),
                                         temperature))
    dense = np.asarray(losses.kd(S, T, temperature))
  for i in range(len(S)):
    p, q = _softmax(T[i] / temperature), _softmax(S[i] / temperature)
    tail = np.argsort(-p, kind="stable")[k:]
    p_tail, q_tail = p[tail] / p[tail].sum(), q[tail] / q[tail].sum()
    shape_term = temperature**2 * p[tail].sum() * np.sum(p_tail * np.log(p_tail / q_tail))
    np.testing.assert_allclose(dense[i], sparse[i] + shape_term, rtol=1e-10)


def test_student_mass_outside_the_kept_classes_is_paid_for():
  # Renormalising the student over the top k would make these two students equal.
  t = jnp.array([[4.0, 3.0, 0.0, 0.0]])
  targets = losses.sparse_targets(t, 2, 1.0)
  on_top = losses.sparse_kd(jnp.array([[4.0, 3.0, -9.0, -9.0]]), targets, 1.0)
  in_tail = losses.sparse_kd(jnp.array([[4.0, 3.0, 6.0, 6.0]]), targets, 1.0)
  assert float(in_tail[0]) > float(on_top[0]) + 1.0


def test_no_gradient_reaches_the_teacher_and_zero_on_itself():
  t = jnp.asarray(T, jnp.float32)
  gradient = jax.grad(lambda x: losses.sparse_kd(
      jnp.asarray(S, jnp.float32), losses.sparse_targets(x, 3, 2.0), 2.0).sum())(t)
  assert not np.any(gradient)
  np.testing.assert_allclose(losses.sparse_kd(t, losses.sparse_targets(t, 3, 2.0), 2.0), 0.0,
                             atol=1e-5)


def test_cache_is_compact_and_gives_the_same_loss_as_the_targets():
  logits = ref.random_logits(2, (50, 100)).astype(np.float32)
  sparse = teacher_cache.sparsify(logits, 10, 4.0)
  assert sparse.indices.dtype == np.uint8 and sparse.logits.dtype == np.float32
  assert sum(x.nbytes for x in sparse) <= 0.14 * logits.nbytes
  assert teacher_cache.sparsify(np.zeros((2, 300), np.float32), 3, 1.0).indices.dtype == (
      np.uint16)
  index = np.array([7, 3, -1])
  rows = teacher_cache.sparse_rows(sparse, index)
  student = jnp.asarray(ref.random_logits(3, (3, 100)), jnp.float32)
  expected = losses.sparse_kd(student, losses.sparse_targets(jnp.asarray(logits[[7, 3, 0]]),
                                                             10, 4.0), 4.0)
  np.testing.assert_allclose(losses.sparse_kd(student, rows, 4.0), expected, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 10, 99, 100])
def test_completed_logits_give_the_targets_back(k):
  logits = ref.random_logits(4, (40, 100)).astype(np.float32)
  sparse = teacher_cache.sparsify(logits, k, 4.0)
  completed = teacher_cache.complete_logits(sparse, 100)
  again = losses.sparse_targets(jnp.asarray(completed), k, 4.0)
  np.testing.assert_array_equal(again.indices, sparse.indices)
  np.testing.assert_array_equal(again.logits, sparse.logits)
  np.testing.assert_allclose(again.tail_logit, sparse.tail_logit, rtol=1e-6)
  if k == 100:
    np.testing.assert_array_equal(completed, logits)


def test_completed_logits_keep_the_top_k_probabilities_and_the_tail_mass():
  logits, k, temperature = ref.random_logits(5, (8, 30)), 4, 2.5
  sparse = teacher_cache.sparsify(logits.astype(np.float32), k, temperature)
  completed = teacher_cache.complete_logits(sparse, 30).astype(np.float64)
  for row, completed_row in zip(logits, completed, strict=True):
    p, p_completed = _softmax(row / temperature), _softmax(completed_row / temperature)
    top = np.argsort(-p, kind="stable")[:k]
    tail = np.setdiff1d(np.arange(30), top)
    np.testing.assert_allclose(p_completed[top], p[top], rtol=1e-5)
    np.testing.assert_allclose(p_completed[tail], p[tail].mean(), rtol=1e-5)


def test_a_sparse_cache_fills_a_batch_with_completed_logits():
  logits = ref.random_logits(6, (12, 20)).astype(np.float32)
  sparse = teacher_cache.SparseCache(teacher_cache.sparsify(logits, 5, 4.0), num_classes=20,
                                     temperature=4.0)
  index = np.array([11, 0, 4, -1])
  batch = teacher_cache.add_teacher_logits({"image": np.zeros((4, 1)), "index": index}, sparse)
  np.testing.assert_array_equal(
      batch["teacher_logits"],
      teacher_cache.complete_logits(teacher_cache.sparse_rows(sparse.targets, index), 20))
  np.testing.assert_array_equal(batch["teacher_logits"][0].max(), logits[11].max())
  np.testing.assert_array_equal(batch["teacher_temperature"], [4.0] * 4)


class TestSweepOverSparseCache:
  """Per-student overrides (kdjax.sweep) of a step that reads a sparse teacher cache.

  The cache's targets hold at the temperature it was kept at: a student overriding the
  sparse_kd term's temperature would recover other targets than the teacher's top k and
  bucket (the completed logits are built for one T), so the override is refused, by name.
  """

  K, T = 10, 4.0

  def _step_and_states(self, overrides):
    sparse_kd = objective.term(methods.SPARSE_KD_TERM, 0.9, temperature=self.T, top_k=3)
    obj = objective.Objective((objective.term("ce", 0.1), sparse_kd))
    student = models.get("mlp_tiny", self.K)
    images = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    opt = optax.sgd(0.1)
    states = sweep.stack_states([
        state_lib.create_train_state(student, student.init(jax.random.key(i), images,
                                                           train=False),
                                     opt, jax.random.key(i), hparams=obj.overrides(o))
        for i, o in enumerate(overrides)])
    step_fn = jax.jit(sweep.make_sweep_train_step(student, obj, opt, teacher=None))
    return step_fn, states, {"image": images, "label": jnp.arange(8) % self.K,
                             "index": np.arange(8)}

  def _sparse_cache(self):
    logits = ref.random_logits(7, (8, self.K)).astype(np.float32)
    return logits, teacher_cache.SparseCache(teacher_cache.sparsify(logits, 3, self.T),
                                             num_classes=self.K, temperature=self.T)

  def test_a_temperature_override_is_refused_naming_it(self):
    step_fn, states, batch = self._step_and_states([{"sparse_kd/temperature": 2.0},
                                                    {"sparse_kd/temperature": 4.0}])
    batch = teacher_cache.add_teacher_logits(batch, self._sparse_cache()[1])
    with pytest.raises(ValueError, match="override 'sparse_kd/temperature' is refused"):
      step_fn(states, None, batch)

  def test_a_dense_teacher_takes_the_override(self):
    logits, _ = self._sparse_cache()
    step_fn, states, batch = self._step_and_states([{"sparse_kd/temperature": 2.0},
                                                    {"sparse_kd/temperature": 4.0}])
    _, metrics = step_fn(states, None, {**batch, "teacher_logits": logits})
    assert metrics["sparse_kd/temperature"].tolist() == [2.0, 4.0]

  def test_a_weight_override_trains_from_the_cache(self):
    step_fn, states, batch = self._step_and_states([{"weight/sparse_kd": 0.5},
                                                    {"weight/sparse_kd": 0.9}])
    batch = teacher_cache.add_teacher_logits(batch, self._sparse_cache()[1])
    _, metrics = step_fn(states, None, batch)
    np.testing.assert_allclose(metrics["weight/sparse_kd"], [0.5, 0.9])
    assert np.isfinite(metrics["loss"]).all()


@pytest.mark.parametrize("call, match", [
    (lambda: losses.sparse_targets(jnp.zeros((2, 5)), 0), r"k=0 must be an integer in \[1, K\]"),
    (lambda: losses.sparse_targets(jnp.zeros((2, 5)), 6), r"k=6 .* \[1, 5\]"),
    (lambda: losses.sparse_targets(jnp.zeros((2, 5)), 2, temperature=0.0), "temperature=0.0"),
    (lambda: losses.sparse_kd(jnp.zeros((3, 5)), losses.sparse_targets(jnp.zeros((2, 5)), 2)),
     r"do not fit student logits \(3, 5\)"),
    (lambda: losses.sparse_kd(jnp.zeros((2, 3)), losses.sparse_targets(jnp.zeros((2, 5)), 4)),
     r"k=4 .* \[1, 3\]"),
    (lambda: losses.sparse_kd(jnp.zeros((2, 5)), _targets([[0, 5], [1, 2]])),
     r"indices must lie in \[0, K\) = \[0, 5\); got values in \[0, 5\]"),
    (lambda: losses.sparse_kd(jnp.zeros((2, 5)), _targets([[0, 3], [-1, 2]])),
     r"got values in \[-1, 3\]"),
    (lambda: losses.sparse_kd(jnp.zeros((2, 5)), _targets([[0, 3], [2, 2]])),
     r"repeat a class within a row: row 1 \(flattened\) holds \[2, 2\]"),
    (lambda: teacher_cache.sparse_rows(teacher_cache.sparsify(np.zeros((2, 5)), 2, 1.0),
                                       np.array([0, -2])), "example index -2 is negative"),
    (lambda: teacher_cache.add_teacher_logits({"index": np.array([-3, 0])}, np.zeros((2, 5))),
     "example index -3 is negative"),
    (lambda: teacher_cache.sparsify(np.zeros((2, 2, 5)), 2, 1.0), r"\[N, K\]; got shape"),
    (lambda: teacher_cache.complete_logits(teacher_cache.sparsify(np.zeros((2, 5)), 4, 1.0), 3),
     "num_classes=3 is smaller than the k=4 classes the targets keep"),
    (lambda: teacher_cache.add_teacher_logits(
        {"index": np.array([0, 2])},
        teacher_cache.SparseCache(teacher_cache.sparsify(np.zeros((2, 5)), 2, 1.0), 5, 1.0)),
     "example index 2 is beyond the cache of 2 examples"),
    (lambda: teacher_cache.sparse_rows(teacher_cache.sparsify(np.zeros((2, 5)), 2, 1.0),
                                       np.array([2])), "example index 2 is beyond"),
])
def test_bad_input_is_refused(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_traced_indices_are_not_checked():
  """Inside jit the indices' values are unknown: the loss runs (and clamps), it cannot refuse."""
  loss = jax.jit(lambda targets: losses.sparse_kd(jnp.zeros((2, 5)), targets))
  assert loss(_targets([[0, 3], [2, 2]])).shape == (2,)
