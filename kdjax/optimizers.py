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

  :func:`optimizer` calls it; call it directly to inspect or plot a stage's schedule. With
  peak rate :math:`\eta_0` (``learning_rate``), :math:`W` warm-up steps, :math:`N` steps in
  the stage and :math:`M = N - W`:

  .. math::
     \eta(n) = \begin{cases} \eta_0\, n / W & n < W \ \text{(warm-up)} \\
                             \eta_{\mathrm{main}}(n - W) & n \ge W \end{cases}

     \eta_{\mathrm{main}}(m) = \eta_0 \ \text{(constant)}, \qquad
     \eta_0\, f^{\,\#\{i\,:\, m \ge b_i\}},\ b_i = \max\big(1, \mathrm{round}(a_i M)\big)
     \ \text{(step)}, \qquad
     \tfrac12\,\eta_0\big(1 + \cos(\pi \min(m, M) / M)\big) \ \text{(cosine)}

  ``"step"`` multiplies the peak rate by ``decay_factor`` :math:`f` at each fraction
  :math:`a_i` in ``decay_at`` of the steps after warm-up (e.g. ×0.1 at 50 % and ×0.01 at
  75 %, Annealing-KD's CIFAR recipe); ``"cosine"`` decays to 0 at the end of the stage.

  Args:
    config: the stage's ``optimizer`` config: ``learning_rate``, ``schedule``
      (``"constant"``, ``"step"`` or ``"cosine"``), ``warmup_steps``, and for ``"step"``
      ``decay_at`` and ``decay_factor``.
    num_steps: the stage's length :math:`N`.

  Returns:
    An ``optax.Schedule``: step → learning rate.

  Raises:
    ValueError: naming the field, on a rate that is not finite and > 0, an unknown
      schedule, a warm-up in epochs (``warmup_epochs``, which ``kdjax.trainer.validate``
      resolves into steps), ``warmup_steps`` outside ``[0, num_steps)``, ``decay_at``
      fractions outside (0, 1) or out of order, or a ``decay_factor`` outside (0, 1].

  Example:
    >>> config = {"learning_rate": 0.1, "schedule": "step", "decay_at": (0.5, 0.75),
    ...           "decay_factor": 0.1, "warmup_steps": 0}
    >>> lr = learning_rate_schedule(config, num_steps=100)
    >>> [round(float(lr(n)), 4) for n in (0, 49, 50, 75, 99)]
    [0.1, 0.1, 0.01, 0.001, 0.001]
    >>> lr = learning_rate_schedule({**config, "schedule": "cosine", "warmup_steps": 10}, 110)
    >>> [round(float(lr(n)), 4) for n in (0, 5, 10, 60, 110)]
    [0.0, 0.05, 0.1, 0.05, 0.0]
    >>> learning_rate_schedule({**config, "warmup_steps": 100}, 100)
    Traceback (most recent call last):
    ...
    ValueError: optimizer.warmup_steps=100 must lie in [0, num_steps=100).
  """
  peak, name = float(config["learning_rate"]), config["schedule"]
  warmup = int(config["warmup_steps"])
  if not (math.isfinite(peak) and peak > 0):
    raise ValueError(f"optimizer.learning_rate={peak} must be finite and > 0.")
  if name not in LR_SCHEDULES:
    raise ValueError(f"unknown optimizer.schedule {name!r}; valid: {', '.join(LR_SCHEDULES)}.")
  if config.get("warmup_epochs"):
    raise ValueError(f"optimizer.warmup_epochs={config['warmup_epochs']} is in epochs: give "
                     f"warmup_steps, or pass the run config through kdjax.trainer.validate, "
                     f"which resolves epochs into steps.")
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
  r"""Builds the stage's optax optimizer and returns it with its learning-rate schedule.

  Use it to turn a stage's ``optimizer`` config into what ``kdjax.state.create_train_state``
  and ``kdjax.step.make_train_step`` take; report the schedule with
  ``log_schedules={"learning_rate": schedule}``. Weight decay :math:`\lambda`: ``sgd`` and
  ``adam`` add it to the gradient (PyTorch's ``weight_decay``, what the CIFAR KD recipes
  use); ``adamw`` decays decoupled, scaled by the learning rate :math:`\eta(n)`:

  .. math::
     \texttt{sgd}, \texttt{adam}:\ g \leftarrow g + \lambda\,\theta, \qquad
     \texttt{adamw}:\ \theta \leftarrow \theta - \eta(n)\,\big(u_{\mathrm{Adam}}
     + \lambda\,\theta\big)

  Args:
    config: the stage's ``optimizer`` config: ``name`` (``"sgd"``, ``"adam"`` or
      ``"adamw"``), ``weight_decay``, ``momentum`` (checked for every optimizer, used by
      ``sgd``; 0 for none), ``nesterov`` (``sgd``), and the fields of
      :func:`learning_rate_schedule`.
    num_steps: the stage's length.

  Returns:
    ``(optimizer, schedule)``: the ``optax.GradientTransformation`` and the learning-rate
    schedule it follows.

  Raises:
    ValueError: naming the field, on an unknown optimizer, a negative ``weight_decay``, a
      ``momentum`` outside ``[0, 1)``, or a bad schedule field (see
      :func:`learning_rate_schedule`).

  Example:
    >>> config = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": False,
    ...           "weight_decay": 5e-4, "schedule": "constant", "warmup_steps": 0}
    >>> tx, schedule = optimizer(config, num_steps=100)
    >>> params = {"w": jnp.ones(2)}
    >>> updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
    >>> [round(u, 8) for u in updates["w"].tolist()]  # zero gradient: -0.1 · 5e-4 · w
    [-5e-05, -5e-05]
    >>> optimizer({**config, "name": "lamb"}, 100)
    Traceback (most recent call last):
    ...
    ValueError: unknown optimizer.name 'lamb'; valid: sgd, adam, adamw.
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
