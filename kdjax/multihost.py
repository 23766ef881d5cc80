"""Agreement between the JAX processes of a multi-process run: barriers and votes.

Every function here is a collective: every process calls it at the same point, in the same
order; with one process each returns at once.
"""

import jax
from jax.experimental import multihost_utils
import numpy as np


def sync_processes(name: str) -> None:
  """Waits until every JAX process of a multi-process run reaches the point named ``name``.

  Use it around work that one process does for all (writing a shared file) before the
  others read its result. Every process must call it, in the same order, with the same
  ``name``; with one process it returns at once.

  Args:
    name: the point's name, the same string on every process (no per-process paths).

  Example:
    >>> sync_processes("kdjax example: ready")  # one process: nothing to wait for
  """
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def any_process(flag: bool, value: int = 0) -> int:
  """The largest ``value`` among processes whose ``flag`` is set (0 if none), on every process.

  Use it for decisions every process must take together, e.g. stopping when any of them
  received a signal (``value`` = the signal's number). Every process must call it at the
  same point; with one process it is ``value if flag else 0``.

  Args:
    flag: this process's vote.
    value: a non-negative integer reported with the vote.

  Example:
    >>> any_process(True, 15), any_process(False, 15)
    (15, 0)
  """
  mine = np.int64(value if flag else 0)
  if jax.process_count() == 1:
    return int(mine)
  return int(np.max(multihost_utils.process_allgather(mine)))

