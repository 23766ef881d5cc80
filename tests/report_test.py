"""Tests of the results report on small synthetic workdirs (result.json files written here)."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from scipy import stats

from kdjax import report, summary, trainer
from kdjax.trainer import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A table config as configs/results_*.py write them: stages, a teacher from another
# workdir, and get_report next to get_config.
CONFIG = textwrap.dedent('''\
    from configs import base


    def get_config(dataset="cifar10"):
      config = base.get_config()
      config.dataset.name = dataset
      config.num_seeds = 3
      config.teacher_dirs.teacher = {"model": "resnet20", "directory": TEACHER}
      config.stages = base.stages()
      config.stages.scratch = base.stage("resnet8", "scratch", num_steps=100)
      config.stages.kd = base.stage("resnet8", "kd", ("teacher",), num_steps=100)
      config.stages.annealing_1 = base.stage("resnet8", "annealing", ("teacher",),
                                             num_steps=100)
      config.stages.annealing_2 = base.stage("resnet8", "scratch", num_steps=50,
                                             init_from="annealing_1")
      config.stages.dkp = base.stage("resnet8", "dkp", ("teacher",), num_steps=100)
      config.stages.dkd = base.stage("resnet8", "dkd", ("teacher",), num_steps=100)
      return config


    def get_report(dataset="cifar10"):
      return {"title": f"{dataset}, resnet8 students", "notes": "Short schedules.",
              "rows": [
                  {"stage": "scratch", "label": "scratch", "paper": 88.44,
                   "source": "TAKD, Table 2", "protocol": "resnet110, 200 epochs"},
                  {"stage": "kd", "label": "KD", "paper": 88.45, "source": "TAKD, Table 2",
                   "protocol": "resnet110, 200 epochs", "panels": ["resnet8", "DKD and KD"]},
                  {"stage": "annealing_1", "label": "Annealing-KD I"},
                  {"stage": "annealing_2", "label": "Annealing-KD II", "paper": 89.44,
                   "source": "Annealing-KD, Table 1", "protocol": "resnet110, 200 epochs"},
                  {"stage": "dkp", "label": "DKP"},
                  {"stage": "dkd", "label": "DKD", "panels": ["DKD and KD"]},
              ],
              "claims": [
                  {"claim": "KD beats scratch", "kind": "beats", "stages": ["kd"],
                   "baseline": "scratch", "source": "Hinton et al."},
                  {"claim": "DKP beats KD", "kind": "beats", "stages": ["dkp", "dkd"],
                   "baseline": "kd"},
              ]}
    ''')

COST = {"setup_seconds": 20.0, "train_seconds": 2900.0, "eval_seconds": 580.0,
        "checkpoint_seconds": 100.0, "runs": 2,
        "hardware": [{"backend": "cpu", "device_kind": "cpu", "device_count": 8,
                      "process_count": 1, "host_cpu_count": 2}]}
TEACHER_HASH = "abc"


def _write_json(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f)


def _stage_record(config, name, seeds, teacher_hash=TEACHER_HASH):
  """The stage_config.json the trainer writes for ``config``'s stage ``name``."""
  inputs = {"teachers": {t: {"model": "resnet20", "parameter_hash": teacher_hash}
                         for t in config.stages[name].teachers}}
  record = workdir_lib.stage_record(config, name, inputs)
  return {**record, "seed": seeds[0], "num_seeds": len(seeds)}


def _finish(workdir, name, seeds, last, best, *, num_steps=100, teachers=("teacher",),
            teacher_accuracy=0.9, init_from="", record=None):
  """Writes a finished stage: its record and a result.json as the trainer writes them."""
  directory = trainer.stage_dir(workdir, name)
  _write_json(os.path.join(directory, trainer.STAGE_CONFIG_FILE), record)
  result = {
      "stage": name, "model": "resnet8", "method": "kd", "teachers": list(teachers),
      "seeds": seeds, "last_accuracy": last, "best_accuracy": best,
      "best_step": [num_steps] * len(seeds), "num_steps": num_steps,
      "curve": {"step": [num_steps // 2, num_steps],
                "accuracy": [[b - 0.1 for b in best], last]},
      "teacher_accuracy": {t: teacher_accuracy for t in teachers},
      "teacher_cache": True, "nonfinite_steps": [0] * len(seeds), "init_from": init_from,
      "mixup": 0.0, "epochs": num_steps * 128 / 50000,
      "dataset": {"name": "cifar10", "num_classes": 10, "num_train": 50000,
                  "num_test": 10000, "batch_size": 128, "augmentation": "none"},
      "cost": COST}
  _write_json(os.path.join(directory, trainer.RESULT_FILE), result)


def make_runs(root, reverse=False):
  """A teacher workdir, and two student workdirs (seed 0 in one, seeds 1-2 in the other).

  With ``reverse``, the same files are written in the reverse order.
  """
  teacher_workdir = os.path.join(root, "teacher")
  export = trainer.export_dir(teacher_workdir, "teacher", 0, "last")
  config_file = os.path.join(root, "table.py")
  os.makedirs(root, exist_ok=True)
  with open(config_file, "w") as f:
    f.write(f"TEACHER = {export!r}\n" + CONFIG)
  config = report.load_table(config_file, [root]).config
  a, b = os.path.join(root, "a"), os.path.join(root, "b")

  def finish(workdir, name, seeds, *args, **kwargs):
    return lambda: _finish(workdir, name, seeds, *args, record=_stage_record(
        config, name, seeds), **kwargs)

  def teacher():
    _finish(teacher_workdir, "teacher", [0], [0.9150], [0.9210], num_steps=7800, teachers=(),
            record={"stage": {"num_steps": 7800}})
    _write_json(os.path.join(export, "provenance.json"),
                {"model": "resnet20", "num_classes": 10, "dataset": "cifar10",
                 "stage": "teacher", "method": "scratch", "seed": 0, "step": 7800,
                 "accuracy": 0.9150, "parameter_hash": TEACHER_HASH})

  def running():  # dkp: started, not finished
    directory = trainer.stage_dir(a, "dkp")
    _write_json(os.path.join(directory, trainer.STAGE_CONFIG_FILE),
                _stage_record(config, "dkp", [0, 1, 2]))
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": 40, "split": "eval", "accuracy": 0.4321}) + "\n")

  writes = [
      teacher,
      finish(a, "scratch", [0], [0.80], [0.81], teachers=()),
      finish(b, "scratch", [1, 2], [0.84, 0.85], [0.86, 0.88], teachers=()),
      finish(a, "kd", [0, 1], [0.83, 0.85], [0.84, 0.86]),  # seed 2 missing
      finish(a, "annealing_1", [0, 1, 2], [0.7, 0.7, 0.7], [0.7, 0.7, 0.7]),
      finish(a, "annealing_2", [0, 1, 2], [0.8, 0.8, 0.8], [0.8, 0.8, 0.8], num_steps=50,
             teachers=(), init_from="annealing_1"),
      finish(b, "dkd", [1, 2], [0.5, 0.6], [0.55, 0.65]),
      running,
  ]
  for write in reversed(writes) if reverse else writes:
    write()
  return config_file, [a, b]


@pytest.fixture
def runs(tmp_path):
  return make_runs(str(tmp_path))


def _rows(text):
  """The table's lines by their first cell."""
  rows = {}
  for line in text.splitlines():
    if line.startswith("| ") and not line.startswith("| method"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      rows[cells[0]] = cells
  return rows


def test_rows_show_last_and_best_as_mean_and_std_over_seeds_pooled_over_workdirs(runs):
  text, _ = report.table_markdown(report.load_table(*runs))
  rows = _rows(text)
  assert all(len(cells) == 11 for cells in rows.values())
  # scratch: seed 0 from workdir a, seeds 1-2 from b. By hand, over (80, 84, 85) and
  # (81, 86, 88): means 83.00 and 85.00, sample stds sqrt(7) = 2.65 and sqrt(13) = 3.61.
  assert rows["scratch"][:10] == [
      "scratch", "88.44 [1]", "resnet110, 200 epochs", "3", "83.00 ± 2.65", "85.00 ± 3.61",
      "0.3", "none", "—", "2.0 h"]  # two workdirs of 3600 s each
  assert rows["scratch"][10] == "cpu: 8× cpu, 2 host CPUs"
  assert rows["KD"][1] == "88.45 [1]"  # one source, one footnote
  assert rows["Annealing-KD II"][1] == "89.44 [2]"
  assert "[1] TAKD, Table 2" in text and "[2] Annealing-KD, Table 1" in text


def test_a_missing_seed_is_counted_not_hidden(runs):
  rows = _rows(report.table_markdown(report.load_table(*runs))[0])
  # Two of the config's three seeds: (83 + 85) / 2 = 84.00, std sqrt(2) = 1.41.
  assert rows["KD"][3:6] == ["2 of 3", "84.00 ± 1.41", "85.00 ± 1.41"]
  assert rows["KD"][8] == "90.00"  # the teacher's accuracy the trainer measured


def test_a_running_stage_is_shown_as_such_without_numbers(runs):
  text, plotted = report.table_markdown(report.load_table(*runs))
  cells = _rows(text)["DKP"]
  assert cells[3] == f"0 of 3 (running in `{runs[1][0]}`: step 40 of 100)"
  assert cells[4:] == ["—"] * 7
  assert "43.21" not in text  # its last evaluation is not a result
  assert "DKP" not in [r["label"] for r in plotted]


def test_the_teacher_is_read_from_its_export_and_its_stage(runs):
  text, _ = report.table_markdown(report.load_table(*runs))
  line = next(line for line in text.splitlines() if line.startswith("- Teacher"))
  assert "resnet20, exported by stage `teacher` (seed 0, step 7800)" in line
  assert "**91.50 %** test accuracy" in line
  assert "its stage's last 91.50 %, best 92.10 % (step 7800); 20.0 epochs" in line
  assert "60 min on cpu: 8× cpu, 2 host CPUs" in line


def test_a_teacher_whose_stage_is_not_finished_shows_no_accuracy(runs, tmp_path):
  # Its best export exists while it trains; only result.json marks the stage finished.
  stage = trainer.stage_dir(str(tmp_path / "teacher"), "teacher")
  os.remove(os.path.join(stage, trainer.RESULT_FILE))
  text, _ = report.table_markdown(report.load_table(*runs))
  line = next(line for line in text.splitlines() if line.startswith("- Teacher"))
  assert line.endswith(f"; stage `teacher` is not finished (no result.json in `{stage}`), "
                       f"so no accuracy is shown.")
  assert "91.5" not in line and "%" not in line


def test_the_wall_time_counts_checkpoints_and_the_legend_says_what_it_holds(runs, tmp_path):
  config_file, (a, b) = runs
  cost = {**COST, "checkpoint_seconds": 3700.0}  # 20 + 2900 + 580 + 3700 s = 2.0 h
  result_path = os.path.join(trainer.stage_dir(a, "annealing_1"), trainer.RESULT_FILE)
  with open(result_path) as f:
    result = json.load(f)
  _write_json(result_path, {**result, "cost": cost})
  text, _ = report.table_markdown(report.load_table(config_file, [a, b]))
  assert _rows(text)["Annealing-KD I"][9] == "2.0 h"
  path = report.write([report.load_table(config_file, [a, b])], str(tmp_path / "docs"), "x")[0]
  legend = open(path).read()
  assert ("*wall time*: everything a stage's runs took for all its seeds together, summed "
          "over resumed runs: setup (teacher checks and logit cache), train steps with their "
          "compilation, evaluations, checkpoint saves and exports.") in legend


def test_annealing_stage_two_is_plotted_after_stage_one(runs):
  _, plotted = report.table_markdown(report.load_table(*runs))
  lines = {line.label: line for line in summary.panels(plotted)[0].lines}
  assert lines["Annealing-KD I"].x.tolist() == [50, 100]
  assert lines["Annealing-KD II"].x.tolist() == [125, 150]


def test_a_row_is_drawn_in_the_plot_panels_its_spec_names(runs):
  _, plotted = report.table_markdown(report.load_table(*runs))
  layout = summary.panels(plotted)
  # KD is drawn with its model's students and again beside DKD; DKD only there.
  assert [(p.title, [line.label for line in p.lines]) for p in layout[1:]] == [
      ("resnet8", ["scratch", "KD", "Annealing-KD I", "Annealing-KD II"]),
      ("DKD and KD", ["KD", "DKD"])]


def test_the_same_workdirs_give_the_same_files_byte_for_byte(tmp_path):
  root = str(tmp_path / "runs")
  first = report.write([report.load_table(*make_runs(root))], str(tmp_path / "first"),
                       "python -m launch.report")
  assert [os.path.basename(p) for p in first] == ["results.md", "table.png"]
  first = [open(p, "rb").read() for p in first]
  # The second copy: another process, the same files written again in the reverse order.
  shutil.rmtree(root)
  program = textwrap.dedent(f"""\
      import sys
      sys.path.insert(0, {os.path.join(REPO, "tests")!r})
      import report_test
      from kdjax import report
      table = report.load_table(*report_test.make_runs({root!r}, reverse=True))
      print("\\n".join(report.write([table], {str(tmp_path / "second")!r},
                                      "python -m launch.report")))
      """)
  done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True,
                        text=True)
  assert done.returncode == 0, done.stderr
  assert [open(p, "rb").read() for p in done.stdout.split()] == first
  assert b"![cifar10, resnet8 students](table.png)" in first[0]
  assert "| scratch | 88.44 [1] | resnet110, 200 epochs | 3 | 83.00 ± 2.65 |".encode() in first[0]


def test_a_result_of_an_earlier_config_is_shown_as_stale(runs):
  config_file, (a, b) = runs
  config = report.load_table(*runs).config
  record = _stage_record(config, "kd", [0, 1])
  record["stage"]["num_steps"] = 200  # other epochs
  record["stage"]["loss"]["temperature"] = 2.0
  _write_json(os.path.join(trainer.stage_dir(a, "kd"), trainer.STAGE_CONFIG_FILE), record)
  text, plotted = report.table_markdown(report.load_table(config_file, [a, b]))
  cells = _rows(text)["KD"]
  assert cells[3] == (f"0 of 3 (stale (config changed: stage.loss.temperature, "
                      f"stage.num_steps) in `{a}`)")
  assert cells[4:] == ["—"] * 7
  assert "KD" not in [r["label"] for r in plotted]


def test_a_stale_workdir_is_left_out_of_a_pooled_row(runs):
  config_file, (a, b) = runs
  config = report.load_table(*runs).config
  record = _stage_record(config, "scratch", [1, 2])
  record["stage"]["method"] = "kd"
  _write_json(os.path.join(trainer.stage_dir(b, "scratch"), trainer.STAGE_CONFIG_FILE), record)
  cells = _rows(report.table_markdown(report.load_table(config_file, [a, b]))[0])["scratch"]
  assert cells[3:6] == [f"1 of 3 (stale (config changed: stage.method) in `{b}`)",
                        "80.00", "81.00"]


def test_results_of_a_retrained_teacher_are_stale(runs, tmp_path):
  config_file, workdirs = runs
  provenance = os.path.join(trainer.export_dir(str(tmp_path / "teacher"), "teacher", 0,
                                               "last"), "provenance.json")
  with open(provenance) as f:
    record = json.load(f)
  _write_json(provenance, {**record, "parameter_hash": "retrained"})
  rows = _rows(report.table_markdown(report.load_table(config_file, workdirs))[0])
  assert rows["KD"][3] == f"0 of 3 (stale (config changed: teacher teacher) in `{workdirs[0]}`)"
  assert rows["scratch"][3] == "3"  # reads no teacher


@pytest.mark.parametrize("change, named", [
    (lambda result, record: result["curve"].update(step=[25, 100]), "result.curve.step"),
    (lambda result, record: result.update(teacher_accuracy={"teacher": 0.8}),
     "result.teacher_accuracy"),
    (lambda result, record: result.update(epochs=0.5), "result.epochs"),
    (lambda result, record: record["inputs"]["teachers"]["teacher"].update(
        parameter_hash="other"), "teacher teacher"),
])
def test_runs_of_different_protocols_are_not_pooled(runs, tmp_path, change, named):
  config_file, (a, b) = runs
  config = report.load_table(*runs).config
  # With the teacher's export gone, its recorded hashes can only be compared between runs.
  shutil.rmtree(trainer.export_dir(str(tmp_path / "teacher"), "teacher", 0, "last"))
  _finish(b, "kd", [2], [0.84], [0.85], record=_stage_record(config, "kd", [2]))
  directory = trainer.stage_dir(b, "kd")
  with open(os.path.join(directory, trainer.RESULT_FILE)) as f:
    result = json.load(f)
  with open(os.path.join(directory, trainer.STAGE_CONFIG_FILE)) as f:
    record = json.load(f)
  change(result, record)
  _write_json(os.path.join(directory, trainer.RESULT_FILE), result)
  _write_json(os.path.join(directory, trainer.STAGE_CONFIG_FILE), record)
  with pytest.raises(ValueError, match=re.escape(
      f"report: stage 'kd' ran differently in {a!r} and {b!r} ({named}); their seeds cannot "
      f"be pooled.")):
    report.table_rows(report.load_table(config_file, [a, b]))


def test_runs_of_one_protocol_are_pooled(runs, tmp_path):
  config_file, (a, b) = runs
  config = report.load_table(*runs).config
  _finish(b, "kd", [2], [0.84], [0.85], record=_stage_record(config, "kd", [2]))
  cells = _rows(report.table_markdown(report.load_table(config_file, [a, b]))[0])["KD"]
  assert cells[3:5] == ["3", "84.00 ± 1.00"]  # (83, 85, 84)


@pytest.mark.parametrize("spec, match", [
    ({"title": "", "rows": [{"stage": "kd", "label": "KD"}]}, "title=''"),
    ({"title": "T", "rows": []}, "rows=\\[\\]"),
    ({"title": "T", "rows": [{"stage": "fitnets", "label": "F"}]}, "stage='fitnets'"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD"}, {"stage": "dkp", "label": "KD"}]},
     "label='KD'"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": 0.88,
                              "source": "x"}]}, "paper=0.88"),  # a fraction, not a %
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": 1,
                              "source": "x"}]}, "paper=1 "),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": True,
                              "source": "x"}]}, "paper=True"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": "88",
                              "source": "x"}]}, "paper='88'"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": 188.0,
                              "source": "x"}]}, "paper=188.0"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": 88.0}]}, "source"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "papr": 88.0}]}, "papr"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "panels": "KD"}]},
     "panels='KD'"),  # a title, not a list of them
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "panels": []}]}, "panels=\\[\\]"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "panels": ["a", ""]}]},
     "panels=\\['a', ''\\]"),
    ({"title": "T", "table": 1, "rows": [{"stage": "kd", "label": "KD"}]}, "table"),
])
def test_bad_specs_are_refused_naming_the_value(runs, spec, match):
  config = report.load_table(*runs).config
  with pytest.raises(ValueError, match=match):
    report.check_spec(spec, config)


def test_a_paper_number_of_100_is_accepted(runs):
  report.check_spec({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": 100,
                                             "source": "x"}]}, report.load_table(*runs).config)


def test_one_seed_in_two_workdirs_is_refused(runs):
  config_file, (a, b) = runs
  config = report.load_table(*runs).config
  _finish(b, "kd", [1], [0.9], [0.9], record=_stage_record(config, "kd", [1]))
  with pytest.raises(ValueError, match="stage 'kd' has seeds \\[0, 1, 1\\]"):
    report.table_rows(report.load_table(config_file, [a, b]))


def test_binary_writes_the_report_and_refuses_a_bad_table(runs, tmp_path):
  config_file, (a, b) = runs
  out = tmp_path / "docs"
  out.mkdir()
  command = [sys.executable, "-m", "launch.report", f"--table={config_file}:cifar10={a},{b}",
             f"--output_dir={out}"]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
  assert done.stdout.split() == [str(out / "results.md"), str(out / "table_cifar10.png")]
  text = (out / "results.md").read_text()
  assert f"`python -m launch.report --table={config_file}:cifar10={a},{b} --output_dir={out}`" \
      in text
  bad = subprocess.run(command[:3] + [f"--table={config_file}"], cwd=REPO, capture_output=True,
                       text=True)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1].startswith(
      f"error: --table='{config_file}' must be CONFIG_FILE[:ARG]=WORKDIR")


def test_a_teacher_not_exported_yet_is_said_so(runs, tmp_path):
  config_file, workdirs = runs
  export = os.path.join(str(tmp_path / "teacher"), "stages", "teacher", "export", "seed0",
                        "last")
  os.remove(os.path.join(export, "provenance.json"))
  text, _ = report.table_markdown(report.load_table(config_file, workdirs))
  assert f"- Teacher `teacher`: no export in `{export}` yet." in text.splitlines()


def test_claims_wait_for_every_seed_and_open_the_report(runs):
  lines = report.claims_markdown([report.load_table(*runs)]).splitlines()
  table = "cifar10, resnet8 students"
  i = lines.index("- **KD beats scratch** (Hinton et al.)")
  assert lines[i + 1] == f"  - {table}: waiting for every seed of KD."  # 2 of 3 seeds
  i = lines.index("- **DKP beats KD**")
  assert lines[i + 1] == f"  - {table}: waiting for every seed of DKP, DKD, KD."
  config_file, workdirs = runs
  path = report.write([report.load_table(config_file, workdirs)],
                      os.path.dirname(config_file) + "/docs", "x")[0]
  written = open(path).read()
  assert written.index("## What the tables say") < written.index("## cifar10, resnet8")


def _finish_all(runs):
  """Gives KD, DKP and DKD all three seeds (DKD's seed 0 in workdir a, 1-2 in b)."""
  config_file, (a, b) = runs
  config = report.load_table(config_file, [a, b]).config
  shutil.rmtree(trainer.stage_dir(a, "dkp"))
  for name, last in [("kd", [0.83, 0.85, 0.84]), ("dkp", [0.90, 0.91, 0.92])]:
    _finish(a, name, [0, 1, 2], last, last, record=_stage_record(config, name, [0, 1, 2]))
  _finish(a, "dkd", [0], [0.58], [0.58], record=_stage_record(config, "dkd", [0]))


def test_a_claim_is_judged_by_welchs_test_on_the_last_networks(runs):
  _finish_all(runs)
  lines = report.claims_markdown([report.load_table(*runs)]).splitlines()
  i = lines.index("- **KD beats scratch** (Hinton et al.)")
  # KD (83, 85, 84) against scratch (80, 84, 85): +1.00 points; variances 1 and 7,
  # standard error sqrt(1 / 3 + 7 / 3) = 1.633, Welch's dof 1.633⁴ / ((1/3)² / 2 +
  # (7/3)² / 2) = 2.56: threshold t(0.975) · 1.633.
  se = (8 / 3) ** 0.5
  threshold = stats.t.ppf(0.975, se ** 4 / ((1 / 3) ** 2 / 2 + (7 / 3) ** 2 / 2)) * se
  assert lines[i + 1] == (
      f"  - cifar10, resnet8 students: **not resolved**. KD 84.00 ± 1.00 % against scratch "
      f"83.00 ± 2.65 % (last network, 3 and 3 seeds): +1.00 points against a threshold of "
      f"±{threshold:.2f}; best epochs -1.00 points.")


def test_a_family_claim_compares_its_best_row_at_a_corrected_level(runs):
  _finish_all(runs)
  lines = report.claims_markdown([report.load_table(*runs)]).splitlines()
  i = lines.index("- **DKP beats KD**")
  # DKP (90, 91, 92) is the better of DKP and DKD (58, 50, 60); against KD (83, 85, 84):
  # +7.00 points, standard error sqrt(1/3 + 1/3), dof 4, Bonferroni over 2 rows.
  threshold = stats.t.ppf(1 - 0.05 / 4, 4) * (2 / 3) ** 0.5
  assert lines[i + 1] == (
      f"  - cifar10, resnet8 students: **holds**. DKP 91.00 ± 1.00 % against KD 84.00 ± "
      f"1.00 % (last network, 3 and 3 seeds): +7.00 points against a threshold of "
      f"±{threshold:.2f}; best epochs +7.00 points. DKP has the highest mean of the "
      f"family's 2 rows (DKP, DKD), a choice the threshold corrects for.")


@pytest.mark.parametrize("claim, message", [
    ({"claim": "x", "kind": "improves", "stages": ["kd"], "baseline": "scratch"},
     "claim kind='improves' must be one of ('beats', 'equals')"),
    ({"claim": "x", "kind": "beats", "stages": ["kd"], "baseline": "kd"},
     "report claim 0 (x): baseline='kd' is also among its stages"),
    ({"claim": "x", "kind": "beats", "stages": ["kd"], "baseline": "ctkd"},
     "report claim 0 (x): stage='ctkd' is not a row of the table"),
    ({"claim": "x", "kind": "beats", "stages": ["kd"]},
     "report claim 0 (x): stage=None is not a row of the table"),
    ({"claim": "x", "kind": "beats", "stages": ["kd"], "baseline": ["scratch"]},
     "report claim 0 (x): stage=['scratch'] is not a row of the table"),
    ({"claim": "x", "kind": "beats", "stages": "kd", "baseline": "scratch"},
     "report claim 0 (x): stages='kd' must list the rows compared"),
    ({"claim": "x", "kind": "equals", "stages": ["kd", "dkd"], "baseline": "scratch",
      "tolerance": 0.1}, "(exactly one for an equality)"),
    ({"claim": "x", "kind": "equals", "stages": ["kd"], "baseline": "scratch"},
     "report claim 0 (x): tolerance=None must be a positive number of points"),
    ({"claim": "x", "kind": "beats", "stages": ["kd"], "baseline": "scratch",
      "tolerance": 0.1}, "tolerance=0.1 must be a positive number of points for an "
                         "equality, and absent otherwise"),
    ({"claim": "", "kind": "beats", "stages": ["kd"], "baseline": "scratch"},
     "report claim 0: claim='' must be a non-empty string"),
    ({"claim": "x", "kind": "beats", "stages": ["kd"], "baseline": "scratch", "p": 0.05},
     "report claim 0: unknown fields ['p']"),
])
def test_bad_claims_are_refused_naming_the_value(runs, claim, message):
  spec = dict(report.load_table(*runs).spec, claims=[claim])
  with pytest.raises(ValueError, match=re.escape(message)):
    report.check_spec(spec, report.load_table(*runs).config)
