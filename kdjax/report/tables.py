"""A table's Markdown section: its rows' accuracies, protocol, teachers, cost and sources."""

from collections.abc import Mapping, Sequence
import json
import os
from typing import Any

from kdjax import checkpoints, trainer
from kdjax.report.runs import table_rows
from kdjax.report.spec import Table
from kdjax.summary import mean_std


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
  with open(result_path) as f:
    result = json.load(f)
  epochs, augmentation = _protocol(result)
  wall, hardware = _cost([result])
  best = max(range(len(result["best_accuracy"])), key=lambda i: result["best_accuracy"][i])
  return (text + f": **{100 * provenance['accuracy']:.2f} %** test accuracy; its stage's "
          f"last {mean_std(result['last_accuracy'])} %, best "
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
    >>> from kdjax.report import load_table
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
      cells += [seeds, mean_std(result["last_accuracy"]), mean_std(result["best_accuracy"]),
                epochs, augmentation, teacher, wall, hardware]
      plotted.append({**result, "label": row["label"], "panels": row.get("panels")})
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  for i, source in enumerate(sources):
    lines.append(f"[{i + 1}] {source}  ")
  if sources:
    lines.append("")
  return "\n".join(lines), plotted
