"""How far a host loop runs ahead of its devices: a window of steps in flight.

JAX dispatches asynchronously: a train loop that reads no result between two logs enqueues
steps as fast as the host makes batches, tens of steps ahead of the devices. On XLA:CPU
with a batch split over several devices (kdjax's CPU default: 8 virtual devices,
``kdjax.performance``) that can deadlock, as thread dumps of hung loops show (jaxlib
0.10.2):

* the PjRt CPU client runs the device programs of a step split over ``n`` devices on a
  pool of ``max(cores, n)`` threads, "enough threads for one collective": the ``n``
  programs must all be running at once to meet at each cross-device reduction;
* the launch of a later step runs on that pool too, one task per device, and a task waits
  there, holding its thread, while its device has 32 computations in flight (the client's
  pacing semaphore);
* so with 32 steps queued, launches can take threads before the last device program of an
  earlier step starts: the other programs wait at the reduction for the one that never
  gets a thread, and no thread is free. XLA logs "Expected 8 threads to join the
  rendezvous, but not all of them arrived on time" and, at
  ``--xla_cpu_collective_call_terminate_timeout_seconds``, ends the process.

The pool is too small for this whenever it has fewer than ``2 n`` threads (hosts of fewer
than 16 cores, for 8 devices). A loop of a tiny cross-device step over 8 virtual CPU
devices on 2 cores hung at its first steps with 32 or more steps in flight and ran 6,000
steps with 31 or fewer. Long steps make the race rare, not impossible: the CIFAR trainer,
whose steps take 0.2 s, hung every few hours, its main thread waiting for the launch of a
train step.

A few steps in flight keep the devices busy (the host makes the next batch while they
compute), so ``DispatchWindow`` waits for the oldest step once more than ``depth`` are
dispatched. Numbers do not change: the same programs run in the same order.
"""

import collections
import operator
from typing import Any

import jax

# Steps in flight: far below the 32 computations per device at which XLA:CPU's launches
# block (see the module docstring). On CPU it cost nothing measurable against 31
# (docs/benchmarks.md); the trainer uses it on every backend.
DEFAULT_DEPTH = 4


class DispatchWindow:
  """Keeps at most ``depth`` dispatched steps unfinished: the host waits for the oldest.

  Call :meth:`push` with an output of every step's program, right after dispatching it.
  Pass an output the next step does not donate (its metrics, not the state): a donated
  array is deleted before it can be waited for. When ``push`` returns, at most ``depth``
  steps are unfinished, so the next one dispatched makes ``depth + 1``. XLA's limit counts
  computations per device: a loop that dispatches ``k`` programs an iteration keeps up to
  ``k · (depth + 1)`` of them in flight.

  Attributes:
    depth: the most steps unfinished once :meth:`push` returns.

  Example:
    >>> import jax.numpy as jnp
    >>> dispatched = DispatchWindow(depth=2)
    >>> step = jax.jit(lambda x: (x + 1, {"loss": x.sum()}), donate_argnums=0)
    >>> x = jnp.zeros(3)
    >>> for _ in range(5):
    ...   x, metrics = step(x)
    ...   dispatched.push(metrics)
    >>> dispatched.in_flight
    2
  """

  def __init__(self, depth: int = DEFAULT_DEPTH):
    try:
      valid = not isinstance(depth, bool) and operator.index(depth) >= 1
    except TypeError:
      valid = False
    if not valid:
      raise ValueError(f"depth={depth!r} must be a positive integer (steps in flight).")
    self.depth = operator.index(depth)
    self._in_flight: collections.deque[Any] = collections.deque()

  def push(self, outputs: Any) -> None:
    """Records a dispatched step by its ``outputs``, arrays its program computes.

    Blocks until the oldest recorded step has finished while more than ``depth`` are
    recorded.

    Raises:
      ValueError: if ``outputs`` holds no ``jax.Array`` (nothing to wait for: the loop
        would run unpaced).
    """
    leaves = jax.tree.leaves(outputs)
    if not any(isinstance(leaf, jax.Array) for leaf in leaves):
      raise ValueError(f"push needs outputs of the step's program (jax.Arrays) to wait for; "
                       f"got a {type(outputs).__name__} of {len(leaves)} leaves, none a "
                       f"jax.Array.")
    self._in_flight.append(outputs)
    while len(self._in_flight) > self.depth:
      jax.block_until_ready(self._in_flight.popleft())

  @property
  def in_flight(self) -> int:
    """The steps recorded and not yet waited for (some may have finished)."""
    return len(self._in_flight)
