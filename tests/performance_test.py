"""Tests for kdjax.performance: correctness of the speed settings (no timing asserts)."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import kd_testlib as lib
import pytest

from kdjax import performance, sweep
from kdjax import step as step_lib
from kdjax.objective import Objective, term
from kdjax.state import create_train_state


@pytest.mark.parametrize("batch_sizes, image_shape, expected", [
    ((128,), (32, 32, 3), 8),
    ((256,), (32, 32, 3), 8),
    ((64,), (32, 32, 3), 4),
    ((32,), (32, 32, 3), 2),
    ((16,), (32, 32, 3), 1),
    ((128, 500), (32, 32, 3), 4),
    ((128, 512), (32, 32, 3), 8),
    ((128, 1000), (32, 32, 3), 8),
    ((100,), (32, 32, 3), 4),
    ((7,), (32, 32, 3), 1),
    ((64, 512), (8, 8, 1), 1),  # the quickstart: small images stay on one device
    ((1024,), (8, 8, 1), 4),
    ((32,), (224, 224, 3), 8),
])
def test_recommended_cpu_devices(batch_sizes, image_shape, expected):
  assert performance.recommended_cpu_devices(batch_sizes, image_shape) == expected


def test_recommended_cpu_devices_respects_limits():
  assert performance.recommended_cpu_devices((128,), max_devices=4) == 4
  assert performance.recommended_cpu_devices((128,), min_pixels_per_device=64 * 1024) == 2
  assert performance.recommended_cpu_devices((128,), max_devices=1) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_sizes": ()}, "batch_sizes is empty"),
    ({"batch_sizes": (0,)}, r"batch_sizes\[0\]=0"),
    ({"batch_sizes": (12.0,)}, r"batch_sizes\[0\]=12.0"),
    ({"batch_sizes": (True,)}, r"batch_sizes\[0\]=True"),
    ({"image_shape": (32, 32)}, r"image_shape=\(32, 32\) must be \[H, W, C\]"),
    ({"image_shape": (32, 0, 3)}, r"image_shape\[1\]=0"),
    ({"max_devices": 0}, "max_devices=0"),
    ({"min_pixels_per_device": -1}, "min_pixels_per_device=-1"),
])
def test_recommended_cpu_devices_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    performance.recommended_cpu_devices(**kwargs)


def test_configure_after_backend_start_changes_nothing():
  jax.devices()  # the test session's backends are running (8 devices, from conftest)
  before = len(jax.devices("cpu"))
  applied = performance.configure(num_cpu_devices=2)
  assert applied["num_cpu_devices"] == before and applied["source"] == "too late"
  assert len(jax.devices("cpu")) == before
  # conftest set the count through jax.config, as a user would: configure keeps it.
  assert performance.configure(batch_sizes=(64,))["source"] == "user"


def test_configure_after_backend_start_in_a_fresh_process_says_too_late():
  out = _run("""
      import jax
      jax.devices()
      from kdjax import performance
      applied = performance.configure(batch_sizes=(128,))
      print(applied["source"], applied["num_cpu_devices"], len(jax.devices("cpu")))
      """, {"JAX_PLATFORMS": "cpu"})
  assert out == "too late 1 1"


def test_configure_rejects_bad_device_count():
  with pytest.raises(ValueError, match="num_cpu_devices"):
    performance.configure(num_cpu_devices=0)


def _run(code: str, env_extra: dict[str, str]) -> str:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(env_extra)
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
  return result.stdout.strip().splitlines()[-1]


def test_configure_in_a_fresh_process_sets_virtual_devices():
  out = _run("""
      from kdjax import performance
      applied = performance.configure(batch_sizes=(128,))
      import jax
      print(applied["source"], applied["num_cpu_devices"], len(jax.devices("cpu")))
      """, {"JAX_PLATFORMS": "cpu"})
  assert out == "kdjax 8 8"


_SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
_WARN = "--xla_cpu_collective_call_warn_stuck_timeout_seconds=600"
_TERMINATE = "--xla_cpu_collective_call_terminate_timeout_seconds=1200"
_USER_SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT"


@pytest.mark.parametrize("image_shape, user_flags, expected", [
    ((32, 32, 3), "", f"8 {sorted([_SCHEDULER, _TERMINATE, _WARN])} "
                      f"{_SCHEDULER} {_WARN} {_TERMINATE}"),
    ((8, 8, 1), "", "1 []"),  # one device: the default scheduler is faster there
    # the user's choice stays
    ((32, 32, 3), _USER_SCHEDULER, f"8 {sorted([_TERMINATE, _WARN])} "
                                   f"{_USER_SCHEDULER} {_WARN} {_TERMINATE}"),
])
def test_configure_sets_the_scheduler_for_split_batches(image_shape, user_flags, expected):
  out = _run(f"""
      import os
      from kdjax import performance
      applied = performance.configure(batch_sizes=(128,), image_shape={image_shape})
      import jax
      assert jax.jit(lambda x: 2 * x)(1.0) == 2.0  # XLA accepts the flags
      print(len(jax.devices("cpu")), applied["xla_flags"], os.environ.get("XLA_FLAGS", ""))
      """, {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": user_flags})
  assert out == expected


def test_a_later_call_for_one_device_takes_the_scheduler_back():
  out = _run("""
      import os
      from kdjax import performance
      performance.configure(batch_sizes=(128,), num_cpu_devices=8)
      applied = performance.configure(batch_sizes=(128,), num_cpu_devices=1)
      print(applied["xla_flags"], repr(os.environ["XLA_FLAGS"]))
      """, {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})
  assert out == "[] '--xla_cpu_enable_fast_math=false'"


_LATE_FIRST_DEVICE = """
    import sys, time
    from kdjax import performance
    applied = performance.configure(batch_sizes=(128,), num_cpu_devices=2)
    import jax, jax.numpy as jnp
    from jax.sharding import PartitionSpec as P
    mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))

    def late_first(block):  # device 0 reaches the all-reduce 4 s after device 1
      def host(v):
        if v[0] == 0:
          time.sleep(4.0)
        return v
      block = jax.pure_callback(host, jax.ShapeDtypeStruct(block.shape, block.dtype), block)
      return jax.lax.psum(block, "data")

    summed = jax.jit(jax.shard_map(late_first, mesh=mesh, in_specs=P("data"), out_specs=P()))
    x = jax.device_put(jnp.arange(2.0), jax.sharding.NamedSharding(mesh, P("data")))
    print(float(summed(x)[0]), len(applied["xla_flags"]))
    """


def test_a_late_virtual_device_is_waited_for_not_aborted():
  # XLA aborts the process when a device is later than its terminate timeout (2 s here, a
  # user's setting that configure leaves alone)...
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_cpu_collective_call_warn_stuck_timeout_seconds=1 "
                       "--xla_cpu_collective_call_terminate_timeout_seconds=2")
  aborted = subprocess.run([sys.executable, "-c", textwrap.dedent(_LATE_FIRST_DEVICE)],
                           env=env, capture_output=True, text=True, timeout=120)
  assert aborted.returncode != 0
  assert "Termination timeout" in aborted.stderr
  # ...and with kdjax's settings the late device is waited for.
  assert _run(_LATE_FIRST_DEVICE, {"JAX_PLATFORMS": "cpu"}) == "1.0 3"


def test_configure_keeps_the_users_device_count():
  out = _run("""
      from kdjax import performance
      applied = performance.configure(batch_sizes=(128,))
      import jax
      print(applied["source"], applied["num_cpu_devices"], len(jax.devices("cpu")))
      """, {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert out == "user 2 2"


OBJECTIVE = Objective((term("ce", 0.1), term("kd", 0.9, temperature=4.0)))


@pytest.mark.parametrize("vectorize", [True, False, None])
def test_sweep_forms_give_the_same_numbers(vectorize):
  student, teacher = lib.TinyConvNet(width=3), lib.TinyConvNet(width=5)
  opt = lib.optimizer()
  teacher_vars = lib.init(teacher, 0)
  states = sweep.stack_states([create_train_state(student, lib.init(student, s), opt,
                                                  jax.random.key(s)) for s in (1, 2)])
  single = jax.jit(step_lib.make_train_step(student, OBJECTIVE, opt, teacher=teacher))
  together = jax.jit(sweep.make_sweep_train_step(student, OBJECTIVE, opt, teacher=teacher,
                                                 vectorize=vectorize))
  separate = sweep.unstack_states(states)
  for i in range(2):
    batch = lib.make_batch(i)
    states, metrics = together(states, teacher_vars, batch)
    separate = [single(s, teacher_vars, batch)[0] for s in separate]
  assert metrics["loss"].shape == (2,)
  for a, b in zip(sweep.unstack_states(states), separate, strict=True):
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(a.model_state, b.model_state, rtol=1e-5, atol=1e-6)


def test_configure_sets_the_compilation_cache_once(tmp_path):
  out = _run(f"""
      from kdjax import performance
      applied = performance.configure(compilation_cache_dir={str(tmp_path)!r})
      import jax
      jax.jit(lambda x: x + 1)(1.0).block_until_ready()
      print(applied["compilation_cache_dir"] == jax.config.jax_compilation_cache_dir)
      """, {"JAX_PLATFORMS": "cpu"})
  assert out == "True"
  assert any(tmp_path.iterdir())  # the program was written to the cache


def test_over_students_unrolled_equals_vmap():
  student = lib.TinyConvNet(width=3)
  states = sweep.stack_states([create_train_state(student, lib.init(student, s), lib.optimizer(),
                                                  jax.random.key(s)) for s in (1, 2, 3)])
  evaluate = step_lib.make_eval_step(student)
  batch = lib.make_batch(0)
  unrolled = jax.jit(sweep.over_students(evaluate, vectorize=False))(states, None, batch)
  vmapped = jax.jit(sweep.over_students(evaluate, vectorize=True))(states, None, batch)
  assert unrolled["accuracy"].shape == (3,)
  chex.assert_trees_all_close(unrolled, vmapped, rtol=1e-5, atol=1e-6)
