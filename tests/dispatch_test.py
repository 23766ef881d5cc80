"""The window of steps a host loop keeps in flight, and the XLA:CPU deadlock it prevents."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from kdjax import dispatch

# A tiny step whose batch is split over 8 virtual CPU devices (one all-reduce), dispatched
# STEPS times, with a window of DEPTH steps in flight (0: none, the host runs ahead freely).
_LOOP = """
    import sys
    import jax, jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from kdjax import dispatch
    depth, steps = int(sys.argv[1]), int(sys.argv[2])
    mesh = jax.make_mesh((8,), ("data",))
    x = jax.device_put(jnp.ones((8, 16, 16)), NamedSharding(mesh, P("data")))
    w = jax.device_put(jnp.eye(16), NamedSharding(mesh, P()))
    step = jax.jit(lambda w, x: w - 1e-3 * jnp.tanh(x @ w).mean(axis=0))  # mean: all-reduce
    window = dispatch.DispatchWindow(depth) if depth else None
    for _ in range(steps):
      w = step(w, x)
      if window is not None:
        window.push(w)
    print("finished", float(w[0, 0]))
    """


def _run_loop(depth: int, steps: int, patience_s: int) -> subprocess.CompletedProcess:
  """Runs ``_LOOP``; XLA ends it when a device is ``patience_s`` late at the reduction."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  # PJRT_NPROC=1: the client's thread pool has one thread per device, as on a 2-core
  # machine, whatever the machine running the test.
  env.update(JAX_PLATFORMS="cpu", PJRT_NPROC="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=8 "
                       "--xla_cpu_collective_call_warn_stuck_timeout_seconds=1 "
                       f"--xla_cpu_collective_call_terminate_timeout_seconds={patience_s}")
  return subprocess.run([sys.executable, "-c", textwrap.dedent(_LOOP), str(depth), str(steps)],
                        env=env, capture_output=True, text=True, timeout=300)


def test_the_window_prevents_the_deadlock_of_a_loop_32_steps_ahead():
  # Without a window the host is soon 32 steps ahead, and XLA:CPU deadlocks...
  free = _run_loop(depth=0, steps=2000, patience_s=5)
  if free.returncode == 0:
    pytest.skip("this jaxlib runs a loop 32 steps ahead of 8 CPU devices without deadlock: "
                "there is nothing for the window to prevent.")
  assert "Termination timeout" in free.stderr, free.stderr[-2000:]
  # ...which the default window prevents, for every step (a device late because the
  # machine is loaded is waited for a minute).
  windowed = _run_loop(depth=dispatch.DEFAULT_DEPTH, steps=2000, patience_s=60)
  assert windowed.returncode == 0, windowed.stderr[-2000:]
  assert windowed.stdout.startswith("finished")


def test_push_waits_for_the_oldest_step_once_more_than_depth_are_in_flight(monkeypatch):
  waited = []
  monkeypatch.setattr(dispatch.jax, "block_until_ready", waited.append)
  window = dispatch.DispatchWindow(depth=2)
  for step in range(5):
    window.push({"step": step})
    assert window.in_flight == min(step + 1, 2)
  assert waited == [{"step": 0}, {"step": 1}, {"step": 2}]


def test_push_returns_with_the_oldest_step_finished():
  window = dispatch.DispatchWindow(depth=1)
  step = jax.jit(lambda x: (x @ x).sum())
  first = step(jnp.ones((64, 64)))
  window.push(first)
  window.push(step(jnp.ones((64, 64))))
  assert first.is_ready()


@pytest.mark.parametrize("depth", [0, -1, 2.0, True, "4"])
def test_a_bad_depth_is_refused_naming_it(depth):
  with pytest.raises(ValueError, match=f"depth={depth!r}"):
    dispatch.DispatchWindow(depth)
