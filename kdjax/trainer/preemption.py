"""Preemption: SIGTERM and SIGINT become a stop that every process agrees on.

The handlers only record the signal; the training loop asks ``StopRequests.agreed`` between
two steps, saves a checkpoint and raises ``Preempted`` (saving inside a handler could
interrupt a save in progress).
"""

import os
import signal
import sys
import threading
from typing import Any

import jax

from kdjax import multihost


class Preempted(Exception):
  """Training stopped on SIGTERM or SIGINT, after saving a checkpoint at the current step.

  Running the same command again resumes from that checkpoint. ``launch/train.py`` exits
  with ``128 + signum`` (143 for SIGTERM, 130 for SIGINT), the shell's code for a process
  ended by that signal, so that job schedulers retry it.

  Attributes:
    signum: the number of the signal that stopped training.

  Example:
    >>> import signal
    >>> stopped = Preempted(signal.SIGTERM, "SIGTERM received: stopped stage 'kd' at step 40")
    >>> 128 + stopped.signum  # the binary's exit code
    143
  """

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


class StopRequests:
  """Turns SIGTERM and SIGINT into a request that the training loop honours between steps.

  Use it as a context manager around training. The first signal is acknowledged on stderr
  at once (training may be in a long evaluation). A second SIGINT raises
  ``KeyboardInterrupt`` at once, for a user who does not want to wait: every file a resumed
  run reads (checkpoints, exports, records) is written and retired by atomic renames, so
  nothing is left half-written. Handlers can only be
  installed from the main thread; elsewhere signals keep their previous behaviour. With
  several processes, the checkpoint is a collective save: they act on a signal together
  (``agreed``), even one that reached a single process.

  Example:
    >>> import os, signal
    >>> with StopRequests() as stop:
    ...   os.kill(os.getpid(), signal.SIGTERM)
    ...   stop.agreed() == signal.SIGTERM
    True
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "StopRequests":
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def _handle(self, signum: int, frame: Any) -> None:
    """Records the first signal and says so at once; a second SIGINT aborts at once."""
    del frame
    if signum == signal.SIGINT and self.signum == signal.SIGINT:
      raise KeyboardInterrupt("a second SIGINT stopped the run at once, without saving; the "
                              "same command resumes from the last checkpoint.")
    if self.signum is None:
      # os.write: a handler may interrupt a print to the same stream, which would then fail.
      second = " Press Ctrl-C again to stop at once." if signum == signal.SIGINT else ""
      os.write(sys.stderr.fileno(), (
          f"\n{signal.Signals(signum).name} received: stopping after the current step or "
          f"evaluation, with a checkpoint saved.{second}\n").encode())
    self.signum = self.signum or signum

  def agreed(self, step: int | None = None, every: int = 1) -> int | None:
    """The signal to stop for now, the same on every process, or ``None``.

    With one process, the signal it received. With several, they vote
    (``kdjax.multihost.any_process``) between stages (``step`` ``None``) and every
    ``every`` steps, so that all stop at the same step even when the signal reached them at
    different times, or reached only one.
    """
    if jax.process_count() == 1:
      return self.signum
    if step is not None and step % every:
      return None
    return multihost.any_process(self.signum is not None, self.signum or 0) or None
