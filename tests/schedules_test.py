"""Tests of kdjax.schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import schedules


class TestAnnealingPhi:

  def test_staircase_levels_and_clamp(self):
    phi = schedules.annealing_phi(max_temperature=10, steps_per_level=3)
    values = np.asarray(jax.vmap(phi)(jnp.arange(40)))
    # Level n holds steps [3n, 3n + 3) with Φ = (n + 1) / 10; after 30 steps Φ stays 1.
    expected = np.minimum(np.arange(40) // 3 + 1, 10) / 10
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert values[0] == pytest.approx(0.1) and values[29] == pytest.approx(1.0)
    assert len(np.unique(values[:30])) == 10

  def test_matches_the_temperature_form(self):
    # Φ = 1 − (T − 1)/T_max with T stepping down from T_max to 1.
    phi = schedules.annealing_phi(4, 5)
    for step in range(25):
      temperature = max(4 - step // 5, 1)
      assert float(phi(step)) == pytest.approx(1 - (temperature - 1) / 4)

  def test_jittable(self):
    phi = schedules.annealing_phi(10, 7)
    assert float(jax.jit(phi)(jnp.int32(13))) == pytest.approx(0.2)

  @pytest.mark.parametrize("args, match", [((0, 5), "max_temperature=0"),
                                           ((10, 0), "steps_per_level=0"),
                                           ((2.5, 5), "max_temperature=2.5"),
                                           ((True, 5), "max_temperature=True")])
  def test_rejects_bad_arguments(self, args, match):
    with pytest.raises(ValueError, match=match):
      schedules.annealing_phi(*args)

  @pytest.mark.parametrize("num_steps", [10, 25, 81, 95, 100, 1000])
  def test_num_steps_shares_the_stage_equally_and_ends_at_one(self, num_steps):
    phi = schedules.annealing_phi(10, num_steps=num_steps)
    values = np.asarray(jax.vmap(phi)(jnp.arange(num_steps)))
    assert values[-1] == pytest.approx(1.0)
    levels = np.round(values * 10).astype(int)
    np.testing.assert_allclose(values, levels / 10, rtol=1e-6)
    assert np.all(np.diff(levels) >= 0)  # Φ never goes down
    seen, lengths = np.unique(levels, return_counts=True)
    assert seen.tolist() == list(range(1, 11))  # Φ = 0.1, 0.2, ..., 1.0 all appear
    assert lengths.max() - lengths.min() <= 1
    assert lengths.sum() == num_steps

  def test_num_steps_level_lengths(self):
    # 25 steps over 4 levels: ℓ(n) = ⌊4n / 25⌋ holds n in [⌈25ℓ/4⌉, ⌈25(ℓ+1)/4⌉).
    phi = schedules.annealing_phi(4, num_steps=25)
    values = np.asarray(jax.vmap(phi)(jnp.arange(25)))
    np.testing.assert_allclose(values, np.repeat([0.25, 0.5, 0.75, 1.0], [7, 6, 6, 6]))

  def test_num_steps_stays_at_one_after_the_stage_and_jits(self):
    phi = schedules.annealing_phi(10, num_steps=95)
    assert [float(phi(n)) for n in (95, 96, 10**6, 2**31 - 1)] == pytest.approx([1.0] * 4)
    assert float(jax.jit(phi)(jnp.int32(9))) == pytest.approx(0.1)
    assert float(jax.jit(phi)(jnp.int32(10))) == pytest.approx(0.2)

  def test_num_steps_equal_to_max_temperature_gives_one_step_per_level(self):
    phi = schedules.annealing_phi(10, num_steps=10)
    assert [float(phi(n)) for n in range(10)] == pytest.approx(np.arange(1, 11) / 10)

  @pytest.mark.parametrize("args, kwargs, match", [
      ((10,), {"num_steps": 9}, "num_steps=9 is less than max_temperature=10"),
      ((10,), {"num_steps": 0}, "num_steps=0 must be an integer >= 1"),
      ((10,), {"num_steps": 2.5}, "num_steps=2.5 must be an integer"),
      ((10,), {"num_steps": 2**28}, r"num_steps=268435456 times max_temperature=10"),
      ((10, 5), {"num_steps": 50}, "exactly one of steps_per_level and num_steps"),
      ((10,), {}, "exactly one of steps_per_level and num_steps"),
  ])
  def test_num_steps_rejects_bad_arguments(self, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
      schedules.annealing_phi(*args, **kwargs)


class TestFactories:

  def test_linear_endpoints(self):
    s = schedules.linear(0.0, 1.0, transition_steps=20, transition_begin=10)
    assert [float(s(n)) for n in (0, 10, 20, 30, 100)] == pytest.approx([0, 0, 0.5, 1, 1])

  def test_cosine_endpoints_both_directions(self):
    down, up = schedules.cosine(8.0, 2.0, 100), schedules.cosine(1.0, 4.0, 100)
    assert [float(down(n)) for n in (0, 50, 100, 500)] == pytest.approx([8, 5, 2, 2])
    assert [float(up(n)) for n in (0, 50, 100)] == pytest.approx([1, 2.5, 4])

  def test_piecewise_constant_uses_absolute_values(self):
    s = schedules.piecewise_constant(4.0, {100: 2.0, 50: 3.0})
    assert [float(s(n)) for n in (0, 49, 50, 99, 100, 10**6)] == pytest.approx(
        [4, 4, 3, 3, 2, 2])

  def test_join_restarts_each_piece(self):
    s = schedules.join([schedules.constant(1.0), schedules.linear(0.0, 1.0, 10)], [5])
    assert [float(s(n)) for n in (0, 4, 5, 10, 15)] == pytest.approx([1, 1, 0, 0.5, 1])

  def test_resolve_scalar_or_schedule(self):
    assert float(schedules.resolve(2.5, 7)) == 2.5
    assert float(schedules.resolve(optax.linear_schedule(0.0, 10.0, 10), 7)) == 7.0
    assert schedules.resolve(3, 0).dtype == jnp.float32

  @pytest.mark.parametrize("call, match", [
      (lambda: schedules.constant(float("nan")), "value=nan"),
      (lambda: schedules.linear(0.0, 1.0, 0), "transition_steps=0"),
      (lambda: schedules.linear(0.0, float("inf"), 5), "end_value=inf"),
      (lambda: schedules.linear(0.0, 1.0, 5, -1), "transition_begin=-1"),
      (lambda: schedules.cosine(1.0, 0.0, 0), "decay_steps=0"),
      (lambda: schedules.piecewise_constant(1.0, {-5: 2.0}), "boundary=-5"),
      (lambda: schedules.join([schedules.constant(1.0)], [5]), "1 boundaries for 1 sched"),
      (lambda: schedules.join([schedules.constant(1.0)] * 3, [5, 5]), r"\[5, 5\]"),
  ])
  def test_rejects_bad_arguments(self, call, match):
    with pytest.raises(ValueError, match=match):
      call()


class TestCheckRange:

  def test_accepts_values_in_range(self):
    schedules.check_range("gamma", schedules.linear(0.0, 1.0, 100), low=0.0, high=1.0,
                          num_steps=200)
    schedules.check_range("temperature", 4.0, low=0.0, low_open=True)

  def test_names_the_value_and_step_out_of_range(self):
    with pytest.raises(ValueError, match=r"gamma must lie in \[0.0, 1.0\]; it is 1.5 at step 50"):
      schedules.check_range("gamma", schedules.piecewise_constant(0.5, {50: 1.5}), low=0.0,
                            high=1.0, num_steps=100)
    with pytest.raises(ValueError, match=r"temperature must lie in \(0.0"):
      schedules.check_range("temperature", 0.0, low=0.0, low_open=True)

  def test_only_the_checked_horizon_counts(self):
    late = schedules.piecewise_constant(0.5, {1000: 2.0})
    schedules.check_range("gamma", late, low=0.0, high=1.0, num_steps=1000)
    with pytest.raises(ValueError, match="at step 1000"):
      schedules.check_range("gamma", late, low=0.0, high=1.0, num_steps=1001)
