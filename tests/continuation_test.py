"""Continuation-KD: the hinge loss against a float64 port of the paper's equation, its ψ and
Φ schedules, and the method as the trainer builds it.

No official Continuation-KD code is public. The reference below writes the paper's loss
(arXiv 2212.05998, Jafari et al.) on top of the stage-I loss of the official Annealing-KD
code it extends, ``F.mse_loss(student, phi * teacher)`` (mean over the K classes).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_testlib as ref

from configs import base
from kdjax import losses, methods, schedules


def _reference_error(s, t, phi, class_reduction="mean"):
  """The per-example squared error ‖s − Φ·t‖², averaged or summed over the K classes."""
  squared = (s - phi * t)**2
  return squared.mean(-1) if class_reduction == "mean" else squared.sum(-1)


def _reference_hinge(s, t, phi, margin, class_reduction="mean"):
  """max{0, mse(s, Φ·t) − m·Φ}, summed over the batch (per-example values summed)."""
  error = _reference_error(s, t, phi, class_reduction)
  return float(np.maximum(error - margin * phi, 0.0).sum())


# Margins set so that in every case some examples are inside the margin (no loss, no
# gradient) and some outside: the per-example errors of these logits lie in 4-16 (mean) and
# 40-230 (sum), and m·Φ is 7, 9, 14, 69 and 130.
@pytest.mark.parametrize("phi, margin, class_reduction",
                         [(0.05, 140.0, "mean"), (0.5, 18.0, "mean"), (1.0, 14.0, "mean"),
                          (0.3, 230.0, "sum"), (1.0, 130.0, "sum")])
def test_matches_the_reference_values_and_gradients(phi, margin, class_reduction):
  s, t = ref.random_logits(0, (6, 10)), ref.random_logits(1, (6, 10))
  error = _reference_error(s, t, phi, class_reduction)
  inside = error < margin * phi
  assert inside.any() and not inside.all(), error / phi
  assert np.min(np.abs(error - margin * phi)) > 0.5, "an example sits on the kink"
  ref.assert_matches_reference(
      lambda x: losses.continuation(x, t, phi, margin, class_reduction=class_reduction).sum(),
      lambda x: _reference_hinge(x, t, phi, margin, class_reduction), s)


def test_margin_zero_is_annealing_kd():
  s, t = ref.random_logits(2, (4, 7)), ref.random_logits(3, (4, 7))
  np.testing.assert_allclose(losses.continuation(s, t, 0.4), losses.annealing(s, t, 0.4),
                             rtol=1e-6)


def test_inside_the_margin_there_is_no_loss_and_no_gradient():
  s = jnp.array([[1.0, 2.0, 3.0]])
  t = s + 0.1  # mean squared error 0.01, below m·Φ = 1
  value, gradient = jax.value_and_grad(lambda x: losses.continuation(x, t, 1.0, 1.0).sum())(s)
  assert float(value) == 0.0 and not np.any(gradient)


def test_no_gradient_reaches_the_teacher():
  s, t = jnp.asarray(ref.random_logits(4, (3, 5))), jnp.asarray(ref.random_logits(5, (3, 5)))
  gradient = jax.grad(lambda x: losses.continuation(s, x, 0.5, 0.1).sum())(t)
  assert not np.any(gradient)


def test_psi_is_a_capped_ramp():
  psi = schedules.continuation_psi(150)
  steps = np.arange(0, 400)
  np.testing.assert_allclose(jax.vmap(psi)(steps), np.minimum(steps / 150, 1.0), rtol=1e-6)


def test_method_mixes_ce_and_hinge_by_psi_with_annealed_phi():
  loss = base.loss_config("continuation", max_temperature=4, anneal_fraction=0.5,
                   ramp_fraction=0.75, margin=2.0)
  objective = methods.get("continuation").build(loss, 100, {}, 10).objective
  assert [t.label for t in objective.terms] == ["ce", "continuation"]
  for step, psi, phi in [(0, 0.0, 0.25), (30, 0.4, 0.75), (60, 0.8, 1.0), (99, 1.0, 1.0)]:
    values = objective.schedule_values(step)
    np.testing.assert_allclose(values["weight/ce"], psi, rtol=1e-6)
    np.testing.assert_allclose(values["weight/continuation"], 1.0 - psi, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(values["continuation/phi"], phi, rtol=1e-6)
    np.testing.assert_allclose(values["continuation/margin"], 2.0)


@pytest.mark.parametrize("field, value, match", [
    ("margin", -1.0, r"continuation/margin must lie in \[0.0, inf\); it is -1.0"),
    ("ramp_fraction", 0.0, r"ramp_fraction=0.0 must lie in \(0, 1\]"),
    ("anneal_fraction", 1.5,
     r"anneal_fraction=1.5 must lie in \(0, 1\]"),
    ("max_temperature", 0, r"max_temperature=0 must be an integer >= 1"),
    ("logit_standardization", True, r"logit_standardization=True has no effect on "
     r"Continuation-KD"),
])
def test_bad_config_values_are_refused(field, value, match):
  with pytest.raises(ValueError, match=match):
    methods.get("continuation").build(base.loss_config("continuation", **{field: value}), 100,
                                      {}, 10)
