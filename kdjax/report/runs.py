"""What the workdirs of a table hold of its stages: finished, running or stale runs, pooled.

A row's stage is read from every workdir given for its table (``WORKDIR/stages/NAME``):
finished runs of one protocol are pooled over seeds; a run whose stage record differs from
the table's config (another version of it, or teachers retrained since) is stale.
"""

from collections.abc import Mapping, Sequence
import json
import os
from typing import Any

import ml_collections
import numpy as np

from kdjax import checkpoints, trainer
from kdjax.report.spec import Table
from kdjax.trainer import workdir as workdir_lib


def _read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def _changed_paths(old: Any, new: Any) -> list[str]:
  """The dotted paths at which two JSON values differ."""
  return [path for path, _, _ in workdir_lib.differences(old, new)]


def _protocol_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """What a stage record says of the protocol (``trainer.workdir.stage_protocol``).

  The seeds do not change the protocol: workdirs that ran other seeds of one config are
  pooled.
  """
  return {"stage": record.get("stage"), "dataset": record.get("dataset")}


def _teacher_hashes(record: Mapping[str, Any]) -> dict[str, Any]:
  """The recorded parameter hash of each teacher a stage read (empty for old records)."""
  teachers = (record.get("inputs") or {}).get("teachers") or {}
  return {name: entry.get("parameter_hash") for name, entry in teachers.items()}


def _current_hash(directory: str) -> str | None:
  """The parameter hash of the export in ``directory``; ``None`` where there is none."""
  try:
    return checkpoints.read_provenance(directory)["parameter_hash"]
  except FileNotFoundError:
    return None


def _config_changes(record: Mapping[str, Any], config: ml_collections.ConfigDict,
                    workdir: str, name: str) -> list[str]:
  """Where a stage record departs from ``config``: fields, and networks retrained since.

  The stage's config and dataset are compared with the config's, as the trainer compares
  them before it reuses a stage; the parameter hashes of the teachers and initializations
  the stage read are compared with those of the networks exported now, where both exist.
  """
  if record.get("format") != workdir_lib.RECORD_FORMAT:
    return [f"record format {record.get('format', 1)}"]
  changes = _changed_paths(_protocol_record(record), workdir_lib.stage_protocol(config, name))
  stage = config.stages[name]
  for teacher, recorded in _teacher_hashes(record).items():
    directory = (workdir_lib.teacher_source(config, workdir, name, teacher)[1]
                 if teacher in config.stages or teacher in config.teacher_dirs else None)
    current = directory and _current_hash(directory)
    if current is not None and current != recorded:
      changes.append(f"teacher {teacher}")
  inits = (record.get("inputs") or {}).get("init_from") or []
  if stage.init_from and any(
      _current_hash(workdir_lib.init_source(config, workdir, name, i)) not in (None, recorded)
      for i, recorded in enumerate(inits)):
    changes.append(f"init_from {stage.init_from}")
  return changes


def _stage_runs(workdir: str, config: ml_collections.ConfigDict,
                name: str) -> dict[str, Any]:
  """What ``workdir`` holds of stage ``name``: its result, how far it got, or that its
  record belongs to another version of ``config`` (stale)."""
  directory = trainer.stage_dir(workdir, name)
  result_path = os.path.join(directory, trainer.RESULT_FILE)
  config_path = os.path.join(directory, trainer.STAGE_CONFIG_FILE)
  if not os.path.exists(config_path):
    if os.path.exists(result_path):  # a result that cannot be told apart from an older one
      return {"status": "stale", "changes": [trainer.STAGE_CONFIG_FILE + " missing"]}
    return {"status": "not started"}
  record = _read_json(config_path)
  changes = _config_changes(record, config, workdir, name)
  if changes:
    return {"status": "stale", "changes": changes}
  if os.path.exists(result_path):
    return {"status": "finished", "result": _read_json(result_path), "record": record,
            "workdir": workdir}
  step = 0
  metrics = os.path.join(directory, "metrics.jsonl")
  if os.path.exists(metrics):
    with open(metrics) as f:
      lines = [line for line in f if line.strip()]
    if lines:
      step = json.loads(lines[-1])["step"]
  return {"status": "running", "step": step, "num_steps": record["stage"]["num_steps"]}


# What a finished result says of how it was obtained: equal in every record pooled.
_POOLED_PROTOCOL = ("model", "method", "teachers", "num_steps", "epochs", "init_from", "mixup",
                    "dataset", "teacher_accuracy")


def _pool(finished: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
  """One record of the seeds of stage ``name`` found in several workdirs.

  Args:
    finished: the finished runs (``_stage_runs``) of the stage, one per workdir.
    name: the stage's name, for the errors.

  Raises:
    ValueError: naming the workdirs, if two hold the same seed, or runs of another protocol
      (stage config, dataset, teachers and their accuracy, evaluation steps).
  """
  seeds = [s for r in finished for s in r["result"]["seeds"]]
  if len(set(seeds)) < len(seeds):
    raise ValueError(f"report: stage {name!r} has seeds {seeds} over its workdirs; each "
                     f"seed may come from one workdir only.")
  first = finished[0]
  for other in finished[1:]:
    differences = _changed_paths(_protocol_record(first["record"]),
                                 _protocol_record(other["record"]))
    differences += [f"teacher {t}" for t in _changed_paths(_teacher_hashes(first["record"]),
                                                           _teacher_hashes(other["record"]))]
    differences += [f"result.{key}" for key in _POOLED_PROTOCOL
                    if first["result"].get(key) != other["result"].get(key)]
    if first["result"]["curve"]["step"] != other["result"]["curve"]["step"]:
      differences.append("result.curve.step")
    if differences:
      raise ValueError(
          f"report: stage {name!r} ran differently in {first['workdir']!r} and "
          f"{other['workdir']!r} ({', '.join(sorted(set(differences)))}); their seeds cannot "
          f"be pooled. Give the table the workdirs of one protocol.")
  results = [r["result"] for r in finished]
  pooled = dict(results[0])
  for key in ("seeds", "last_accuracy", "best_accuracy"):
    pooled[key] = [v for r in results for v in r[key]]
  pooled["curve"] = {"step": results[0]["curve"]["step"], "accuracy": [
      [a for r in results for a in np.reshape(r["curve"]["accuracy"][e], -1).tolist()]
      for e in range(len(results[0]["curve"]["step"]))]}
  return pooled


def table_rows(table: Table) -> list[dict[str, Any]]:
  """The rows of ``table``: each spec row with what its workdirs hold of its stage.

  Args:
    table: a loaded table.

  Returns:
    Per row, the spec's fields plus ``status`` (``"finished"`` when at least one workdir
    holds a finished run of the stage, else ``"running"``, ``"stale"`` or
    ``"not started"``), ``expected_seeds``, ``running`` (``[(workdir, step, num_steps)]``
    of unfinished runs), ``stale`` (``[(workdir, changes)]`` of runs of another version of
    the config: its stage or dataset fields that differ, teachers or initializations
    retrained since) and, when finished, ``result`` (the pooled record) and ``records``
    (the finished runs).

  Raises:
    ValueError: if two workdirs hold the same seed of a stage, or runs of the stage that
      differ in protocol, teachers or evaluation steps.

  Example:
    >>> import json, tempfile
    >>> from kdjax.report import load_table
    >>> workdir = tempfile.mkdtemp()
    >>> table = load_table("configs/results_cifar10_teacher.py", [workdir])
    >>> [row["status"] for row in table_rows(table)]
    ['not started']
    >>> os.makedirs(trainer.stage_dir(workdir, "teacher"))  # started, nothing logged yet
    >>> record = trainer.workdir.stage_record(table.config, "teacher")
    >>> def write_record():
    ...   with open(os.path.join(trainer.stage_dir(workdir, "teacher"),
    ...                          trainer.STAGE_CONFIG_FILE), "w") as f:
    ...     json.dump(record, f)
    >>> write_record()
    >>> [(row["status"], row["running"][0][1:]) for row in table_rows(table)]
    [('running', (0, 7800))]
    >>> record["stage"]["num_steps"] = 3900  # run by an earlier version of the config
    >>> write_record()
    >>> [(row["status"], row["stale"][0][1]) for row in table_rows(table)]
    [('stale', ['stage.num_steps'])]
  """
  rows = []
  for spec_row in table.spec["rows"]:
    name = spec_row["stage"]
    stage = table.config.stages[name]
    runs = [(w, _stage_runs(w, table.config, name)) for w in table.workdirs]
    finished = [run for _, run in runs if run["status"] == "finished"]
    running = [(w, run["step"], run["num_steps"]) for w, run in runs
               if run["status"] == "running"]
    stale = [(w, run["changes"]) for w, run in runs if run["status"] == "stale"]
    row = {"paper": None, "source": "", "protocol": "", **spec_row,
           "expected_seeds": stage.num_seeds or table.config.num_seeds, "running": running,
           "stale": stale}
    if finished:
      row.update(status="finished", result=_pool(finished, name), records=finished)
    else:
      row["status"] = "running" if running else "stale" if stale else "not started"
    rows.append(row)
  return rows
