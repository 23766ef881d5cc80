"""How far a host loop runs ahead of its devices: a window of steps in flight.

JAX dispatches asynchronously: a train loop that reads no result between two logs enqueues
steps as fast as the host makes batches, tens of steps ahead of the devices. On XLA:CPU
with several devices (kdjax's CPU default: 8 virtual devices, ``kdjax.performance``) that
deadlocks, as thread dumps of hung loops show (jaxlib 0.10.2):

* the PjRt CPU client runs the device programs of a step split over ``n`` devices on a
  pool of ``max(cores, n)`` threads, "enough threads for one collective": the ``n``
  programs must all be running at once to meet at each cross-device reduction;
* the launch of a later step also runs on that pool, and it waits there, holding its
  thread, while its device has 32 computations in flight (the client's pacing semaphore);
* so with 32 steps queued, a launch can take a thread before the last device program of
  an earlier step starts: ``n - 1`` programs wait at the reduction for the one that never
  gets a thread, and no thread is free. XLA reports "Expected 8 threads to join the
  rendezvous, but not all of them arrived on time" and, at
  ``--xla_cpu_collective_call_terminate_timeout_seconds``, ends the process.

A loop of a tiny cross-device step over 8 virtual CPU devices hung at its first steps with
32 or more steps in flight and ran 6,000 steps with 31 or fewer (2 cores, jaxlib 0.10.2).
Long steps make the race rare, not impossible: the CIFAR trainer, whose steps take 0.2 s,
hung every few hours, its main thread waiting for the launch of a train step.

A few steps in flight keep the devices busy (the host makes the next batch while they
compute), so ``DispatchWindow`` waits for the oldest step once more than ``depth`` are
dispatched. Numbers do not change: the same programs run in the same order.
"""

import collections
from typing import Any

import jax

# Steps in flight: enough that the devices never wait for the host, far below the 32
# computations per device at which XLA:CPU's launches block (see the module docstring).
DEFAULT_DEPTH = 4


class DispatchWindow:
  """Keeps at most ``depth`` dispatched steps unfinished: the host waits for the oldest.

  Call :meth:`push` with an output of every step, right after dispatching it. Pass an
  output the next step does not donate (its metrics, not the state): a donated array is
  deleted before it can be waited for.

  Attributes:
    depth: the most steps in flight once :meth:`push` returns.

  Example:
    >>> import jax.numpy as jnp
    >>> window = DispatchWindow(depth=2)
    >>> step = jax.jit(lambda x: (x + 1, {"loss": x.sum()}))
    >>> x = jnp.zeros(3)
    >>> for _ in range(5):
    ...   x, metrics = step(x)
    ...   window.push(metrics)
    >>> window.in_flight
    2
  """

  def __init__(self, depth: int = DEFAULT_DEPTH):
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
      raise ValueError(f"depth={depth!r} must be a positive integer (steps in flight).")
    self.depth = depth
    self._in_flight: collections.deque[Any] = collections.deque()

  def push(self, outputs: Any) -> None:
    """Records a dispatched step by its ``outputs`` (a pytree of arrays it computes).

    Blocks until the oldest recorded step has finished while more than ``depth`` are
    recorded.
    """
    self._in_flight.append(outputs)
    while len(self._in_flight) > self.depth:
      jax.block_until_ready(self._in_flight.popleft())

  @property
  def in_flight(self) -> int:
    """The steps recorded and not yet waited for (some may have finished)."""
    return len(self._in_flight)
