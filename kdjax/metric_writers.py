"""Where training metrics go: a JSONL file of every record and TensorBoard event files."""

from collections.abc import Mapping
import json
import math
import os

import numpy as np
import tensorboardX


class MetricWriter:
  """Appends scalar metrics to ``DIR/metrics.jsonl`` and to TensorBoard events in ``DIR``.

  Use one per training stage, as a context manager, for the step's metrics (read them back
  with :func:`read_jsonl`, or point TensorBoard at ``DIR``). The JSONL file is opened in
  append mode and flushed after every record, so a resumed run continues the same file and
  a crash loses nothing already written. Each line is
  ``{"step": n, "split": "train" | "eval", "<name>": value, ...}``; a non-finite value is
  written as the string ``"nan"``, ``"inf"`` or ``"-inf"`` (strict JSON has no such
  numbers). TensorBoard events are flushed every 30 seconds and on ``close``.

  Args:
    directory: where ``metrics.jsonl`` and the event files go (created if missing).

  Raises:
    OSError: if ``directory`` cannot be created or written.

  Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> with MetricWriter(directory) as writer:
    ...   writer.write(100, "train", {"loss": jnp.float32(0.5), "grad_norm": float("inf")})
    >>> read_jsonl(os.path.join(directory, "metrics.jsonl"))
    [{'step': 100, 'split': 'train', 'loss': 0.5, 'grad_norm': 'inf'}]
  """

  def __init__(self, directory: str):
    os.makedirs(directory, exist_ok=True)
    self._jsonl = open(os.path.join(directory, "metrics.jsonl"), "a")
    self._tensorboard = tensorboardX.SummaryWriter(directory, flush_secs=30)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    """Appends one record of scalar metrics at ``step`` to both outputs.

    Args:
      step: the training step.
      split: ``"train"`` or ``"eval"``; TensorBoard tags are ``"<split>/<name>"``.
      metrics: name → scalar (Python number, or a numpy or JAX scalar ``[]``).

    Raises:
      TypeError: if a metric value is not a scalar (e.g. a ``[B]`` array).

    Example:
      >>> import tempfile
      >>> directory = tempfile.mkdtemp()
      >>> with MetricWriter(directory) as writer:
      ...   writer.write(1, "eval", {"accuracy": np.float32(0.75)})
      ...   writer.write(1, "train", {"loss": jnp.zeros(4)})
      Traceback (most recent call last):
      ...
      TypeError: only ... arrays can be converted to Python scalars
      >>> read_jsonl(os.path.join(directory, "metrics.jsonl"))  # the bad record is not written
      [{'step': 1, 'split': 'eval', 'accuracy': 0.75}]
    """
    scalars = {name: float(np.asarray(value)) for name, value in metrics.items()}
    record = {"step": int(step), "split": split}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, int(step))

  def close(self) -> None:
    """Closes the JSONL file and flushes and closes the TensorBoard writer.

    Example:
      >>> import tempfile
      >>> writer = MetricWriter(tempfile.mkdtemp())
      >>> writer.close()
    """
    self._jsonl.close()
    self._tensorboard.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_jsonl(path: str) -> list[dict]:
  """Reads a ``metrics.jsonl`` file, skipping lines that are not valid JSON.

  Use it to analyse a run's metrics, finished or not: a last line cut short by a crash (or
  any other unparsable line) is skipped rather than failing the whole read.

  Args:
    path: the JSONL file, e.g. ``os.path.join(directory, "metrics.jsonl")``.

  Returns:
    The records in file order, as written by :meth:`MetricWriter.write`.

  Raises:
    FileNotFoundError: if ``path`` does not exist.

  Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
    >>> with open(path, "w") as f:
    ...   print('{"step": 1, "split": "train", "loss": 2.3}', file=f)
    ...   _ = f.write('{"step": 2, "spl')  # a last line cut short by a crash
    >>> read_jsonl(path)
    [{'step': 1, 'split': 'train', 'loss': 2.3}]
  """
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records
