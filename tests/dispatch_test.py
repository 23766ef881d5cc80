"""The window of steps a host loop keeps in flight, and the XLA:CPU deadlock it prevents."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import dispatch

# A step whose batch is split over 8 virtual CPU devices (one all-reduce), dispatched STEPS
# times, pushing its loss into a window of DEPTH steps (0: none, the host runs ahead freely).
# A few milliseconds of device work a step, far more than the host needs to dispatch one.
_LOOP = """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # XLA aborts a deadlocked loop: no core file
    import jax, jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from kdjax import dispatch
    depth, steps = int(sys.argv[1]), int(sys.argv[2])
    mesh = jax.make_mesh((8,), ("data",))
    x = jax.device_put(jnp.ones((8, 128, 128)), NamedSharding(mesh, P("data")))
    w = jax.device_put(jnp.eye(128), NamedSharding(mesh, P()))

    def step(w, x):
      h = jnp.tanh(x @ w)
      return w - 1e-3 * h.mean(axis=0), jnp.mean(h)  # means over the split axis: all-reduces

    step = jax.jit(step, donate_argnums=0)
    window = dispatch.DispatchWindow(depth) if depth else None
    for _ in range(steps):
      w, loss = step(w, x)
      if window is not None:
        window.push(loss)
    print("finished", float(loss))
    """


def _run_loop(depth: int, steps: int, patience_s: int) -> subprocess.CompletedProcess:
  """Runs ``_LOOP``; XLA ends it when a device is ``patience_s`` late at the reduction."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  # PJRT_NPROC=1: the client's thread pool has one thread per device, as on a host of at
  # most 8 cores, whatever the machine running the test.
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
    pytest.skip("a loop free to run ahead of 8 CPU devices did not deadlock here (the host "
                "may not have got 32 steps ahead): nothing for the window to prevent.")
  assert "Termination timeout" in free.stderr, free.stderr[-2000:]
  # ...which the default window prevents, for every step (a device late because the
  # machine is loaded is waited for a minute).
  windowed = _run_loop(depth=dispatch.DEFAULT_DEPTH, steps=2000, patience_s=60)
  assert windowed.returncode == 0, windowed.stderr[-2000:]
  assert windowed.stdout.startswith("finished")


def test_push_waits_for_the_oldest_step_once_more_than_depth_are_in_flight(monkeypatch):
  waited = []
  monkeypatch.setattr(dispatch.jax, "block_until_ready",
                      lambda outputs: waited.append(int(outputs["step"])))
  window = dispatch.DispatchWindow(depth=2)
  for step in range(5):
    window.push({"step": jnp.asarray(step)})
    assert window.in_flight == min(step + 1, 2)
  assert waited == [0, 1, 2]


def test_push_refuses_outputs_with_nothing_to_wait_for():
  window = dispatch.DispatchWindow()
  with pytest.raises(ValueError, match="a dict of 1 leaves, none a jax.Array"):
    window.push({"loss": 0.5})


@pytest.mark.parametrize("depth", [0, -1, 2.0, True, "4", None])
def test_a_bad_depth_is_refused_naming_it(depth):
  with pytest.raises(ValueError, match=f"depth={depth!r}"):
    dispatch.DispatchWindow(depth)


def test_a_numpy_integer_depth_is_a_depth():
  assert dispatch.DispatchWindow(np.int64(3)).depth == 3
