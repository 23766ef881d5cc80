"""What a stage costs: wall seconds by what they were spent on, and the hardware it ran on.

A stage's ``result.json`` records its cost (``Progress.cost``) summed over the runs of the
stage (a resumed stage's included): ``setup_seconds`` (building the stage: teacher checks,
the logit cache, restoring the checkpoint), ``train_seconds`` (train steps, their
compilation and the logging between them), ``eval_seconds`` (evaluations),
``checkpoint_seconds`` (checkpoint saves and network exports), the count of ``runs`` and
the ``hardware`` of each, without repeats.
"""

from collections.abc import Iterator
import contextlib
import os
import time
from typing import Any

import jax

# What ``Stopwatch.timing`` measures apart; ``train_seconds`` is the rest of the wall time.
TIMED = ("eval_seconds", "checkpoint_seconds")


def nothing_spent() -> dict[str, Any]:
  """The cost of a stage before its first run.

  Example:
    >>> nothing_spent()["runs"], nothing_spent()["checkpoint_seconds"]
    (0, 0.0)
  """
  return {"setup_seconds": 0.0, "train_seconds": 0.0, "eval_seconds": 0.0,
          "checkpoint_seconds": 0.0, "runs": 0, "hardware": []}


def hardware() -> dict[str, Any]:
  """The machine this process runs on, as a cost records it (``cost["hardware"]``).

  Example:
    >>> sorted(hardware())
    ['backend', 'device_count', 'device_kind', 'host_cpu_count', 'process_count']
  """
  return {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
          "device_count": jax.device_count(), "process_count": jax.process_count(),
          "host_cpu_count": os.cpu_count()}


class Stopwatch:
  """The wall seconds of one run of a stage, by what they were spent on.

  Setup is the time from ``started`` to the stopwatch's creation; evaluation and checkpoint
  seconds are what ``timing`` measured; training is the rest of the wall time since
  ``started``, so the four add up to it.

  Example:
    >>> watch = Stopwatch(time.perf_counter())
    >>> with watch.timing("checkpoint_seconds"):
    ...   time.sleep(0.01)
    >>> cost = watch.charged(nothing_spent())
    >>> cost["runs"], cost["checkpoint_seconds"] >= 0.01
    (1, True)
  """

  def __init__(self, started: float):
    self._started = started
    self._setup_seconds = time.perf_counter() - started
    self._timed = dict.fromkeys(TIMED, 0.0)
    self._hardware = hardware()

  @contextlib.contextmanager
  def timing(self, kind: str) -> Iterator[None]:
    """Adds the wall time of the ``with`` block to ``kind`` (one of ``TIMED``)."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self._timed[kind] += time.perf_counter() - start

  def charged(self, earlier: dict[str, Any]) -> dict[str, Any]:
    """The cost of the earlier runs (``earlier``) plus this run's so far.

    A kind of seconds that ``earlier`` does not hold counts as 0 there.
    """
    elapsed = time.perf_counter() - self._started
    spent = {"setup_seconds": self._setup_seconds,
             "train_seconds": elapsed - self._setup_seconds - sum(self._timed.values()),
             **self._timed}
    cost = {kind: earlier.get(kind, 0.0) + seconds for kind, seconds in spent.items()}
    seen = earlier["hardware"]
    return {**cost, "runs": earlier["runs"] + 1,
            "hardware": seen + [self._hardware] * (self._hardware not in seen)}
