"""The training loop of a stage, and ``train_and_evaluate``, which runs every stage.

``train_stage`` claims the stage's directory (or reuses a complete stage), builds the stage
(``kdjax.trainer.stage.build_stage``), resumes from its last checkpoint, then loops: step,
log, evaluate, save, with a ``Progress`` value carried from step to step and saved with
each checkpoint; at the end it exports the last networks and writes ``result.json``.
"""

import contextlib
import dataclasses
import json
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from kdjax import (
  checkpoints,
  dispatch,
  finite_guard,
  metric_writers,
  multihost,
  performance,
  summary,
  teacher_cache,
)
from kdjax.trainer import context as context_lib
from kdjax.trainer import cost as cost_lib
from kdjax.trainer import preemption, run_config
from kdjax.trainer import stage as stage_lib
from kdjax.trainer import workdir as workdir_lib
from kdjax.trainer.progress import Progress


def _finished_results(workdir: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Every finished stage of ``workdir``: this run's ``results``, then other runs' by name.

  A workdir shared by several configs (e.g. to share a teacher) keeps every config's
  finished stages in its summary, not only the last run's.
  """
  names = {r["stage"] for r in results}
  others = []
  for name in sorted(os.listdir(os.path.join(workdir, workdir_lib.STAGES_DIR))):
    path = os.path.join(workdir_lib.stage_dir(workdir, name), workdir_lib.RESULT_FILE)
    if name not in names and os.path.exists(path):
      with open(path) as f:
        others.append(json.load(f))
  return [*results, *others]


def _claim(context: context_lib.RunContext, name: str) -> dict[str, Any] | None:
  """Claims the stage's directory; the stage's result if it is complete already."""
  directory = workdir_lib.stage_dir(context.workdir, name)
  result_path = os.path.join(directory, workdir_lib.RESULT_FILE)
  try:
    inputs = workdir_lib.stage_inputs(context.config, context.workdir, name)
  except FileNotFoundError:
    if not os.path.exists(result_path):
      raise
    inputs = None  # a finished stage whose teachers have been moved away: still reusable
  workdir_lib.claim_stage_dir(directory, workdir_lib.stage_record(context.config, name, inputs),
                              write=context.primary)
  multihost.sync_processes("kdjax stage claimed")
  if not os.path.exists(result_path):
    return None
  context.report(f"stage {name}: complete, reusing {directory}")
  with open(result_path) as f:
    return json.load(f)


def _restore(context: context_lib.RunContext, stage: stage_lib.Stage,
             ckpts: checkpoints.RunCheckpoints) -> tuple[Any, int, Progress, Any, int]:
  """``(states, step, progress, iterator, worker count)`` from the last readable checkpoint.

  Without one, the stage's initial states at step 0. States are placed (global) arrays:
  with several processes, each saves and restores what it holds.
  """
  unreadable = []

  def report_unreadable(step: int, error: Exception) -> None:
    unreadable.append(step)
    reason = (str(error).strip().splitlines() or [""])[0][:160]
    context.report(f"stage {stage.name}: the checkpoint at step {step} is unreadable "
                   f"({type(error).__name__}: {reason}); trying the previous one")

  states = context.place(stage.initial_states)
  restored = ckpts.restore_latest(states, on_unreadable=report_unreadable)
  configured = context.config.dataset.worker_count
  allowed = context.input_workers_allowed
  if restored is None:
    workers = context_lib.input_workers(configured, workers_allowed=allowed)
    return states, 0, Progress.start(len(stage.seeds)), context.train_iterator(workers), workers
  step, states, saved = restored
  workers = context_lib.input_workers(configured, saved["worker_count"], workers_allowed=allowed)
  iterator = context.train_iterator(workers)
  iterator.set_state(saved["iterator"])
  kept = (f" (unreadable checkpoints are kept in {ckpts.unreadable_directory})"
          if unreadable else "")
  context.report(f"stage {stage.name}: resumed from the checkpoint at step {step}{kept}")
  return states, step, Progress.from_json(saved["progress"]), iterator, workers


def _checked(context: context_lib.RunContext, stage: stage_lib.Stage,
             ckpts: checkpoints.RunCheckpoints, health: finite_guard.Health, since: int,
             step: int, progress: Progress) -> tuple[finite_guard.Health, Progress]:
  """Reads the device's record of non-finite steps since ``since``: stops, or counts skips.

  Raises:
    FloatingPointError: in "stop" mode, naming the first bad step and what went bad.
  """
  host = jax.device_get(health)
  if not host.count.any():
    return health, progress
  where = finite_guard.describe(host, stage.checked, stage.seeds)
  if context.config.nonfinite == "stop":
    latest = ckpts.latest_step()
    kept = ("no checkpoint was written" if latest is None else
            f"the last checkpoint, at step {latest}, predates it and is intact")
    raise FloatingPointError(
        f"stage {stage.name}: non-finite values at {where}; training stopped and {kept}. Set "
        f"config.nonfinite='skip' to skip such steps instead.")
  progress = progress.skipped([int(c) for c in host.count])
  context.report(f"stage {stage.name}: skipped {int(host.count.sum())} update(s) with "
                 f"non-finite values in steps {since + 1}-{step}, the first at {where}; "
                 f"{sum(progress.nonfinite_steps)} so far")
  return context.place(finite_guard.no_bad_steps(len(stage.seeds), len(stage.checked))), progress


def _export(context: context_lib.RunContext, stage: stage_lib.Stage, kind: str, index: int,
            states: Any, step: int, accuracy: float) -> None:
  """Exports student ``index``'s network as its ``kind`` ("best" or "last") network."""
  student = jax.device_get(jax.tree.map(lambda leaf: leaf[index], states))
  variables = {"params": student.params, **student.model_state}
  checkpoints.export_network(
      workdir_lib.export_dir(context.workdir, stage.name, index, kind), variables,
      {**stage.provenance, "seed": stage.seeds[index], "step": step, "accuracy": accuracy})


def _evaluate(context: context_lib.RunContext, stage: stage_lib.Stage, states: Any, step: int,
              progress: Progress, writer: metric_writers.MetricWriter | None) -> Progress:
  """Evaluates the students at ``step`` and logs it; the progress with its accuracies."""
  evaluated = context.evaluate(stage.eval_program, states, stage.test_cache)
  accuracy = [float(a) for a in evaluated["accuracy"]]
  if writer:
    writer.write(step, "eval", {k: float(np.mean(v)) for k, v in evaluated.items()})
  context.report(f"stage {stage.name} step {step}: test accuracy "
                 f"{', '.join(f'{a:.4f}' for a in accuracy)}")
  return progress.evaluated(step, accuracy)


def _export_best(context: context_lib.RunContext, stage: stage_lib.Stage, states: Any,
                 step: int, progress: Progress) -> None:
  """Exports, as its best network, each student whose best accuracy is that of ``step``."""
  for i, (best_step, accuracy) in enumerate(zip(progress.best_step, progress.best_accuracy,
                                                strict=True)):
    if best_step == step:
      _export(context, stage, "best", i, states, step, accuracy)


def _log(writer: metric_writers.MetricWriter | None, bar: tqdm.tqdm, step: int,
         metrics: Any, progress: Progress, images_per_second: float | None) -> None:
  """Writes the step's training metrics (means over students) and shows the loss.

  ``images_per_second`` is ``None`` when the window since the last log held no measured
  training step (only the first step of a run, which compiles the program).
  """
  host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
  train_metrics = {k: float(np.mean(v)) for k, v in host.items()}
  if images_per_second is not None:
    train_metrics["images_per_second"] = images_per_second
    bar.set_postfix(loss=f"{train_metrics['loss']:.3f}", img_s=f"{images_per_second:.0f}")
  train_metrics["nonfinite_steps"] = float(sum(progress.nonfinite_steps))
  if writer:
    writer.write(step, "train", train_metrics)


def _train(context: context_lib.RunContext, stage: stage_lib.Stage,
           stop: preemption.StopRequests, started: float) -> Progress:
  """Trains a built stage from its last checkpoint to its end and exports its last networks.

  Returns the stage's final progress. ``started`` is when this run of the stage began (its
  setup included): the cost of the run (``Progress.cost``, ``kdjax.trainer.cost``) is
  charged with every checkpoint and at the end, checkpoint saves and exports timed apart.

  Every ``log_every_steps``, ``eval_every_steps`` and ``checkpoint_every_steps`` steps (and
  at the last step), the host reads the non-finite guard's record before it logs,
  evaluates or saves anything. In between it keeps at most ``kdjax.dispatch.DEFAULT_DEPTH``
  steps in flight (``kdjax.dispatch.DispatchWindow``).

  The logged ``images_per_second`` is training throughput: the images of the steps since
  the last log over the time spent in them, evaluation, checkpoints and the first step of
  the run (which compiles the program) left out. The progress bar's ETA is the whole run's
  average pace, evaluations and checkpoints included.

  Raises:
    Preempted: after an agreed stop signal, with a checkpoint saved at the current step.
  """
  config, num_steps = context.config, stage.config.num_steps
  ckpts = checkpoints.RunCheckpoints(os.path.join(stage.directory, "checkpoints"))
  states, step, progress, iterator, workers = _restore(context, stage, ckpts)
  earlier, watch = progress.cost, cost_lib.Stopwatch(started)
  if context.primary:
    workdir_lib.rewind_metrics(stage.directory, step)
  health = context.place(finite_guard.no_bad_steps(len(stage.seeds), len(stage.checked)))
  checked_since = step

  def charged(progress: Progress) -> Progress:
    return dataclasses.replace(progress, cost=watch.charged(earlier))

  def save(step: int, progress: Progress) -> None:
    with watch.timing("checkpoint_seconds"):
      ckpts.save(step, states, {"iterator": iterator.get_state(),
                                "progress": progress.to_json(), "worker_count": workers})

  writer = metric_writers.MetricWriter(stage.directory) if context.primary else None
  # smoothing=0: the ETA from the average pace since the start, evaluations included.
  bar = tqdm.tqdm(total=num_steps, initial=step, desc=stage.name, unit="step",
                  dynamic_ncols=True, mininterval=1.0, smoothing=0,
                  disable=not (config.progress_bar and context.primary))
  images_per_step = config.dataset.batch_size * len(stage.seeds)
  # Training time since the last log: summed from when steps last resumed to each sync.
  window_seconds, window_steps, resumed_at = 0.0, 0, time.perf_counter()
  first_step = step + 1  # compiles the program: not counted as training
  dispatched = dispatch.DispatchWindow()  # a few steps ahead of the devices, never 32
  try:
    while step < num_steps:
      signum = stop.agreed(step, config.log_every_steps)
      if signum is not None:
        health, progress = _checked(context, stage, ckpts, health, checked_since, step, progress)
        if step and ckpts.latest_step() != step:
          save(step, charged(progress))
        kept = (f"its checkpoint at step {step} is saved" if ckpts.latest_step() == step
                else "nothing was saved yet")
        raise preemption.Preempted(
            signum, f"{signal.Signals(signum).name} received: stopped stage {stage.name!r} at "
            f"step {step} of {num_steps}; {kept}. Run the same command again to resume.")
      batch = next(iterator)
      if stage.train_cache is not None:
        batch = teacher_cache.add_teacher_logits(batch, stage.train_cache)
      (states, health), metrics = stage.train_program((states, health), stage.teacher_vars,
                                                      context.place_batch(batch))
      dispatched.push(metrics)
      step = step + 1
      bar.update(1)
      if step == first_step:
        jax.block_until_ready(health)
        resumed_at = time.perf_counter()
      else:
        window_steps += 1
      log_now = step % config.log_every_steps == 0 or step == num_steps
      eval_now = step % config.eval_every_steps == 0 or step == num_steps
      save_now = step % config.checkpoint_every_steps == 0 or step == num_steps
      if log_now or eval_now or save_now:  # before anything records this state
        health, progress = _checked(context, stage, ckpts, health, checked_since, step, progress)
        checked_since = step
        window_seconds += time.perf_counter() - resumed_at  # the host waited for the steps
      if log_now:
        _log(writer, bar, step, metrics, progress,
             window_steps * images_per_step / window_seconds if window_steps else None)
        window_seconds, window_steps = 0.0, 0
      if eval_now:
        with watch.timing("eval_seconds"):
          progress = _evaluate(context, stage, states, step, progress, writer)
        with watch.timing("checkpoint_seconds"):
          _export_best(context, stage, states, step, progress)
      if save_now:  # the time after the last checkpoint is lost with its steps on a kill
        progress = charged(progress)
        save(step, progress)
      if log_now or eval_now or save_now:
        resumed_at = time.perf_counter()
  finally:
    bar.close()
    if writer:
      writer.close()
  ckpts.close()
  with watch.timing("checkpoint_seconds"):
    for i, accuracy in enumerate(progress.curve["accuracy"][-1]):
      _export(context, stage, "last", i, states, step, accuracy)
  return charged(progress)


def train_stage(context: context_lib.RunContext, name: str,
                stop: preemption.StopRequests) -> dict[str, Any]:
  """Trains stage ``name`` of the run (or reuses it, if complete) and returns its result.

  The result record (``result.json``) holds the stage's curves, last and best accuracies
  per seed, the teachers' accuracies, counts of skipped steps and the cost. The last
  networks are exported before it is written, so a run resumed from the final checkpoint
  redoes them.

  While it trains (or reuses) the stage, the run's first process holds the stage's lock
  (``workdir.StageLock``): a second run started on the same workdir is refused at that
  stage, naming the holder, instead of training it twice.

  Raises:
    kdjax.trainer.workdir.StageBusyError: if another run holds the stage's lock.

  Example: see ``train_and_evaluate``.
  """
  directory = workdir_lib.stage_dir(context.workdir, name)
  with contextlib.ExitStack() as held:
    busy = None
    if context.primary:
      try:
        held.enter_context(workdir_lib.StageLock(directory))
      except workdir_lib.StageBusyError as error:
        busy = error
    if multihost.any_process(busy is not None, 1):  # every process stops together
      raise busy or workdir_lib.StageBusyError(
          f"{directory} is being trained by another run (the first process names it).")
    return _train_locked(context, name, stop)


def _train_locked(context: context_lib.RunContext, name: str,
                  stop: preemption.StopRequests) -> dict[str, Any]:
  """``train_stage`` once the stage's lock is held."""
  complete = _claim(context, name)
  if complete is not None:
    return complete
  started = time.perf_counter()
  stage = stage_lib.build_stage(context, name)
  progress = _train(context, stage, stop, started)
  info, batch_size = context.info, context.config.dataset.batch_size
  result = {
      "stage": name, "model": stage.config.model, "method": stage.config.method,
      "teachers": list(stage.config.teachers), "seeds": stage.seeds,
      "last_accuracy": progress.curve["accuracy"][-1],
      "best_accuracy": list(progress.best_accuracy), "best_step": list(progress.best_step),
      "curve": progress.curve,
      "teacher_accuracy": stage.teacher_accuracy, "num_steps": stage.config.num_steps,
      "teacher_cache": stage.train_cache is not None,
      "nonfinite_steps": list(progress.nonfinite_steps),
      "init_from": stage.config.init_from, "mixup": stage.config.mixup,
      # The export read of each earlier stage the stage learnt from (teachers, init_from).
      "earlier_exports": {earlier: stage.config.earlier_export
                          for earlier in (*stage.config.teachers, stage.config.init_from)
                          if earlier in context.config.stages},
      "dataset": {"name": info.name, "num_classes": info.num_classes,
                  "num_train": info.num_train, "num_test": info.num_test,
                  "batch_size": batch_size, "augmentation": context.config.dataset.augmentation},
      "epochs": stage.config.num_steps * batch_size / info.num_train,
      "cost": progress.cost,  # summed over the stage's runs (kdjax.trainer.cost)
  }
  if context.primary:
    workdir_lib.write_json(os.path.join(stage.directory, workdir_lib.RESULT_FILE), result)
  multihost.sync_processes("kdjax stage complete")
  return result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       input_workers_allowed: bool = False) -> list[dict[str, Any]]:
  """Runs every stage of ``config`` in ``workdir`` and writes the summary.

  Complete stages are reused; an interrupted stage resumes from its last checkpoint. While
  it runs (from the main thread), SIGTERM and SIGINT stop training between two steps with a
  checkpoint saved (see ``Preempted``).

  Args:
    config: a run config (see ``configs/base.py``).
    workdir: the run's directory; created if missing. Nothing in it is ever deleted.
    input_workers_allowed: whether the input pipeline may start worker processes, which
      need absl flags parsed (``launch/train.py`` passes ``True``).

  Returns:
    One result record per stage (what ``summary.md`` tabulates).

  Raises:
    ValueError: on an invalid config, an empty or unwritable workdir or one holding a run
      with another config, or a teacher with non-finite parameters or outputs, or a test
      accuracy below ``config.min_teacher_accuracy_over_chance`` times chance.
    kdjax.trainer.workdir.StageBusyError: if another run is training a stage of this one
      in the same workdir.
    FileNotFoundError: when the dataset or a teacher's export is missing.
    FloatingPointError: when training produces a NaN or Inf (``config.nonfinite="stop"``).
    Preempted: after SIGTERM or SIGINT, with the checkpoint saved.
    kdjax.checkpoints.UnreadableCheckpointsError: when no checkpoint of a stage is readable.

  Example: a teacher and a KD student, four steps each, on the bundled digits.
    >>> import contextlib, io, tempfile
    >>> from kdjax import config as base
    >>> config = base.get_config()
    >>> config.stages.teacher = base.stage("mlp_tiny", "scratch", num_steps=4)
    >>> config.stages.kd = base.stage("mlp_tiny", "kd", ("teacher",), num_steps=4)
    >>> config.update({"eval_every_steps": 2, "progress_bar": False, "compilation_cache_dir": ""})
    >>> config.min_teacher_accuracy_over_chance = 0.0  # a 4-step teacher teaches noise
    >>> config.dataset.batch_size = 32
    >>> workdir = tempfile.mkdtemp()
    >>> with contextlib.redirect_stdout(io.StringIO()):  # progress reports and the table
    ...   results = train_and_evaluate(config, workdir)
    >>> [(r["stage"], r["curve"]["step"]) for r in results]
    [('teacher', [2, 4]), ('kd', [2, 4])]
    >>> sorted(os.listdir(workdir))
    ['accuracy.png', 'stages', 'summary.md']
  """
  config = run_config.validate(config)
  workdir = workdir_lib.resolve(workdir)
  workdir_lib.check_writable(workdir)
  performance.enable_compilation_cache(config.compilation_cache_dir)
  with preemption.StopRequests() as stop:
    context = context_lib.RunContext(config, workdir,
                                     input_workers_allowed=input_workers_allowed)
    results = []
    for name in config.stages:
      signum = stop.agreed()
      if signum is not None:
        raise preemption.Preempted(
            signum, f"{signal.Signals(signum).name} received: stopped before stage {name!r}; "
            f"every earlier stage is complete. Run the same command again to resume.")
      results.append(train_stage(context, name, stop))
  if context.primary:
    table = summary.write(_finished_results(workdir, results), workdir,
                          title=f"kdjax run on {context.info.name}",
                          num_classes=context.info.num_classes)
    print(table, flush=True)
  return results
