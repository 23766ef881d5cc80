"""A results table's spec: what ``get_report`` returns, checked against its config, loaded.

A table lives with the config that trains its stages (see :mod:`kdjax.report`): its rows
name stages of that config, the papers' numbers with their sources, and the claims the
table tests. :func:`load_table` reads both from a config file; :func:`check_spec` refuses
a bad spec naming the value.
"""

from collections.abc import Mapping, Sequence
import importlib.util
import os
import re
from typing import Any, NamedTuple

import ml_collections

from kdjax import claims, trainer

SPEC_FUNCTION = "get_report"
_ROW_FIELDS = {"stage", "label", "paper", "source", "protocol", "panels"}
_SPEC_FIELDS = {"title", "notes", "rows", "claims"}
_CLAIM_FIELDS = {"claim", "kind", "stages", "baseline", "tolerance", "source"}


class Table(NamedTuple):
  """One table of the report: its spec, the run config it reads, and where the runs are.

  Attributes:
    name: the config file and argument it came from (``configs/x.py`` or ``configs/x.py:a``).
    spec: the table's spec (see :mod:`kdjax.report`), checked by :func:`check_spec`.
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
    spec: ``{"title", "rows", ["notes"], ["claims"]}`` as :mod:`kdjax.report` describes.
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
  labels: set[str] = set()
  for i, row in enumerate(rows):
    _check_row(i, row, config, labels)
    labels.add(row["label"])
  shown = {row["stage"] for row in rows}
  for i, claim in enumerate(spec.get("claims", ())):
    _check_claim(i, claim, shown)


def _check_row(i: int, row: Mapping[str, Any], config: ml_collections.ConfigDict,
               labels: set[str]) -> None:
  """Checks row ``i`` of a spec: its fields, stage, label (not among ``labels``), paper."""
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
  paper = row.get("paper")
  if paper is not None and (isinstance(paper, bool) or not isinstance(paper, (int, float))
                            or not 1 < paper <= 100):
    raise ValueError(f"report row {i} ({label}): {paper=} must be an accuracy in %, "
                     f"above 1 and at most 100 (88.45, not 0.8845), or None.")
  if paper is not None and not row.get("source"):
    raise ValueError(f"report row {i} ({label}): the paper's number {paper} needs its "
                     f"source.")
  panels = row.get("panels")
  if panels is not None and (isinstance(panels, str) or not isinstance(panels, Sequence)
                             or not panels
                             or not all(isinstance(p, str) and p for p in panels)):
    raise ValueError(f"report row {i} ({label}): {panels=} must be a non-empty list of "
                     f"panel titles (non-empty strings).")


def _check_claim(i: int, claim: Mapping[str, Any], shown: set[str]) -> None:
  """Checks claim ``i`` of a spec: its fields, kind, rows (among ``shown``), tolerance."""
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
