"""The training loop: stages of a run, checkpoints, evaluation, logs and the final summary.

This is the one impure layer of kdjax: it reads data, writes files and talks to the
terminal; the mathematics lives in the pure step builders it calls. A run is a sequence of
stages (``config.stages``); stage ``NAME`` lives in ``WORKDIR/stages/NAME``:

* ``stage_config.json`` — the stage's config and the run settings it depends on; a later
  run with a different one is refused instead of mixing results;
* ``checkpoints/`` — orbax checkpoints of the train state and the input iterator, from
  which an interrupted stage resumes exactly where it stopped;
* ``export/seed<i>/best`` and ``export/seed<i>/last`` — each student's network with a
  provenance record; later stages load seed 0's best as a teacher, and seed i's best as the
  initialization of their own seed i (``init_from``);
* ``metrics.jsonl`` and TensorBoard events; ``result.json`` once the stage is complete — a
  complete stage is reused, not retrained.

At the end, ``WORKDIR/summary.md`` and ``WORKDIR/accuracy.png`` compare every stage.
"""

from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from kdjax import checkpoints
from kdjax import data
from kdjax import initializers
from kdjax import methods
from kdjax import metric_writers
from kdjax import models
from kdjax import optimizers
from kdjax import parallel
from kdjax import state as state_lib
from kdjax import step as step_lib
from kdjax import summary
from kdjax import sweep
from kdjax import teacher_cache

STAGES_DIR = "stages"
STAGE_CONFIG_FILE = "stage_config.json"
RESULT_FILE = "result.json"


@dataclasses.dataclass(frozen=True)
class _Teacher:
  name: str
  model: str
  module: Any
  variables: Any


def stage_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, STAGES_DIR, name)


def export_dir(workdir: str, name: str, seed_index: int = 0, kind: str = "best") -> str:
  """Where stage ``name`` exports the ``kind`` ("best" or "last") network of a seed."""
  return os.path.join(stage_dir(workdir, name), "export", f"seed{seed_index}", kind)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a run config before anything is trained.

  Raises:
    ValueError: naming the offending field (``stages.NAME.FIELD``) and value.
  """
  ds = config.dataset
  if ds.augmentation not in data.AUGMENTATIONS:
    raise ValueError(f"dataset.augmentation={ds.augmentation!r} is unknown; valid: "
                     f"{', '.join(data.AUGMENTATIONS)}.")
  for field in ("batch_size", "eval_batch_size"):
    if not (isinstance(ds[field], int) and ds[field] >= 1):
      raise ValueError(f"dataset.{field}={ds[field]!r} must be a positive integer.")
  for field in ("num_seeds", "eval_every_steps", "log_every_steps", "checkpoint_every_steps"):
    if not (isinstance(config[field], int) and config[field] >= 1):
      raise ValueError(f"{field}={config[field]!r} must be a positive integer.")
  if not config.stages:
    raise ValueError("config.stages is empty: nothing to train.")
  for name, td in config.teacher_dirs.items():
    if not td.get("directory") or td.get("model") not in models.names():
      raise ValueError(f"teacher_dirs.{name} needs a 'directory' and a 'model' from "
                       f"kdjax.models; got {td.to_dict()}.")
  earlier: list[str] = []
  for name, stage in config.stages.items():
    where = f"stages.{name}"
    if stage.model not in models.names():
      raise ValueError(f"{where}.model={stage.model!r} is unknown; valid: "
                       f"{', '.join(models.names())}.")
    method = _method(where, stage.method)
    if not (isinstance(stage.num_steps, int) and stage.num_steps >= 1):
      raise ValueError(f"{where}.num_steps={stage.num_steps!r} must be a positive integer.")
    if not (isinstance(stage.num_seeds, int) and stage.num_seeds >= 0):
      raise ValueError(f"{where}.num_seeds={stage.num_seeds!r} must be >= 0 (0: the run's).")
    teachers = tuple(stage.teachers)
    wanted = {"none": "no teacher", "one": "exactly one teacher", "many": "one or more teachers"}
    count_ok = {"none": not teachers, "one": len(teachers) == 1, "many": len(teachers) >= 1}
    if not count_ok[method.teachers]:
      raise ValueError(f"{where}.teachers={teachers}: method {stage.method!r} takes "
                       f"{wanted[method.teachers]}.")
    for teacher in teachers:
      if teacher not in earlier and teacher not in config.teacher_dirs:
        raise ValueError(f"{where}.teachers names {teacher!r}, which is neither an earlier "
                         f"stage ({earlier or 'none'}) nor a key of config.teacher_dirs.")
    if stage.init_from:
      if stage.init_from not in earlier:
        raise ValueError(f"{where}.init_from={stage.init_from!r} must be an earlier stage; "
                         f"earlier: {earlier or 'none'}.")
      source = config.stages[stage.init_from]
      if source.model != stage.model:
        raise ValueError(f"{where}.init_from={stage.init_from!r} trained model "
                         f"{source.model!r}, not {stage.model!r}.")
      if (stage.num_seeds or config.num_seeds) > (source.num_seeds or config.num_seeds):
        raise ValueError(f"{where} trains more seeds than init_from={stage.init_from!r} did: "
                         f"each seed starts from the same seed of that stage.")
    # Builds the objective once, so loss-config errors surface before any training.
    try:
      optimizers.optimizer(stage.optimizer, stage.num_steps)
      if stage.method != "fitnets":
        method.build(stage.loss, stage.num_steps, {})
    except ValueError as error:
      raise ValueError(f"{where}: {error}") from error
    earlier.append(name)


def _method(where: str, name: str) -> methods.Method:
  try:
    return methods.get(name)
  except ValueError as error:
    raise ValueError(f"{where}.method: {error}") from error


def _stage_record(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """What a stage's results depend on: compared with the record of an existing stage dir."""
  return json.loads(json.dumps({
      "stage": config.stages[name].to_dict(),
      "dataset": {k: v for k, v in config.dataset.to_dict().items() if k != "data_dir"},
      "seed": config.seed,
      "num_seeds": config.stages[name].num_seeds or config.num_seeds,
  }, default=list))


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new)):
      out += _diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
    return out
  return [] if old == new else [f"{prefix}: {old!r} → {new!r}"]


def _claim_stage_dir(directory: str, record: dict[str, Any]) -> None:
  """Creates a stage directory, or checks that an existing one belongs to this config.

  Raises:
    ValueError: listing the differing fields, if the directory holds another config's run.
  """
  path = os.path.join(directory, STAGE_CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    differences = _diff(old, record)
    if differences:
      raise ValueError(
          f"{directory} holds a run with a different config ({'; '.join(differences)}). "
          f"Use a new --workdir, or restore the config; nothing was changed.")
    return
  os.makedirs(directory, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


def _write_json(path: str, value: Any) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=2)
  os.replace(path + ".tmp", path)


def _build_model(stage: ml_collections.ConfigDict, num_classes: int):
  kwargs = {"head_kernel_init": initializers.zero_mean()} if stage.zero_mean_head else {}
  return models.get(stage.model, num_classes, **kwargs)


def _abstract_variables(module, sample: jax.Array) -> Any:
  return jax.eval_shape(lambda: module.init(jax.random.key(0), sample, train=False))


def _provenance(model: str, info: data.DatasetInfo) -> dict[str, Any]:
  return {"model": model, "num_classes": info.num_classes, "dataset": info.name}


class _Run:
  """The state shared by the stages of one run: config, data, mesh, results so far."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    ds = config.dataset
    self.data_dir = ds.data_dir or data.default_data_dir()
    self.info = data.dataset_info(ds.name, data_dir=self.data_dir, download=ds.download)
    self.sample = jnp.zeros((1, *self.info.image_shape), jnp.float32)
    self.mesh = parallel.data_mesh() if jax.device_count() > 1 else None
    if self.mesh is not None and ds.batch_size % jax.device_count():
      raise ValueError(f"dataset.batch_size={ds.batch_size} is not divisible by the "
                       f"{jax.device_count()} devices.")

  # -- data ---------------------------------------------------------------------------------

  def train_iterator(self):
    ds = self.config.dataset
    return data.train_iterator(ds.name, data_dir=self.data_dir, batch_size=ds.batch_size,
                               seed=self.config.seed, augmentation=ds.augmentation,
                               download=ds.download)

  def eval_batches(self, split: str = "test") -> Iterable[dict[str, np.ndarray]]:
    ds = self.config.dataset
    return data.eval_batches(ds.name, data_dir=self.data_dir, split=split,
                             batch_size=ds.eval_batch_size, download=ds.download)

  def place(self, tree: Any) -> Any:
    return tree if self.mesh is None else parallel.replicate(tree, self.mesh)

  def place_batch(self, batch: Mapping[str, np.ndarray]) -> Any:
    return dict(batch) if self.mesh is None else parallel.shard_batch(batch, self.mesh)

  def compile(self, fn, donate_state: bool):
    if self.mesh is None:
      return jax.jit(fn, donate_argnums=(0,) if donate_state else ())
    return parallel.mesh_step(fn, self.mesh, donate_state=donate_state)

  # -- networks -----------------------------------------------------------------------------

  def load_teacher(self, name: str) -> _Teacher:
    if name in self.config.stages:
      model = self.config.stages[name].model
      directory = export_dir(self.workdir, name)
    else:
      model = self.config.teacher_dirs[name].model
      directory = self.config.teacher_dirs[name].directory
    module = models.get(model, self.info.num_classes)
    variables = checkpoints.load_network(
        directory, _abstract_variables(module, self.sample), _provenance(model, self.info))
    return _Teacher(name, model, module, variables)

  def evaluate(self, eval_fn, states, teacher_vars) -> dict[str, np.ndarray]:
    """Mean eval metrics over every test example, per student: ``{name: [num_students]}``."""
    totals: dict[str, np.ndarray] = {}
    count = 0.0
    for batch in self.eval_batches():
      metrics = jax.device_get(eval_fn(states, teacher_vars, self.place_batch(batch)))
      weight = np.asarray(metrics.pop("count"))
      for k, v in metrics.items():
        totals[k] = totals.get(k, 0.0) + np.asarray(v) * weight
      count = weight + count
    return {k: v / np.maximum(count, 1.0) for k, v in totals.items()}


def _teacher_accuracy(run: _Run, teacher: _Teacher) -> float:
  """The teacher's test accuracy: a sanity check before it teaches anyone."""
  network_state = state_lib.create_train_state(teacher.module, teacher.variables,
                                               optax.identity(), jax.random.key(0))
  eval_fn = run.compile(jax.vmap(step_lib.make_eval_step(teacher.module), (0, None, None)),
                        donate_state=False)
  states = run.place(sweep.stack_states([network_state]))
  return float(run.evaluate(eval_fn, states, None)["accuracy"][0])


def _report(message: str) -> None:
  """A line for the person at the terminal (printed above the progress bar) and the log."""
  logging.info(message)
  tqdm.tqdm.write(message)


def _finite_or_raise(step: int, metrics: Mapping[str, np.ndarray]) -> None:
  bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
  if bad:
    raise FloatingPointError(
        f"non-finite values at step {step} in {', '.join(bad)}; training stopped. The last "
        f"checkpoint (written before this step) is intact.")


def _run_stage(run: _Run, name: str) -> dict[str, Any]:
  config, stage = run.config, run.config.stages[name]
  directory = stage_dir(run.workdir, name)
  _claim_stage_dir(directory, _stage_record(config, name))
  result_path = os.path.join(directory, RESULT_FILE)
  if os.path.exists(result_path):
    _report(f"stage {name}: complete, reusing {directory}")
    with open(result_path) as f:
      return json.load(f)

  info, num_steps = run.info, stage.num_steps
  method = methods.get(stage.method)
  teachers = [run.load_teacher(t) for t in stage.teachers]
  teacher_accuracy = {}
  for teacher in teachers:
    teacher_accuracy[teacher.name] = _teacher_accuracy(run, teacher)
    _report(f"stage {name}: teacher {teacher.name} ({teacher.model}) has test accuracy "
            f"{teacher_accuracy[teacher.name]:.4f}")
  teacher_modules = tuple(t.module for t in teachers) or None
  teacher_vars = run.place(tuple(t.variables for t in teachers)) if teachers else None

  module = _build_model(stage, info.num_classes)
  feature_shapes = {}
  if teachers and stage.method == "fitnets":
    _, captured = jax.eval_shape(
        lambda v: teachers[0].module.apply(v, run.sample, train=False,
                                           mutable=["intermediates"]), teachers[0].variables)
    feature_shapes = {k: v[0].shape for k, v in captured["intermediates"].items()}
  recipe = method.build(stage.loss, num_steps, feature_shapes)
  optimizer, learning_rate = optimizers.optimizer(stage.optimizer, num_steps)

  num_seeds = stage.num_seeds or config.num_seeds
  seeds = [config.seed + i for i in range(num_seeds)]
  states = []
  for i, seed in enumerate(seeds):
    key = jax.random.key(seed)
    if stage.init_from:
      variables = checkpoints.load_network(
          export_dir(run.workdir, stage.init_from, i), _abstract_variables(module, run.sample),
          _provenance(stage.model, info))
    else:
      variables = module.init(jax.random.fold_in(key, 1), run.sample, train=False)
    states.append(state_lib.create_train_state(
        module, variables, optimizer, jax.random.fold_in(key, 2), output_tx=recipe.output_tx,
        aux_heads=recipe.aux_heads, sample_inputs=run.sample))
  states = sweep.stack_states(states)

  cache = None
  if (teachers and method.cacheable and stage.cache_teacher
      and config.dataset.augmentation == "none"):
    start = time.perf_counter()
    cache = teacher_cache.compute_teacher_logits(
        teacher_modules, teacher_vars, run.eval_batches("train"), info.num_train)
    _report(f"stage {name}: cached the teacher logits of {info.num_train} examples in "
            f"{time.perf_counter() - start:.1f}s")

  train_fn = run.compile(sweep.make_sweep_train_step(
      module, recipe.objective, optimizer, teacher=None if cache is not None else teacher_modules,
      output_tx=recipe.output_tx, aux_heads=recipe.aux_heads,
      log_schedules={"learning_rate": learning_rate, **recipe.log_schedules}), donate_state=True)
  eval_fn = run.compile(jax.vmap(step_lib.make_eval_step(module, teacher=teacher_modules),
                                 (0, None, None)), donate_state=False)

  iterator = run.train_iterator()
  ckpts = checkpoints.RunCheckpoints(os.path.join(directory, "checkpoints"))
  progress = {"best_accuracy": [-1.0] * num_seeds, "best_step": [0] * num_seeds,
              "curve": {"step": [], "accuracy": []}}
  restored = ckpts.restore_latest(states)
  if restored is not None:
    step, states, saved = restored
    iterator.set_state(saved["iterator"])
    progress = saved["progress"]
    _report(f"stage {name}: resumed from the checkpoint at step {step}")
  else:
    step = 0
  states = run.place(states)

  provenance = {**_provenance(stage.model, info), "stage": name, "method": stage.method}

  def export(kind: str, i: int, states, step: int, accuracy: float) -> None:
    student = jax.device_get(jax.tree.map(lambda x: x[i], states))
    variables = {"params": student.params, **student.model_state}
    checkpoints.export_network(export_dir(run.workdir, name, i, kind), variables,
                               {**provenance, "seed": seeds[i], "step": step,
                                "accuracy": accuracy})

  def save(step: int) -> None:
    host_states = jax.device_get(states)
    if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(host_states.params)):
      raise FloatingPointError(f"non-finite student parameters at step {step}; the checkpoint "
                               f"was not written, the previous one is intact.")
    ckpts.save(step, host_states, {"iterator": iterator.get_state(), "progress": progress})

  writer = metric_writers.MetricWriter(directory)
  bar = tqdm.tqdm(total=num_steps, initial=step, desc=name, unit="step", dynamic_ncols=True,
                  disable=not config.progress_bar, mininterval=1.0)
  images_per_step = config.dataset.batch_size * num_seeds
  window_start, window_steps = time.perf_counter(), 0
  try:
    while step < num_steps:
      batch = next(iterator)
      if cache is not None:
        batch = teacher_cache.add_teacher_logits(batch, cache)
      states, metrics = train_fn(states, teacher_vars, run.place_batch(batch))
      step += 1
      window_steps += 1
      bar.update(1)
      if step % config.log_every_steps == 0 or step == num_steps:
        host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
        _finite_or_raise(step, host)
        elapsed = time.perf_counter() - window_start
        train_metrics = {k: float(np.mean(v)) for k, v in host.items()}
        train_metrics["images_per_second"] = window_steps * images_per_step / elapsed
        writer.write(step, "train", train_metrics)
        bar.set_postfix(loss=f"{train_metrics['loss']:.3f}",
                        img_s=f"{train_metrics['images_per_second']:.0f}")
        window_start, window_steps = time.perf_counter(), 0
      if step % config.eval_every_steps == 0 or step == num_steps:
        evaluated = run.evaluate(eval_fn, states, teacher_vars)
        accuracy = evaluated["accuracy"]
        writer.write(step, "eval", {k: float(np.mean(v)) for k, v in evaluated.items()})
        progress["curve"]["step"].append(step)
        progress["curve"]["accuracy"].append([float(a) for a in accuracy])
        for i, a in enumerate(accuracy):
          if a > progress["best_accuracy"][i]:
            progress["best_accuracy"][i], progress["best_step"][i] = float(a), step
            export("best", i, states, step, float(a))
        _report(f"stage {name} step {step}: test accuracy "
                f"{', '.join(f'{a:.4f}' for a in accuracy)}")
      if step % config.checkpoint_every_steps == 0 or step == num_steps:
        save(step)
  finally:
    bar.close()
    writer.close()

  last_accuracy = progress["curve"]["accuracy"][-1]
  for i, accuracy in enumerate(last_accuracy):
    export("last", i, states, step, accuracy)
  result = {
      "stage": name, "model": stage.model, "method": stage.method,
      "teachers": list(stage.teachers), "seeds": seeds,
      "last_accuracy": last_accuracy, "best_accuracy": progress["best_accuracy"],
      "best_step": progress["best_step"], "curve": progress["curve"],
      "teacher_accuracy": teacher_accuracy, "num_steps": num_steps,
      "teacher_cache": cache is not None,
  }
  _write_json(result_path, result)
  ckpts.close()
  return result


def enable_compilation_cache(directory: str) -> None:
  """Turns on JAX's persistent compilation cache (repeated runs skip XLA compilation)."""
  if directory:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> list[dict[str, Any]]:
  """Runs every stage of ``config`` in ``workdir`` and writes the summary.

  Complete stages are reused; an interrupted stage resumes from its last checkpoint.

  Args:
    config: a run config (see ``configs/base.py``).
    workdir: the run's directory; created if missing. Nothing in it is ever deleted.

  Returns:
    One result record per stage (what ``summary.md`` tabulates).

  Raises:
    ValueError: on an invalid config, or a workdir holding a run with another config.
    FileNotFoundError: when the dataset or a teacher's export is missing.
    FloatingPointError: when training produces a NaN or Inf.
  """
  validate(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK):
    raise PermissionError(f"workdir {workdir!r} is not writable.")
  enable_compilation_cache(config.compilation_cache_dir)
  run = _Run(config, workdir)
  results = [_run_stage(run, name) for name in config.stages]
  table = summary.write(results, workdir, title=f"kdjax run on {run.info.name}")
  print(table, flush=True)
  return results

