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
  """A Markdown table, one row per stage: accuracy in %, mean ± std over seeds.

  Args:
    results: per-stage records with ``stage``, ``model``, ``method``, ``teachers``,
      ``last_accuracy`` and ``best_accuracy`` (lists over seeds, in [0, 1]).
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
  """Test accuracy against step for every stage (mean over seeds, shaded ± std)."""
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
  """Writes ``summary.md`` and ``accuracy.png`` into ``directory``; returns the table."""
  text = table(results)
  with open(os.path.join(directory, SUMMARY_FILE), "w") as f:
    f.write(f"# {title}\n\nAccuracy on the test split, in %: mean ± std over seeds; "
            f"\"best\" is the best evaluation of the stage.\n\n{text}\n![accuracy]({PLOT_FILE})\n")
  plot(results, os.path.join(directory, PLOT_FILE))
  return text
