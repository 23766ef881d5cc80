"""Where training metrics go: a JSONL file of every record and TensorBoard event files."""

from collections.abc import Mapping
import json
import math
import os

import numpy as np
import tensorboardX


class MetricWriter:
  """Appends scalar metrics to ``DIR/metrics.jsonl`` and to TensorBoard events in ``DIR``.

  The JSONL file is opened in append mode and flushed after every record, so a resumed run
  continues the same file and a crash loses nothing already written. Each line is
  ``{"step": n, "split": "train" | "eval", "<name>": value, ...}``.
  """

  def __init__(self, directory: str):
    os.makedirs(directory, exist_ok=True)
    self._jsonl = open(os.path.join(directory, "metrics.jsonl"), "a")
    self._tensorboard = tensorboardX.SummaryWriter(directory, flush_secs=30)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    scalars = {name: float(np.asarray(value)) for name, value in metrics.items()}
    record = {"step": int(step), "split": split}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, int(step))

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_jsonl(path: str) -> list[dict]:
  """Reads a ``metrics.jsonl`` file, skipping a last line cut short by a crash."""
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records
