"""The files of a run: stage and export paths, the versioned stage record, atomic JSON.

Stage ``NAME`` of a run lives in ``WORKDIR/stages/NAME``. Its record
(``stage_config.json``) holds what the stage's results depend on, and nothing else: the
resolved protocol (``stage_protocol``: model, method, the loss fields the method reads,
steps, optimizer, the batches), the seeds and the parameter hashes of the networks it reads
(teachers, ``init_from``). So a config field a stage does not read (another method's loss
field, the evaluation batch size, where the data lives) can change without touching its
finished results. A later run whose record differs is refused instead of mixing results, and
a record of another format (``RECORD_FORMAT``) is refused with what to do; nothing in a
workdir is ever deleted. A stage's ``lock`` file is held (``StageLock``) by the run that
trains it, so that a second run started on the same workdir cannot train it at once.
"""

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
from typing import Any

from absl import logging
import ml_collections

from kdjax import checkpoints, methods

STAGES_DIR = "stages"
STAGE_CONFIG_FILE = "stage_config.json"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = "lock"
EXPORT_KINDS = ("last", "best")  # the networks a stage exports per seed
RECORD_FORMAT = 3
INPUTS = "inputs"  # the record's entry for the networks a stage reads


def resolve(workdir: str) -> str:
  """The absolute path of a run's directory, ``~`` expanded; an empty name is refused.

  Raises:
    ValueError: if ``workdir`` is empty (e.g. ``--workdir=$WORKDIR`` with the variable
      unset), which would otherwise mean the current directory.

  Example:
    >>> resolve("/runs/cifar10/")
    '/runs/cifar10'
    >>> resolve(" ")
    Traceback (most recent call last):
    ...
    ValueError: workdir=' ' is empty ...
  """
  if not workdir.strip():
    raise ValueError(f"workdir={workdir!r} is empty (an unset variable in --workdir=$VAR?); "
                     f"name the run's directory, e.g. --workdir=workdir/NAME.")
  return os.path.abspath(os.path.expanduser(workdir))


class StageBusyError(RuntimeError):
  """Another process holds the lock of a stage this run would train (``StageLock``).

  The binary reports it in one line and exits 1; the same command, started once the
  holder has finished, reuses the stage.

  Example: see ``StageLock``.
  """


class StageLock:
  """The lock of a stage directory, held by the one process that trains or reuses the stage.

  A POSIX record lock (``fcntl.lockf``) on ``DIRECTORY/lock``. It belongs to the process that
  took it, not to its open file: the operating system releases it when that process exits,
  however it exits (``kill -9`` included), and a child process, even one forked without
  ``exec`` and outliving it, never holds it. So a killed run leaves no lock behind, and the
  same command started again resumes at once. Within one process, stages already held are
  remembered, since record locks do not exclude their own process. The holder writes who it
  is (host, process id, start time, command) into the file, which a refused run quotes, and
  empties it on release. On a filesystem without record locks the stage is trained unlocked,
  with a warning. Use it as a context manager.

  Args:
    directory: the stage directory (created if missing).

  Raises:
    StageBusyError: on entry, naming the holder, if another run holds the lock.

  Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> with StageLock(directory):
    ...   with StageLock(directory):
    ...     pass
    Traceback (most recent call last):
    ...
    kdjax.trainer.workdir.StageBusyError: ... is being trained by another run (process ...
  """

  _held: dict[str, str] = {}  # lock path -> holder, for the locks this process holds

  def __init__(self, directory: str):
    self.directory = directory
    self.path = os.path.realpath(os.path.join(directory, LOCK_FILE))
    self._descriptor: int | None = None

  def __enter__(self) -> "StageLock":
    os.makedirs(self.directory, exist_ok=True)
    if self.path in StageLock._held:
      raise self._busy(StageLock._held[self.path])
    descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      holder = os.pread(descriptor, 4096, 0).decode(errors="replace").strip()
      os.close(descriptor)  # held by no lock of this process: closing it releases nothing
      if error.errno in (errno.EACCES, errno.EAGAIN):
        raise self._busy(holder or "which has not written its name yet") from None
      logging.warning("cannot lock %s (%s): a second run on this workdir would not be "
                      "detected; training the stage unlocked.", self.path, error)
      return self
    holder = (f"process {os.getpid()} on {socket.gethostname()}, since "
              f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}: "
              f"{' '.join(sys.argv)}")
    # Written through the locked descriptor only: closing any other descriptor of the file
    # would release a record lock.
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, holder.encode(), 0)
    self._descriptor = descriptor
    StageLock._held[self.path] = holder
    return self

  def __exit__(self, *exc) -> None:
    if self._descriptor is None:
      return
    del StageLock._held[self.path]
    descriptor, self._descriptor = self._descriptor, None
    try:
      os.ftruncate(descriptor, 0)  # names no holder once released
    finally:
      os.close(descriptor)  # releases the lock

  def _busy(self, holder: str) -> StageBusyError:
    return StageBusyError(
        f"{self.directory} is being trained by another run ({holder}). Wait for it to finish "
        f"(the same command then reuses the stage), or stop it; nothing was changed.")


def stage_dir(workdir: str, name: str) -> str:
  """The directory of stage ``name`` of the run in ``workdir``.

  Example:
    >>> stage_dir("/runs/cifar10", "kd")
    '/runs/cifar10/stages/kd'
  """
  return os.path.join(workdir, STAGES_DIR, name)


def export_dir(workdir: str, name: str, seed_index: int = 0, kind: str = "last") -> str:
  """Where stage ``name`` exports the ``kind`` ("last" or "best") network of a seed.

  Load it with ``kdjax.checkpoints.load_network`` (e.g. as a teacher outside the trainer).
  The default is the network later stages read unless told otherwise
  (``stage.earlier_export``): the last, not the one chosen on the test set.

  Example:
    >>> export_dir("/runs/cifar10", "kd", seed_index=2, kind="last")
    '/runs/cifar10/stages/kd/export/seed2/last'
  """
  return os.path.join(stage_dir(workdir, name), "export", f"seed{seed_index}", kind)


def teacher_source(config: ml_collections.ConfigDict, workdir: str, name: str,
                   teacher: str) -> tuple[str, str]:
  """``(model, export directory)`` of teacher ``teacher`` of stage ``name``.

  A stage of the run is read at the export ``config.stages[name].earlier_export`` names; a
  ``teacher_dirs`` entry at its directory.

  Example:
    >>> from kdjax import config as base
    >>> teacher_source(base.get_config(), "/runs/r", "kd", "teacher")
    ('resnet8', '/runs/r/stages/teacher/export/seed0/last')
  """
  if teacher in config.stages:
    return config.stages[teacher].model, export_dir(workdir, teacher, 0,
                                                    config.stages[name].earlier_export)
  return config.teacher_dirs[teacher].model, config.teacher_dirs[teacher].directory


def init_source(config: ml_collections.ConfigDict, workdir: str, name: str,
                seed_index: int) -> str:
  """The export that initializes seed ``seed_index`` of stage ``name`` (its ``init_from``).

  Example:
    >>> from kdjax import config as base
    >>> config = base.get_config()
    >>> config.stages.kd.update({"init_from": "teacher", "earlier_export": "best"})
    >>> init_source(config, "/runs/r", "kd", 2)
    '/runs/r/stages/teacher/export/seed2/best'
  """
  stage = config.stages[name]
  return export_dir(workdir, stage.init_from, seed_index, stage.earlier_export)


def stage_inputs(config: ml_collections.ConfigDict, workdir: str,
                 name: str) -> dict[str, Any]:
  """The parameter hashes of the networks stage ``name`` reads: teachers and ``init_from``.

  Read from the exports' provenance records (``load_network`` later checks that the files
  still hash to them), so that a retrained or replaced teacher does not reuse or resume
  the results of the old one.

  Raises:
    FileNotFoundError: naming the directory, if a teacher or initialisation is not exported.
    ValueError: naming the stage, the teacher and the file, if a teacher's provenance
      record is not JSON.

  Example:
    >>> from kdjax import config as base
    >>> stage_inputs(base.get_config(), "/runs/r", "teacher")  # trained from scratch
    {'teachers': {}}
  """
  stage = config.stages[name]
  inputs: dict[str, Any] = {"teachers": {}}
  for teacher in stage.teachers:
    model, directory = teacher_source(config, workdir, name, teacher)
    try:
      provenance = checkpoints.read_provenance(directory)
    except ValueError as error:
      raise ValueError(f"stage {name}: teacher {teacher!r}: {error}") from error
    inputs["teachers"][teacher] = {"model": model,
                                   "parameter_hash": provenance["parameter_hash"]}
  if stage.init_from:
    inputs["init_from"] = [
        checkpoints.read_provenance(init_source(config, workdir, name, i))["parameter_hash"]
        for i in range(stage.num_seeds or config.num_seeds)]
  return inputs


# The stage and dataset fields a stage's results depend on (the loss fields come from the
# method: ``Method.loss_fields``).
_STAGE_FIELDS = ("model", "method", "teachers", "init_from", "num_steps", "optimizer",
                 "mixup", "cache_teacher", "zero_mean_head")
_DATASET_FIELDS = ("name", "augmentation", "batch_size")


def stage_protocol(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """What stage ``name``'s results depend on in ``config``, resolved, as JSON.

  The stage's model, method, teachers, initialization, steps, optimizer and mixup; of its
  ``loss`` config only the fields its method reads (``Method.loss_fields``); of the dataset
  its name, augmentation and batch size. Fields that do not change the trained networks
  (the evaluation batch size, where the data lives, the input workers) are left out.

  Example:
    >>> from kdjax import config as base
    >>> protocol = stage_protocol(base.get_config(), "teacher")
    >>> sorted(protocol["stage"]["loss"]), protocol["dataset"]["name"]
    (['label_smoothing', 'logit_standardization'], 'digits')
  """
  stage = config.stages[name]
  fields = {key: stage[key] for key in _STAGE_FIELDS}
  fields["loss"] = {key: stage.loss[key] for key in methods.get(stage.method).loss_fields}
  protocol = {"stage": fields,
              "dataset": {key: config.dataset[key] for key in _DATASET_FIELDS}}
  return json.loads(json.dumps(protocol, default=_json_value))


def _json_value(value: Any) -> Any:
  """JSON for the config values ``json`` does not know: ConfigDicts and tuples."""
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else list(value)


def stage_record(config: ml_collections.ConfigDict, name: str,
                 inputs: dict[str, Any] | None = None) -> dict[str, Any]:
  """What a stage's results depend on, as JSON: compared with an existing stage's record.

  The record carries ``RECORD_FORMAT``, the stage's protocol (``stage_protocol``), the seed
  and the number of seeds. ``inputs`` (``stage_inputs``) is ``None`` for a finished stage
  whose teachers are gone: it is then not compared.

  Example:
    >>> from kdjax import config as base
    >>> record = stage_record(base.get_config(), "kd")
    >>> record["format"], record["stage"]["method"], "eval_batch_size" in record["dataset"]
    (3, 'kd', False)
  """
  record = {
      "format": RECORD_FORMAT,
      **stage_protocol(config, name),
      "seed": config.seed,
      "num_seeds": config.stages[name].num_seeds or config.num_seeds,
  }
  if inputs is not None:
    record[INPUTS] = inputs
  return record


def differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
  """Where two JSON trees differ: ``(dotted path, old value, new value)``, sorted by path.

  A key missing on one side compares as ``None``.

  Example:
    >>> differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4})
    [('a.c', 2, 3), ('d', None, 4)]
  """
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new)):
      out += differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
    return out
  return [] if old == new else [(prefix, old, new)]


def claim_stage_dir(directory: str, record: dict[str, Any], write: bool = True) -> None:
  """Creates a stage directory with its record, or checks that an existing one matches.

  Args:
    directory: the stage directory.
    record: the stage record (``stage_record``).
    write: whether this process writes the record (only the primary one, with several).

  Raises:
    ValueError: if the directory's record has another format (saying what to do), or
      lists the differing fields if it holds another config's run. Nothing is changed.

  Example:
    >>> import tempfile
    >>> from kdjax import config as base
    >>> directory = tempfile.mkdtemp()
    >>> record = stage_record(base.get_config(), "kd")
    >>> claim_stage_dir(directory, record)
    >>> claim_stage_dir(directory, record)  # the same config: claimed again
    >>> record["seed"] = 1
    >>> claim_stage_dir(directory, record)
    Traceback (most recent call last):
    ...
    ValueError: ... holds a run with a different config or different teachers (seed: 0 → 1)...
  """
  path = os.path.join(directory, STAGE_CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old.get("format") != RECORD_FORMAT:
      raise ValueError(
          f"{directory} holds a stage recorded in format {old.get('format', 1)}, and this "
          f"version of kdjax reads format {RECORD_FORMAT}. Use a new --workdir (pass the old "
          f"run's exports to it with config.teacher_dirs); nothing was changed.")
    if INPUTS not in record:  # the inputs are gone (a finished stage): nothing to compare
      old.pop(INPUTS, None)
    changed = differences(old, record)
    if changed:
      listed = "; ".join(f"{path}: {a!r} → {b!r}" for path, a, b in changed)
      raise ValueError(
          f"{directory} holds a run with a different config or different teachers "
          f"({listed}). Use a new --workdir, or restore the config and the "
          f"teachers; nothing was changed.")
    return
  os.makedirs(directory, exist_ok=True)
  if write:
    write_json(path, record, sort_keys=True)


def write_json(path: str, value: Any, sort_keys: bool = False) -> None:
  """Writes ``path`` atomically: a reader (or a killed writer) sees the old file or the new.

  Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "result.json")
    >>> write_json(path, {"accuracy": 0.5})
    >>> open(path).read()
    '{\\n  "accuracy": 0.5\\n}'
  """
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=2, sort_keys=sort_keys)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + ".tmp", path)


def rewind_metrics(directory: str, step: int) -> None:
  """Cuts ``metrics.jsonl`` back to the records of steps up to ``step``, where training resumes.

  A killed run may have logged steps past its last checkpoint, and cut its last line short;
  the resumed run logs those steps again, so the file ends as an uninterrupted run's would.

  Example:
    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> with open(os.path.join(directory, METRICS_FILE), "w") as f:
    ...   _ = f.write('{"step": 5}\\n{"step": 10}\\n{"step": 1')
    >>> rewind_metrics(directory, 5)
    >>> open(os.path.join(directory, METRICS_FILE)).read()
    '{"step": 5}\\n'
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


def check_writable(workdir: str) -> None:
  """Creates ``workdir`` and writes a scratch file in it (``os.access`` cannot see all cases).

  Raises:
    ValueError: naming the directory, if it cannot be created or written.

  Example:
    >>> check_writable("/proc/kdjax")
    Traceback (most recent call last):
    ...
    ValueError: workdir='/proc/kdjax' is not a writable directory: ...
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as error:
    raise ValueError(f"workdir={workdir!r} is not a writable directory: "
                     f"{error.strerror or error}.") from error
