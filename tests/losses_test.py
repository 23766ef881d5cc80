"""Tests of kdjax.losses: golden values, invariants, gradients, validation.

Golden values are small enough to check by hand (the arithmetic is in the comments); the
invariants run over seeded random logits and are checked against independent NumPy
implementations written from the papers' formulas.
"""

import math

import chex
import hypothesis
from hypothesis import strategies as st
import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses

LN2, LN3 = math.log(2.0), math.log(3.0)
# KL([3/4, 1/4] || [1/2, 1/2]) = 3/4 ln(3/2) + 1/4 ln(1/2).
KL_3_1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def _random_logits(seed: int, shape, scale: float = 3.0) -> np.ndarray:
  return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


def _np_softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def _np_kd(s, t, temperature):
  p, q = _np_softmax(t / temperature), _np_softmax(s / temperature)
  return temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)


# Every loss as a function of (student, teacher) on [B, K] logits, for the shared invariants.
_LABELS = np.array([0, 3, 1, 2, 4, 0], np.int32)
_SOFTMAX_LOSSES = {
    "kd": lambda s, t: losses.kd(s, t, temperature=3.0),
    "kd_mean_reduction": lambda s, t: losses.kd(s, t, 2.0, class_reduction="mean"),
    "dkd": lambda s, t: losses.dkd(s, t, _LABELS[:s.shape[0]], 1.0, 8.0, 4.0),
    "dkp_uniform": lambda s, t: losses.kd(s, t, 4.0) + losses.dkp(s, t, 4.0, 0.7),
    "dkp_tail": lambda s, t: losses.kd(s, t, 4.0) + losses.dkp(
        s, t, 4.0, 0.7, "tail", labels=_LABELS[:s.shape[0]], top_k=2),
    "dgkd": lambda s, t: losses.dgkd(s, jnp.stack([t, 0.5 * t]), jax.random.key(0), 5.0),
    "ensemble": lambda s, t: losses.ensemble_kd(s, jnp.stack([t, -t]), 4.0),
    "reverse_kl": lambda s, t: losses.reverse_kl(s, t, 2.0),
    "jensen_shannon": lambda s, t: losses.jensen_shannon(s, t, 0.3, 2.0),
    "total_variation": lambda s, t: losses.total_variation(s, t, 2.0),
    "dist_inter_class": lambda s, t: losses.dist_inter_class(s, t, 4.0),
}
_ALL_LOSSES = {
    **_SOFTMAX_LOSSES,
    "logits_matching": losses.logits_matching,
    "logits_matching_centered": lambda s, t: losses.logits_matching(s, t, centered=True),
    "annealing": lambda s, t: losses.annealing(s, t, 0.3),
    "continuation": lambda s, t: losses.continuation(s, t, 0.3, 0.5),
    "dkp_mean": lambda s, t: losses.dkp(s, t, 4.0, 0.7, "mean"),
}


class TestGoldenValues:

  def test_kd(self):
    # p_t = softmax([ln 3, 0]) = [3/4, 1/4], p_s = [1/2, 1/2] at T = 1.
    s, t = jnp.zeros((1, 2)), jnp.array([[LN3, 0.0]])
    np.testing.assert_allclose(losses.kd(s, t, 1.0), [KL_3_1], rtol=1e-6)
    # At T = 2 the same tempered distributions come from doubled logits; the loss gains T².
    np.testing.assert_allclose(losses.kd(s, 2 * t, 2.0), [4 * KL_3_1], rtol=1e-6)
    # PyTorch's default KLDivLoss() divides by K = 2.
    np.testing.assert_allclose(
        losses.kd(s, t, 1.0, class_reduction="mean"), [KL_3_1 / 2], rtol=1e-6)

  def test_cross_entropy(self):
    np.testing.assert_allclose(losses.cross_entropy(jnp.zeros((1, 4)), jnp.array([2])),
                               [math.log(4)], rtol=1e-6)
    # Smoothing 0.5 over K = 2 with logits [ln 3, 0]: q = [3/4, 1/4], p = [3/4, 1/4].
    value = losses.cross_entropy(jnp.array([[LN3, 0.0]]), jnp.array([0]), label_smoothing=0.5)
    np.testing.assert_allclose(value, [-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))],
                               rtol=1e-6)

  def test_logits_matching(self):
    s, t = jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 0.0]])
    # (1/2K)·(1 + 9) = 2.5; centered: diffs [-1, 1] → (1/4)·2 = 0.5.
    np.testing.assert_allclose(losses.logits_matching(s, t), [2.5])
    np.testing.assert_allclose(losses.logits_matching(s, t, centered=True), [0.5])

  def test_annealing(self):
    # mean((1 - 2)², (1 - 1)²) = 0.5
    np.testing.assert_allclose(
        losses.annealing(jnp.array([[1.0, 1.0]]), jnp.array([[4.0, 2.0]]), 0.5), [0.5])

  def test_dkp_uniform(self):
    # p_t = [3/4, 1/4] → ε = 2 · 1/4 = 1/2; H(u, [1/2, 1/2]) = ln 2; term = -γ · ε · ln 2.
    s, t = jnp.zeros((1, 2)), jnp.array([[LN3, 0.0]])
    np.testing.assert_allclose(losses.dkp(s, t, 1.0, 1.0), [-0.5 * LN2], rtol=1e-6)
    np.testing.assert_allclose(losses.dkp(s, t, 1.0, 0.5), [-0.25 * LN2], rtol=1e-6)

  def test_dkp_mean(self):
    # s̄ = 1, t̄ = 0: γ · ½ · 1.
    s, t = jnp.array([[0.0, 1.0, 2.0]]), jnp.zeros((1, 3))
    np.testing.assert_allclose(losses.dkp(s, t, 4.0, 0.6, "mean"), [0.3], rtol=1e-6)

  def test_dkp_tail(self):
    # Teacher probabilities ∝ [2, 4, 3, 1], label 0, top_k 1: S = {1}, R = {2, 3}.
    # P_t(R) = 4/10, P_t|R = [3/4, 1/4]; a student uniform on R has Q|R = [1/2, 1/2].
    t = jnp.log(jnp.array([[2.0, 4.0, 3.0, 1.0]]))
    s = jnp.array([[5.0, -1.0, 0.5, 0.5]])
    value = losses.dkp(s, t, 1.0, 1.0, "tail", labels=jnp.array([0]), top_k=1)
    np.testing.assert_allclose(value, [-0.4 * KL_3_1], rtol=1e-5)

  def test_dkd(self):
    # p_t = [1/5, 3/5, 1/5], p_s uniform, y = 0. b_t = [.2, .8], b_s = [1/3, 2/3]:
    # TCKD = .2 ln .6 + .8 ln 1.2. p̂_t = [3/4, 1/4], p̂_s = [1/2, 1/2]: NCKD = KL_3_1.
    tckd = 0.2 * math.log(0.6) + 0.8 * math.log(1.2)
    s, t, y = jnp.zeros((1, 3)), jnp.array([[0.0, LN3, 0.0]]), jnp.array([0])
    np.testing.assert_allclose(losses.dkd(s, t, y, 1.0, 8.0, 1.0), [tckd + 8 * KL_3_1],
                               rtol=1e-5)
    np.testing.assert_allclose(losses.dkd(s, t, y, 2.0, 0.0, 1.0), [2 * tckd], rtol=1e-5)

  def test_hint(self):
    s = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(losses.hint(s, jnp.zeros((2, 2))), [2.5, 0.0])

  def test_attention_transfer(self):
    # a_s = [1, 0], a_t = [0, 1] (already unit norm): mean of squares = 1 for the one stage,
    # and a second identical stage adds 0.
    fs = jnp.array([1.0, 0.0]).reshape(1, 1, 2, 1)
    ft = jnp.array([0.0, 3.0]).reshape(1, 1, 2, 1)
    same = jnp.ones((1, 2, 2, 4))
    np.testing.assert_allclose(losses.attention_transfer([fs, same], [ft, same]), [1.0])

  def test_dgkd_without_dropping_sums_kd(self):
    s, t1, t2 = (jnp.asarray(_random_logits(i, (3, 5))) for i in range(3))
    value = losses.dgkd(s, jnp.stack([t1, t2]), mode="none", temperature=2.0)
    chex.assert_trees_all_close(value, losses.kd(s, t1, 2.0) + losses.kd(s, t2, 2.0),
                                rtol=1e-5)

  def test_ensemble(self):
    # Teachers [3/4, 1/4] and [1/4, 3/4] average to the uniform target: a uniform student
    # scores 0; the student [3/4, 1/4] scores KL(u || [3/4, 1/4]) = ½ ln(4/3).
    t = jnp.array([[[LN3, 0.0]], [[0.0, LN3]]])
    np.testing.assert_allclose(losses.ensemble_kd(jnp.zeros((1, 2)), t, 1.0), [0.0], atol=1e-7)
    np.testing.assert_allclose(losses.ensemble_kd(jnp.array([[LN3, 0.0]]), t, 1.0),
                               [0.5 * math.log(4 / 3)], rtol=1e-5)

  def test_reduce_mean(self):
    values = jnp.array([1.0, 3.0, 100.0])
    assert float(losses.reduce_mean(values)) == pytest.approx(104 / 3)
    assert float(losses.reduce_mean(values, mask=jnp.array([1, 1, 0]))) == 2.0
    assert float(losses.reduce_mean(values, weights=jnp.array([3.0, 1.0, 0.0]))) == 1.5
    assert float(losses.reduce_mean(values, mask=jnp.zeros(3, bool))) == 0.0


class TestAgainstIndependentImplementations:

  @pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
  def test_kd(self, temperature):
    s, t = _random_logits(0, (16, 10)), _random_logits(1, (16, 10))
    np.testing.assert_allclose(losses.kd(s, t, temperature), _np_kd(s, t, temperature),
                               rtol=2e-4, atol=1e-6)

  def test_dkd_decomposes_kd(self):
    # KD = TCKD + (1 - p_t,y) · NCKD (Zhao et al., Eq. 3), checked through dkd's weights.
    s, t = _random_logits(2, (32, 10)), _random_logits(3, (32, 10))
    y = np.random.default_rng(4).integers(0, 10, 32).astype(np.int32)
    tckd = losses.dkd(s, t, y, 1.0, 0.0, 4.0)
    nckd = losses.dkd(s, t, y, 0.0, 1.0, 4.0)
    p_ty = _np_softmax(t / 4.0)[np.arange(32), y]
    np.testing.assert_allclose(tckd + (1 - p_ty) * nckd, _np_kd(s, t, 4.0), rtol=1e-4,
                               atol=1e-5)

  def test_dkp_tail_is_the_tail_of_the_kl_chain_rule(self):
    # With γ = 1 the tail term removes exactly P_t(R) · KL(P_t|R || P_s|R) from KD.
    s, t = _random_logits(5, (8, 7)), _random_logits(6, (8, 7))
    y = np.arange(8, dtype=np.int32) % 7
    top_k = 2
    pt, ps = _np_softmax(t / 2.0), _np_softmax(s / 2.0)
    expected = []
    for i in range(8):
      order = [k for k in np.argsort(-t[i]) if k != y[i]]
      tail = np.array(order[top_k:])
      mass = pt[i, tail].sum()
      cond_t, cond_s = pt[i, tail] / mass, ps[i, tail] / ps[i, tail].sum()
      expected.append(-4.0 * mass * np.sum(cond_t * np.log(cond_t / cond_s)))
    value = losses.dkp(s, t, 2.0, 1.0, "tail", labels=y, top_k=top_k)
    np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-6)

  def test_dgkd_code_mode_is_kd_over_kept_teachers(self):
    s = _random_logits(7, (4, 6))
    ts = np.stack([_random_logits(8 + i, (4, 6)) for i in range(4)])
    key = jax.random.key(3)
    keep = np.asarray(losses.teacher_keep_mask(key, 4, "code", drop_num=1))
    expected = sum(_np_kd(s, ts[i], 5.0) for i in range(4) if keep[i])
    np.testing.assert_allclose(losses.dgkd(s, ts, key, 5.0), expected, rtol=1e-4)

  def test_ensemble_matches_numpy(self):
    s = _random_logits(9, (5, 4))
    ts = np.stack([_random_logits(10 + i, (5, 4)) for i in range(3)])
    target = np.mean([_np_softmax(x / 2.0) for x in ts], axis=0)
    q = _np_softmax(s / 2.0)
    expected = 4.0 * np.sum(target * (np.log(target) - np.log(q)), axis=-1)
    np.testing.assert_allclose(losses.ensemble_kd(s, ts, 2.0), expected, rtol=1e-4)


class TestInvariants:

  @pytest.mark.parametrize("seed", range(5))
  def test_kd_nonnegative_and_zero_on_itself(self, seed):
    s, t = _random_logits(seed, (64, 10)), _random_logits(seed + 100, (64, 10))
    assert np.all(np.asarray(losses.kd(s, t, 4.0)) >= 0)
    np.testing.assert_allclose(losses.kd(s, s, 4.0), np.zeros(64), atol=1e-6)

  @pytest.mark.parametrize("temperature", [1.0, 4.0, 10.0])
  def test_kd_gradient_is_t_times_probability_gap(self, temperature):
    s, t = _random_logits(11, (8, 10)), _random_logits(12, (8, 10))
    grad = jax.grad(lambda x: jnp.sum(losses.kd(x, t, temperature)))(s)
    expected = temperature * (_np_softmax(s / temperature) - _np_softmax(t / temperature))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)

  @pytest.mark.parametrize("name", sorted(_ALL_LOSSES))
  def test_no_gradient_reaches_the_teacher(self, name):
    s, t = _random_logits(13, (6, 5)), _random_logits(14, (6, 5))
    grad = jax.grad(lambda x: jnp.sum(_ALL_LOSSES[name](s, x)))(t)
    assert np.all(np.asarray(grad) == 0.0)

  @pytest.mark.parametrize("name", sorted(_SOFTMAX_LOSSES))
  def test_softmax_losses_have_zero_sum_logit_gradients(self, name):
    s, t = _random_logits(15, (6, 5)), _random_logits(16, (6, 5))
    grad = jax.grad(lambda x: jnp.sum(_SOFTMAX_LOSSES[name](x, t)))(s)
    np.testing.assert_allclose(np.sum(grad, axis=-1), np.zeros(6), atol=1e-5)

  def test_cross_entropy_has_zero_sum_logit_gradients(self):
    grad = jax.grad(lambda x: jnp.sum(losses.cross_entropy(x, _LABELS)))(
        _random_logits(17, (6, 5)))
    np.testing.assert_allclose(np.sum(grad, axis=-1), np.zeros(6), atol=1e-6)

  @pytest.mark.parametrize("name", sorted(set(_ALL_LOSSES) - {"dkd", "dkp_tail"}))
  def test_batch_permutation_equivariance(self, name):
    s, t = _random_logits(18, (6, 5)), _random_logits(19, (6, 5))
    perm = np.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(_ALL_LOSSES[name](s[perm], t[perm]),
                               np.asarray(_ALL_LOSSES[name](s, t))[perm], rtol=1e-5, atol=1e-6)

  def test_label_losses_permutation_equivariance(self):
    s, t = _random_logits(20, (6, 5)), _random_logits(21, (6, 5))
    perm = np.array([3, 0, 5, 1, 4, 2])
    for fn in (lambda a, b, y: losses.dkd(a, b, y),
               lambda a, b, y: losses.dkp(a, b, 2.0, 1.0, "tail", labels=y, top_k=2),
               lambda a, b, y: losses.cross_entropy(a, y)):
      np.testing.assert_allclose(fn(s[perm], t[perm], _LABELS[perm]),
                                 np.asarray(fn(s, t, _LABELS))[perm], rtol=1e-5, atol=1e-6)

  @pytest.mark.parametrize("name", sorted(_SOFTMAX_LOSSES))
  def test_finite_at_extreme_logits(self, name):
    rng = np.random.default_rng(22)
    s = (rng.choice([-1e4, 1e4], size=(6, 5)) * rng.uniform(0.5, 1, (6, 5))).astype(np.float32)
    t = (rng.choice([-1e4, 1e4], size=(6, 5)) * rng.uniform(0.5, 1, (6, 5))).astype(np.float32)
    value, grad = jax.value_and_grad(lambda x: jnp.sum(_SOFTMAX_LOSSES[name](x, t)))(s)
    assert np.isfinite(value) and np.all(np.isfinite(grad))

  @hypothesis.settings(max_examples=8, deadline=None)
  @hypothesis.given(batch_shape=st.lists(st.integers(1, 3), min_size=0, max_size=3),
                    temperature=st.floats(0.5, 20.0))
  def test_any_leading_batch_shape(self, batch_shape, temperature):
    shape = tuple(batch_shape) + (4,)
    s, t = _random_logits(23, shape), _random_logits(24, shape)
    y = np.zeros(tuple(batch_shape), np.int32)
    flat = lambda x: x.reshape(-1, 4)
    for fn in (lambda a, b: losses.kd(a, b, temperature),
               lambda a, b: losses.dkp(a, b, temperature, 0.5),
               lambda a, b: losses.dkd(a, b, y.reshape(a.shape[:-1]), 1.0, 8.0, temperature),
               losses.logits_matching):
      value = fn(s, t)
      chex.assert_shape(value, tuple(batch_shape))
      np.testing.assert_allclose(np.reshape(value, -1), fn(flat(s), flat(t)), rtol=1e-5,
                                 atol=1e-6)

  def test_masking_equals_slicing(self):
    s, t = _random_logits(25, (6, 5)), _random_logits(26, (6, 5))
    mask = np.array([1, 1, 0, 1, 0, 1], bool)
    per_example = losses.kd(s, t, 4.0)
    np.testing.assert_allclose(losses.reduce_mean(per_example, mask=mask),
                               np.mean(np.asarray(per_example)[mask]), rtol=1e-6)

  def test_padding_nan_does_not_leak_through_the_mask(self):
    values = jnp.array([1.0, jnp.nan])
    value, grad = jax.value_and_grad(
        lambda x: losses.reduce_mean(x, mask=jnp.array([True, False])))(values)
    assert float(value) == 1.0 and np.all(np.isfinite(grad))


class TestDKP:

  @pytest.mark.parametrize("variant", ["uniform", "mean", "tail"])
  def test_gamma_zero_is_kd_exactly(self, variant):
    s, t = _random_logits(27, (6, 5)), _random_logits(28, (6, 5))
    total = losses.kd(s, t, 4.0) + losses.dkp(s, t, 4.0, 0.0, variant, labels=_LABELS, top_k=2)
    np.testing.assert_array_equal(total, losses.kd(s, t, 4.0))

  @pytest.mark.parametrize("temperature", [1.0, 4.0, 8.0])
  def test_uniform_full_strength_distils_the_pruned_teacher(self, temperature):
    s, t = _random_logits(29, (8, 10)), _random_logits(30, (8, 10))
    grad = jax.grad(
        lambda x: jnp.sum(losses.kd(x, t, temperature) + losses.dkp(x, t, temperature, 1.0)))(s)
    p_t, p_s = _np_softmax(t / temperature), _np_softmax(s / temperature)
    eps = 10 * p_t.min(axis=-1, keepdims=True)
    pruned = (p_t - eps / 10) / (1 - eps)
    np.testing.assert_allclose(grad, temperature * (1 - eps) * (p_s - pruned), rtol=1e-3,
                               atol=1e-6)

  def test_uniform_floor_grows_with_temperature(self):
    # ε = K·min_k p_t,k lies in [0, 1], rises with T, and tends to 1 (a uniform teacher).
    from kdjax.losses.pruning import uniform_floor
    t = jnp.asarray(_random_logits(31, (64, 100), scale=2.0))
    floors = [np.asarray(uniform_floor(t, temperature)) for temperature in (1.0, 4.0, 8.0, 1e4)]
    assert np.all((floors[0] >= 0) & (floors[-1] <= 1))
    for low, high in zip(floors, floors[1:], strict=False):
      assert np.all(high > low)
    np.testing.assert_allclose(floors[-1], 1.0, atol=2e-3)


class TestDGKDDropping:

  def test_code_mode_drops_exactly_drop_num(self):
    for seed in range(20):
      for drop_num in (0, 1, 2):
        keep = losses.teacher_keep_mask(jax.random.key(seed), 4, "code", drop_num=drop_num)
        assert int(jnp.sum(~keep)) == drop_num

  def test_code_mode_can_drop_the_teacher(self):
    dropped_teacher = [not bool(losses.teacher_keep_mask(jax.random.key(i), 4, "code")[0])
                       for i in range(200)]
    assert 20 < sum(dropped_teacher) < 80  # 1/4 of 200 in expectation

  def test_paper_mode_drops_any_network_and_keeps_the_teacher_when_asked(self):
    keys = jax.random.split(jax.random.key(0), 4000)
    keep_all = jax.vmap(lambda k: losses.teacher_keep_mask(k, 4, "paper", keep_prob=0.75))(keys)
    assert float(jnp.mean(keep_all[:, 0])) == pytest.approx(0.75, abs=0.03)  # as the paper
    assert float(jnp.mean(keep_all)) == pytest.approx(0.75, abs=0.02)
    keep = jax.vmap(lambda k: losses.teacher_keep_mask(
        k, 4, "paper", keep_prob=0.75, keep_teacher=True))(keys)
    assert bool(jnp.all(keep[:, 0]))
    assert float(jnp.mean(keep[:, 1:])) == pytest.approx(0.75, abs=0.02)

  @pytest.mark.parametrize("mode, kwargs, message", [
      ("code", {"drop_num": True}, "drop_num=True must be a non-negative integer"),
      ("code", {"drop_num": 4}, r"drop_num=4 must be an integer in \[0, 4\) for 4 teaching"),
      ("code", {"keep_teacher": True}, "keep_teacher=True applies to mode 'paper' only"),
      ("none", {"keep_teacher": True}, "mode 'none' drops none"),
      ("paper", {"keep_teacher": 1}, "keep_teacher=1 must be True or False"),
  ])
  def test_bad_drop_arguments_are_refused_by_the_loss_itself(self, mode, kwargs, message):
    with pytest.raises(ValueError, match=message):
      losses.teacher_keep_mask(jax.random.key(0), 4, mode, **kwargs)

  def test_deterministic_for_a_key(self):
    s, ts = _random_logits(32, (4, 6)), np.stack([_random_logits(33 + i, (4, 6)) for i in range(4)])
    for mode in ("code", "paper"):
      a = losses.dgkd(s, ts, jax.random.key(7), mode=mode)
      b = losses.dgkd(s, ts, jax.random.key(7), mode=mode)
      np.testing.assert_array_equal(a, b)


class TestTransformsUnderJit:

  @pytest.mark.parametrize("name", sorted(_ALL_LOSSES))
  def test_jit_agrees_and_compiles_once(self, name):
    fn = chex.assert_max_traces(_ALL_LOSSES[name], n=1)
    jitted = jax.jit(fn)
    for seed in range(3):
      s, t = _random_logits(40 + seed, (6, 5)), _random_logits(50 + seed, (6, 5))
      np.testing.assert_allclose(jitted(s, t), _ALL_LOSSES[name](s, t), rtol=1e-5, atol=1e-6)

  def test_temperature_may_be_traced(self):
    s, t = _random_logits(60, (3, 4)), _random_logits(61, (3, 4))
    jitted = jax.jit(losses.kd)
    np.testing.assert_allclose(jitted(s, t, 2.5), losses.kd(s, t, 2.5), rtol=1e-5)

  def test_dkd_weights_and_temperature_may_be_traced(self):
    # Value checks skip traced arguments; a schedule's range is checked by the objective.
    s, t = _random_logits(64, (3, 4)), _random_logits(65, (3, 4))
    y = jnp.array([0, 3, 1])
    jitted = jax.jit(losses.dkd)
    np.testing.assert_allclose(jitted(s, t, y, 0.5, 6.0, 2.0), losses.dkd(s, t, y, 0.5, 6.0, 2.0),
                               rtol=1e-5)
    assert np.isfinite(np.asarray(jitted(s, t, y, -1.0, 6.0, 2.0))).all()  # not checked traced

  @pytest.mark.parametrize("name", sorted(_ALL_LOSSES))
  def test_check_grads(self, name):
    with jax.enable_x64(True):
      s = jnp.asarray(_random_logits(62, (3, 5)), jnp.float64)
      t = jnp.asarray(_random_logits(63, (3, 5)), jnp.float64)
      jtu.check_grads(lambda x: _ALL_LOSSES[name](x, t), (s,), order=2, modes=["rev"])

  def test_check_grads_features(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(64)
      fs, ft = (jnp.asarray(rng.normal(size=(2, 3, 3, 4))) for _ in range(2))
      jtu.check_grads(lambda x: losses.hint(x, ft), (fs,), order=2, modes=["rev"])
      jtu.check_grads(lambda x: losses.attention_transfer([x], [ft[..., :2]]), (fs,), order=2,
                      modes=["rev"])


class TestValidation:

  @pytest.mark.parametrize("call, match", [
      (lambda: losses.kd(jnp.zeros((2, 3)), jnp.zeros((2, 4))), r"\(2, 3\) and \(2, 4\)"),
      (lambda: losses.kd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0), "temperature=0.0"),
      (lambda: losses.kd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), -1.0), "temperature=-1.0"),
      (lambda: losses.kd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), float("inf")),
       "temperature=inf must be finite"),
      (lambda: losses.kd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), class_reduction="batch"),
       "'batch'.*'sum', 'mean'"),
      (lambda: losses.kd(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3))), "floating"),
      (lambda: losses.annealing(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 1.5), "phi=1.5"),
      (lambda: losses.annealing(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0), "phi=0.0"),
      (lambda: losses.continuation(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.5, -1.0),
       r"margin=-1.0 must lie in \[0.0, inf\)"),
      (lambda: losses.continuation(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0), "phi=0.0"),
      (lambda: losses.standardize_logits(jnp.zeros((2, 1))), r"K >= 2 classes"),
      (lambda: losses.ctkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0, t_range=0.0),
       r"t_range=0.0 .* is empty"),
      (lambda: losses.sparse_targets(jnp.zeros((2, 5)), 6), r"k=6 must be an integer in \[1, K\]"),
      (lambda: losses.jensen_shannon(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 1.5),
       r"beta=1.5 must lie in \[0.0, 1.0\]"),
      (lambda: losses.dist(jnp.zeros((2, 3)), jnp.zeros((2, 3)), gamma=-1.0),
       r"gamma=-1.0 must lie in \[0.0, inf\)"),
      (lambda: losses.dkp(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 4.0, 1.2), "gamma=1.2"),
      (lambda: losses.dkp(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 4.0, -0.1), "gamma=-0.1"),
      (lambda: losses.dkp(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 4.0, 0.5, "floor"),
       "'floor'.*'uniform', 'mean', 'tail'"),
      (lambda: losses.dkp(jnp.zeros((2, 5)), jnp.zeros((2, 5)), 4.0, 0.5, "tail", top_k=2),
       "labels=None"),
      (lambda: losses.dkp(jnp.zeros((2, 5)), jnp.zeros((2, 5)), 4.0, 0.5, "tail",
                          labels=jnp.array([0, 1])), "top_k=None"),
      (lambda: losses.dkp(jnp.zeros((2, 5)), jnp.zeros((2, 5)), 4.0, 0.5, "tail",
                          labels=jnp.array([0, 1]), top_k=4), "top_k=4.*K - 2 = 3"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.array([0.0, 1.0])),
       "integers"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.array([0, 3])),
       r"\[0, 3\).*\[0, 3\]"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.array([0, 1, 2])),
       r"labels shape \(3,\)"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), None), "labels=None"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.array([0, 1]), alpha=-1.0),
       r"alpha=-1.0 must lie in \[0.0, inf\)"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.array([0, 1]),
                          alpha=float("inf")), "alpha=inf"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.array([0, 1]), beta=-0.5),
       r"beta=-0.5 must lie in \[0.0, inf\)"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.array([0, 1]),
                          beta=float("nan")), "beta=nan"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.array([0, 1]),
                          temperature=0.0), "temperature=0.0"),
      (lambda: losses.dkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.array([0, 1]),
                          temperature=float("nan")), "temperature=nan"),
      (lambda: losses.cross_entropy(jnp.zeros((2, 3)), None), "labels=None"),
      (lambda: losses.cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 1]), label_smoothing=1.0),
       "label_smoothing=1.0"),
      (lambda: losses.dgkd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jax.random.key(0)),
       r"\[n, 2, 3\]"),
      (lambda: losses.dgkd(jnp.zeros((2, 3)), jnp.zeros((2, 2, 3)), None), "needs a PRNG key"),
      (lambda: losses.dgkd(jnp.zeros((2, 3)), jnp.zeros((2, 2, 3)), jax.random.key(0),
                           mode="random"), "'random'.*'code', 'paper', 'none'"),
      (lambda: losses.dgkd(jnp.zeros((2, 3)), jnp.zeros((2, 2, 3)), jax.random.key(0),
                           mode="paper", keep_prob=0.0), "keep_prob=0.0"),
      (lambda: losses.dgkd(jnp.zeros((2, 3)), jnp.zeros((2, 2, 3)), jax.random.key(0),
                           drop_num=2), "drop_num=2"),
      (lambda: losses.hint(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 4, 5))),
       r"\(2, 4, 4, 3\) and \(2, 4, 4, 5\)"),
      (lambda: losses.attention_transfer([jnp.zeros((2, 4, 4, 3))], [jnp.zeros((2, 8, 8, 3))]),
       "stage 0"),
      (lambda: losses.attention_transfer([jnp.zeros((2, 4, 4, 3))], []), "got 1 and 0"),
      (lambda: losses.reduce_mean(jnp.zeros(3), mask=jnp.ones(4)), r"mask shape \(4,\)"),
  ])
  def test_bad_input_raises_value_error_naming_it(self, call, match):
    with pytest.raises(ValueError, match=match):
      call()


@pytest.mark.parametrize("std, temperature, floor", [(2.2, 4.0, 0.22), (2.2, 8.0, 0.48),
                                                     (1.0, 4.0, 0.52), (1.0, 8.0, 0.73)])
def test_uniform_floor_figures_of_the_docstring(std, temperature, floor):
  """The ε figures quoted for DKP hold for Gaussian logits of that spread, 100 classes."""
  from kdjax.losses.pruning import uniform_floor
  t = std * jax.random.normal(jax.random.key(0), (4000, 100))
  assert float(jnp.mean(uniform_floor(t, temperature))) == pytest.approx(floor, abs=0.01)
