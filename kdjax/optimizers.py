"""Optimizers and learning-rate schedules of a training stage, from its config."""

from collections.abc import Mapping
import math
from typing import Any

import optax

from kdjax import schedules

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "step", "cosine")


def learning_rate_schedule(config: Mapping[str, Any], num_steps: int) -> optax.Schedule:
  r"""The stage's learning rate: optional linear warm-up, then constant, step or cosine.

  ``"step"`` multiplies the peak rate by ``decay_factor`` at each fraction in ``decay_at``
  of the stage (e.g. ×0.1 at 50 % and ×0.01 at 75 %, Annealing-KD's CIFAR recipe);
  ``"cosine"`` decays to 0 at the end of the stage.

  Args:
    config: the stage's ``optimizer`` config (``learning_rate``, ``schedule``, ``decay_at``,
      ``decay_factor``, ``warmup_steps``).
    num_steps: the stage's length.

  Raises:
    ValueError: naming the field, on a non-positive rate, an unknown schedule, decay
      fractions outside (0, 1) or warm-up longer than the stage.
  """
  peak, name = float(config["learning_rate"]), config["schedule"]
  warmup = int(config["warmup_steps"])
  if not (math.isfinite(peak) and peak > 0):
    raise ValueError(f"optimizer.learning_rate={peak} must be finite and > 0.")
  if name not in LR_SCHEDULES:
    raise ValueError(f"unknown optimizer.schedule {name!r}; valid: {', '.join(LR_SCHEDULES)}.")
  if not 0 <= warmup < num_steps:
    raise ValueError(f"optimizer.warmup_steps={warmup} must lie in [0, num_steps={num_steps}).")
  decay_steps = num_steps - warmup
  if name == "constant":
    main = schedules.constant(peak)
  elif name == "cosine":
    main = schedules.cosine(peak, 0.0, decay_steps)
  else:
    fractions = tuple(float(f) for f in config["decay_at"])
    if any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(fractions):
      raise ValueError(f"optimizer.decay_at={fractions} must be increasing fractions in (0, 1).")
    factor = float(config["decay_factor"])
    if not 0 < factor <= 1:
      raise ValueError(f"optimizer.decay_factor={factor} must lie in (0, 1].")
    main = schedules.piecewise_constant(
        peak, {max(1, round(f * decay_steps)): peak * factor**(i + 1)
               for i, f in enumerate(fractions)})
  if warmup == 0:
    return main
  return schedules.join([schedules.linear(0.0, peak, warmup), main], [warmup])


def optimizer(config: Mapping[str, Any], num_steps: int
              ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the stage's optax optimizer and returns it with its learning-rate schedule.

  Weight decay: ``sgd`` and ``adam`` add ``weight_decay · θ`` to the gradient (PyTorch's
  ``weight_decay``, what the CIFAR KD recipes use); ``adamw`` decays decoupled.

  Args:
    config: the stage's ``optimizer`` config.
    num_steps: the stage's length.

  Raises:
    ValueError: naming the field, on an unknown optimizer or out-of-range value.
  """
  name = config["name"]
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer.name {name!r}; valid: {', '.join(OPTIMIZERS)}.")
  weight_decay, momentum = float(config["weight_decay"]), float(config["momentum"])
  if not weight_decay >= 0:
    raise ValueError(f"optimizer.weight_decay={weight_decay} must be >= 0.")
  if not 0 <= momentum < 1:
    raise ValueError(f"optimizer.momentum={momentum} must lie in [0, 1).")
  lr = learning_rate_schedule(config, num_steps)
  if name == "adamw":
    return optax.adamw(lr, weight_decay=weight_decay), lr
  if name == "adam":
    base = optax.adam(lr)
  else:
    base = optax.sgd(lr, momentum=momentum or None, nesterov=bool(config["nesterov"]))
  if weight_decay:
    base = optax.chain(optax.add_decayed_weights(weight_decay), base)
  return base, lr
