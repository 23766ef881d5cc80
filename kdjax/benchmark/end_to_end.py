"""Timing with real data: the input pipeline alone, and the trainer's step fed by it.

``time_pipeline`` times ``kdjax.data.train_iterator``; ``time_end_to_end`` times the train
program the trainer compiles for a distillation stage (``kdjax.sweep``'s step for one
stacked student inside ``kdjax.finite_guard.guard``, under ``kdjax.parallel.mesh_step``
over several devices), fed batch by batch by that pipeline, with the host reading the
metrics at the trainer's logging interval and keeping its window of steps in flight
(``kdjax.dispatch``).
"""

import time
from typing import Any

import jax
import optax

from kdjax import data, dispatch, finite_guard, models, parallel, sweep
from kdjax import state as state_lib
from kdjax.benchmark import steps as steps_lib
from kdjax.benchmark import timing


def time_pipeline(data_dir: str, *, batch_size: int, num_batches: int, warmup: int,
                  dataset: str = "cifar10", augmentation: str = "crop_flip") -> dict[str, Any]:
  """Times ``num_batches`` batches of ``kdjax.data.train_iterator``, after ``warmup``.

  The iterator's prefetch buffer is drained before the clock starts, so the figure is the
  rate at which the pipeline produces batches, not that of reading a full buffer.

  Returns:
    ``{"images_per_s", "batches", "per_batch": Timing.summary(), "foreign_load"}``.

  Raises:
    FileNotFoundError: if ``dataset`` is not prepared in ``data_dir``.

  Example:
    >>> result = time_pipeline(data.default_data_dir(), batch_size=32, num_batches=3,
    ...                        warmup=1, dataset="digits")
    >>> result["batches"], result["images_per_s"] > 0
    (3, True)
  """
  iterator = data.train_iterator(dataset, data_dir=data_dir, batch_size=batch_size, seed=0,
                                 augmentation=augmentation)
  prefetch = 4  # train_iterator's default prefetch_batches
  for _ in range(warmup + prefetch):
    next(iterator)
  meter = timing.LoadMeter()
  times = []
  start = time.perf_counter()
  for _ in range(num_batches):
    batch_start = time.perf_counter()
    batch = next(iterator)
    times.append(time.perf_counter() - batch_start)
  total = time.perf_counter() - start
  expected = (batch_size, *data.image_shape(dataset))
  if batch["image"].shape != expected:
    raise ValueError(f"the pipeline gave images of shape {batch['image'].shape}, not "
                     f"{expected}.")
  return {"images_per_s": num_batches * batch_size / total, "batches": num_batches,
          "per_batch": timing.Timing(times).summary(), "foreign_load": meter.foreign()}


def time_end_to_end(case: steps_lib.Case, data_dir: str, *, batch_size: int, steps: int,
                    workers: int, teacher_dtype: Any = None, dataset: str = "cifar10",
                    augmentation: str = "crop_flip", log_every_steps: int = 50,
                    dispatch_depth: int = dispatch.DEFAULT_DEPTH) -> dict[str, Any]:
  """Times the trainer's fused KD program fed by the real input pipeline.

  The program is the trainer's composition of the step layer for a distillation stage:
  ``kdjax.sweep``'s step for one stacked student, reporting teacher finiteness, inside
  ``kdjax.finite_guard.guard``; compiled by ``kdjax.parallel.mesh_step`` over several
  devices (``jax.jit`` with the state donated on one). Batches come from
  ``kdjax.data.train_iterator`` and are placed on the device(s) every step; metrics are
  fetched every ``log_every_steps`` steps (the trainer's logging), with at most
  ``dispatch_depth`` steps in flight (the trainer's ``kdjax.dispatch`` window); the clock
  runs from after the first (compiling) step to the last step's completion.

  Args:
    case: the teachers and the student (with its distillation term).
    data_dir: the TFDS data directory holding ``dataset``.
    batch_size: examples per step.
    steps: timed steps; -1: one epoch (``num_train // batch_size``).
    workers: the pipeline's ``worker_count``.
    teacher_dtype: computation dtype of the teachers (``None``: their own).
    dataset: the dataset to read.
    augmentation: the pipeline's augmentation.
    log_every_steps: how often the host reads the step's metrics.
    dispatch_depth: the most steps in flight (``kdjax.dispatch.DispatchWindow``); below
      32 with several CPU devices, where XLA:CPU deadlocks.

  Returns:
    ``{"case", "steps", "images_per_s", "step_ms", "pipeline_workers", "dispatch_depth",
    "foreign_load", "loss"}`` (the last step's loss).

  Raises:
    FileNotFoundError: if ``dataset`` is not prepared in ``data_dir``.
    FloatingPointError: if the guard saw a non-finite value.

  Example:
    >>> case = steps_lib.Case("mlp_tiny -> mlp_tiny", ("mlp_tiny",), "mlp_tiny", "kd")
    >>> result = time_end_to_end(case, data.default_data_dir(), batch_size=32, steps=3,
    ...                          workers=0, dataset="digits")
    >>> result["steps"], result["step_ms"] > 0
    (3, True)
  """
  info = data.dataset_info(dataset, data_dir=data_dir)
  iterator = data.train_iterator(dataset, data_dir=data_dir, batch_size=batch_size, seed=0,
                                 augmentation=augmentation, worker_count=workers)
  steps = info.num_train // batch_size if steps < 0 else steps
  key = jax.random.key(0)
  sample = next(iterator)["image"][:1]
  student = models.get(case.student, info.num_classes)
  teachers = tuple(models.get(t, info.num_classes) for t in case.teachers)
  teacher_vars = tuple(t.init(jax.random.fold_in(key, i), sample, train=False)
                       for i, t in enumerate(teachers))
  optimizer = optax.sgd(0.1, momentum=0.9)
  objective = steps_lib.objectives(case.term)[1]
  states = sweep.stack_states([state_lib.create_train_state(
      student, student.init(jax.random.fold_in(key, 100), sample, train=False), optimizer,
      jax.random.fold_in(key, 200))])
  checked = finite_guard.checked_metrics(objective)
  step = finite_guard.guard(sweep.make_sweep_train_step(
      student, objective, optimizer, teacher=teachers, teacher_dtype=teacher_dtype,
      report_teacher_finite=True), checked, skip=False)
  carry = (states, finite_guard.no_bad_steps(1, len(finite_guard.checked_names(checked))))
  if jax.device_count() > 1:
    mesh = parallel.data_mesh()
    step = parallel.mesh_step(step, mesh)
    carry, teacher_vars = parallel.replicate((carry, teacher_vars), mesh)
    place_batch = lambda batch: parallel.shard_batch(batch, mesh)  # noqa: E731
  else:
    step = jax.jit(step, donate_argnums=0)
    place_batch = dict
  carry, metrics = step(carry, teacher_vars, place_batch(next(iterator)))
  jax.block_until_ready(metrics)
  window = dispatch.DispatchWindow(dispatch_depth)
  meter = timing.LoadMeter()
  start = time.perf_counter()
  for i in range(steps):
    carry, metrics = step(carry, teacher_vars, place_batch(next(iterator)))
    window.push(metrics)
    if (i + 1) % log_every_steps == 0:
      jax.device_get(metrics)
  jax.block_until_ready((carry, metrics))
  total = time.perf_counter() - start
  if jax.device_get(carry[1].count).any():
    raise FloatingPointError("the end-to-end run produced non-finite values.")
  return {"case": case.name, "steps": steps, "images_per_s": steps * batch_size / total,
          "step_ms": total / steps * timing.MS, "pipeline_workers": workers,
          "dispatch_depth": dispatch_depth,
          "foreign_load": meter.foreign(), "loss": float(metrics["loss"][0])}
