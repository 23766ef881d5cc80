"""Timing steps on a shared machine: interleaved rounds, each with the load it ran under.

A step's absolute time on a machine that others use says little; the ratio of two steps
timed in the same rounds says much more, since a burst of load slows both alike.
``time_interleaved`` runs every step once per round, records the CPU time other processes
took during the round (``LoadMeter``), and keeps the quiet rounds; ``Timing`` summarises a
step's kept times.
"""

from collections.abc import Callable, Mapping
import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

MS = 1e3  # milliseconds per second


def _cpu_seconds() -> tuple[float, float] | None:
  """(busy, total) CPU seconds of the whole machine since boot, or None off Linux."""
  try:
    with open("/proc/stat") as f:
      fields = [float(v) for v in f.readline().split()[1:]]
  except OSError:
    return None
  hz = os.sysconf("SC_CLK_TCK")
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
  return (sum(fields) - idle) / hz, sum(fields) / hz


def _own_cpu_seconds() -> float:
  times = os.times()
  return times.user + times.system


class LoadMeter:
  r"""The fraction of the machine's CPU time that other processes used since it started.

  From ``/proc/stat`` (the machine's busy and total CPU seconds) and ``os.times`` (this
  process's): over an interval,

  .. math::
     \text{foreign} = \max\Big(0, \frac{\Delta\text{busy} - \Delta\text{own}}
                                        {\Delta\text{total}}\Big),

  0 off Linux. Use it to discard measurements taken while others loaded the machine.

  Example:
    >>> meter = LoadMeter()
    >>> 0.0 <= meter.foreign() <= 1.0
    True
  """

  def __init__(self):
    self._start = (_cpu_seconds(), _own_cpu_seconds())

  def foreign(self) -> float:
    """The foreign fraction of CPU time from construction until now, in [0, 1]."""
    (start, own_start), end = self._start, _cpu_seconds()
    if start is None or end is None or end[1] <= start[1]:
      return 0.0
    own = _own_cpu_seconds() - own_start
    return min(1.0, max(0.0, (end[0] - start[0] - own) / (end[1] - start[1])))


@dataclasses.dataclass
class Timing:
  """Per-round times (seconds) of one step.

  Example:
    >>> Timing([0.001, 0.002, 0.003, 0.004, 0.005]).summary()["median_ms"]
    3.0
  """

  times: list[float]

  def summary(self) -> dict[str, float]:
    """Median, quartiles, min and max in milliseconds, and the round count; {} if none."""
    t = np.asarray(self.times) * MS
    if not t.size:
      return {}
    q25, median, q75 = np.percentile(t, [25, 50, 75])
    return {"median_ms": float(median), "q25_ms": float(q25), "q75_ms": float(q75),
            "min_ms": float(t.min()), "max_ms": float(t.max()), "rounds": int(t.size)}


def time_interleaved(steps: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int,
                     max_foreign_load: float, max_rounds: int,
                     meter: Callable[[], LoadMeter] = LoadMeter
                     ) -> tuple[dict[str, Timing], dict[str, Any]]:
  """Times ``steps`` in rounds (each round calls each step once), after first calls.

  Each step is called once (timed apart: compilation), then ``warmup`` untimed rounds run,
  then rounds until ``rounds`` of them were quiet (other processes used at most
  ``max_foreign_load`` of the machine) or ``max_rounds`` ran. Every call's outputs are
  blocked on (``jax.block_until_ready``) before the clock stops.

  Args:
    steps: name → a call that runs one step.
    rounds: the quiet rounds wanted.
    warmup: untimed rounds after the first calls.
    max_foreign_load: a round during which other processes used more than this fraction of
      the machine's CPU is discarded.
    max_rounds: stop after this many rounds, quiet or not.
    meter: makes the load meter started at each round (``LoadMeter``).

  Returns:
    ``(timings, info)``: the quiet rounds' times per step (every round's if fewer than
    half of ``rounds`` were quiet) and ``{"first_call_s": {name: s}, "foreign_load":
    [per round], "clean": whether enough rounds were quiet, "rounds_run": int}``.

  Example:
    >>> timings, info = time_interleaved({"a": lambda: 1, "b": lambda: 2}, rounds=3,
    ...                                  warmup=1, max_foreign_load=1.0, max_rounds=9)
    >>> [len(t.times) for t in timings.values()], info["rounds_run"], info["clean"]
    ([3, 3], 3, True)
  """
  first = {}
  for name, fn in steps.items():
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first[name] = time.perf_counter() - start
  for _ in range(warmup):
    for fn in steps.values():
      jax.block_until_ready(fn())
  all_times = {name: [] for name in steps}
  loads = []
  while sum(load <= max_foreign_load for load in loads) < rounds and len(loads) < max_rounds:
    round_meter = meter()
    for name, fn in steps.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      all_times[name].append(time.perf_counter() - start)
    loads.append(round_meter.foreign())
  keep = [load <= max_foreign_load for load in loads]
  clean = sum(keep) >= max(1, rounds // 2)
  if not clean:
    keep = [True] * len(loads)
  timings = {name: Timing([t for t, k in zip(ts, keep, strict=True) if k])
             for name, ts in all_times.items()}
  return timings, {"first_call_s": first, "foreign_load": loads, "clean": clean,
                   "rounds_run": len(loads)}
