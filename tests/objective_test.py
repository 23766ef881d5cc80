"""Tests for kdjax.objective: the term registry, build-time validation, weighted reduction."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses, methods, objective, schedules
from kdjax.objective import Objective, term

REQUIRED_TERMS = {"ce", "kd", "logits_matching", "annealing", "dkp", "dkd", "hint", "attention",
                  "dgkd", "ensemble"}


def _inputs(seed=0, batch=6, classes=4, teachers=3):
  keys = jax.random.split(jax.random.key(seed), 3)
  student = {"logits": jax.random.normal(keys[0], (batch, classes))}
  teacher = {"logits": 3.0 * jax.random.normal(keys[1], (teachers, batch, classes))}
  labels = jax.random.randint(keys[2], (batch,), 0, classes)
  return student, teacher, labels


def test_registry_has_the_terms_methods_compose_by_name():
  assert REQUIRED_TERMS <= set(objective.TERMS)


@pytest.mark.parametrize("build, message", [
    (lambda: term("kdd"), r"unknown loss term 'kdd'; valid: 'ce', 'kd', 'logits_matching'"),
    (lambda: term("kd", temprature=2.0), r"takes no argument\(s\) \['temprature'\]"),
    (lambda: term("annealing"), r"'annealing' needs argument\(s\) \['phi'\]"),
    (lambda: term("dkp"), r"'dkp' needs argument\(s\) \['gamma'\]"),
    (lambda: term("dkp", gamma=0.5, variant="median"), "unknown DKP variant 'median'"),
    (lambda: term("dkp", gamma=0.5, variant="tail"), "needs an integer top_k >= 1"),
    (lambda: term(methods.SPARSE_KD_TERM), r"'sparse_kd' needs argument\(s\) \['top_k'\]"),
    (lambda: term(methods.SPARSE_KD_TERM, top_k=0),
     r"k=0 must be an integer in \[1, K\], K the number of classes"),
    (lambda: term("kd", class_reduction="batchmean"), "unknown class_reduction 'batchmean'"),
    (lambda: term("ce", label_smoothing=1.0), r"label_smoothing=1.0 must lie in \[0, 1\)"),
    (lambda: term("dgkd", mode="random"), "unknown DGKD drop mode 'random'"),
    (lambda: term("dgkd", drop_num=-1), "drop_num=-1 must be a non-negative integer"),
    (lambda: term("dgkd", keep_teacher="false"), "keep_teacher='false' must be True or False"),
    (lambda: term("dgkd", keep_teacher=True),
     "keep_teacher=True applies to mode 'paper' only; mode 'code' may drop the teacher"),
    (lambda: term("attention", student_features="stage1"), "must be a sequence of stage names"),
    (lambda: term("attention", student_features=("a", "b"), teacher_features=("a",)),
     "pairs stages one to one"),
    (lambda: term("kd", label="kd/hot"), "label='kd/hot' must be a non-empty string without"),
    (lambda: Objective((term("kd"), term("kd"))), r"share the label\(s\) \['kd'\]"),
    (lambda: Objective(()), "needs one or more Terms"),
    (lambda: Objective((term("kd", temperature=0.0),)), r"kd/temperature must lie in \(0.0"),
    (lambda: Objective((term("kd", temperature=float("inf")),)),
     r"kd/temperature must lie in \(0.0, inf\); it is inf at step 0"),
    (lambda: Objective((term("kd", schedules.linear(1.0, -1.0, 10)),), num_steps=10),
     r"weight/kd must lie in \[0.0, inf\); it is -0.2000\d* at step 6"),
    (lambda: Objective((term("dkp", gamma=schedules.linear(0.0, 2.0, 100)),), num_steps=100),
     r"dkp/gamma must lie in \[0.0, 1.0\]; it is 1.0199\d* at step 51"),
    (lambda: Objective((term("kd"),), num_steps=0),
     "num_steps=0 must be None or an integer >= 1"),
    # A schedule checked at step 0 only would let a temperature cross 0 later: NaN.
    (lambda: Objective((term("kd", temperature=schedules.linear(4.0, -1.0, 10)),)),
     "kd/temperature is a schedule: pass num_steps"),
    (lambda: Objective((term("kd", schedules.linear(1.0, 0.0, 10)),)),
     "weight/kd is a schedule: pass num_steps"),
])
def test_bad_objectives_raise_at_build_time_naming_the_value(build, message):
  with pytest.raises(ValueError, match=message):
    build()


def _check_l1_mode(options):
  if options["mode"] != "plain":
    raise ValueError(f"unknown mode {options['mode']!r}")


class TestTermsOfOnesOwn:
  """A ``TermDefinition`` given to ``term`` works as a registered one, unregistered."""

  L1 = objective.TermDefinition(
      "l1", lambda x, h: h["alpha"] * jnp.abs(x.student_logits - x.teacher_logits).sum(-1),
      hyperparameters={"alpha": (objective.REQUIRED, {"low": 0.0})},
      options={"mode": "plain"}, teacher="one", check=_check_l1_mode)

  def test_it_is_validated_scheduled_reported_and_summed(self):
    student, teacher, labels = _inputs()
    alpha = schedules.linear(1.0, 3.0, 10)
    obj = Objective((term("ce", 0.5), term(self.L1, 0.25, label="mine", alpha=alpha)),
                    num_steps=10)
    assert "l1" not in objective.TERMS
    assert obj.hyperparameter_names == ("weight/ce", "weight/mine", "mine/alpha")
    assert obj.terms_needing("teacher") == ("mine",)
    values = obj.schedule_values(5)
    total, per_term = obj.loss(student, teacher, labels, None, values, jax.random.key(0))
    l1 = 2.0 * np.abs(student["logits"] - teacher["logits"][0]).sum(-1).mean()
    ce = losses.cross_entropy(student["logits"], labels).mean()
    np.testing.assert_allclose(per_term["loss/mine"], l1, rtol=1e-6)
    np.testing.assert_allclose(total, 0.5 * ce + 0.25 * l1, rtol=1e-6)

  @pytest.mark.parametrize("arguments, message", [
      ({}, r"loss term 'l1' needs argument\(s\) \['alpha'\]"),
      ({"alpha": 1.0, "beta": 2.0}, r"'l1' takes no argument\(s\) \['beta'\]"),
      ({"alpha": 1.0, "mode": "fancy"}, "unknown mode 'fancy'"),
  ])
  def test_it_is_refused_as_a_registered_one(self, arguments, message):
    with pytest.raises(ValueError, match=message):
      term(self.L1, **arguments)

  @pytest.mark.parametrize("fields, message", [
      ({"name": "kd/2"}, r"name='kd/2' must be a non-empty string without '/'"),
      ({"name": ""}, r"name='' must be a non-empty string"),
      ({"teacher": "all"}, r"'l1': unknown teacher 'all'; valid: 'none', 'one', 'many'"),
      ({"options": {"alpha": 2.0}}, r"\['alpha'\] are both hyperparameters and options"),
  ])
  def test_a_bad_definition_is_refused_when_built(self, fields, message):
    with pytest.raises(ValueError, match=message):
      dataclasses.replace(self.L1, **fields)

  def test_its_bounds_are_checked_over_training(self):
    with pytest.raises(ValueError, match="mine/alpha"):
      Objective((term(self.L1, label="mine", alpha=schedules.linear(1.0, -1.0, 10)),),
                num_steps=10)


def test_loss_is_the_weighted_sum_of_masked_term_means():
  student, teacher, labels = _inputs()
  mask = jnp.array([True, True, False, True, False, True])
  phi = schedules.annealing_phi(max_temperature=4, steps_per_level=5)
  obj = Objective((term("ce", 0.25), term("kd", schedules.linear(1.0, 0.5, 10), temperature=2.0),
                   term("annealing", 3.0, phi=phi), term("dkd", 0.5, beta=2.0)), num_steps=10)
  values = obj.schedule_values(6)
  np.testing.assert_allclose(values["weight/kd"], 0.7)
  np.testing.assert_allclose(values["annealing/phi"], 0.5)
  total, terms = jax.jit(obj.loss)(student, teacher, labels, mask, values, jax.random.key(0))

  s, t = student["logits"][np.asarray(mask)], teacher["logits"][0][np.asarray(mask)]
  y = labels[np.asarray(mask)]
  expected = {
      "loss/ce": jnp.mean(losses.cross_entropy(s, y)),
      "loss/kd": jnp.mean(losses.kd(s, t, 2.0)),
      "loss/annealing": jnp.mean(losses.annealing(s, t, 0.5)),
      "loss/dkd": jnp.mean(losses.dkd(s, t, y, 1.0, 2.0, 4.0)),
  }
  for name, value in expected.items():
    np.testing.assert_allclose(terms[name], value, rtol=1e-5)
  np.testing.assert_allclose(
      total, 0.25 * expected["loss/ce"] + 0.7 * expected["loss/kd"]
      + 3.0 * expected["loss/annealing"] + 0.5 * expected["loss/dkd"], rtol=1e-5)


def test_overrides_replace_schedules_and_are_validated():
  obj = Objective((term("kd", 0.9, temperature=schedules.linear(8.0, 2.0, 10)),
                   term("dkp", 0.9, gamma=0.5)), num_steps=10)
  assert obj.hyperparameter_names == ("weight/kd", "kd/temperature", "weight/dkp",
                                      "dkp/temperature", "dkp/gamma")
  overrides = obj.overrides({"kd/temperature": 3.0, "dkp/gamma": 1.0})
  values = obj.schedule_values(5, overrides)
  np.testing.assert_allclose(values["kd/temperature"], 3.0)
  np.testing.assert_allclose(values["dkp/gamma"], 1.0)
  np.testing.assert_allclose(values["weight/kd"], 0.9)
  with pytest.raises(ValueError, match="unknown hyperparameter 'kd/gamma'; valid: 'weight/kd'"):
    obj.overrides({"kd/gamma": 0.5})
  with pytest.raises(ValueError, match=r"dkp/gamma must lie in \[0.0, 1.0\]; it is 1.5"):
    obj.overrides({"dkp/gamma": 1.5})
  with pytest.raises(ValueError, match="must be a scalar"):
    obj.overrides({"kd/temperature": jnp.ones(3)})
  with pytest.raises(ValueError, match=r"overrides \['ce/temperature'\] match no term"):
    obj.schedule_values(0, {"ce/temperature": jnp.float32(1.0)})


def test_requirements_are_checked_when_inputs_arrive():
  student, teacher, labels = _inputs(teachers=2)
  obj = Objective((term("ce"), term("dkp", gamma=0.5, variant="tail", top_k=1),
                   term("dgkd", drop_num=2)))
  assert obj.terms_needing("labels") == ("ce", "dkp")
  assert obj.terms_needing("teacher") == ("dkp", "dgkd")
  assert obj.terms_needing("key") == ("dgkd",)
  values = obj.schedule_values(0)
  with pytest.raises(ValueError, match=r"loss term\(s\) \['ce', 'dkp'\] need labels"):
    obj.loss(student, teacher, None, None, values, jax.random.key(0))
  with pytest.raises(ValueError, match=r"drop_num=2 must be an integer in \[0, 2\) for 2"):
    obj.loss(student, teacher, labels, None, values, jax.random.key(0))


def test_feature_names_come_from_the_terms():
  obj = Objective((term("hint", student_feature="regressed", teacher_feature="stage2"),
                   term("attention", student_features=("stage1", "stage2"),
                        teacher_features=("block1", "stage2"))))
  assert obj.student_features == ("regressed", "stage1", "stage2")
  assert obj.teacher_features == ("stage2", "block1")


_UNIT = {"low": 0.0, "high": 1.0}


def test_extra_hyperparameters_are_scheduled_reported_and_overridden():
  gamma = schedules.linear(0.2, 0.8, 10)
  obj = Objective((term("ce", 0.1), term("kd", 0.9)), num_steps=10,
                  extra_hyperparameters={"dkp/gamma": (gamma, _UNIT)})
  assert obj.hyperparameter_names == ("weight/ce", "weight/kd", "kd/temperature", "dkp/gamma")
  np.testing.assert_allclose(obj.schedule_values(5)["dkp/gamma"], 0.5)
  overrides = obj.overrides({"dkp/gamma": 1.0, "kd/temperature": 8.0})
  values = obj.schedule_values(5, overrides)
  np.testing.assert_allclose(values["dkp/gamma"], 1.0)
  np.testing.assert_allclose(values["kd/temperature"], 8.0)
  with pytest.raises(ValueError, match=r"dkp/gamma must lie in \[0.0, 1.0\]; it is -0.5"):
    obj.overrides({"dkp/gamma": -0.5})
  with pytest.raises(ValueError, match="unknown hyperparameter 'dkp/temperature'; valid: "
                     "'weight/ce', 'weight/kd', 'kd/temperature', 'dkp/gamma'"):
    obj.overrides({"dkp/temperature": 8.0})
  # The loss does not read them: the same value whatever the gamma.
  student, teacher, labels = _inputs()
  losses_at = [obj.loss(student, teacher, labels, None, obj.schedule_values(0, {"dkp/gamma": g}),
                        jax.random.key(0))[0] for g in (jnp.float32(0.0), jnp.float32(1.0))]
  assert float(losses_at[0]) == float(losses_at[1]) > 0


@pytest.mark.parametrize("extra, message", [
    ({"dkp/gamma": (schedules.linear(0.0, 2.0, 10), _UNIT)},
     r"dkp/gamma must lie in \[0.0, 1.0\]; it is 1.2\d* at step 6"),
    ({"gamma": (0.5, _UNIT)}, "extra hyperparameter name 'gamma' must read '<label>/<name>'"),
    ({"dkp/a/b": (0.5, _UNIT)}, "name 'dkp/a/b' must read"),
    ({"weight/dkp": (0.5, _UNIT)}, "'weight/dkp' clashes with the terms' weights"),
    ({"loss/dkp": (0.5, _UNIT)}, "'loss/dkp' clashes"),
    ({"kd/temperature": (4.0, {})}, "'kd/temperature' clashes"),
    ({"dkp/gamma": 0.5}, r"'dkp/gamma' must be declared as \(scalar or schedule, bounds\)"),
    ({"dkp/gamma": (0.5, {"lo": 0.0})}, r"'dkp/gamma' has unknown bounds \['lo'\]"),
    ([("dkp/gamma", (0.5, _UNIT))], "extra_hyperparameters must be a mapping"),
])
def test_bad_extra_hyperparameters_raise_naming_them(extra, message):
  with pytest.raises(ValueError, match=message):
    Objective((term("kd"),), num_steps=10, extra_hyperparameters=extra)
