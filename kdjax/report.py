r"""The results report: tables of methods from finished stages, set against the papers' numbers.

``python -m launch.report`` writes ``docs/results.md`` and one plot per table with it. A
table is data that lives with the config that trains its stages: the config file defines,
next to ``get_config``, a ``get_report`` taking the same optional argument and returning

.. code-block:: python

   {"title": "CIFAR-10, resnet8 students",
    "notes": "Markdown shown under the title (optional).",
    "rows": [{"stage": "kd",  # a stage of get_config()'s config.stages
              "label": "KD",  # the method's name in the table
              # the paper's number (%) with its source and protocol, or None for none
              "paper": 88.45, "source": "TAKD (Mirzadeh et al., 2020), Table 2",
              "protocol": "resnet110 → resnet8, 200 epochs, crop + flip, best epoch"},
             ...],
    # optional: the papers' claims this table tests (kdjax.claims says how they are judged)
    "claims": [{"claim": "DKP beats KD",  # the claim, as the paper makes it
                "kind": "beats",  # or "equals", which needs "tolerance" (points, per seed)
                "stages": ["dkp_uniform", "dkp_tail"],  # rows of this table; the best is used
                "baseline": "kd",  # a row of this table
                "source": "the DKP paper"},  # optional
               ...]}

Every other number comes from the workdirs that ran the config: a row's stage is read from
each workdir given for the table (``WORKDIR/stages/NAME``), its seeds pooled over them. A
row shows, as mean ± sample std over seeds (in %),

.. math::
   \bar a = \frac1S \sum_s a_s, \qquad
   \mathrm{std} = \sqrt{\frac{1}{S - 1} \sum_s (a_s - \bar a)^2},

the accuracy of the last network and of the best evaluation, the seeds found (``2 of 3``
when a seed is missing), epochs, augmentation, the accuracy of the stage's teachers as the
trainer measured it, the wall time (everything the runs of all the stage's seeds took,
summed over resumed runs: setup, train steps with their compilation, evaluations,
checkpoint saves and exports) and the hardware. A stage without ``result.json`` is shown
as running (with its last logged step) or not started, never with a number; so is a stage
whose ``stage_config.json`` differs from the table's config (a result of an earlier
version of it: other steps, method, a loss field the method reads or a dataset field, a
record of another format, or a teacher retrained since), shown as stale. Workdirs pooled
into one row must hold runs of one protocol (stage config, teachers and their accuracy,
evaluation steps); the report refuses others. Teachers given
by ``config.teacher_dirs`` (exports of another workdir) are described above the table from
their export's provenance record; their accuracy is shown once their stage's
``result.json`` is beside the export (``STAGE/export/seed<i>/<kind>``).

The report opens with what the tables say of the papers' claims: per claim and table, the
verdict (:mod:`kdjax.claims`) with the difference of the rows' mean last accuracies and its
standard error, or the rows it waits for.

The same workdirs give the same files, byte for byte: nothing depends on the date, the
machine or the order of directory listings.
"""

from collections.abc import Mapping, Sequence
import importlib.util
import json
import os
import re
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from kdjax import checkpoints, claims, summary, trainer
from kdjax.trainer import workdir as workdir_lib

REPORT_FILE = "results.md"
SPEC_FUNCTION = "get_report"
_ROW_FIELDS = {"stage", "label", "paper", "source", "protocol"}
_SPEC_FIELDS = {"title", "notes", "rows", "claims"}
_CLAIM_FIELDS = {"claim", "kind", "stages", "baseline", "tolerance", "source"}


class Table(NamedTuple):
  """One table of the report: its spec, the run config it reads, and where the runs are.

  Attributes:
    name: the config file and argument it came from (``configs/x.py`` or ``configs/x.py:a``).
    spec: the table's spec (see the module docstring), checked by :func:`check_spec`.
    config: the run config whose stages and ``teacher_dirs`` the rows read, in steps as
      ``kdjax.trainer.validate`` returns it (what the trainer recorded).
    workdirs: the directories of the runs of ``config``, as given.

  Example: see :func:`load_table`.
  """
  name: str
  spec: Mapping[str, Any]
  config: ml_collections.ConfigDict
  workdirs: tuple[str, ...]


def check_spec(spec: Mapping[str, Any], config: ml_collections.ConfigDict) -> None:
  """Checks a table's spec against the config whose stages it shows.

  Args:
    spec: ``{"title", "rows", ["notes"]}`` as the module docstring describes.
    config: the run config; every row's stage must be one of ``config.stages``.

  Raises:
    ValueError: naming the bad field or value.

  Example:
    >>> from kdjax import config as base
    >>> config = base.get_config()  # stages teacher and kd
    >>> check_spec({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": None}]},
    ...            config)
    >>> check_spec({"title": "T", "rows": [{"stage": "dkp", "label": "DKP"}]}, config)
    Traceback (most recent call last):
    ...
    ValueError: report row 0: stage='dkp' is not a stage of the config (teacher, kd).
  """
  unknown = set(spec) - _SPEC_FIELDS
  if unknown:
    raise ValueError(f"report spec: unknown fields {sorted(unknown)}; valid: "
                     f"{sorted(_SPEC_FIELDS)}.")
  if not isinstance(spec.get("title"), str) or not spec["title"]:
    raise ValueError(f"report spec: title={spec.get('title')!r} must be a non-empty string.")
  rows = spec.get("rows")
  if not rows:
    raise ValueError(f"report spec {spec['title']!r}: rows={rows!r} must list at least one row.")
  labels = set()
  for i, row in enumerate(rows):
    unknown = set(row) - _ROW_FIELDS
    if unknown:
      raise ValueError(f"report row {i}: unknown fields {sorted(unknown)}; valid: "
                       f"{sorted(_ROW_FIELDS)}.")
    stage = row.get("stage")
    if stage not in config.stages:
      raise ValueError(f"report row {i}: {stage=} is not a stage of the config "
                       f"({', '.join(config.stages)}).")
    label = row.get("label")
    if not isinstance(label, str) or not label or label in labels:
      raise ValueError(f"report row {i}: {label=} must be a non-empty string, unique in "
                       f"its table.")
    labels.add(label)
    paper = row.get("paper")
    if paper is not None and (isinstance(paper, bool) or not isinstance(paper, (int, float))
                              or not 1 < paper <= 100):
      raise ValueError(f"report row {i} ({label}): {paper=} must be an accuracy in %, "
                       f"above 1 and at most 100 (88.45, not 0.8845), or None.")
    if paper is not None and not row.get("source"):
      raise ValueError(f"report row {i} ({label}): the paper's number {paper} needs its "
                       f"source.")
  shown = {row["stage"] for row in rows}
  for i, claim in enumerate(spec.get("claims", ())):
    unknown = set(claim) - _CLAIM_FIELDS
    if unknown:
      raise ValueError(f"report claim {i}: unknown fields {sorted(unknown)}; valid: "
                       f"{sorted(_CLAIM_FIELDS)}.")
    text = claim.get("claim")
    if not isinstance(text, str) or not text:
      raise ValueError(f"report claim {i}: claim={text!r} must be a non-empty string.")
    claims.check_kind(claim.get("kind"))
    stages, baseline = claim.get("stages"), claim.get("baseline")
    if (isinstance(stages, str) or not isinstance(stages, Sequence) or not stages
        or claim["kind"] == "equals" and len(stages) != 1):
      raise ValueError(f"report claim {i} ({text}): {stages=} must list the rows compared "
                       f"(exactly one for an equality).")
    for stage in [*stages, baseline]:
      if not isinstance(stage, str) or stage not in shown:
        raise ValueError(f"report claim {i} ({text}): {stage=} is not a row of the table.")
    if baseline in stages:
      raise ValueError(f"report claim {i} ({text}): {baseline=} is also among its stages; "
                       f"a row is not compared with itself.")
    tolerance = claim.get("tolerance")
    if (claim["kind"] == "equals") != (tolerance is not None) or tolerance is not None and (
        isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
        or not tolerance > 0):
      raise ValueError(f"report claim {i} ({text}): {tolerance=} must be a positive number "
                       f"of points for an equality, and absent otherwise.")


def load_table(config_file: str, workdirs: Sequence[str]) -> Table:
  """Loads a table from a config file's ``get_config`` and ``get_report``.

  Args:
    config_file: ``PATH`` or ``PATH:ARG``; with ``ARG``, both functions are called with it
      (as ``launch.train --config=PATH:ARG`` calls ``get_config``).
    workdirs: the run directories of that config (at least one).

  Returns:
    The checked :class:`Table`, its config in steps (``kdjax.trainer.validate``), as the
    trainer ran and recorded it.

  Raises:
    FileNotFoundError: if the config file does not exist.
    ValueError: if the file has no ``get_report``, no workdir is given, the config is
      invalid or the spec is bad.

  Example:
    >>> table = load_table("configs/results_cifar10_teacher.py:cifar100", ["workdir/t"])
    >>> table.spec["rows"][0]["stage"], table.config.dataset.name
    ('teacher', 'cifar100')
  """
  path, _, arg = config_file.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"report: no config file {path!r}.")
  if not workdirs:
    raise ValueError(f"report: no workdir given for {config_file!r}.")
  module_spec = importlib.util.spec_from_file_location(
      "kdjax_report_" + re.sub(r"\W", "_", path), path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, SPEC_FUNCTION):
    raise ValueError(f"report: {path!r} defines no {SPEC_FUNCTION}() giving its table.")
  args = (arg,) if arg else ()
  config = trainer.validate(module.get_config(*args))
  spec = getattr(module, SPEC_FUNCTION)(*args)
  spec = spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else dict(spec)
  check_spec(spec, config)
  return Table(config_file, spec, config, tuple(workdirs))


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


def _mean_std(values: Sequence[float]) -> str:
  values = 100.0 * np.asarray(values, np.float64)
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def _duration(seconds: float) -> str:
  if seconds < 120:
    return f"{seconds:.0f} s"
  if seconds < 7200:
    return f"{seconds / 60:.0f} min"
  return f"{seconds / 3600:.1f} h"


def _hardware(records: Sequence[Mapping[str, Any]]) -> str:
  described = []
  for h in records:
    processes = f" in {h['process_count']} processes" if h["process_count"] > 1 else ""
    text = (f"{h['backend']}: {h['device_count']}× {h['device_kind']}{processes}, "
            f"{h['host_cpu_count']} host CPUs")
    if text not in described:
      described.append(text)
  return "; ".join(described)


def _cost(results: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
  """(wall time, hardware) of the runs behind ``results``: every ``*_seconds`` of their cost."""
  costs = [r["cost"] for r in results]
  seconds = sum(v for c in costs for k, v in c.items() if k.endswith("_seconds"))
  return _duration(seconds), _hardware([h for c in costs for h in c["hardware"]])


def _protocol(result: Mapping[str, Any]) -> tuple[str, str]:
  """(epochs, augmentation) of a finished stage, from its result."""
  epochs = f"{result['epochs']:.1f}"
  augmentation = result["dataset"]["augmentation"]
  if result["mixup"]:
    augmentation += f" + mixup ({result['mixup']})"
  return epochs, augmentation


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


def _teacher_line(name: str, directory: str) -> str:
  """Describes a ``config.teacher_dirs`` teacher from its export and its stage's result.

  An export lies in its stage's directory (``STAGE/export/seed<i>/<kind>``; a committed
  teacher is a copy of that stage directory). Its accuracy is shown only once the stage's
  ``result.json`` exists: the ``best`` export is rewritten while the stage still trains.
  """
  try:
    provenance = checkpoints.read_provenance(directory)
  except FileNotFoundError:
    return f"- Teacher `{name}`: no export in `{directory}` yet."
  stage_directory = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.normpath(directory))))
  stage = provenance.get("stage", "?")
  text = (f"- Teacher `{name}`: {provenance['model']}, exported by stage `{stage}` (seed "
          f"{provenance.get('seed', '?')}, step {provenance.get('step', '?')}) in "
          f"`{directory}`")
  result_path = os.path.join(stage_directory, trainer.RESULT_FILE)
  if not os.path.exists(result_path):
    return (text + f"; stage `{stage}` is not finished (no {trainer.RESULT_FILE} in "
            f"`{stage_directory}`), so no accuracy is shown.")
  result = _read_json(result_path)
  epochs, augmentation = _protocol(result)
  wall, hardware = _cost([result])
  best = max(range(len(result["best_accuracy"])), key=lambda i: result["best_accuracy"][i])
  return (text + f": **{100 * provenance['accuracy']:.2f} %** test accuracy; its stage's "
          f"last {_mean_std(result['last_accuracy'])} %, best "
          f"{100 * result['best_accuracy'][best]:.2f} % (step {result['best_step'][best]}); "
          f"{epochs} epochs, augmentation {augmentation}; {wall} on {hardware}.")


def table_markdown(table: Table) -> tuple[str, list[dict[str, Any]]]:
  """The Markdown section of ``table`` and the records its plot draws.

  Args:
    table: a loaded table.

  Returns:
    ``(markdown, records)``: the section (title, notes, teachers, table, sources), and the
    pooled records of its finished rows, labelled with the rows' labels.

  Example:
    >>> import tempfile
    >>> table = load_table("configs/results_cifar10_teacher.py", [tempfile.mkdtemp()])
    >>> text, records = table_markdown(table)
    >>> print(text.splitlines()[0])
    ## Teacher of the CIFAR-10 tables
    >>> print(next(line for line in text.splitlines() if line.startswith("| resnet20")))
    | resnet20 (scratch) | 91.25 [1] | 164 epochs ... | 0 of 1 (not started) | — | — | ...
    >>> records  # nothing finished: nothing to plot
    []
  """
  spec, rows = table.spec, table_rows(table)
  lines = [f"## {spec['title']}", ""]
  if spec.get("notes"):
    lines += [spec["notes"].strip(), ""]
  workdirs = ", ".join(f"`{w}`" for w in table.workdirs)
  lines += [f"Config `{table.name}`, results read from {workdirs}.", ""]
  teacher_dirs = table.config.teacher_dirs
  for name, entry in teacher_dirs.items():
    lines.append(_teacher_line(name, entry if isinstance(entry, str) else entry.directory))
  if len(teacher_dirs):
    lines.append("")
  sources: list[str] = []
  lines += ["| method | paper (%) | paper's protocol | seeds | last (%) | best (%) | epochs | "
            "augmentation | teacher (%) | wall time | hardware |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
  plotted = []
  for row in rows:
    paper = "—"
    if row["paper"] is not None:
      if row["source"] not in sources:
        sources.append(row["source"])
      paper = f"{row['paper']:.2f} [{sources.index(row['source']) + 1}]"
    cells = [row["label"], paper, row["protocol"] or "—"]
    unfinished = "; ".join(
        [f"running in `{w}`: step {step} of {num_steps}"
         for w, step, num_steps in row["running"]]
        + [f"stale (config changed: {', '.join(changes)}) in `{w}`"
           for w, changes in row["stale"]])
    if row["status"] != "finished":
      status = unfinished or "not started"
      cells += [f"0 of {row['expected_seeds']} ({status})"] + ["—"] * 7
    else:
      result = row["result"]
      found = len(result["seeds"])
      seeds = (str(found) if found >= row["expected_seeds"] else
               f"{found} of {row['expected_seeds']}")
      if unfinished:
        seeds += f" ({unfinished})"
      epochs, augmentation = _protocol(result)
      wall, hardware = _cost([r["result"] for r in row["records"]])
      teachers = result["teacher_accuracy"]
      teacher = ("—" if not teachers else f"{100 * next(iter(teachers.values())):.2f}"
                 if len(teachers) == 1 else
                 ", ".join(f"{k} {100 * v:.2f}" for k, v in teachers.items()))
      cells += [seeds, _mean_std(result["last_accuracy"]), _mean_std(result["best_accuracy"]),
                epochs, augmentation, teacher, wall, hardware]
      plotted.append({**result, "label": row["label"]})
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  for i, source in enumerate(sources):
    lines.append(f"[{i + 1}] {source}  ")
  if sources:
    lines.append("")
  return "\n".join(lines), plotted


def _claim_line(claim: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]],
                title: str) -> str:
  """One claim judged on one table's rows, or the rows it waits for (unfinished seeds)."""
  text = f"  - {title}: "
  stages = [*claim["stages"], claim["baseline"]]
  waiting = [rows[s]["label"] for s in stages
             if rows[s]["status"] != "finished" or rows[s]["running"]
             or len(rows[s]["result"]["seeds"]) < rows[s]["expected_seeds"]]
  if waiting:
    return text + f"waiting for every seed of {', '.join(waiting)}."
  last = {s: rows[s]["result"]["last_accuracy"] for s in stages}
  baseline = rows[claim["baseline"]]
  try:
    if claim["kind"] == "equals":
      (name,) = claim["stages"]
      comparison = claims.equals(
          name, dict(zip(rows[name]["result"]["seeds"], last[name], strict=True)),
          dict(zip(baseline["result"]["seeds"], last[claim["baseline"]], strict=True)),
          claim["tolerance"])
    else:
      comparison = claims.beats({s: last[s] for s in claim["stages"]},
                                last[claim["baseline"]])
  except ValueError as error:
    return text + f"not judged: {error}"
  candidate = rows[comparison.candidate]
  text += (f"**{comparison.verdict}**. {candidate['label']} "
           f"{_mean_std(last[comparison.candidate])} % against {baseline['label']} "
           f"{_mean_std(last[claim['baseline']])} % (last network, "
           f"{len(last[comparison.candidate])} and {len(last[claim['baseline']])} seeds): ")
  if claim["kind"] == "equals":
    return text + (f"the seeds differ by at most {comparison.difference:.2f} points, "
                   f"against a tolerance of {comparison.threshold:g}.")
  best = {s: 100 * np.mean(rows[s]["result"]["best_accuracy"])
          for s in (comparison.candidate, claim["baseline"])}
  text += (f"{comparison.difference:+.2f} points against a threshold of ±"
           f"{comparison.threshold:.2f}; best epochs "
           f"{best[comparison.candidate] - best[claim['baseline']]:+.2f} points")
  if len(claim["stages"]) > 1:
    text += (f". {candidate['label']} has the highest mean of the family's "
             f"{len(claim['stages'])} rows ("
             f"{', '.join(rows[s]['label'] for s in claim['stages'])}), a choice the "
             f"threshold corrects for")
  return text + "."


def claims_markdown(tables: Sequence[Table]) -> str:
  """The report's opening section: the papers' claims, judged on each table that tests them.

  Args:
    tables: the loaded tables; those whose spec has ``claims`` contribute one line per claim.

  Returns:
    The Markdown section, or ``""`` when no table tests a claim.

  Example:
    >>> import tempfile
    >>> table = load_table("configs/results_cifar10.py", [tempfile.mkdtemp()])
    >>> print("\\n".join(claims_markdown([table]).splitlines()[4:6]))
    - **KD beats training from scratch** (Hinton et al., 2015)
      - CIFAR-10, resnet8 students of a resnet20 teacher: waiting for every seed of KD, ...
  """
  judged: dict[str, list[str]] = {}  # a claim's heading → its line per table, in order
  for table in tables:
    if table.spec.get("claims"):
      rows = {row["stage"]: row for row in table_rows(table)}
      for claim in table.spec["claims"]:
        source = f" ({claim['source']})" if claim.get("source") else ""
        judged.setdefault(f"- **{claim['claim']}**{source}", []).append(
            _claim_line(claim, rows, table.spec["title"]))
  if not judged:
    return ""
  lines = [line for heading, found in judged.items() for line in [heading, *found]]
  return "\n".join([
      "## What the tables say", "",
      "Each claim is judged on the last network of every seed, the accuracy that involves "
      "no selection on the test set. *beats*: Welch's two-sided t-test at the 5 % level; it "
      "*holds* when the difference of the means exceeds the threshold (the t quantile "
      "times the standard error; for a family of rows, the best row at a level divided by "
      "the family's size), is *reversed* beyond it the other way, and is *not resolved* in "
      "between: at three seeds a gap must exceed about 2.8 standard errors. *equals*: every "
      "seed of the two stages within the tolerance. The verdicts are about kdjax's short "
      "CPU protocol (see each table's notes), not the papers' schedules.", "",
      *lines, ""])


def plot_file(table: Table) -> str:
  """The file name of a table's plot: from its config file and argument.

  Example:
    >>> plot_file(Table("configs/results_cifar10_teacher.py:cifar100", {}, None, ()))
    'results_cifar10_teacher_cifar100.png'
  """
  path, _, arg = table.name.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  return re.sub(r"[^\w.-]", "_", f"{stem}_{arg}" if arg else stem) + ".png"


def write(tables: Sequence[Table], output_dir: str, command: str) -> list[str]:
  """Writes ``results.md`` and each table's plot into ``output_dir``; returns their paths.

  Args:
    tables: the tables, in the order they appear.
    output_dir: the directory (``docs``); created if missing.
    command: the command that regenerates the report, quoted at its top.

  Returns:
    The paths written: ``results.md`` first, then one PNG per table with a finished row.

  Raises:
    ValueError: if two tables would share a plot file, or two workdirs hold one seed.

  Example:
    >>> import tempfile
    >>> output_dir = tempfile.mkdtemp()
    >>> table = load_table("configs/results_cifar10_teacher.py", [tempfile.mkdtemp()])
    >>> [os.path.basename(p) for p in write([table], output_dir, "python -m launch.report")]
    ['results.md']
  """
  os.makedirs(output_dir, exist_ok=True)
  names = [plot_file(t) for t in tables]
  if len(set(names)) < len(names):
    raise ValueError(f"report: two tables share the plot file of {names}; give each "
                     f"config file once.")
  sections = [
      "# Results", "",
      f"Generated from the runs' `result.json` files by `{command}`; edit the configs' "
      f"`{SPEC_FUNCTION}()` and rerun it, never this file.", "",
      "Test accuracy in %, mean ± sample std over seeds. *last*: the network at the end of "
      "training; *best*: the best evaluation of the run (what the papers report, a "
      "selection on the test set). *teacher*: the accuracy of the stage's teachers, "
      "measured before it trained. *wall time*: everything a stage's runs took for all its "
      "seeds together, summed over resumed runs: setup (teacher checks and logit cache), "
      "train steps with their compilation, evaluations, checkpoint saves and exports. A "
      "stage without a result is shown as running or not started, and one whose recorded "
      "config differs from its config's as stale, never with a number.", ""]
  paths = [os.path.join(output_dir, REPORT_FILE)]
  said = claims_markdown(tables)
  if said:
    sections.append(said)
  for table, name in zip(tables, names, strict=True):
    text, plotted = table_markdown(table)
    sections.append(text)
    if plotted:
      num_classes = next((r["dataset"]["num_classes"] for r in plotted if "dataset" in r),
                         None)
      path = os.path.join(output_dir, name)
      summary.plot(plotted, path, title=table.spec["title"], num_classes=num_classes)
      paths.append(path)
      sections += [f"![{table.spec['title']}]({name})", ""]
  with open(paths[0], "w") as f:
    f.write("\n".join(sections).rstrip("\n") + "\n")
  return paths
