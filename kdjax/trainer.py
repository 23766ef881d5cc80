"""The training loop: stages of a run, checkpoints, evaluation, logs and the final summary.

This is the one impure layer of kdjax: it reads data, writes files and talks to the
terminal; the mathematics lives in the pure step builders it calls. A run is a sequence of
stages (``config.stages``); stage ``NAME`` lives in ``WORKDIR/stages/NAME``:

* ``stage_config.json`` — the stage's config, the run settings it depends on and the
  parameter hashes of the networks it reads (teachers, ``init_from``); a later run with a
  different one (a changed config, a retrained or replaced teacher) is refused instead of
  mixing results;
* ``checkpoints/`` — orbax checkpoints of the train state and the input iterator, from
  which an interrupted stage resumes exactly where it stopped;
* ``export/seed<i>/best`` and ``export/seed<i>/last`` — each student's network with a
  provenance record; later stages load seed 0's best as a teacher, and seed i's best as the
  initialization of their own seed i (``init_from``);
* ``metrics.jsonl`` and TensorBoard events; ``result.json`` once the stage is complete — a
  complete stage is reused, not retrained. Besides accuracies and curves it records the
  protocol (dataset with its class and train-example counts, batch size, augmentation,
  epochs) and the cost: wall seconds of setup (teacher checks and logit cache), training
  and evaluation summed over the stage's runs, and the hardware (backend, device kind and
  count, host CPU count) of each.

At the end, ``WORKDIR/summary.md`` and ``WORKDIR/accuracy.png`` compare every finished stage
of the workdir (those of other configs run in it too).

Reliability. A run killed at any moment (``kill -9``, a lost machine) and started again with
the same command ends with the parameters, curves and exports of an uninterrupted run, bit
for bit: the stage resumes from its last checkpoint (train state, input iterator state and
the progress record together), ``metrics.jsonl`` is cut back to that step, every file that
marks completion (``stage_config.json``, ``result.json``, exports' ``provenance.json``) is
written atomically and after what it describes, and exports are redone by the resumed run.
SIGTERM and SIGINT (preemption, Ctrl-C) stop training between two steps, save a checkpoint at
the current step and raise ``Preempted``; a second Ctrl-C aborts at once. A latest
checkpoint that cannot be read is reported and set aside, and the stage resumes from the
previous one. Non-finite values (in teacher outputs, losses or gradients) are detected at
every step on the device and stop training (``config.nonfinite = "stop"``) before any
checkpoint or export records the bad state, or are skipped (``"skip"``) and counted.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
import dataclasses
import json
import os
import signal
import tempfile
import threading
import time
from typing import Any
import zlib

from absl import flags, logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from kdjax import (
  checkpoints,
  data,
  finite_guard,
  initializers,
  methods,
  metric_writers,
  mixup,
  models,
  optimizers,
  parallel,
  performance,
  summary,
  sweep,
  teacher_cache,
)
from kdjax import state as state_lib
from kdjax import step as step_lib
from kdjax.losses import pruning

STAGES_DIR = "stages"
STAGE_CONFIG_FILE = "stage_config.json"
_INPUTS = "inputs"  # the stage record's entry for the networks a stage reads
# Stage-record fields added since kdjax 0.1, with the value that behaves as before they
# existed: a record without the field matches a config that has that value.
_FIELDS_ADDED = {"stage.mixup": 0.0, "stage.loss.dkd_warmup_epochs": 0,
                 "stage.loss.dgkd_keep_teacher": False,
                 "stage.loss.logit_standardization": False,
                 "stage.loss.continuation_max_temperature": 20,
                 "stage.loss.continuation_anneal_fraction": 0.5,
                 "stage.loss.continuation_ramp_fraction": 0.75,
                 "stage.loss.continuation_margin": 1.0,
                 "stage.loss.divergence": "reverse_kl", "stage.loss.jsd_beta": 0.5,
                 "stage.loss.dist_beta": 2.0, "stage.loss.dist_gamma": 2.0,
                 "stage.loss.ctkd_mode": "global", "stage.loss.ctkd_t_start": 1.0,
                 "stage.loss.ctkd_t_range": 20.0, "stage.loss.ctkd_lambda_max": 1.0,
                 "stage.loss.ctkd_ramp_fraction": 10 / 240}
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
NONFINITE_MODES = ("stop", "skip")
_MIXUP_STREAM = 3  # fold_in tag of the mixup key (1: initialization, 2: student rng)


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


@dataclasses.dataclass(frozen=True)
class _Teacher:
  name: str
  model: str
  module: Any
  variables: Any


def stage_dir(workdir: str, name: str) -> str:
  """The directory of stage ``name`` of the run in ``workdir``.

  Example:
    >>> stage_dir("/runs/cifar10", "kd")
    '/runs/cifar10/stages/kd'
  """
  return os.path.join(workdir, STAGES_DIR, name)


def export_dir(workdir: str, name: str, seed_index: int = 0, kind: str = "best") -> str:
  """Where stage ``name`` exports the ``kind`` ("best" or "last") network of a seed.

  Load it with ``kdjax.checkpoints.load_network`` (e.g. as a teacher outside the trainer).

  Example:
    >>> export_dir("/runs/cifar10", "kd", seed_index=2, kind="last")
    '/runs/cifar10/stages/kd/export/seed2/last'
  """
  return os.path.join(stage_dir(workdir, name), "export", f"seed{seed_index}", kind)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a run config before anything is trained.

  Every field's type and range, each stage's method, teachers (earlier stages or
  ``teacher_dirs``), ``init_from``, optimizer and objective (built once, so their errors
  surface here), and mixup against methods that read labels. ``train_and_evaluate`` calls
  it first; call it yourself to check a config without training.

  Raises:
    ValueError: naming the offending field (``stages.NAME.FIELD``) and value.

  Example:
    >>> from configs import base
    >>> config = base.get_config()
    >>> validate(config)
    >>> config.stages.kd.num_steps = 0
    >>> validate(config)
    Traceback (most recent call last):
    ...
    ValueError: stages.kd.num_steps=0 must be a positive integer.
  """
  ds = config.dataset
  try:
    data.image_shape(ds.name)
  except ValueError as error:
    raise ValueError(f"dataset.name: {error}") from error
  if ds.augmentation not in data.AUGMENTATIONS:
    raise ValueError(f"dataset.augmentation={ds.augmentation!r} is unknown; valid: "
                     f"{', '.join(data.AUGMENTATIONS)}.")
  for field in ("batch_size", "eval_batch_size"):
    if not (isinstance(ds[field], int) and ds[field] >= 1):
      raise ValueError(f"dataset.{field}={ds[field]!r} must be a positive integer.")
  if not (isinstance(ds.worker_count, int) and ds.worker_count >= -1):
    raise ValueError(f"dataset.worker_count={ds.worker_count!r} must be an integer >= 0, or "
                     f"-1 (auto).")
  for field in ("num_seeds", "eval_every_steps", "log_every_steps", "checkpoint_every_steps"):
    if not (isinstance(config[field], int) and config[field] >= 1):
      raise ValueError(f"{field}={config[field]!r} must be a positive integer.")
  if not (isinstance(config.seed, int) and 0 <= config.seed < 2**32):
    raise ValueError(f"seed={config.seed!r} must be an integer in [0, 2**32).")
  if config.nonfinite not in NONFINITE_MODES:
    raise ValueError(f"nonfinite={config.nonfinite!r} is unknown; valid: "
                     f"{', '.join(NONFINITE_MODES)}.")
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
    # Builds the optimizer and the objective once, so their errors surface before training.
    try:
      optimizers.optimizer(stage.optimizer, stage.num_steps)
    except ValueError as error:
      raise ValueError(f"{where}: {error}") from error
    if stage.mixup != 0:
      try:
        mixup.check_concentration(stage.mixup)
      except ValueError as error:
        raise ValueError(f"{where}.mixup: {error} 0 turns mixup off.") from error
    # FitNets' regressor is sized from the teacher's feature, unknown until the teacher is
    # loaded: a stand-in shape checks the rest of its recipe here.
    # The epoch length is known once the dataset is open; any length checks the rest here.
    stand_in = {stage.loss.hint_feature: (1, 1, 1, 1)} if stage.method == "fitnets" else {}
    try:
      recipe = method.build(stage.loss, stage.num_steps, stand_in, steps_per_epoch=1)
    except ValueError as error:
      raise ValueError(f"{where}.loss: {error}") from error
    _check_mixup(where, stage, recipe)
    _check_class_count(where, stage, data.num_classes(ds.name))
    earlier.append(name)


def _check_class_count(where: str, stage: ml_collections.ConfigDict, num_classes: int) -> None:
  """Refuses loss values that the dataset's class count makes meaningless (DKP's top_k)."""
  if stage.method == "dkp" and stage.loss.dkp_variant == "tail":
    try:
      pruning.check_arguments(stage.loss.temperature, stage.loss.gamma, "tail",
                              top_k=stage.loss.dkp_top_k, num_classes=num_classes)
    except ValueError as error:
      raise ValueError(f"{where}.loss.dkp_top_k: {error}") from error


def _check_mixup(where: str, stage: ml_collections.ConfigDict, recipe: methods.Recipe) -> None:
  """Refuses mixup for a method that reads labels: a blend of images has none."""
  if stage.mixup and recipe.label_users:
    raise ValueError(f"{where}.mixup={stage.mixup}: mixup blends images, so the labels no "
                     f"longer describe them, but method {stage.method!r} reads labels (in "
                     f"{', '.join(recipe.label_users)}); use a label-free method "
                     f"(function_matching, annealing).")


def _method(where: str, name: str) -> methods.Method:
  try:
    return methods.get(name)
  except ValueError as error:
    raise ValueError(f"{where}.method: {error}") from error


def _stage_record(config: ml_collections.ConfigDict, name: str,
                  inputs: dict[str, Any] | None = None) -> dict[str, Any]:
  """What a stage's results depend on: compared with the record of an existing stage dir.

  ``inputs`` identifies the networks the stage reads (``_stage_inputs``), so that a
  retrained or replaced teacher does not reuse or resume the results of the old one.
  """
  record = {
      "stage": config.stages[name].to_dict(),
      # Where the data is and how many processes decode it do not change the batches.
      "dataset": {k: v for k, v in config.dataset.to_dict().items()
                  if k not in ("data_dir", "worker_count")},
      "seed": config.seed,
      "num_seeds": config.stages[name].num_seeds or config.num_seeds,
  }
  if inputs is not None:
    record[_INPUTS] = inputs
  return json.loads(json.dumps(record, default=list))


def _upgrade_removed_fields(loss: dict[str, Any]) -> None:
  """Rewrites loss fields that older records hold in terms of today's fields, in place.

  ``dgkd_drop_teacher`` became ``dgkd_keep_teacher``: only paper mode without
  ``drop_teacher`` kept the teacher. ``dkd_warmup_fraction`` 0 was no warm-up
  (``dkd_warmup_epochs`` 0 now); any other fraction was a per-step ramp that no config of
  this version trains, so it stays in the record and differs.
  """
  drop_teacher = loss.pop("dgkd_drop_teacher", None)
  if drop_teacher is False and loss.get("dgkd_mode") == "paper":
    loss["dgkd_keep_teacher"] = True
  if loss.get("dkd_warmup_fraction") == 0.0:
    del loss["dkd_warmup_fraction"]


def _teacher_source(config: ml_collections.ConfigDict, workdir: str,
                    name: str) -> tuple[str, str]:
  """``(model, export directory)`` of teacher ``name``: a stage of this run or a teacher_dir."""
  if name in config.stages:
    return config.stages[name].model, export_dir(workdir, name)
  return config.teacher_dirs[name].model, config.teacher_dirs[name].directory


def _stage_inputs(config: ml_collections.ConfigDict, workdir: str,
                  name: str) -> dict[str, Any]:
  """The parameter hashes of the networks stage ``name`` reads: teachers and ``init_from``.

  Read from the exports' provenance records (``load_network`` later checks that the files
  still hash to them).

  Raises:
    FileNotFoundError: naming the directory, if a teacher or initialisation is not exported.
  """
  stage = config.stages[name]
  inputs: dict[str, Any] = {"teachers": {}}
  for teacher in stage.teachers:
    model, directory = _teacher_source(config, workdir, teacher)
    inputs["teachers"][teacher] = {
        "model": model,
        "parameter_hash": checkpoints.read_provenance(directory)["parameter_hash"]}
  if stage.init_from:
    inputs["init_from"] = [
        checkpoints.read_provenance(export_dir(workdir, stage.init_from, i))["parameter_hash"]
        for i in range(stage.num_seeds or config.num_seeds)]
  return inputs


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new)):
      out += _diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
    return out
  return [] if old == new else [f"{prefix}: {old!r} → {new!r}"]


def _claim_stage_dir(directory: str, record: dict[str, Any], write: bool = True
                     ) -> int | None:
  """Creates a stage directory, or checks that an existing one belongs to this config.

  Records written by kdjax 0.1 are claimed too: fields added since (``_FIELDS_ADDED``)
  match their old behaviour, and the inputs (teachers' parameter hashes) they lack are
  trusted once and recorded.

  Args:
    directory: the stage directory.
    record: the stage record (``_stage_record``).
    write: whether this process writes the record (only the primary one, with several).

  Returns:
    The ``dataset.worker_count`` an existing directory's record holds: kdjax 0.1 kept it in
    the record (it does not change the batches, so it is not compared), and checkpoints of
    that version do not store it. ``None`` for a new directory or a newer record.

  Raises:
    ValueError: listing the differing fields, if the directory holds another config's run.
  """
  path = os.path.join(directory, STAGE_CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    recorded_workers = old.get("dataset", {}).pop("worker_count", None)
    _upgrade_removed_fields(old.get("stage", {}).get("loss", {}))
    for field, value in _FIELDS_ADDED.items():
      *parents, key = field.split(".")
      old_parent, new_parent = old, record
      for parent in parents:
        old_parent, new_parent = old_parent.get(parent, {}), new_parent.get(parent, {})
      if key not in old_parent and new_parent.get(key) == value:
        old_parent[key] = value  # recorded before the field existed, with its behaviour
    if _INPUTS not in record:  # the inputs are gone (a finished stage): nothing to compare
      old.pop(_INPUTS, None)
    unrecorded_inputs = _INPUTS in record and _INPUTS not in old
    if unrecorded_inputs:  # kdjax 0.1 did not record them: trust the directory, then do
      old[_INPUTS] = record[_INPUTS]
    differences = _diff(old, record)
    if differences:
      raise ValueError(
          f"{directory} holds a run with a different config or different teachers "
          f"({'; '.join(differences)}). Use a new --workdir, or restore the config and the "
          f"teachers; nothing was changed.")
    if unrecorded_inputs and write:
      kept = record if recorded_workers is None else {
          **record, "dataset": {**record["dataset"], "worker_count": recorded_workers}}
      _write_json(path, kept, sort_keys=True)
    return recorded_workers
  os.makedirs(directory, exist_ok=True)
  if write:
    _write_json(path, record, sort_keys=True)
  return None


def _write_json(path: str, value: Any, sort_keys: bool = False) -> None:
  """Writes ``path`` atomically: a reader (or a killed writer) sees the old file or the new."""
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=2, sort_keys=sort_keys)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + ".tmp", path)


def _rewind_metrics(directory: str, step: int) -> None:
  """Cuts ``metrics.jsonl`` back to the records of steps up to ``step``, where training resumes.

  A killed run may have logged steps past its last checkpoint, and cut its last line short;
  the resumed run logs those steps again, so the file ends as an uninterrupted run's would.
  """
  path = os.path.join(directory, METRICS_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if line.endswith("\n") and record["step"] <= step:
      kept.append(line)
  if kept != lines:
    with open(path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)


def _check_writable(workdir: str) -> None:
  """Creates ``workdir`` and writes a scratch file in it (``os.access`` cannot see all cases).

  Raises:
    ValueError: naming the directory, if it cannot be created or written.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as error:
    raise ValueError(f"workdir={workdir!r} is not a writable directory: "
                     f"{error.strerror or error}.") from error


def _nonfinite_leaves(tree: Any) -> list[str]:
  """Paths of the floating leaves of ``tree`` holding a NaN or an infinity."""
  return [jax.tree_util.keystr(path)
          for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
          if np.issubdtype(np.asarray(leaf).dtype, np.floating)
          and not np.all(np.isfinite(leaf))]


def _build_model(stage: ml_collections.ConfigDict, num_classes: int):
  kwargs = {"head_kernel_init": initializers.zero_mean()} if stage.zero_mean_head else {}
  return models.get(stage.model, num_classes, **kwargs)


def _abstract_variables(module, sample: jax.Array) -> Any:
  return jax.eval_shape(lambda: module.init(jax.random.key(0), sample, train=False))


def _provenance(model: str, info: data.DatasetInfo) -> dict[str, Any]:
  return {"model": model, "num_classes": info.num_classes, "dataset": info.name}


def _hardware() -> dict[str, Any]:
  """The machine a stage runs on, as its ``result.json`` records it (``cost.hardware``)."""
  return {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
          "device_count": jax.device_count(), "process_count": jax.process_count(),
          "host_cpu_count": os.cpu_count()}


def _worker_count(configured: int, resumed_with: int | None = None) -> int:
  """The training pipeline's worker processes: ``dataset.worker_count``, auto resolved.

  Auto (-1) is 0 on a CPU backend, where the step limits training (decoding in the
  trainer's process cost 1–5 % of a fused KD step on 2 cores), and half the host's cores,
  at most 8, on GPU and TPU hosts, where the input pipeline does (CIFAR-10 resnet56 →
  resnet8 on an H100 with a 16-core host: 3,484 img/s decoding in the trainer's process,
  21,457 with 8 workers). Worker processes need absl flags parsed (``launch/train.py``
  parses them); elsewhere, e.g. in a notebook, auto decodes in the trainer's process.

  Args:
    configured: ``dataset.worker_count``: a count, or -1 for auto.
    resumed_with: the count a checkpoint was saved with, if resuming: an input iterator's
      state restores only into one with the same count, so auto keeps it.

  Raises:
    ValueError: if an explicit count differs from the checkpoint's, or asks for workers
      while absl flags are not parsed.
  """
  if configured == -1 and resumed_with is None:
    if jax.default_backend() == "cpu" or not flags.FLAGS.is_parsed():
      return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(max((cores or 1) // 2, 1), 8)
  if configured == -1:
    count = resumed_with
  elif resumed_with is not None and configured != resumed_with:
    raise ValueError(f"dataset.worker_count={configured}, but the checkpoint to resume was "
                     f"saved with {resumed_with} workers, and an input pipeline's state "
                     f"restores only with the same count; set dataset.worker_count="
                     f"{resumed_with} (or -1, auto, which keeps it).")
  else:
    count = configured
  if count and not flags.FLAGS.is_parsed():
    raise ValueError(f"dataset.worker_count={configured} means {count} grain worker "
                     f"processes here (the checkpoint's count when resuming), which need absl "
                     f"flags parsed: run through launch/train.py or call "
                     f"absl.flags.FLAGS.mark_as_parsed() first.")
  return count


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
    # With several processes (multi-host), only the first writes the run's JSON files,
    # metrics and reports; checkpoints and exports are written by all (orbax).
    self.primary = jax.process_index() == 0
    devices = (f"{jax.device_count()} devices" if jax.process_count() == 1 else
               f"{jax.device_count()} devices of {jax.process_count()} processes")
    for field in ("batch_size", "eval_batch_size"):
      if ds[field] % jax.device_count():
        raise ValueError(f"dataset.{field}={ds[field]} is not divisible by the {devices}.")
    # Batch sizes are global; each process reads its share of every batch.
    self.batch_size = ds.batch_size // jax.process_count()
    self.eval_batch_size = ds.eval_batch_size // jax.process_count()
    per_process = self.info.num_train // jax.process_count()
    if self.batch_size > per_process:
      raise ValueError(f"dataset.batch_size={ds.batch_size} exceeds the {self.info.num_train} "
                       f"training examples of {self.info.name!r}.")

  # -- data ---------------------------------------------------------------------------------

  def train_iterator(self, worker_count: int):
    ds = self.config.dataset
    return data.train_iterator(ds.name, data_dir=self.data_dir, batch_size=self.batch_size,
                               seed=self.config.seed, augmentation=ds.augmentation,
                               download=ds.download, worker_count=worker_count)

  def eval_batches(self, split: str = "test") -> Iterable[dict[str, np.ndarray]]:
    ds = self.config.dataset
    return data.eval_batches(ds.name, data_dir=self.data_dir, split=split,
                             batch_size=self.eval_batch_size, download=ds.download)

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
    model, directory = _teacher_source(self.config, self.workdir, name)
    module = models.get(model, self.info.num_classes)
    variables = checkpoints.load_network(
        directory, _abstract_variables(module, self.sample), _provenance(model, self.info))
    bad = _nonfinite_leaves(variables)
    if bad:
      raise ValueError(f"teacher {name!r} in {directory!r} has non-finite values in "
                       f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}; it cannot teach.")
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
  eval_fn = run.compile(sweep.over_students(step_lib.make_eval_step(teacher.module)),
                        donate_state=False)
  states = run.place(sweep.stack_states([network_state]))
  return float(run.evaluate(eval_fn, states, None)["accuracy"][0])


def _report(message: str) -> None:
  """A line for the person at the terminal (printed above the progress bar) and the log."""
  logging.info(message)
  tqdm.tqdm.write(message)


class _StopRequests:
  """Turns SIGTERM and SIGINT into a request that the training loop honours between steps.

  The handlers only record the signal: the loop checks ``signum`` before each step, saves a
  checkpoint and raises ``Preempted`` (saving inside a handler could interrupt a save in
  progress). A second SIGINT raises ``KeyboardInterrupt`` at once, for a user who does not
  want to wait. Handlers can only be installed from the main thread; elsewhere signals keep
  their previous behaviour. With several processes, the checkpoint is a collective save:
  they act on a signal together (``agreed``), even one that reached a single process.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "_StopRequests":
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    if signum == signal.SIGINT and self.signum == signal.SIGINT:
      raise KeyboardInterrupt("second SIGINT: stopped without saving")
    self.signum = self.signum or signum

  def agreed(self, step: int | None = None, every: int = 1) -> int | None:
    """The signal to stop for now, the same on every process, or ``None``.

    With one process, the signal it received. With several, they vote
    (``kdjax.parallel.any_process``) between stages (``step`` ``None``) and every ``every``
    steps, so that all stop at the same step even when the signal reached them at
    different times, or reached only one.
    """
    if jax.process_count() == 1:
      return self.signum
    if step is not None and step % every:
      return None
    return parallel.any_process(self.signum is not None, self.signum or 0) or None


def _with_mixup(train_step: Callable[..., Any], seed: int, stage: str,
                concentration: float) -> Callable[..., Any]:
  """Mixes each batch's images before ``train_step`` (teacher and students see the mix).

  One draw per step, keyed by the run's seed, the stage's name and the step counter: every
  student of a sweep and every process sees the same view, a resumed run mixes as the
  uninterrupted one did, and two stages of a run draw different ratios.
  """
  stage_tag = zlib.crc32(stage.encode())

  def mixed_step(carry, teacher_vars, batch):
    states, _ = carry
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _MIXUP_STREAM), stage_tag)
    key = jax.random.fold_in(key, states.step[0])
    return train_step(carry, teacher_vars,
                      mixup.mix_batch(key, batch, concentration=concentration))

  return mixed_step


def _run_stage(run: _Run, name: str, stop: _StopRequests) -> dict[str, Any]:
  config, stage = run.config, run.config.stages[name]
  directory = stage_dir(run.workdir, name)
  result_path = os.path.join(directory, RESULT_FILE)
  try:
    inputs = _stage_inputs(config, run.workdir, name)
  except FileNotFoundError:
    if not os.path.exists(result_path):
      raise
    inputs = None  # a finished stage whose teachers have been moved away: still reusable
  recorded_workers = _claim_stage_dir(directory, _stage_record(config, name, inputs),
                                      write=run.primary)
  parallel.sync_processes("kdjax stage claimed")
  if os.path.exists(result_path):
    _report(f"stage {name}: complete, reusing {directory}")
    with open(result_path) as f:
      return json.load(f)

  started = time.perf_counter()
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
  steps_per_epoch = max(info.num_train // config.dataset.batch_size, 1)
  recipe = method.build(stage.loss, num_steps, feature_shapes, steps_per_epoch)
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
      and config.dataset.augmentation == "none" and not stage.mixup):
    start = time.perf_counter()
    # Batches sharded over the devices like training batches: with unsharded ones, every
    # device would run the teachers on the whole batch (6-7x the time on 8 CPU devices).
    cache = teacher_cache.compute_teacher_logits(
        teacher_modules, teacher_vars, map(run.place_batch, run.eval_batches("train")),
        info.num_train)
    bad = ~np.isfinite(cache).reshape(len(cache), -1).all(axis=1)
    if bad.any():
      raise ValueError(f"stage {name}: the logits of its teachers ({', '.join(stage.teachers)}) "
                       f"are not finite on {bad.sum()} of {len(cache)} training examples (the "
                       f"first: example {np.flatnonzero(bad)[0]}); they cannot teach.")
    _report(f"stage {name}: cached the teacher logits of {info.num_train} examples in "
            f"{time.perf_counter() - start:.1f}s")

  # The sweep step of kdjax.sweep, with the teacher outputs exposed to the finiteness check.
  teacher_forward = step_lib.make_teacher_forward(
      None if cache is not None else teacher_modules, features=recipe.objective.teacher_features)
  update = sweep.over_students(step_lib.make_student_update(
      module, recipe.objective, optimizer, output_tx=recipe.output_tx, aux_heads=recipe.aux_heads,
      log_schedules={"learning_rate": learning_rate, **recipe.log_schedules}))
  checked = ("loss", *(f"loss/{t.label}" for t in recipe.objective.terms), "grad_norm")
  names = finite_guard.checked_names(checked)
  train_step = finite_guard.guarded_train_step(teacher_forward, update, checked,
                                  skip=config.nonfinite == "skip")
  if stage.mixup:
    train_step = _with_mixup(train_step, config.seed, name, stage.mixup)
  train_fn = run.compile(train_step, donate_state=True)
  eval_fn = run.compile(sweep.over_students(step_lib.make_eval_step(module,
                                                                     teacher=teacher_modules)),
                        donate_state=False)

  ckpts = checkpoints.RunCheckpoints(os.path.join(directory, "checkpoints"))
  progress = {"best_accuracy": [-1.0] * num_seeds, "best_step": [0] * num_seeds,
              "curve": {"step": [], "accuracy": []}, "nonfinite_steps": [0] * num_seeds}

  unreadable = []

  def report_unreadable(step: int, error: Exception) -> None:
    unreadable.append(step)
    reason = (str(error).strip().splitlines() or [""])[0][:160]
    _report(f"stage {name}: the checkpoint at step {step} is unreadable "
            f"({type(error).__name__}: {reason}); trying the previous one")

  # Saved and restored as placed (global) arrays: with several processes, each writes and
  # reads what it holds.
  states = run.place(states)
  restored = ckpts.restore_latest(states, on_unreadable=report_unreadable)
  if restored is not None:
    step, states, saved = restored
    # A checkpoint without a count was written with the one its stage record kept.
    saved_workers = saved.get("worker_count", max(recorded_workers or 0, 0))
    worker_count = _worker_count(config.dataset.worker_count, saved_workers)
    iterator = run.train_iterator(worker_count)
    iterator.set_state(saved["iterator"])
    progress = saved["progress"]
    kept = (f" (unreadable checkpoints are kept in {ckpts.unreadable_directory})"
            if unreadable else "")
    _report(f"stage {name}: resumed from the checkpoint at step {step}{kept}")
  else:
    step = 0
    worker_count = _worker_count(config.dataset.worker_count)
    iterator = run.train_iterator(worker_count)
  # The cost of the runs before this one, saved with the checkpoint; a checkpoint written
  # before kdjax recorded costs leaves its steps untimed.
  earlier = progress.get("cost") or {"setup_seconds": 0.0, "train_seconds": 0.0,
                                     "eval_seconds": 0.0, "runs": 0, "hardware": [],
                                     "untimed_steps": step}
  hardware = _hardware()
  setup_seconds, eval_seconds = time.perf_counter() - started, 0.0
  if run.primary:
    _rewind_metrics(directory, step)
  health = run.place(finite_guard.healthy(num_seeds, len(names)))
  checked_since = step

  provenance = {**_provenance(stage.model, info), "stage": name, "method": stage.method}

  def export(kind: str, i: int, states, step: int, accuracy: float) -> None:
    student = jax.device_get(jax.tree.map(lambda x: x[i], states))
    variables = {"params": student.params, **student.model_state}
    checkpoints.export_network(export_dir(run.workdir, name, i, kind), variables,
                               {**provenance, "seed": seeds[i], "step": step,
                                "accuracy": accuracy})

  def check_health(step: int) -> None:
    """Reads the device's record of non-finite steps: stops ("stop") or counts ("skip")."""
    nonlocal health, checked_since
    host = jax.device_get(health)
    if host.count.any():
      where = finite_guard.describe(host, names, seeds)
      if config.nonfinite == "stop":
        latest = ckpts.latest_step()
        kept = ("no checkpoint was written" if latest is None else
                f"the last checkpoint, at step {latest}, predates it and is intact")
        raise FloatingPointError(
            f"stage {name}: non-finite values at {where}; training stopped and {kept}. Set "
            f"config.nonfinite='skip' to skip such steps instead.")
      for i in range(num_seeds):
        progress["nonfinite_steps"][i] += int(host.count[i])
      _report(f"stage {name}: skipped {int(host.count.sum())} update(s) with non-finite values "
              f"in steps {checked_since + 1}-{step}, the first at {where}; "
              f"{sum(progress['nonfinite_steps'])} so far")
      health = run.place(finite_guard.healthy(num_seeds, len(names)))
    checked_since = step

  def charge() -> None:
    """Sets ``progress["cost"]`` to the totals of this run and the earlier ones."""
    train_seconds = time.perf_counter() - started - setup_seconds - eval_seconds
    progress["cost"] = {
        "setup_seconds": earlier["setup_seconds"] + setup_seconds,
        "train_seconds": earlier["train_seconds"] + train_seconds,
        "eval_seconds": earlier["eval_seconds"] + eval_seconds,
        "runs": earlier["runs"] + 1,
        "hardware": earlier["hardware"] + [hardware] * (hardware not in earlier["hardware"]),
        "untimed_steps": earlier["untimed_steps"]}

  def save(step: int) -> None:
    charge()  # the time after the last checkpoint is lost with its steps on a hard kill
    ckpts.save(step, states, {"iterator": iterator.get_state(), "progress": progress,
                              "worker_count": worker_count})

  writer = metric_writers.MetricWriter(directory) if run.primary else None
  bar = tqdm.tqdm(total=num_steps, initial=step, desc=name, unit="step", dynamic_ncols=True,
                  disable=not (config.progress_bar and run.primary), mininterval=1.0)
  images_per_step = config.dataset.batch_size * num_seeds
  window_start, window_steps = time.perf_counter(), 0
  try:
    while step < num_steps:
      signum = stop.agreed(step, config.log_every_steps)
      if signum is not None:
        check_health(step)
        if step and ckpts.latest_step() != step:
          save(step)
        kept = (f"its checkpoint at step {step} is saved" if ckpts.latest_step() == step
                else "nothing was saved yet")
        raise Preempted(signum, f"{signal.Signals(signum).name} received: stopped stage "
                        f"{name!r} at step {step} of {num_steps}; {kept}. Run the same "
                        f"command again to resume.")
      batch = next(iterator)
      if cache is not None:
        batch = teacher_cache.add_teacher_logits(batch, cache)
      (states, health), metrics = train_fn((states, health), teacher_vars,
                                           run.place_batch(batch))
      step += 1
      window_steps += 1
      bar.update(1)
      log_now = step % config.log_every_steps == 0 or step == num_steps
      eval_now = step % config.eval_every_steps == 0 or step == num_steps
      save_now = step % config.checkpoint_every_steps == 0 or step == num_steps
      if log_now or eval_now or save_now:
        check_health(step)  # before anything records this state
      if log_now:
        host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
        elapsed = time.perf_counter() - window_start
        train_metrics = {k: float(np.mean(v)) for k, v in host.items()}
        train_metrics["images_per_second"] = window_steps * images_per_step / elapsed
        train_metrics["nonfinite_steps"] = float(sum(progress["nonfinite_steps"]))
        if writer:
          writer.write(step, "train", train_metrics)
        bar.set_postfix(loss=f"{train_metrics['loss']:.3f}",
                        img_s=f"{train_metrics['images_per_second']:.0f}")
        window_start, window_steps = time.perf_counter(), 0
      if eval_now:
        eval_start = time.perf_counter()
        evaluated = run.evaluate(eval_fn, states, teacher_vars)
        eval_seconds += time.perf_counter() - eval_start
        accuracy = evaluated["accuracy"]
        if writer:
          writer.write(step, "eval", {k: float(np.mean(v)) for k, v in evaluated.items()})
        progress["curve"]["step"].append(step)
        progress["curve"]["accuracy"].append([float(a) for a in accuracy])
        for i, a in enumerate(accuracy):
          if a > progress["best_accuracy"][i]:
            progress["best_accuracy"][i], progress["best_step"][i] = float(a), step
            export("best", i, states, step, float(a))
        _report(f"stage {name} step {step}: test accuracy "
                f"{', '.join(f'{a:.4f}' for a in accuracy)}")
      if save_now:
        save(step)
  finally:
    bar.close()
    if writer:
      writer.close()

  # Redone by a run resumed from the final checkpoint: the exports come before result.json.
  last_accuracy = progress["curve"]["accuracy"][-1]
  for i, accuracy in enumerate(last_accuracy):
    export("last", i, states, step, accuracy)
  charge()
  ds = config.dataset
  result = {
      "stage": name, "model": stage.model, "method": stage.method,
      "teachers": list(stage.teachers), "seeds": seeds,
      "last_accuracy": last_accuracy, "best_accuracy": progress["best_accuracy"],
      "best_step": progress["best_step"], "curve": progress["curve"],
      "teacher_accuracy": teacher_accuracy, "num_steps": num_steps,
      "teacher_cache": cache is not None, "nonfinite_steps": progress["nonfinite_steps"],
      "init_from": stage.init_from, "mixup": stage.mixup,
      "dataset": {"name": info.name, "num_classes": info.num_classes,
                  "num_train": info.num_train, "num_test": info.num_test,
                  "batch_size": ds.batch_size, "augmentation": ds.augmentation},
      "epochs": num_steps * ds.batch_size / info.num_train,
      # Wall time in seconds, summed over the runs of the stage (a resumed stage's included).
      "cost": progress["cost"],
  }
  if run.primary:
    _write_json(result_path, result)
  parallel.sync_processes("kdjax stage complete")
  ckpts.close()
  return result


def _finished_results(workdir: str, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Every finished stage of ``workdir``: this run's ``results``, then other runs' by name.

  A workdir shared by several configs (e.g. to share a teacher) keeps every config's
  finished stages in its summary, not only the last run's.
  """
  names = {r["stage"] for r in results}
  others = []
  for name in sorted(os.listdir(os.path.join(workdir, "stages"))):
    path = os.path.join(stage_dir(workdir, name), RESULT_FILE)
    if name not in names and os.path.exists(path):
      with open(path) as f:
        others.append(json.load(f))
  return [*results, *others]


def configure_performance(config: ml_collections.ConfigDict,
                          num_processes: int | None = 1) -> dict[str, Any] | None:
  """Applies ``kdjax.performance.configure`` for this run; call before JAX starts.

  The number of virtual CPU devices follows each process's share of the run's train and
  eval batch sizes and its dataset's image shape; the compilation cache goes to
  ``config.compilation_cache_dir``. It must come before anything starts JAX's backends,
  which ``validate`` and ``train_and_evaluate`` do: ``launch/train.py`` calls it first
  thing.

  Args:
    config: the run config.
    num_processes: the number of JAX processes of the run; ``None`` when not known yet
      (multi-host with the count found by ``jax.distributed.initialize``): each process
      then keeps one CPU device, a split that fits any process count.

  Returns:
    What ``kdjax.performance.configure`` applied, or ``None`` (with a warning) when the
    batch sizes or the dataset name are invalid: ``validate`` then refuses the config,
    naming the field.

  Example:
    >>> from configs import cifar10_kd
    >>> config = cifar10_kd.get_config()
    >>> config.compilation_cache_dir = ""  # none for this example
    >>> # JAX is already running here, so the device count stays as it is.
    >>> configure_performance(config)["source"] in ("user", "too late")
    True
  """
  ds = config.dataset
  try:
    image_shape = data.image_shape(ds.name)
    if num_processes is None:  # one device per process fits any process count
      batch_sizes = (1,)
    elif ds.batch_size % num_processes or ds.eval_batch_size % num_processes:
      raise ValueError(f"the batch sizes ({ds.batch_size}, {ds.eval_batch_size}) do not "
                       f"split over {num_processes=}")
    else:
      batch_sizes = (ds.batch_size // num_processes, ds.eval_batch_size // num_processes)
    performance.recommended_cpu_devices(batch_sizes, image_shape)  # checks the values
  except ValueError as error:
    logging.warning("kdjax's performance defaults are not applied: %s", error)
    return None
  return performance.configure(batch_sizes=batch_sizes, image_shape=image_shape,
                               compilation_cache_dir=config.compilation_cache_dir)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> list[dict[str, Any]]:
  """Runs every stage of ``config`` in ``workdir`` and writes the summary.

  Complete stages are reused; an interrupted stage resumes from its last checkpoint. While
  it runs (from the main thread), SIGTERM and SIGINT stop training between two steps with a
  checkpoint saved (see ``Preempted``).

  Args:
    config: a run config (see ``configs/base.py``).
    workdir: the run's directory; created if missing. Nothing in it is ever deleted.

  Returns:
    One result record per stage (what ``summary.md`` tabulates).

  Raises:
    ValueError: on an invalid config, an unwritable workdir or one holding a run with
      another config, or a teacher with non-finite parameters or outputs.
    FileNotFoundError: when the dataset or a teacher's export is missing.
    FloatingPointError: when training produces a NaN or Inf (``config.nonfinite="stop"``).
    Preempted: after SIGTERM or SIGINT, with the checkpoint saved.
    kdjax.checkpoints.UnreadableCheckpointsError: when no checkpoint of a stage is readable.

  Example: a teacher and a KD student, four steps each, on the bundled digits.
    >>> import contextlib, io, tempfile
    >>> from configs import base
    >>> config = base.get_config()
    >>> config.stages.teacher = base.stage("mlp_tiny", "scratch", num_steps=4)
    >>> config.stages.kd = base.stage("mlp_tiny", "kd", ("teacher",), num_steps=4)
    >>> config.update({"eval_every_steps": 2, "progress_bar": False, "compilation_cache_dir": ""})
    >>> config.dataset.batch_size = 32
    >>> workdir = tempfile.mkdtemp()
    >>> with contextlib.redirect_stdout(io.StringIO()):  # progress reports and the table
    ...   results = train_and_evaluate(config, workdir)
    >>> [(r["stage"], r["curve"]["step"]) for r in results]
    [('teacher', [2, 4]), ('kd', [2, 4])]
    >>> sorted(os.listdir(workdir))
    ['accuracy.png', 'stages', 'summary.md']
  """
  validate(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  _check_writable(workdir)
  performance.enable_compilation_cache(config.compilation_cache_dir)
  with _StopRequests() as stop:
    run = _Run(config, workdir)
    results = []
    for name in config.stages:
      signum = stop.agreed()
      if signum is not None:
        raise Preempted(signum, f"{signal.Signals(signum).name} received: stopped before "
                        f"stage {name!r}; every earlier stage is complete. Run the same "
                        f"command again to resume.")
      results.append(_run_stage(run, name, stop))
  if run.primary:
    table = summary.write(_finished_results(workdir, results), workdir,
                          title=f"kdjax run on {run.info.name}",
                          num_classes=run.info.num_classes)
    print(table, flush=True)
  return results
