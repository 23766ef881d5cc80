"""Tests of kdjax.methods: what a stage's loss config turns into."""

import importlib.util

import jax
import jax.numpy as jnp
import kd_testlib
import numpy as np
import official_ports as ports
import optax
import pytest
import reference_testlib as ref

from configs import base
from kdjax import methods, models, state, step, teacher_cache
from kdjax.trainer import run_config


def _annealing_phi_values(num_steps: int, max_temperature: int = 10) -> np.ndarray:
  recipe = methods.get("annealing").build(
      base.loss_config("annealing", max_temperature=max_temperature), num_steps, {}, 10)
  (term,) = recipe.objective.terms
  return np.asarray(jax.vmap(term.arguments["phi"])(jnp.arange(num_steps)))


class TestAnnealing:

  @pytest.mark.parametrize("num_steps", [10, 25, 81, 95, 100, 1000])
  def test_levels_share_the_stage_equally_and_end_at_one(self, num_steps):
    phi = _annealing_phi_values(num_steps)
    levels = np.round(phi * 10).astype(int)  # Φ = level / T_max, level 1..10
    np.testing.assert_allclose(phi, levels / 10, rtol=1e-6)
    assert phi[-1] == 1.0
    assert np.all(np.diff(levels) >= 0)
    values, lengths = np.unique(levels, return_counts=True)
    assert values.tolist() == list(range(1, 11))
    assert lengths.max() - lengths.min() <= 1
    assert lengths.min() == num_steps // 10 and lengths[-1] == num_steps // 10
    np.testing.assert_array_equal(levels - 1, np.minimum(np.arange(num_steps) * 10 // num_steps,
                                                         9))

  def test_shares_of_95_steps(self):
    # The old ceil(95 / 10) = 10 steps per level left Φ = 1 only the last 5 steps.
    lengths = np.unique(_annealing_phi_values(95), return_counts=True)[1]
    assert lengths.tolist() == [10, 9, 10, 9, 10, 9, 10, 9, 10, 9]

  def test_stage_shorter_than_max_temperature_is_refused(self):
    with pytest.raises(ValueError, match="num_steps=7 is less than max_temperature=10"):
      methods.get("annealing").build(base.loss_config("annealing", max_temperature=10), 7, {}, 1)

  def test_max_temperature_one_is_plain_logits_matching(self):
    np.testing.assert_array_equal(_annealing_phi_values(5, max_temperature=1), np.ones(5))


class TestDgkd:

  def _teacher_dropped(self, keep_teacher: bool, keys: int = 64) -> np.ndarray:
    """Per key, whether the teacher's KL term was left out of the DGKD loss."""
    loss = base.loss_config("dgkd", mode="paper", keep_prob=0.05, keep_teacher=keep_teacher)
    objective = methods.get("dgkd").build(loss, 100, {}, 10).objective
    student = {"logits": jnp.zeros((2, 4))}
    # The teacher disagrees with the student, the assistant agrees: the DGKD term is > 0
    # exactly when the teacher teaches.
    teacher_logits = jnp.stack([jnp.array([[4.0, 0.0, 0.0, 0.0]] * 2), jnp.zeros((2, 4))])
    labels, values = jnp.array([0, 1]), objective.schedule_values(0)

    def dgkd_term(key):
      _, per_term = objective.loss(student, {"logits": teacher_logits}, labels, None, values,
                                   key)
      return per_term["loss/dgkd"]

    return np.asarray(jax.vmap(dgkd_term)(jax.random.split(jax.random.key(0), keys))) == 0.0

  def test_config_reaches_the_term(self):
    for keep_teacher in (False, True):
      loss = base.loss_config("dgkd", mode="paper", keep_teacher=keep_teacher)
      (_, dgkd) = methods.get("dgkd").build(loss, 100, {}, 10).objective.terms
      assert dgkd.arguments["keep_teacher"] is keep_teacher
    assert base.loss_config("dgkd").keep_teacher is False

  def test_paper_mode_drops_the_teacher_unless_asked_to_keep_it(self):
    dropped = self._teacher_dropped(keep_teacher=False)
    assert 0.8 < dropped.mean() < 1.0  # kept with probability 0.05, as the paper's b_T
    assert not self._teacher_dropped(keep_teacher=True).any()


class TestDkd:

  def test_warmup_is_mdistillers_epoch_counter(self):
    """mdistiller passes epoch = 1, 2, ... to DKD, whose loss weight is min(epoch / 20, 1)."""
    steps_per_epoch, num_epochs = 7, 24
    loss = base.loss_config("dkd", warmup_epochs=20)
    recipe = methods.get("dkd").build(loss, steps_per_epoch * num_epochs, {}, steps_per_epoch)
    (_, dkd) = recipe.objective.terms
    steps = jnp.arange(steps_per_epoch * num_epochs)
    weights = np.asarray(jax.vmap(dkd.weight)(steps))
    epochs = ports.mdistiller_epochs_of_iterations(num_epochs, steps_per_epoch)
    expected = [min(epoch / 20, 1.0) for epoch in epochs]
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert weights[0] == pytest.approx(0.05)  # not 0: the first epoch already distils

  def test_the_weighted_term_is_mdistillers_loss_kd(self):
    s = np.random.default_rng(0).normal(size=(6, 10))
    t = np.random.default_rng(1).normal(size=(6, 10))
    labels = np.arange(6)
    loss = base.loss_config("dkd", warmup_epochs=20, beta=2.0)
    objective = methods.get("dkd").build(loss, 1000, {}, 50).objective
    for epoch in (1, 3, 20, 21):
      values = objective.schedule_values((epoch - 1) * 50 + 17)
      _, per_term = objective.loss({"logits": jnp.asarray(s, jnp.float32)},
                                   {"logits": jnp.asarray(t, jnp.float32)[None]},
                                   jnp.asarray(labels), None, values,
                                   jax.random.key(0))
      loss_ce, loss_kd = ports.dkd_forward_train(s, t, labels, epoch, beta=2.0)
      np.testing.assert_allclose(per_term["loss/ce"], loss_ce, rtol=1e-5)
      np.testing.assert_allclose(values["weight/dkd"] * per_term["loss/dkd"], loss_kd, rtol=1e-5)

  def test_negative_warmup_is_refused(self):
    with pytest.raises(ValueError, match="warmup_epochs=-1 must be an integer >= 0"):
      methods.get("dkd").build(base.loss_config("dkd", warmup_epochs=-1), 100, {}, 10)


class TestNotPlainCrossEntropyOrKd:
  """Continuation-KD and CTKD train as themselves, not as the CE or KD they build on.

  Each built objective is checked against its formula written here in NumPy (mid-stage,
  where every weight is strictly between its ends), and a few train steps of each are
  checked to move the student elsewhere than CE alone and KD would: a method whose term
  became a no-op, or whose schedules stuck at an end, fails.
  """

  LOSS = {"scratch": {}, "kd": {"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0},
          "continuation": {"max_temperature": 4, "anneal_fraction": 0.5, "ramp_fraction": 0.8,
                           "margin": 1.0},
          "ctkd": {"ce_weight": 0.1, "kd_weight": 0.9, "ramp_fraction": 0.2}}

  def _ce(self, s, labels):
    return -ref.log_softmax(s)[np.arange(len(labels)), labels]

  def _objective_loss(self, method, student, t, labels, at_step, **loss):
    objective = methods.get(method).build(
        base.loss_config(method, **{**self.LOSS[method], **loss}), 100, {}, 10).objective
    value, _ = objective.loss(student, {"logits": jnp.asarray(t[None], jnp.float32)},
                              jnp.asarray(labels), None, objective.schedule_values(at_step),
                              jax.random.key(0))
    return float(value)

  def test_continuation_objective_is_its_formula(self):
    rng = np.random.default_rng(1)
    s, t = 3 * rng.normal(size=(6, 10)), 3 * rng.normal(size=(6, 10))
    labels, at_step = np.arange(6) % 10, 30  # ψ = 30/80; Φ = 3/4 (level 2 of steps 25-37)
    psi, phi = 30 / 80, 0.75
    error = ((s - phi * t)**2).mean(-1)
    margin = float(np.median(error)) / phi  # the hinge active on half of the examples
    hinge = np.maximum(error - margin * phi, 0.0)
    assert 0 < np.count_nonzero(hinge) < len(hinge)
    expected = np.mean(psi * self._ce(s, labels) + (1 - psi) * hinge)
    value = self._objective_loss("continuation", {"logits": jnp.asarray(s, jnp.float32)}, t,
                                 labels, at_step, margin=margin)
    np.testing.assert_allclose(value, expected, rtol=1e-5)

  def test_ctkd_objective_is_its_formula(self):
    rng = np.random.default_rng(0)
    s, t = 3 * rng.normal(size=(6, 10)), 3 * rng.normal(size=(6, 10))
    labels, theta = np.arange(6) % 10, rng.normal(size=6)
    temperature = (1.0 + 20.0 / (1.0 + np.exp(-theta)))[:, None]
    log_p, log_q = ref.log_softmax(t / temperature), ref.log_softmax(s / temperature)
    kd = temperature[:, 0]**2 * np.sum(np.exp(log_p) * (log_p - log_q), -1)
    expected = np.mean(0.1 * self._ce(s, labels) + 0.9 * kd)
    student = {"logits": jnp.asarray(s, jnp.float32),
               methods.CTKD_HEAD: jnp.asarray(theta, jnp.float32)}
    value = self._objective_loss("ctkd", student, t, labels, 50)
    np.testing.assert_allclose(value, expected, rtol=1e-5)

  def _params_after(self, method, num_steps=4):
    recipe = methods.get(method).build(base.loss_config(method, **self.LOSS[method]), 10, {},
                                       10)
    train_state, _ = kd_testlib.train_recipe(recipe, num_steps, learning_rate=0.1,
                                             teacher_scale=4.0)
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(train_state.params)])

  def test_training_moves_the_student_elsewhere_than_ce_and_kd(self):
    final = {m: self._params_after(m) for m in ("scratch", "kd", "continuation", "ctkd")}
    initial = self._params_after("scratch", num_steps=0)
    for method in ("continuation", "ctkd"):
      moved = np.linalg.norm(final[method] - initial)
      for plain in ("scratch", "kd"):
        assert np.linalg.norm(final[method] - final[plain]) > 0.05 * moved, (method, plain)


class TestSparseKd:
  """The sparse_kd method: KD toward the teacher's top k classes and a tail bucket."""

  K, T = 10, 4.0

  def _steps(self, method, teacher_logits, num_steps=3, **loss):
    """Losses and final params of a few train steps from a teacher cache of the method's kind."""
    recipe = methods.get(method).build(base.loss_config(method, temperature=self.T, **loss),
                                       10, {}, 10)
    if recipe.sparse_cache is None:
      cache = teacher_logits
    else:
      k, temperature = recipe.sparse_cache
      cache = teacher_cache.SparseCache(teacher_cache.sparsify(teacher_logits, k, temperature),
                                        self.K, temperature)
    module = models.get("mlp_tiny", self.K)
    images = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    optimizer = optax.sgd(0.1, momentum=0.9)
    train_state = state.create_train_state(
        module, module.init(jax.random.key(1), images, train=False), optimizer,
        jax.random.key(2))
    train_step = jax.jit(step.make_train_step(module, recipe.objective, optimizer))
    batch = teacher_cache.add_teacher_logits(
        {"image": images, "label": jnp.arange(16) % self.K, "index": np.arange(16)}, cache)
    losses = []
    for _ in range(num_steps):
      train_state, metrics = train_step(train_state, None, batch)
      losses.append(float(metrics["loss"]))
    return np.array(losses), train_state.params

  def test_k_equal_to_the_class_count_trains_as_kd(self):
    teacher_logits = 3.0 * np.random.default_rng(0).normal(size=(16, self.K)).astype(np.float32)
    kd_losses, kd_params = self._steps("kd", teacher_logits)
    sparse_losses, sparse_params = self._steps("sparse_kd", teacher_logits,
                                               top_k=self.K)
    np.testing.assert_allclose(sparse_losses, kd_losses, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 sparse_params, kd_params)

  def test_below_the_class_count_the_step_trains_ce_plus_the_bucket_kl(self):
    # The first step's loss, at the initial student's logits, against a float64 NumPy
    # reference written from the definition (the teacher's top k and one tail bucket, the
    # student over all K classes); k < K is not KD.
    rng = np.random.default_rng(1)
    teacher_logits = 3.0 * rng.normal(size=(16, self.K)).astype(np.float32)
    module = models.get("mlp_tiny", self.K)
    images = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    variables = module.init(jax.random.key(1), images, train=False)
    logits, _ = module.apply(variables, images, train=True, mutable=["batch_stats"])
    s = np.asarray(logits, np.float64)
    labels = np.arange(16) % self.K
    log_q = s / self.T - np.log(np.exp(s / self.T).sum(-1, keepdims=True))
    t = teacher_logits.astype(np.float64) / self.T
    log_p = t - np.log(np.exp(t).sum(-1, keepdims=True))
    bucket_kl = []
    for lp, lq in zip(log_p, log_q, strict=True):
      top = np.argsort(-lp)[:3]
      p = np.append(np.exp(lp[top]), 1 - np.exp(lp[top]).sum())
      q = np.append(np.exp(lq[top]), 1 - np.exp(lq[top]).sum())
      bucket_kl.append(self.T**2 * np.sum(p * np.log(p / q)))
    log_softmax = s - np.log(np.exp(s).sum(-1, keepdims=True))
    ce = -log_softmax[np.arange(16), labels]
    expected = np.mean(0.1 * ce + 0.9 * np.array(bucket_kl))
    sparse_losses, _ = self._steps("sparse_kd", teacher_logits, num_steps=1, top_k=3)
    kd_losses, _ = self._steps("kd", teacher_logits, num_steps=1)
    np.testing.assert_allclose(sparse_losses[0], expected, rtol=1e-5)
    assert sparse_losses[0] < kd_losses[0] - 1e-3  # the tail's shape is not matched

  @pytest.mark.parametrize("top_k", [0, -1, 2.5, True])
  def test_bad_top_k_is_refused(self, top_k):
    with pytest.raises(ValueError, match=f"k={top_k!r} must be an integer in"):
      methods.get("sparse_kd").build({**methods.get("sparse_kd").defaults(), "top_k": top_k}, 100,
                                     {}, 10)


class _ReadRecorder(dict):
  """A loss config that records which fields are read."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.read = set()

  def __getitem__(self, key):
    self.read.add(key)
    return super().__getitem__(key)


# Field values that take every branch of a build that reads a field conditionally.
_BRANCHES = {
    "dkp": [{}, {"variant": "tail"}, {"form": "loss"}],
    "divergence": [{}, {"divergence": "jensen_shannon"}],
}


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_loss_fields_are_exactly_what_the_build_reads(name):
  # The stage record compares a stage's declared loss fields and no others: a field read but
  # not declared would let a changed config reuse results it did not produce.
  method = methods.get(name)
  read = set()
  for overrides in _BRANCHES.get(name, [{}]):
    config = base.loss_config(name, **overrides)
    loss = _ReadRecorder(config.to_dict())
    method.build(loss, 1000, {config.get("feature", "stage2"): (2, 8, 8, 16)}, 10)
    read |= loss.read
  assert sorted(read) == sorted(method.loss_fields)
  assert len(set(method.loss_fields)) == len(method.loss_fields)


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_a_method_is_written_beside_its_loss(name):
  # kdjax/methods/X.py holds the build of a method whose math is kdjax/losses/X.py.
  module = methods.get(name).build.__module__
  package, family = module.rsplit(".", 1)
  assert package == "kdjax.methods"
  assert importlib.util.find_spec(f"kdjax.losses.{family}") is not None, module


class TestLossFields:
  """A stage's loss holds its method's fields (declared once, in the registry), no other."""

  @pytest.mark.parametrize("name", list(methods.METHODS))
  def test_a_stage_gets_its_methods_fields_at_their_defaults(self, name):
    loss = base.stage("mlp_tiny", name, num_steps=10).loss
    assert loss.to_dict() == methods.get(name).defaults()
    assert list(methods.get(name).fields) == list(methods.get(name).loss_fields)

  def test_method_specific_fields_have_no_prefix_and_shared_ones_one_meaning(self):
    for name, method in methods.METHODS.items():
      for field, spec in method.fields.items():
        if field in methods.SHARED_FIELDS:
          assert spec == methods.SHARED_FIELDS[field], (name, field)
        else:
          assert not field.startswith(f"{name}_"), (name, field)
        assert spec.meaning and "\n" not in spec.meaning

  def test_overrides_reach_the_stage_and_unknown_ones_are_refused(self):
    dkd = base.stage("mlp_tiny", "dkd", ("teacher",), num_steps=10, loss={"alpha": 2})
    assert (dkd.loss.alpha, dkd.loss.beta) == (2.0, 8.0)
    with pytest.raises(ValueError, match=r"\['dkd_alpha'\] are not read by method 'dkd'; its "
                                         r"fields: label_smoothing, temperature, "):
      base.stage("mlp_tiny", "dkd", ("teacher",), num_steps=10, loss={"dkd_alpha": 2.0})
    dkd.lock()  # as config flags see it: a field outside the method's is no field at all
    dkd.loss.alpha = 3.0
    with pytest.raises(AttributeError, match="dkd_alpha"):
      dkd.loss.dkd_alpha = 3.0

  def test_validation_completes_a_changed_methods_fields_and_refuses_unread_ones(self):
    config = base.get_config()
    config.stages.kd.method = "dkd"  # built as kd: its shared fields at their defaults
    resolved = run_config.validate(config)
    assert resolved.stages.kd.loss.to_dict() == methods.get("dkd").defaults()
    config.stages.kd.loss.kd_weight = 0.5  # read by kd, not by dkd
    with pytest.raises(ValueError, match=r"stages.kd.loss sets kd_weight=0.5, which method "
                                         r"'dkd' does not read \(its fields: label_smoothing, "):
      run_config.validate(config)

  def test_describe_lists_each_field_with_its_default_and_meaning(self):
    lines = methods.describe("dgkd").splitlines()
    assert lines[0] == "dgkd: " + methods.get("dgkd").description
    assert [line.split("=")[0].strip() for line in lines[1:]] == list(
        methods.get("dgkd").loss_fields)
    assert "  keep_prob=0.75  paper mode: keep probability of each teaching network" in lines
