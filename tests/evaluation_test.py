"""Tests for kdjax.evaluation: means over every real example, whatever the batching."""

import jax
import kd_testlib as lib
import numpy as np
import optax
import pytest

from kdjax import evaluation, sweep
from kdjax import step as step_lib
from kdjax.state import create_train_state

TEACHER = lib.TinyConvNet(width=6)
STUDENT = lib.TinyConvNet(width=3)


def _numpy_reference(state_vars, teacher_vars, batches):
  """Accuracy, agreement and CE over the real examples, in float64 NumPy."""
  images = np.concatenate([b["image"][b.get("mask", np.ones(len(b["label"]), bool))]
                           for b in batches])
  labels = np.concatenate([b["label"][b.get("mask", np.ones(len(b["label"]), bool))]
                           for b in batches])
  logits = np.asarray(STUDENT.apply(state_vars, images, train=False), np.float64)
  teacher = np.asarray(TEACHER.apply(teacher_vars, images, train=False), np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return {"accuracy": np.mean(logits.argmax(-1) == labels),
          "agreement": np.mean(logits.argmax(-1) == teacher.argmax(-1)),
          "loss/ce": -np.mean(log_p[np.arange(len(labels)), labels])}


def test_padded_batches_weigh_by_their_real_examples():
  student_vars, teacher_vars = lib.init(STUDENT, 1), lib.init(TEACHER, 0)
  state = create_train_state(STUDENT, student_vars, optax.sgd(0.1), jax.random.key(0))
  batches = [lib.make_batch(0), lib.make_batch(1), lib.make_batch(2, masked=11)]
  eval_step = jax.jit(step_lib.make_eval_step(STUDENT, teacher=TEACHER))
  metrics = evaluation.evaluate(eval_step, state, teacher_vars, batches)
  expected = _numpy_reference(student_vars, teacher_vars, batches)
  for name, value in expected.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, err_msg=name)
  assert "count" not in metrics

  # Stacked students: one mean per student, each equal to its own evaluation.
  states = sweep.stack_states([state, state])
  stacked = evaluation.evaluate(jax.jit(sweep.over_students(step_lib.make_eval_step(
      STUDENT, teacher=TEACHER))), states, teacher_vars, batches)
  np.testing.assert_allclose(stacked["accuracy"], [expected["accuracy"]] * 2, rtol=1e-5)


def test_an_eval_step_without_counts_is_refused():
  with pytest.raises(ValueError, match="have no 'count' to weigh batches by"):
    evaluation.evaluate(lambda s, t, b: {"accuracy": 1.0}, None, None, [{}])
