"""Runs two JAX processes on loopback, for the multi-process tests.

Each process calls ``jax.distributed.initialize`` with ``coordinator_address`` 127.0.0.1 and
the port it is given, ``num_processes=2`` and its id.
"""

from collections.abc import Callable
import os
import pathlib
import socket
import subprocess
import sys
import tempfile


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run(worker: pathlib.Path, *args: str, timeout: float = 240) -> list[str]:
  """Runs the script ``worker`` as processes 0 and 1: ``worker PROCESS_ID PORT *args``.

  Returns:
    The two processes' stdout and stderr, process 0 first.

  Raises:
    AssertionError: with the end of its output, if a process exits with an error.
  """
  return run_commands(lambda i, port: [sys.executable, str(worker), str(i), str(port), *args],
                      timeout=timeout)


def run_commands(command: Callable[[int, int], list[str]], *, timeout: float = 240,
                 cwd: str | None = None) -> list[str]:
  """Runs ``command(process_id, port)`` for process ids 0 and 1, side by side.

  Args:
    command: the argv of a process, given its id and the coordinator's free port.
    timeout: seconds each process may take.
    cwd: the processes' working directory.

  Returns:
    The two processes' stdout and stderr, process 0 first.

  Raises:
    AssertionError: with the end of its output, if a process exits with an error or the
      two do not finish within ``timeout``.
  """
  port = _free_port()
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  # Output to files, not pipes: a pipe that is not read while the other process is waited
  # for fills up and blocks its writer, and the two processes wait for each other.
  outputs = [tempfile.TemporaryFile("w+") for _ in range(2)]
  workers = [subprocess.Popen(command(i, port), env=env, cwd=cwd, stdout=outputs[i],
                              stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  timed_out = False
  try:
    for process in workers:
      process.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    timed_out = True
  finally:
    for process in workers:
      if process.poll() is None:
        process.kill()
        process.wait()
    logs = []
    for output in outputs:
      output.seek(0)
      logs.append(output.read())
      output.close()
  for i, (process, log) in enumerate(zip(workers, logs, strict=True)):
    assert not timed_out and process.returncode == 0, (
        f"process {i}{f' (killed after {timeout} s)' if timed_out else ''}:\n{log[-4000:]}")
  return logs
