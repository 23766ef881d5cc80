"""The report's files: ``results.md`` (claims, then one section per table) and the plots."""

from collections.abc import Sequence
import os
import re

from kdjax import summary
from kdjax.report.spec import SPEC_FUNCTION, Table
from kdjax.report.tables import table_markdown
from kdjax.report.verdicts import claims_markdown

REPORT_FILE = "results.md"


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
    >>> from kdjax.report import load_table
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
