"""Tests of the end-of-run report: the table's numbers and the plot's layout and data."""

import numpy as np
import pytest

from kdjax import summary


def _record(stage, model="mlp_tiny", teachers=(), num_steps=100, accuracy=(0.5, 0.7),
            seeds=1, init_from="", method="kd"):
  steps = np.linspace(num_steps / len(accuracy), num_steps, len(accuracy)).astype(int)
  return {"stage": stage, "method": method, "model": model, "teachers": list(teachers),
          "num_steps": num_steps, "init_from": init_from,
          "last_accuracy": [accuracy[-1]] * seeds, "best_accuracy": [max(accuracy)] * seeds,
          "curve": {"step": steps.tolist(), "accuracy": [[a] * seeds for a in accuracy]}}


def _quickstart_like():
  return [_record("teacher", "resnet8", num_steps=1000, method="scratch"),
          _record("assistant", "mlp", ("teacher",), num_steps=500),
          _record("scratch", seeds=3, method="scratch"),
          _record("kd", teachers=("teacher",), seeds=3),
          _record("annealing_1", teachers=("teacher",), num_steps=100, seeds=3,
                  method="annealing"),
          _record("annealing_2", num_steps=50, seeds=3, init_from="annealing_1",
                  method="scratch"),
          _record("takd", teachers=("assistant",), seeds=3)]


def test_table_shows_mean_and_sample_std_over_seeds():
  record = _record("kd")
  record["last_accuracy"], record["best_accuracy"] = [0.80, 0.84, 0.85], [0.81, 0.86, 0.88]
  row = summary.table([record]).splitlines()[-1]
  # mean and ddof-1 std by hand: 83.00 ± 2.65 and 85.00 ± 3.61.
  assert row.endswith("| 3 | 83.00 ± 2.65 | 85.00 ± 3.61 |")


def test_a_stage_that_continues_another_is_drawn_after_it():
  layout = summary.panels(_quickstart_like())
  lines = {line.label: line for line in layout[0].lines}
  assert lines["annealing_1 (annealing)"].x.tolist() == [50, 100]
  # Stage II starts where stage I ended (its 100 steps), not over it.
  assert lines["annealing_2 (scratch)"].x.tolist() == [125, 150]
  assert lines["kd (kd)"].x.tolist() == [50, 100]


def test_panels_full_scale_then_teachers_then_one_per_student_model():
  layout = summary.panels(_quickstart_like())
  assert [(p.title, [line.label.split()[0] for line in p.lines]) for p in layout] == [
      ("all stages", ["teacher", "assistant", "scratch", "kd", "annealing_1", "annealing_2",
                      "takd"]),
      ("teachers", ["teacher", "assistant"]),
      ("mlp_tiny", ["scratch", "kd", "annealing_1", "annealing_2", "takd"])]
  assert layout[0].xlim is None and layout[0].ylim == (0.0, 100.0)
  # Zoomed: the second halves of the student curves are at 70 %, padded by 0.5 ...
  assert layout[2].ylim == pytest.approx((69.5, 70.5))
  # ... from step 100 (the second halves of the 50-100 curves; stage II's is 150) to 150,
  # padded by 3 % of those 50 steps.
  assert layout[2].xlim == pytest.approx((98.5, 151.5))
  # The teachers' second halves: the assistant's from step 500, the teacher's from 1000.
  assert layout[1].xlim == pytest.approx((500 - 15, 1000 + 15))
  # A stage keeps its colour in every panel.
  assert [line.color for line in layout[1].lines] == [0, 1]


def test_a_record_s_panels_override_its_group():
  records = _quickstart_like()
  records[3]["panels"] = ["mlp_tiny", "kd and takd"]  # kd: in its model's panel and another
  records[6]["panels"] = ["kd and takd"]  # takd: only there
  layout = summary.panels(records)
  assert [(p.title, [line.label.split()[0] for line in p.lines]) for p in layout[1:]] == [
      ("teachers", ["teacher", "assistant"]),
      ("mlp_tiny", ["scratch", "kd", "annealing_1", "annealing_2"]),
      ("kd and takd", ["kd", "takd"])]
  # Without takd there, that panel would only repeat kd's curve: it is left out.
  del records[6]["panels"]
  assert [p.title for p in summary.panels(records)[1:]] == ["teachers", "mlp_tiny"]


def test_past_the_colour_cycle_no_two_curves_look_alike():
  cycle = len(summary.plt.rcParams["axes.prop_cycle"].by_key()["color"])
  records = [_record(f"s{i}", accuracy=(0.5, 0.6 + i / 100)) for i in range(2 * cycle + 1)]
  fig = summary.figure(records, "many stages")
  looks = [(line.get_color(), line.get_linestyle()) for line in fig.axes[1].get_lines()]
  assert len(looks) == 2 * cycle + 1 and len(set(looks)) == len(looks)
  # The first cycle keeps solid lines: plots of at most that many stages are unchanged.
  assert {style for _, style in looks[:cycle]} == {"-"}
  summary.plt.close(fig)


def test_figure_has_a_title_a_chance_line_and_legends_off_the_curves():
  fig = summary.figure(_quickstart_like(), "kdjax run on cifar10", num_classes=10)
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  assert fig.get_suptitle() == "kdjax run on cifar10"
  full = fig.axes[0]
  assert [line.get_ydata()[0] for line in full.get_lines() if line.get_linestyle() == "--"
          ] == [10.0]
  for ax in fig.axes:
    legend, axes_box = ax.get_legend(), ax.get_window_extent(renderer)
    assert legend is not None
    assert not legend.get_window_extent(renderer).overlaps(axes_box), ax.get_title()
  # The zoomed panels' legends give each curve's last mean (70 % for every student).
  assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == [
      "scratch (scratch): 70.00 %", "kd (kd): 70.00 %", "annealing_1 (annealing): 70.00 %",
      "annealing_2 (scratch): 70.00 %", "takd (kd): 70.00 %"]
  assert fig.axes[2].get_xlim() == pytest.approx((98.5, 151.5))
  summary.plt.close(fig)


def test_plot_is_rewritten_byte_for_byte(tmp_path):
  paths = [str(tmp_path / f"{i}.png") for i in range(2)]
  for path in paths:
    summary.plot(_quickstart_like(), path, "kdjax run on digits", num_classes=10)
  first, second = (open(path, "rb").read() for path in paths)
  assert first == second
  assert b"matplotlib" not in first  # no version in the metadata
