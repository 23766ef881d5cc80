"""The report's opening section: the papers' claims, judged on the tables that test them."""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kdjax import claims
from kdjax.report.runs import table_rows
from kdjax.report.spec import Table
from kdjax.summary import mean_std


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
           f"{mean_std(last[comparison.candidate])} % against {baseline['label']} "
           f"{mean_std(last[claim['baseline']])} % (last network, "
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
    >>> from kdjax.report import load_table
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
