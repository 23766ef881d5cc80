"""Tests for kdjax.step: the pure distillation train and eval steps."""

import itertools

import chex
import jax
import jax.numpy as jnp
import kd_testlib as lib
import numpy as np
import optax
import pytest

from kdjax import heads, losses, schedules, transforms
from kdjax import step as step_lib
from kdjax.objective import Objective, term
from kdjax.state import create_train_state

TEACHER = lib.TinyConvNet(width=6)
STUDENT = lib.TinyConvNet(width=3)


@pytest.fixture(scope="module")
def teacher_vars():
  return lib.init(TEACHER, 0)


@pytest.fixture(scope="module")
def student_vars():
  return lib.init(STUDENT, 1)


def _run(step, state, teacher_vars, num_steps, masked=0):
  metrics = []
  for i in range(num_steps):
    state, m = step(state, teacher_vars, lib.make_batch(i, masked=masked))
    metrics.append(m)
  return state, metrics


def test_step_equals_value_and_grad_of_the_objective(teacher_vars, student_vars):
  # One vjp, an output-gradient objective and a pullback must give exactly the gradient of
  # the whole objective with respect to the params.
  opt = optax.sgd(0.1)
  state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0))
  step = jax.jit(step_lib.make_train_step(STUDENT, lib.hinton_objective(), opt, teacher=TEACHER))
  batch = lib.make_batch(0, masked=3)
  new_state, metrics = step(state, teacher_vars, batch)

  def direct(params):
    logits, updated = STUDENT.apply({**student_vars, "params": params}, batch["image"],
                                    train=True, mutable=["batch_stats"])
    t = TEACHER.apply(teacher_vars, batch["image"], train=False)
    per_example = (0.1 * losses.cross_entropy(logits, batch["label"])
                   + 0.9 * losses.kd(logits, t, 4.0))
    return losses.reduce_mean(per_example, mask=batch["mask"]), updated

  (loss, updated), grads = jax.jit(jax.value_and_grad(direct, has_aux=True))(
      student_vars["params"])
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, student_vars["params"], grads)
  chex.assert_trees_all_close(new_state.params, expected, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(new_state.model_state, {"batch_stats": updated["batch_stats"]},
                              rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  assert int(new_state.step) == 1


def test_teacher_is_data_never_trained_donated_or_baked_in():
  # Born-again student: it starts as a copy of the teacher, the worst case for donation.
  teacher_vars = lib.init(TEACHER, 0)
  before = lib.numpy_tree(teacher_vars)
  opt = lib.optimizer()
  state = create_train_state(TEACHER, teacher_vars, opt, jax.random.key(0))
  chex.clear_trace_counter()
  train_step = step_lib.make_train_step(TEACHER, lib.hinton_objective(), opt, teacher=TEACHER)
  step = jax.jit(chex.assert_max_traces(train_step, n=1), donate_argnums=0)
  old_state = state
  state, _ = _run(step, state, teacher_vars, 3)

  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old_state.params))  # donated
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(teacher_vars))
  chex.assert_trees_all_equal(lib.numpy_tree(teacher_vars), before)
  assert not np.allclose(state.params["Dense_0"]["kernel"],
                         teacher_vars["params"]["Dense_0"]["kernel"])

  # Teacher variables are an argument, not a constant: others change the result, no retrace.
  batch = lib.make_batch(9)
  copy = jax.tree.map(jnp.copy, state)
  _, m1 = step(copy, teacher_vars, batch)
  copy = jax.tree.map(jnp.copy, state)
  _, m2 = step(copy, lib.init(TEACHER, 5), batch)
  assert float(m1["loss/kd"]) != float(m2["loss/kd"])

  # No gradient reaches the teacher, neither through the loss nor through the update.
  def outcome(tv):
    new_state, metrics = train_step(state, tv, batch)
    leaves = jax.tree.leaves(new_state.params)
    return metrics["loss"] + sum(jnp.sum(leaf) for leaf in leaves)

  grads = jax.jit(jax.grad(outcome))(teacher_vars)
  assert all(not np.any(g) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("variant", ["uniform", "tail"])
def test_dkp_term_equals_dkp_output_transform(teacher_vars, student_vars, variant):
  temperature, weight, num_steps = 4.0, 0.9, 3
  gamma = schedules.linear(0.3, 0.9, num_steps)
  options = {"variant": variant, "top_k": 2} if variant == "tail" else {}
  base = (term("ce", 0.1), term("kd", weight, temperature=temperature))
  as_term = Objective(
      base + (term("dkp", weight, temperature=temperature, gamma=gamma, **options),),
      num_steps=num_steps)
  as_tx = Objective(base, num_steps=num_steps)
  tx = transforms.dkp(temperature, gamma, variant, top_k=options.get("top_k"), weight=weight,
                      num_steps=num_steps)
  opt = lib.optimizer()
  results = []
  for obj, output_tx in ((as_term, None), (as_tx, tx)):
    state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0), output_tx=output_tx)
    step = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER,
                                            output_tx=output_tx))
    results.append(_run(step, state, teacher_vars, num_steps, masked=3))
  (state_a, metrics_a), (state_b, metrics_b) = results
  chex.assert_trees_all_close(state_a.params, state_b.params, rtol=1e-5, atol=1e-6)
  assert np.any(metrics_a[-1]["loss/dkp"] != 0)
  np.testing.assert_allclose(metrics_a[-1]["dkp/gamma"], gamma(num_steps - 1))


_UNIT = {"low": 0.0, "high": 1.0}
_BASE_DKP = dict(temperature=4.0, weight=0.9, gamma=0.5)


def _dkp_transform_form(temperature, weight, gamma, named):
  """The KD objective and DKP transform; ``named`` reads T, w and gamma from the objective."""
  obj = Objective((term("ce", 0.1), term("kd", weight, temperature=temperature)),
                  extra_hyperparameters={"dkp/gamma": (gamma, _UNIT)} if named else {})
  if named:
    return obj, transforms.dkp("kd/temperature", "dkp/gamma", weight="weight/kd")
  return obj, transforms.dkp(temperature, gamma, weight=weight)


def _dkp_loss_form(temperature, weight, gamma):
  return Objective((term("ce", 0.1), term("kd", weight, temperature=temperature),
                    term("dkp", weight, temperature=temperature, gamma=gamma)))


def _train(obj, output_tx, student_vars, teacher_vars, hparams=None, num_steps=2, step=None):
  opt = lib.optimizer()
  state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0), output_tx=output_tx,
                             hparams=hparams)
  step = step or jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER,
                                                  output_tx=output_tx))
  return _run(step, state, teacher_vars, num_steps, masked=3)


@pytest.mark.parametrize("override", [
    {"temperature": 8.0},
    {"gamma": 1.0},
    {"temperature": 2.0, "weight": 0.5, "gamma": 0.0},
])
def test_dkp_transform_follows_per_student_overrides(teacher_vars, student_vars, override):
  # Per-student overrides of the KD term's temperature and weight and of the declared DKP
  # gamma reach the transform: the student trains exactly like one built with those values,
  # in transform form or in loss form.
  obj, tx = _dkp_transform_form(**_BASE_DKP, named=True)
  built = {**_BASE_DKP, **override}
  names = {"temperature": "kd/temperature", "weight": "weight/kd", "gamma": "dkp/gamma"}
  hparams = obj.overrides({names[k]: v for k, v in built.items()})
  defaults = obj.overrides({names[k]: v for k, v in _BASE_DKP.items()})
  opt = lib.optimizer()
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(
      step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER, output_tx=tx), n=1))
  overridden, metrics = _train(obj, tx, student_vars, teacher_vars, hparams, step=step)
  plain, _ = _train(obj, tx, student_vars, teacher_vars, defaults, step=step)  # no retrace

  reference, _ = _train(*_dkp_transform_form(**built, named=False), student_vars, teacher_vars)
  loss_obj = _dkp_loss_form(**_BASE_DKP)
  loss_form, _ = _train(loss_obj, None, student_vars, teacher_vars, loss_obj.overrides({
      "kd/temperature": built["temperature"], "dkp/temperature": built["temperature"],
      "weight/kd": built["weight"], "weight/dkp": built["weight"], "dkp/gamma": built["gamma"]}))
  chex.assert_trees_all_close(overridden.params, reference.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(overridden.params, loss_form.params, rtol=1e-5, atol=1e-6)
  difference = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), overridden.params,
                            plain.params)
  assert max(jax.tree.leaves(difference)) > 1e-5  # the override changed the training
  np.testing.assert_allclose(metrics[-1]["kd/temperature"], built["temperature"])
  np.testing.assert_allclose(metrics[-1]["weight/kd"], built["weight"])
  np.testing.assert_allclose(metrics[-1]["dkp/gamma"], built["gamma"])


def test_log_schedules_can_report_a_hyperparameter_under_a_second_name(teacher_vars,
                                                                      student_vars):
  obj, tx = _dkp_transform_form(**_BASE_DKP, named=True)
  opt = lib.optimizer()
  step = jax.jit(step_lib.make_train_step(
      STUDENT, obj, opt, teacher=TEACHER, output_tx=tx,
      log_schedules={"dkp/temperature": "kd/temperature", "learning_rate": 0.1}))
  _, metrics = _train(obj, tx, student_vars, teacher_vars, obj.overrides({"kd/temperature": 8.0}),
                      num_steps=1, step=step)
  np.testing.assert_allclose(metrics[0]["dkp/temperature"], 8.0)
  np.testing.assert_allclose(metrics[0]["learning_rate"], 0.1)
  with pytest.raises(ValueError, match=r"log_schedules \[.dkp/temperature='kd/temprature'.\] "
                     r"name no hyperparameter of the objective; valid: 'weight/ce'"):
    step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER, output_tx=tx,
                             log_schedules={"dkp/temperature": "kd/temprature"})


def test_overrides_nothing_can_honour_are_refused_naming_them(teacher_vars, student_vars):
  opt = lib.optimizer()
  obj, tx = _dkp_transform_form(**_BASE_DKP, named=False)  # no DKP gamma declared
  with pytest.raises(ValueError, match="unknown hyperparameter 'dkp/gamma'; valid: 'weight/ce'"):
    obj.overrides({"dkp/gamma": 1.0})
  # A state built around Objective.overrides still fails at the step, naming the override.
  state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0), output_tx=tx,
                             hparams={"dkp/gamma": 1.0})
  step = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER, output_tx=tx))
  with pytest.raises(ValueError, match=r"overrides \['dkp/gamma'\] match no term"):
    step(state, teacher_vars, lib.make_batch(0))
  # A transform that reads a hyperparameter the objective does not declare.
  named_tx = transforms.dkp("kd/temperature", "dkp/gamma", weight="weight/kd")
  state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0), output_tx=named_tx)
  step = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER,
                                          output_tx=named_tx))
  with pytest.raises(ValueError, match="reads gamma from hyperparameter 'dkp/gamma'"):
    step(state, teacher_vars, lib.make_batch(0))


def test_metrics_report_every_term_and_schedule(student_vars):
  phi = schedules.annealing_phi(max_temperature=4, steps_per_level=2)
  learning_rate = optax.linear_schedule(0.1, 0.0, 10)
  weight = schedules.piecewise_constant(0.5, {2: 1.0})
  obj = Objective((term("annealing", weight, phi=phi),
                   term("kd", 0.25, label="kd_hot", temperature=8.0)), num_steps=8)
  opt = optax.sgd(learning_rate)
  state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0))
  step = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=lib.TinyConvNet(width=2),
                                          log_schedules={"learning_rate": learning_rate}))
  teacher_vars = lib.init(lib.TinyConvNet(width=2), 3)
  _, metrics = _run(step, state, teacher_vars, 4)
  assert set(metrics[0]) == {
      "loss", "loss/annealing", "loss/kd_hot", "weight/annealing", "weight/kd_hot",
      "annealing/phi", "kd_hot/temperature", "learning_rate", "accuracy", "agreement",
      "kl_teacher_student", "grad_norm"}
  for n, m in enumerate(metrics):
    np.testing.assert_allclose(m["annealing/phi"], phi(n))
    np.testing.assert_allclose(m["weight/annealing"], weight(n))
    np.testing.assert_allclose(m["learning_rate"], learning_rate(n))
    np.testing.assert_allclose(
        m["loss"], m["weight/annealing"] * m["loss/annealing"] + 0.25 * m["loss/kd_hot"],
        rtol=1e-6)
    assert 0.0 <= m["agreement"] <= 1.0 and m["kl_teacher_student"] >= 0.0


def test_hint_and_attention_train_a_regressor_outside_the_student_params(teacher_vars,
                                                                         student_vars):
  obj = Objective((term("ce", 1.0),
                   term("hint", 100.0, student_feature="regressed", teacher_feature="stage2"),
                   term("attention", 1000.0, student_features=("stage1", "stage2"))))
  aux = {"regressed": heads.AuxHead(heads.ConvRegressor(features=12), source="stage2")}
  opt = optax.adam(3e-3)
  batch = lib.make_batch(0)
  state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0), aux_heads=aux,
                             sample_inputs=batch["image"])
  step = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER, aux_heads=aux))
  start = state
  metrics = []
  for _ in range(8):
    state, m = step(state, teacher_vars, batch)
    metrics.append(m)

  chex.assert_trees_all_equal_structs(state.params, student_vars["params"])
  assert set(state.aux_state["regressed"]) == {"batch_stats"}
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), state.aux_params, start.aux_params)
  assert all(jax.tree.leaves(moved))
  assert metrics[-1]["loss/hint"] < metrics[0]["loss/hint"]
  assert metrics[-1]["loss/attention"] < metrics[0]["loss/attention"]


def _subset_sums(values, allowed):
  return [sum(values[i] for i in subset) for subset in allowed]


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_dgkd_drops_teachers_per_step_deterministically(student_vars, mode):
  teachers = (TEACHER, lib.TinyConvNet(width=5), lib.TinyConvNet(width=4))
  teacher_vars = tuple(lib.init(t, 10 + i) for i, t in enumerate(teachers))
  temperature = 5.0
  obj = Objective((term("ce", 0.2),
                   term("dgkd", 0.8, temperature=temperature, mode=mode, keep_prob=0.5),
                   term("ensemble", 0.0, temperature=temperature)))
  opt = lib.optimizer()
  state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0))
  step = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=teachers))
  batch = lib.make_batch(0)

  @jax.jit
  def reference(images):
    s, _ = STUDENT.apply(student_vars, images, train=True, mutable=["batch_stats"])
    ts = jnp.stack([t.apply(v, images, train=False)
                    for t, v in zip(teachers, teacher_vars, strict=True)])
    kls = jnp.stack([jnp.mean(losses.kd(s, t, temperature)) for t in ts])
    return kls, jnp.mean(losses.ensemble_kd(s, ts, temperature))

  kls, ensemble = jax.device_get(reference(batch["image"]))
  if mode == "code":  # exactly one of the three terms is dropped
    allowed = list(itertools.combinations(range(3), 2))
  else:  # Bernoulli keeps of every network, the teacher's included (none kept: no term)
    allowed = [kept for r in range(4) for kept in itertools.combinations(range(3), r)]
  candidates = _subset_sums(kls, allowed)

  values = []
  for n in range(8):
    _, m = step(state.replace(step=jnp.int32(n)), teacher_vars, batch)
    _, again = step(state.replace(step=jnp.int32(n)), teacher_vars, batch)
    assert float(m["loss/dgkd"]) == float(again["loss/dgkd"])
    assert np.min(np.abs(np.array(candidates) - float(m["loss/dgkd"]))) < 1e-4
    values.append(round(float(m["loss/dgkd"]), 4))
  assert len(set(values)) > 1  # the drop changes from step to step
  np.testing.assert_allclose(m["loss/ensemble"], ensemble, rtol=1e-4)


def test_mixed_precision_teacher_and_student(teacher_vars, student_vars):
  batch = lib.make_batch(0)
  forward = step_lib.make_teacher_forward(TEACHER, dtype=jnp.bfloat16)
  assert "bf16[" in str(jax.make_jaxpr(forward)(teacher_vars, batch))
  logits = jax.jit(forward)(teacher_vars, batch)["logits"]
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits[0], TEACHER.apply(teacher_vars, batch["image"], train=False),
                             atol=0.05)

  opt = lib.optimizer()
  obj = lib.hinton_objective()
  results = {}
  for dtype in (None, jnp.bfloat16):
    state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0))
    train_step = step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER,
                                          teacher_dtype=dtype, student_dtype=dtype)
    results[dtype] = jax.jit(train_step)(state, teacher_vars, batch)
  if_bf16 = str(jax.make_jaxpr(train_step)(state, teacher_vars, batch))
  assert "bf16[" in if_bf16
  new_state, metrics = results[jnp.bfloat16]
  for leaf in jax.tree.leaves((new_state.params, new_state.model_state, new_state.opt_state)):
    assert leaf.dtype == jnp.float32
  np.testing.assert_allclose(metrics["loss"], results[None][1]["loss"], rtol=0.05)


def test_eval_step_masking_equals_slicing(teacher_vars, student_vars):
  state = create_train_state(STUDENT, student_vars, lib.optimizer(), jax.random.key(0))
  eval_step = jax.jit(step_lib.make_eval_step(STUDENT, teacher=TEACHER))
  batch = lib.make_batch(0, masked=5)
  sliced = {k: v[:11] for k, v in batch.items() if k != "mask"}
  padded, real = eval_step(state, teacher_vars, batch), eval_step(state, teacher_vars, sliced)
  assert set(padded) == {"accuracy", "loss/ce", "agreement", "kl_teacher_student", "count"}
  chex.assert_trees_all_close(padded, real, rtol=1e-5)
  assert float(padded["count"]) == 11.0


def test_bad_inputs_raise_value_errors_naming_the_value(teacher_vars, student_vars):
  opt = lib.optimizer()
  obj = lib.hinton_objective()
  state = create_train_state(STUDENT, student_vars, opt, jax.random.key(0))
  batch = lib.make_batch(0)

  wide = lib.TinyConvNet(num_classes=7, width=6)
  step = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=wide))
  with pytest.raises(ValueError, match="the teacher has 7 classes but the student has 5"):
    step(state, lib.init(wide, 0), batch)

  step = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER))
  unlabelled = {k: v for k, v in batch.items() if k != "label"}
  with pytest.raises(ValueError, match=r"loss term\(s\) \['ce'\] need labels"):
    step(state, teacher_vars, unlabelled)
  with pytest.raises(ValueError, match="need teacher outputs"):
    jax.jit(step_lib.make_train_step(STUDENT, obj, opt))(state, None, batch)

  missing = Objective((term("attention", student_features=("stage1", "stage9")),))
  step = jax.jit(step_lib.make_train_step(STUDENT, missing, opt, teacher=TEACHER))
  with pytest.raises(ValueError, match="no feature 'stage9'; sown features: 'stage1', 'stage2'"):
    step(state, teacher_vars, batch)

  hint = Objective((term("hint", student_feature="stage2", teacher_feature="stage2"),))
  with pytest.raises(ValueError, match=r"teacher features \['stage2'\] cannot come from cached"):
    step_lib.make_train_step(STUDENT, hint, opt)

  step = jax.jit(step_lib.make_train_step(STUDENT, obj, opt, teacher=TEACHER))
  with pytest.raises(ValueError, match="disagree on the batch size"):
    step(state, teacher_vars, {**batch, "label": batch["label"][:3]})


def test_a_state_built_with_another_optimizer_or_output_tx_is_refused_naming_both(
    teacher_vars, student_vars):
  obj, batch = lib.hinton_objective(), lib.make_batch(0)
  adam_state = create_train_state(STUDENT, student_vars, optax.adam(1e-3), jax.random.key(0))
  step = jax.jit(step_lib.make_train_step(STUDENT, obj, lib.optimizer(), teacher=TEACHER))
  with pytest.raises(ValueError, match=r"state.opt_state holds \['ScaleByAdamState', "
                     r"'EmptyState'\] but the step's optimizer makes \['TraceState', "
                     r"'EmptyState'\]: pass the same optimizer to create_train_state"):
    step(adam_state, teacher_vars, batch)

  dkp = transforms.dkp(4.0, 0.5)
  plain_state = create_train_state(STUDENT, student_vars, lib.optimizer(), jax.random.key(0))
  step = jax.jit(step_lib.make_train_step(STUDENT, obj, lib.optimizer(), teacher=TEACHER,
                                          output_tx=dkp))
  with pytest.raises(ValueError, match=r"state.output_tx_state holds \['EmptyState'\] but the "
                     r"step's output_tx makes \['DKPState'\]"):
    step(plain_state, teacher_vars, batch)
  # The same optimizer and output transformation on both sides train.
  matching = create_train_state(STUDENT, student_vars, lib.optimizer(), jax.random.key(0),
                                output_tx=dkp)
  assert int(step(matching, teacher_vars, batch)[0].step) == 1
