"""The end-of-run report: a table of methods × last/best accuracy, and accuracy curves."""

from collections.abc import Sequence
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

SUMMARY_FILE = "summary.md"
PLOT_FILE = "accuracy.png"


def _mean_std(values: Sequence[float]) -> str:
  values = 100.0 * np.asarray(values, np.float64)
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def table(results: Sequence[dict[str, Any]]) -> str:
  r"""A Markdown table, one row per stage: accuracy in %, mean ± std over seeds.

  Use it to compare the stages of a run at a glance (:func:`write` puts it in
  ``summary.md``). Over the :math:`S` seeds' accuracies :math:`a_s` (a single seed shows
  the mean alone):

  .. math::
     \bar a = \frac1S \sum_s a_s, \qquad
     \mathrm{std} = \sqrt{\frac{1}{S - 1} \sum_s (a_s - \bar a)^2}

  Args:
    results: per-stage records with ``stage``, ``model``, ``method``, ``teachers`` (names,
      possibly none), ``last_accuracy`` and ``best_accuracy`` (lists ``[S]`` over seeds,
      in [0, 1]).

  Returns:
    The Markdown table, ending with a newline.

  Raises:
    KeyError: naming a field missing from a record.

  Example:
    >>> print(table([{"stage": "student", "model": "mlp_tiny", "method": "kd",
    ...               "teachers": ["teacher"], "last_accuracy": [0.90, 0.92],
    ...               "best_accuracy": [0.91, 0.93]}]))
    | stage | model | method | teachers | seeds | last acc. (%) | best acc. (%) |
    |---|---|---|---|---|---|---|
    | student | mlp_tiny | kd | teacher | 2 | 91.00 ± 1.41 | 92.00 ± 1.41 |
  """
  lines = ["| stage | model | method | teachers | seeds | last acc. (%) | best acc. (%) |",
           "|---|---|---|---|---|---|---|"]
  for r in results:
    teachers = ", ".join(r["teachers"]) or "—"
    lines.append(f"| {r['stage']} | {r['model']} | {r['method']} | {teachers} | "
                 f"{len(r['last_accuracy'])} | {_mean_std(r['last_accuracy'])} | "
                 f"{_mean_std(r['best_accuracy'])} |")
  return "\n".join(lines) + "\n"


def plot(results: Sequence[dict[str, Any]], path: str) -> None:
  """Plots test accuracy against step for every stage (mean over seeds, shaded ± std).

  Use it for the curves of a run (:func:`write` saves them as ``accuracy.png``); one line
  per stage, labelled ``"<stage> (<method>)"``.

  Args:
    results: per-stage records with ``stage``, ``method`` and ``curve``:
      ``{"step": [E], "accuracy": [E] or [E, S]}``, the accuracy in [0, 1] of ``S`` seeds
      at ``E`` evaluations.
    path: the image file to write; its extension picks the format (e.g. ``.png``).

  Raises:
    KeyError: naming a field missing from a record.
    ValueError: if a curve's accuracies do not come in one row per step.

  Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "accuracy.png")
    >>> plot([{"stage": "student", "method": "kd",
    ...        "curve": {"step": [100, 200], "accuracy": [[0.8, 0.82], [0.9, 0.92]]}}], path)
    >>> plt.imread(path).shape  # 7 × 4.5 inches at 120 dpi, RGBA
    (540, 840, 4)
  """
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  for r in results:
    steps = np.asarray(r["curve"]["step"])
    accuracy = 100.0 * np.asarray(r["curve"]["accuracy"], np.float64).reshape(len(steps), -1)
    mean = accuracy.mean(axis=1)
    (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=f"{r['stage']} ({r['method']})")
    if accuracy.shape[1] > 1:
      std = accuracy.std(axis=1, ddof=1)
      ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  ax.set_xlabel("step")
  ax.set_ylabel("test accuracy (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write(results: Sequence[dict[str, Any]], directory: str, title: str) -> str:
  """Writes ``summary.md`` and ``accuracy.png`` into ``directory``; returns the table.

  The end-of-run report: ``summary.md`` has the ``title`` as heading, the :func:`table` and
  the :func:`plot` of the curves; an earlier report in ``directory`` is overwritten.

  Args:
    results: per-stage records with the fields :func:`table` and :func:`plot` read.
    directory: an existing directory.
    title: the Markdown heading.

  Returns:
    The Markdown table (also printed by the trainer at the end of a run).

  Raises:
    FileNotFoundError: if ``directory`` does not exist.
    KeyError: naming a field missing from a record.

  Example:
    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> results = [{"stage": "teacher", "model": "mlp", "method": "scratch", "teachers": [],
    ...             "last_accuracy": [0.95], "best_accuracy": [0.96],
    ...             "curve": {"step": [100, 200], "accuracy": [[0.9], [0.95]]}}]
    >>> print(write(results, directory, title="Digits").splitlines()[-1])
    | teacher | mlp | scratch | — | 1 | 95.00 | 96.00 |
    >>> sorted(os.listdir(directory))
    ['accuracy.png', 'summary.md']
  """
  text = table(results)
  with open(os.path.join(directory, SUMMARY_FILE), "w") as f:
    f.write(f"# {title}\n\nAccuracy on the test split, in %: mean ± std over seeds; "
            f"\"best\" is the best evaluation of the stage.\n\n{text}\n![accuracy]({PLOT_FILE})\n")
  plot(results, os.path.join(directory, PLOT_FILE))
  return text
