"""Run configs for trainer tests on the bundled digits: batch 32, quiet, no compilation cache,
no teacher accuracy check."""

from typing import Any

import ml_collections

from configs import base
from kdjax import methods


def digits_config(data_dir: str, **fields: Any) -> ml_collections.ConfigDict:
  """``configs/base.py`` with no stages, reading digits from ``data_dir``.

  Args:
    data_dir: the TFDS directory the test prepared the digits in.
    **fields: dotted field paths and values, e.g. ``**{"dataset.eval_batch_size": 200}``.
  """
  config = base.get_config()
  config.dataset.data_dir = data_dir
  config.dataset.batch_size = 32
  config.progress_bar = False
  config.compilation_cache_dir = ""
  # Tests train teachers for a few steps to check plumbing, not teaching; the teacher check
  # has its own test.
  config.min_teacher_accuracy_over_chance = 0.0
  config.stages = base.stages()
  return override(config, **fields)


def override(config: ml_collections.ConfigDict, **fields: Any) -> ml_collections.ConfigDict:
  """Sets each dotted field path of ``config`` (e.g. ``"stages.kd.loss.gamma"``) in place.

  A stage's ``method`` set this way gets that method's ``loss`` fields at their defaults
  (as ``base.stage`` would give it), which later paths may override.
  """
  for path, value in fields.items():
    *parents, field = path.split(".")
    target = config
    for parent in parents:
      target = target[parent]
    target[field] = value
    if parents[:1] == ["stages"] and field == "method" and value in methods.METHODS:
      target.loss = base.loss_config(value)
  return config
