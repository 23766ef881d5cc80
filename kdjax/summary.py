"""The end-of-run report of a workdir: a table of stages × last/best accuracy, and curves."""

from collections.abc import Sequence
import os
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402

SUMMARY_FILE = "summary.md"
PLOT_FILE = "accuracy.png"


def mean_std(values: Sequence[float]) -> str:
  """Accuracies in [0, 1] as a percentage: ``"mean ± std"`` over seeds, the value alone for one.

  The std is the sample one (``ddof=1``), as :func:`table` says; both with two decimals.

  Args:
    values: one accuracy per seed (at least one), in [0, 1].

  Returns:
    The text, e.g. ``"83.00 ± 2.65"``.

  Example:
    >>> mean_std([0.80, 0.84, 0.85]), mean_std([0.9])
    ('83.00 ± 2.65', '90.00')
  """
  values = 100.0 * np.asarray(values, np.float64)
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def _learns_from(result: dict[str, Any]) -> str:
  """The stage's teachers and ``init_from``, each earlier stage with the export it read."""
  exports = result.get("earlier_exports", {})

  def named(stage: str) -> str:
    return f"{stage} ({exports[stage]})" if stage in exports else stage

  sources = [named(t) for t in result["teachers"]]
  if result.get("init_from"):
    sources.append(f"init {named(result['init_from'])}")
  return ", ".join(sources) or "—"


def table(results: Sequence[dict[str, Any]]) -> str:
  r"""A Markdown table, one row per stage: accuracy in %, mean ± std over seeds.

  Use it to compare the stages of a run at a glance (:func:`write` puts it in
  ``summary.md``). Over the :math:`S` seeds' accuracies :math:`a_s` (a single seed shows
  the mean alone):

  .. math::
     \bar a = \frac1S \sum_s a_s, \qquad
     \mathrm{std} = \sqrt{\frac{1}{S - 1} \sum_s (a_s - \bar a)^2}

  The "learns from" column lists the stage's teachers and the stage it starts from
  (``init_from``); an earlier stage of the run shows the export it was read at ("last" or
  "best", the stage's ``earlier_export``), a teacher of ``teacher_dirs`` its name alone.

  Args:
    results: per-stage records with ``stage``, ``model``, ``method``, ``teachers`` (names,
      possibly none), ``last_accuracy`` and ``best_accuracy`` (lists ``[S]`` over seeds,
      in [0, 1]), and optionally ``init_from`` and ``earlier_exports`` (earlier stage ->
      export read).

  Returns:
    The Markdown table, ending with a newline.

  Raises:
    KeyError: naming a field missing from a record.

  Example:
    >>> print(table([{"stage": "student", "model": "mlp_tiny", "method": "kd",
    ...               "teachers": ["teacher"], "earlier_exports": {"teacher": "last"},
    ...               "last_accuracy": [0.90, 0.92], "best_accuracy": [0.91, 0.93]}]))
    | stage | model | method | learns from | seeds | last acc. (%) | best acc. (%) |
    |---|---|---|---|---|---|---|
    | student | mlp_tiny | kd | teacher (last) | 2 | 91.00 ± 1.41 | 92.00 ± 1.41 |
  """
  lines = ["| stage | model | method | learns from | seeds | last acc. (%) | best acc. (%) |",
           "|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['stage']} | {r['model']} | {r['method']} | {_learns_from(r)} | "
                 f"{len(r['last_accuracy'])} | {mean_std(r['last_accuracy'])} | "
                 f"{mean_std(r['best_accuracy'])} |")
  return "\n".join(lines) + "\n"


class Line(NamedTuple):
  """One stage's accuracy curve as drawn: mean over seeds (and std, with several), in %.

  Example: see :func:`panels`.
  """
  label: str
  color: int  # the stage's index: its colour and line style, the same in every panel
  x: np.ndarray  # [E] steps, offset by the stages this one continues (``init_from``)
  mean: np.ndarray  # [E]
  std: np.ndarray | None  # [E], or None for a single seed


class Panel(NamedTuple):
  """One axes of the plot: its title, its curves and the ranges it shows.

  Example: see :func:`panels`.
  """
  title: str
  lines: list[Line]
  xlim: tuple[float, float] | None  # steps; None: every step
  ylim: tuple[float, float]  # accuracy, in %


def _offsets(results: Sequence[dict[str, Any]]) -> dict[str, int]:
  """The step at which each stage starts: the end of the stage it continues, if drawn."""
  by_stage = {r["stage"]: r for r in results}
  offsets: dict[str, int] = {}

  def offset(name: str, seen: tuple[str, ...] = ()) -> int:
    if name not in offsets:
      parent = by_stage[name].get("init_from") or ""
      if parent in by_stage and parent not in seen:
        offsets[name] = offset(parent, (*seen, name)) + int(by_stage[parent]["num_steps"])
      else:
        offsets[name] = 0
    return offsets[name]

  for r in results:
    offset(r["stage"])
  return offsets


def _zoom(lines: Sequence[Line]) -> tuple[tuple[float, float], tuple[float, float]]:
  """``(xlim, ylim)`` covering the second half of every curve (where methods separate).

  The x range starts at the earliest second half and ends at the last step, padded by 3 %
  of its span; the y range covers the means ± std there, padded by a tenth (0.5 at least).
  """
  start, end, low, high = [], [], [], []
  for line in lines:
    keep = line.x >= line.x.min() + (line.x.max() - line.x.min()) / 2
    spread = line.std[keep] if line.std is not None else 0.0
    start.append(line.x[keep].min())
    end.append(line.x.max())
    low.append(np.min(line.mean[keep] - spread))
    high.append(np.max(line.mean[keep] + spread))
  x_pad = 0.03 * max(1.0, float(max(end) - min(start)))
  low_value, high_value = min(low), max(high)
  y_pad = max(0.5, 0.1 * (high_value - low_value))
  return ((float(min(start)) - x_pad, float(max(end)) + x_pad),
          (max(0.0, low_value - y_pad), min(100.0, high_value + y_pad)))


def panels(results: Sequence[dict[str, Any]]) -> list[Panel]:
  """The layout of :func:`plot`: every stage at full scale, then one zoomed panel per group.

  A zoomed panel shows the second half of its curves, where methods separate, in the x and
  y ranges they span there.

  Groups: the stages other stages of ``results`` learn from (teachers and assistants), then
  the others by model, so that the methods training one student share a panel. A record's
  ``panels`` overrides its group: the titles of the zoomed panels it is drawn in, so that a
  grid of one method's settings gets a panel of its own, beside the baseline it is compared
  with; a panel whose every curve another panel draws (the baseline alone, while the grid
  runs) is left out. A stage that continues another (``init_from``, e.g. Annealing-KD's
  stage II) is drawn after it: its steps are offset by the length of the stage it continues.

  Args:
    results: per-stage records with ``stage``, ``method``, ``model``, ``teachers``,
      ``num_steps``, ``curve`` (``{"step": [E], "accuracy": [E] or [E, S]}``) and
      optionally ``init_from``, ``label`` (the legend's text; ``"<stage> (<method>)"``
      when absent) and ``panels`` (a sequence of zoomed panels' titles).

  Returns:
    The panels, the full-scale one first (every step, with the y range 0-100).

  Raises:
    KeyError: naming a field missing from a record.

  Example:
    >>> curve = lambda accuracy: {"step": [5, 10], "accuracy": accuracy}
    >>> layout = panels([
    ...     {"stage": "teacher", "method": "scratch", "model": "mlp", "teachers": [],
    ...      "num_steps": 10, "curve": curve([0.8, 0.9])},
    ...     {"stage": "one", "method": "annealing", "model": "mlp_tiny",
    ...      "teachers": ["teacher"], "num_steps": 10, "curve": curve([0.6, 0.7])},
    ...     {"stage": "two", "method": "scratch", "model": "mlp_tiny", "teachers": [],
    ...      "num_steps": 10, "init_from": "one", "curve": curve([0.75, 0.8])}])
    >>> [(p.title, [line.label for line in p.lines]) for p in layout]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('all stages', ['teacher (scratch)', 'one (annealing)', 'two (scratch)']),
     ('teachers', ['teacher (scratch)']),
     ('mlp_tiny', ['one (annealing)', 'two (scratch)'])]
    >>> layout[2].lines[1].x.tolist()  # stage two continues stage one
    [15, 20]
    >>> layout[2].xlim  # from the second halves on (10 for stage one), padded
    (9.7, 20.3)
  """
  offsets = _offsets(results)
  learnt_from = {t for r in results for t in r["teachers"]}
  lines, groups = [], {}
  for i, r in enumerate(results):
    steps = np.asarray(r["curve"]["step"], np.int64)
    accuracy = 100.0 * np.asarray(r["curve"]["accuracy"], np.float64).reshape(len(steps), -1)
    std = accuracy.std(axis=1, ddof=1) if accuracy.shape[1] > 1 else None
    line = Line(r.get("label") or f"{r['stage']} ({r['method']})", i,
                steps + offsets[r["stage"]], accuracy.mean(axis=1), std)
    lines.append(line)
    default = "teachers" if r["stage"] in learnt_from else r["model"]
    for group in r.get("panels") or (default,):
      groups.setdefault(group, []).append(line)
  if "teachers" in groups:  # first, as the other groups learn from them
    groups = {"teachers": groups.pop("teachers"), **groups}
  for group in reversed(list(groups)):  # a panel that only repeats others' curves: left out
    elsewhere = {id(line) for other, members in groups.items() if other != group
                 for line in members}
    if all(id(line) in elsewhere for line in groups[group]):
      del groups[group]
  return ([Panel("all stages", lines, None, (0.0, 100.0))] +
          [Panel(group, members, *_zoom(members)) for group, members in groups.items()])


def figure(results: Sequence[dict[str, Any]], title: str,
           num_classes: int | None = None) -> Figure:
  """Draws test accuracy against step, mean over seeds (shaded ± std), in :func:`panels`.

  Use :func:`plot` to save it. Each panel's legend sits below it, never over the curves,
  and a zoomed panel's legend gives each curve's last mean; the full-scale panel draws the
  chance level ``100 / num_classes`` %.

  Args:
    results: per-stage records with the fields :func:`panels` reads.
    title: the figure's title (name the dataset in it).
    num_classes: the dataset's class count, for the chance line; none drawn when ``None``.

  Returns:
    The figure, one axes per panel; close it with ``plt.close`` when done.

  Raises:
    KeyError: naming a field missing from a record.
    ValueError: if a curve's accuracies do not come in one row per step.

  Example:
    >>> fig = figure([{"stage": "student", "method": "kd", "model": "mlp", "teachers": [],
    ...                "num_steps": 200,
    ...                "curve": {"step": [100, 200], "accuracy": [[0.8, 0.82], [0.9, 0.92]]}}],
    ...              title="digits", num_classes=10)
    >>> [ax.get_title() for ax in fig.axes]
    ['all stages', 'mlp (zoomed)']
    >>> plt.close(fig)
  """
  layout = panels(results)
  legend_rows = max(len(p.lines) for p in layout[1:])
  fig, axes = plt.subplots(1, len(layout), figsize=(5 * len(layout), 4.5 + 0.25 * legend_rows),
                           dpi=100, squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  # Past the colour cycle, the next stages change line style: no two curves look alike.
  styles = ("-", "--", ":", "-.")
  for ax, panel in zip(axes[0], layout, strict=True):
    zoomed = panel is not layout[0]
    shade = 0.2 if len(panel.lines) <= 3 else 0.1  # many overlapping bands: lighter
    for line in panel.lines:
      color = colors[line.color % len(colors)]
      style = styles[line.color // len(colors) % len(styles)]
      # A zoomed panel's legend gives each curve's last value: the ranking at a glance.
      label = f"{line.label}: {line.mean[-1]:.2f} %" if zoomed else line.label
      ax.plot(line.x, line.mean, marker="o", markersize=3, color=color, linestyle=style,
              label=label)
      if line.std is not None:
        ax.fill_between(line.x, line.mean - line.std, line.mean + line.std, color=color,
                        alpha=shade)
    if panel.xlim is not None:
      ax.set_xlim(*panel.xlim)
    ax.set_ylim(*panel.ylim)
    ax.set_title(f"{panel.title} (zoomed)" if zoomed else panel.title)
    ax.set_xlabel("step")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    # Below the axes: a legend inside would hide the curves' last points. The full-scale
    # panel's colours are explained by the zoomed panels' legends.
    legend = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (0.0, -0.14),
              "borderaxespad": 0.0}
    if zoomed:
      ax.legend(**legend)
    elif num_classes:
      chance = ax.axhline(100.0 / num_classes, color="black", linestyle="--", linewidth=1,
                          label=f"chance ({100.0 / num_classes:.3g} %)")
      ax.legend(handles=[chance], **legend)
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def plot(results: Sequence[dict[str, Any]], path: str, title: str,
         num_classes: int | None = None) -> None:
  """Saves the :func:`figure` of ``results`` to ``path``, the same bytes for the same records.

  Use it for the curves of a run (:func:`write` saves them as ``accuracy.png``); the file's
  metadata holds no date or version, so a rerun over the same records rewrites it unchanged.

  Args:
    results: per-stage records with the fields :func:`panels` reads.
    path: the image file to write; its extension picks the format (e.g. ``.png``).
    title: the figure's title (name the dataset in it).
    num_classes: the dataset's class count, for the chance line; none drawn when ``None``.

  Raises:
    KeyError: naming a field missing from a record.
    ValueError: if a curve's accuracies do not come in one row per step.

  Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "accuracy.png")
    >>> plot([{"stage": "student", "method": "kd", "model": "mlp", "teachers": [],
    ...        "num_steps": 200,
    ...        "curve": {"step": [100, 200], "accuracy": [[0.8, 0.82], [0.9, 0.92]]}}],
    ...      path, title="digits", num_classes=10)
    >>> plt.imread(path).shape  # two panels, 5 inches wide each, at 100 dpi; RGBA
    (475, 1000, 4)
  """
  fig = figure(results, title, num_classes)
  fig.savefig(path, metadata={"Software": None})
  plt.close(fig)


def write(results: Sequence[dict[str, Any]], directory: str, title: str,
          num_classes: int | None = None) -> str:
  """Writes ``summary.md`` and ``accuracy.png`` into ``directory``; returns the table.

  The end-of-run report: ``summary.md`` has the ``title`` as heading, the :func:`table` and
  the :func:`plot` of the curves; an earlier report in ``directory`` is overwritten (the
  trainer passes every finished stage of its workdir, so nothing is lost).

  Args:
    results: per-stage records with the fields :func:`table` and :func:`plot` read.
    directory: an existing directory.
    title: the Markdown heading and the plot's title.
    num_classes: the dataset's class count, for the plot's chance line.

  Returns:
    The Markdown table (also printed by the trainer at the end of a run).

  Raises:
    FileNotFoundError: if ``directory`` does not exist.
    KeyError: naming a field missing from a record.

  Example:
    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> results = [{"stage": "teacher", "model": "mlp", "method": "scratch", "teachers": [],
    ...             "last_accuracy": [0.95], "best_accuracy": [0.96], "num_steps": 200,
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
  plot(results, os.path.join(directory, PLOT_FILE), title, num_classes)
  return text
